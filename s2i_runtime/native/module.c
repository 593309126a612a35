/* An empty Python module, so that the front end's C code builds and installs as an ordinary extension;
   s2i_runtime/native_frontend.py finds its file and calls logmel.c's functions through ctypes. */
#include <Python.h>

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_logmel", "the log-Mel front end's C code (see native_frontend)", -1, NULL};

PyMODINIT_FUNC PyInit__logmel(void) { return PyModule_Create(&module); }
