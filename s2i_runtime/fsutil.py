"""Atomic file writes (readers never see a half-written file), and output locations checked before any work."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`, on failure removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the mode an ordinary open() would have.
        umask = os.umask(0)
        os.umask(umask)
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def check_writable_dir(path: str | os.PathLike) -> None:
    """InputError unless `path` is a directory we can write into, or can be created as one. Creates nothing:
    it probes the nearest existing ancestor with a temporary file (permission bits lie to root, and
    /proc or /sys refuse writes whatever they say)."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise InputError(f"{path}: exists and is not a directory")
    ancestor = Path(os.path.abspath(target))
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise InputError(f"{path}: {ancestor} is a broken symbolic link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{path}: cannot be created, {ancestor} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".s2i-probe-", dir=ancestor)
    except OSError as exc:
        raise InputError(f"{path}: not writable ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def check_writable_file(path: str | os.PathLike) -> None:
    """InputError unless a file can be written at `path` (its folder may still have to be created)."""
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{path}: is a directory; give a file name")
    check_writable_dir(target.parent)
