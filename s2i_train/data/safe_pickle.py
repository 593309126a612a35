"""A restricted unpickler for the papers' metadata pickles (filenames.pickle, class_info.pickle).

It admits only builtin containers, strings, bytes and numbers. Any other global — a class, a function, numpy —
is refused, so a hostile pickle cannot run code. Python 2 pickles (as the StackGAN/S2IGAN files are) load
with latin-1 strings.
"""

from __future__ import annotations

import builtins
import codecs
import io
import os
import pickle
from pathlib import Path

from .records import DatasetError

_CONTAINERS = {"set", "frozenset", "list", "dict", "tuple", "bytearray", "bytes", "str", "int", "float", "complex"}
_ATOMS = (str, bytes, int, float, bool, complex, type(None))


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _CONTAINERS:
            return getattr(builtins, name)
        if (module, name) == ("_codecs", "encode"):
            return codecs.encode  # how protocol-2 pickles made by Python 3 spell bytes
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only builtin containers are allowed")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id")


def _check(value, depth: int = 0) -> None:
    if depth > 50:
        raise pickle.UnpicklingError("nested too deeply")
    if isinstance(value, _ATOMS):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check(k, depth + 1)
            _check(v, depth + 1)
        return
    if isinstance(value, (list, tuple, set, frozenset, bytearray)):
        for v in value:
            _check(v, depth + 1)
        return
    raise pickle.UnpicklingError(f"unexpected {type(value).__name__} in pickle")


def loads(data: bytes):
    value = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    _check(value)
    return value


def load(path: str | os.PathLike):
    """The pickled value at `path`; DatasetError naming the file if it is missing, corrupt or unsafe."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file is missing")
    try:
        return loads(path.read_bytes())
    except Exception as exc:  # corrupt pickles raise many types; none of them runs code here
        raise DatasetError(f"{path}: cannot load pickle safely ({exc})") from None
