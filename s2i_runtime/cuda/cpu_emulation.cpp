// Runs the kernels of logmel.cu on the CPU, for tests on machines without a GPU.
//
// Built with g++ into a shared library (cpu_emulation.py does it) and called through ctypes:
//     int s2i_cpu_launch(const char* kernel, unsigned blocks, unsigned threads, void** args)
// `args` holds one pointer per kernel parameter, pointing at the parameter's value — the same convention
// as cuLaunchKernel's kernelParams. A launch loops over every block and thread in order; that equals a
// GPU launch only because logmel.cu's threads never depend on each other (see cuda_compat.h).
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <utility>

#include "logmel.cu"

namespace {

template <typename... Params, std::size_t... I>
void call_with_params(void (*kernel)(Params...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<Params>*>(args[I])...);
}

template <typename... Params>
void run_grid(void (*kernel)(Params...), unsigned blocks, unsigned threads, void** args) {
    gridDim = {blocks, 1, 1};
    blockDim = {threads, 1, 1};
    for (unsigned block = 0; block < blocks; ++block) {
        for (unsigned thread = 0; thread < threads; ++thread) {
            blockIdx = {block, 0, 0};
            threadIdx = {thread, 0, 0};
            call_with_params(kernel, args, std::index_sequence_for<Params...>{});
        }
    }
}

}  // namespace

// Returns 0 on success, -1 for an unknown kernel name.
extern "C" int s2i_cpu_launch(const char* kernel, unsigned blocks, unsigned threads, void** args) {
#define S2I_DISPATCH(name)                        \
    if (std::strcmp(kernel, #name) == 0) {        \
        run_grid(name, blocks, threads, args);    \
        return 0;                                 \
    }
    S2I_DISPATCH(s2i_partial_sums)
    S2I_DISPATCH(s2i_utterance_mean)
    S2I_DISPATCH(s2i_signal)
    S2I_DISPATCH(s2i_power)
    S2I_DISPATCH(s2i_mel_db)
    S2I_DISPATCH(s2i_partial_max)
    S2I_DISPATCH(s2i_utterance_max)
    S2I_DISPATCH(s2i_normalize)
#undef S2I_DISPATCH
    return -1;
}
