"""The log-Mel front end as CUDA kernels (logmel.cu, shipped compiled as logmel.ptx).

`frontend_cuda.CudaLogMel` runs them on a GPU through pycuda (imported lazily); `cpu_emulation` runs
the same source compiled with g++, for tests. Importing this package needs neither pycuda nor a GPU.
"""
