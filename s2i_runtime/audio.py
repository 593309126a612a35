"""Audio input: anything a user may hand us, as float32 mono at the front end's rate — or one clear InputError.

A source is a path (regular files only: a device or a pipe could stream forever), the bytes of a file, an
open binary stream (stdin), or a numpy array of samples. WAV is parsed here (`wav.py`); other containers
go through soundfile when it is installed. Either way the length limit is enforced while reading, so
memory stays bounded by the longest clip accepted.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import InputError
from .limits import DEFAULT_MAX_SECONDS, MAX_RATE, MIN_RATE
from .wav import MonoBuffer, is_wav, read_wav

AudioSource = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray | BinaryIO

TARGET_RATE = 16000
# Non-WAV data from a stream is buffered for soundfile, which needs to seek; beyond this it is refused.
MAX_STREAM_BYTES = 1 << 27
_BLOCK_FRAMES = 1 << 16

__all__ = ["DEFAULT_MAX_SECONDS", "MAX_RATE", "MIN_RATE", "TARGET_RATE", "AudioSource", "load_audio"]


def load_audio(
    source: AudioSource,
    sample_rate: int | None = None,
    *,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    min_samples: int = 1,
    target_rate: int = TARGET_RATE,
    name: str | None = None,
) -> np.ndarray:
    """Load `source` as float32 mono at `target_rate`, at least `min_samples` long after resampling.

    For a numpy array (shape (N,) or (N, channels)) `sample_rate` is its rate, default `target_rate`.
    Raises InputError for anything unusable.
    """
    label = name or _default_label(source)
    if isinstance(source, np.ndarray):
        rate = target_rate if sample_rate is None else _array_rate(sample_rate, label)
        samples = _array_mono(source, label, rate, max_seconds)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        samples, rate = _decode(io.BytesIO(data), label, max_seconds, size=len(data))
    elif isinstance(source, (str, os.PathLike)):
        handle, size = _open_regular(Path(source), label)
        with handle:
            samples, rate = _decode(handle, label, max_seconds, size=size)
    elif hasattr(source, "read"):
        samples, rate = _decode(source, label, max_seconds, size=None)
    else:
        raise InputError(f"{label}: expected a path, bytes or a numpy array (or a binary stream), "
                         f"got {type(source).__name__}")

    if samples.size == 0:
        raise InputError(f"{label}: audio is empty (zero samples)")
    if not np.isfinite(samples).all():
        raise InputError(f"{label}: audio contains NaN or infinite samples")
    if rate != target_rate:
        samples = _resample(samples, rate, target_rate)
        if not np.isfinite(samples).all():  # finite samples near float32's limit overflow the filter
            peak = float(np.abs(samples[np.isfinite(samples)]).max(initial=0.0))
            raise InputError(f"{label}: audio samples are too large to resample (peak about {peak:.3g})")
    if samples.size < min_samples:
        raise InputError(
            f"{label}: audio is too short ({samples.size} samples at {target_rate} Hz; at least {min_samples} "
            f"({1000 * min_samples / target_rate:g} ms) are needed)"
        )
    return samples


def _default_label(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, np.ndarray):
        return "audio array"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "audio bytes"
    return str(getattr(source, "name", "audio stream"))


def _open_regular(path: Path, label: str) -> tuple[BinaryIO, int]:
    """Open a regular file for reading; anything else is refused before a byte is read.

    O_NONBLOCK: opening a FIFO without a writer would otherwise block forever, before fstat could look.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise InputError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{label}: is a directory, not an audio file") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{label}: cannot read file ({getattr(exc, 'strerror', None) or exc})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        what = "is a directory, not an audio file" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise InputError(f"{label}: {what}")
    return os.fdopen(fd, "rb"), info.st_size


def _decode(stream: BinaryIO, label: str, max_seconds: float | None, size: int | None) -> tuple[np.ndarray, int]:
    try:
        head = stream.read(12)
        if head is None:  # a non-blocking stream with nothing ready
            head = b""
        if len(head) == 0:
            raise InputError(f"{label}: file is empty")
        while len(head) < 12:
            more = stream.read(12 - len(head))
            if not more:
                break
            head += more
        if is_wav(head):
            return read_wav(stream, head, label, max_seconds, size=size)
        return _decode_other(stream, head, label, max_seconds)
    except OSError as exc:
        raise InputError(f"{label}: cannot read ({exc.strerror or exc})") from None


def _decode_other(stream: BinaryIO, head: bytes, label: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    try:
        import soundfile
    except ImportError:
        raise InputError(
            f"{label}: not a WAV file; other formats need soundfile (pip install 's2i[audio]')"
        ) from None
    if stream.seekable():
        stream.seek(stream.tell() - len(head))
    else:
        data = head + stream.read(MAX_STREAM_BYTES + 1 - len(head))
        if len(data) > MAX_STREAM_BYTES:
            raise InputError(f"{label}: more than {MAX_STREAM_BYTES >> 20} MiB of non-WAV audio from a stream")
        stream = io.BytesIO(data)
    with _silenced_stderr():
        return _read_soundfile(soundfile, stream, label, max_seconds)


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _silenced_stderr() -> Iterator[None]:
    """libsndfile's MP3 decoder (mpg123) prints resync notes for corrupt data straight to file descriptor 2,
    several lines per input on top of our one error line. Point fd 2 at /dev/null meanwhile; the lock keeps
    the decodes that do this one at a time, so the real stderr is always restored."""
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): nothing to protect
            yield
            return
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _read_soundfile(soundfile, stream: BinaryIO, label: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    try:
        sound = soundfile.SoundFile(stream)
    except Exception:  # soundfile raises several types for undecodable data
        raise InputError(f"{label}: not audio (neither WAV nor a format soundfile recognises)") from None
    with sound:
        rate = int(sound.samplerate)
        if not MIN_RATE <= rate <= MAX_RATE:
            raise InputError(f"{label}: sample rate {rate} Hz is outside the supported {MIN_RATE}-{MAX_RATE} Hz")
        buffer = MonoBuffer(label, rate, max_seconds)
        if 0 < sound.frames < 1 << 62:  # some containers do not know their length
            buffer.refuse_if_too_long(int(sound.frames))
        while True:
            try:
                block = sound.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
            except Exception:
                raise InputError(f"{label}: corrupt {sound.format} audio (decoding failed)") from None
            if block.shape[0] == 0:
                break
            buffer.add(block)
    return buffer.samples(), rate


def _array_rate(sample_rate: object, label: str) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise InputError(f"{label}: sample_rate must be an integer number of Hz, got {sample_rate!r}")
    rate = int(sample_rate)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InputError(f"{label}: sample rate {rate} Hz is outside the supported {MIN_RATE}-{MAX_RATE} Hz")
    return rate


def _array_mono(array: np.ndarray, label: str, rate: int, max_seconds: float | None) -> np.ndarray:
    if array.ndim not in (1, 2):
        raise InputError(f"{label}: expected 1-D samples or (samples, channels), got shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise InputError(f"{label}: expected real-valued samples, got dtype {array.dtype}")
    MonoBuffer(label, rate, max_seconds).refuse_if_too_long(array.shape[0])
    with np.errstate(all="ignore"):  # float64 beyond float32's range becomes inf, rejected by the caller
        samples = _int_to_float(array) if array.dtype.kind in "iu" else array.astype(np.float32, copy=False)
        if samples.ndim == 2:
            if samples.shape[1] == 0:
                raise InputError(f"{label}: audio has zero channels")
            samples = samples.mean(axis=1, dtype=np.float64).astype(np.float32)
    return np.ascontiguousarray(samples)


def _int_to_float(array: np.ndarray) -> np.ndarray:
    info = np.iinfo(array.dtype)
    if info.min == 0:  # unsigned: centre it (8-bit WAV is unsigned)
        return (array.astype(np.float32) - (info.max + 1) / 2) / ((info.max + 1) / 2)
    return array.astype(np.float32) / float(-info.min)


def _resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(samples, rate, target_rate, quality="HQ").astype(np.float32, copy=False)
