"""The one part of s2i that setuptools compiles: the front end's C code (s2i_runtime/native/).

Optional: without a C compiler the package installs without it, and the front end runs on numpy alone.
Everything else about the package is in pyproject.toml.
"""

import os

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "s2i_runtime._logmel",
            sources=["s2i_runtime/native/logmel.c", "s2i_runtime/native/module.c"],
            # -O3: the butterflies and band sums are written to be vectorised, which -O2 does only in part.
            extra_compile_args=[] if os.name == "nt" else ["-O3"],
            optional=True,
        )
    ]
)
