// Lets logmel.cu compile as plain C++ (g++) so its kernels can be tested on a machine without a GPU.
//
// Used only when __CUDACC__ is undefined. The launcher (cpu_emulation.cpp) runs a "grid" by looping
// over every block and thread, setting blockIdx/threadIdx before each call. That is only faithful for
// kernels whose threads are independent: no __syncthreads, no shared memory, no warp intrinsics,
// no atomics. logmel.cu keeps to that on purpose.
#ifndef S2I_CUDA_COMPAT_H
#define S2I_CUDA_COMPAT_H

#ifndef __CUDACC__
#include <math.h>

#define __global__
#define __device__
#define __forceinline__ inline

struct s2i_dim3 {
    unsigned int x, y, z;
};

// thread_local so that a launcher may one day spread blocks over host threads.
inline thread_local s2i_dim3 blockIdx = {0, 0, 0};
inline thread_local s2i_dim3 threadIdx = {0, 0, 0};
inline thread_local s2i_dim3 blockDim = {1, 1, 1};
inline thread_local s2i_dim3 gridDim = {1, 1, 1};
#endif

#endif
