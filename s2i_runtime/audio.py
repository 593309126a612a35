"""Audio input: anything a user may hand us, as float32 mono at the front end's rate — or one clear InputError.

WAV is parsed here directly (PCM 8/16/24/32-bit, IEEE float 32/64, WAVE_FORMAT_EXTENSIBLE, any channel count);
other containers go through soundfile when it is installed.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np

from .errors import InputError

AudioSource = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray

TARGET_RATE = 16000
MIN_RATE, MAX_RATE = 8000, 192000
DEFAULT_MAX_SECONDS = 30.0

_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE


def load_audio(
    source: AudioSource,
    sample_rate: int | None = None,
    *,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    target_rate: int = TARGET_RATE,
    name: str | None = None,
) -> np.ndarray:
    """Load `source` as float32 mono at `target_rate`.

    `source` is a file path, the bytes of a file, or a numpy array of samples (then `sample_rate` is its rate,
    default `target_rate`; shape (N,) or (N, channels)). Raises InputError for anything unusable.
    """
    if isinstance(source, np.ndarray):
        label = name or "audio array"
        samples = _check_array(source, label)
        rate = target_rate if sample_rate is None else int(sample_rate)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "audio bytes"
        samples, rate = _decode(bytes(source), label)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or str(path)
        samples, rate = _decode(_read_file(path, label), label)
    else:
        raise InputError(f"{name or 'input'}: expected a path, bytes or a numpy array, got {type(source).__name__}")

    if not MIN_RATE <= rate <= MAX_RATE:
        raise InputError(f"{label}: sample rate {rate} Hz is outside the supported {MIN_RATE}-{MAX_RATE} Hz")
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float64)
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if samples.size == 0:
        raise InputError(f"{label}: audio is empty (zero samples)")
    if not np.isfinite(samples).all():
        raise InputError(f"{label}: audio contains NaN or infinite samples")
    duration = samples.size / rate
    if max_seconds is not None and duration > max_seconds:
        raise InputError(f"{label}: audio is {duration:.1f} s long, more than the maximum of {max_seconds:g} s")
    if rate != target_rate:
        samples = _resample(samples, rate, target_rate)
    return samples


def _read_file(path: Path, label: str) -> bytes:
    if not path.exists():
        raise InputError(f"{label}: file not found")
    if path.is_dir():
        raise InputError(f"{label}: is a directory, not an audio file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{label}: cannot read file ({exc.strerror or exc})") from None


def _check_array(array: np.ndarray, label: str) -> np.ndarray:
    if array.ndim not in (1, 2):
        raise InputError(f"{label}: expected 1-D samples or (samples, channels), got shape {array.shape}")
    if array.dtype.kind == "c" or array.dtype.kind not in "fiu":
        raise InputError(f"{label}: expected real-valued samples, got dtype {array.dtype}")
    if array.dtype.kind in "iu":
        return _int_to_float(array)
    return array


def _int_to_float(array: np.ndarray) -> np.ndarray:
    info = np.iinfo(array.dtype)
    if info.min == 0:  # unsigned: centre it (8-bit WAV is unsigned)
        return (array.astype(np.float32) - (info.max + 1) / 2) / ((info.max + 1) / 2)
    return array.astype(np.float32) / float(-info.min)


def _decode(data: bytes, label: str) -> tuple[np.ndarray, int]:
    if len(data) == 0:
        raise InputError(f"{label}: file is empty")
    if data[:4] in (b"RIFF", b"RIFX", b"RF64"):
        return _decode_wav(data, label)
    return _decode_other(data, label)


def _decode_wav(data: bytes, label: str) -> tuple[np.ndarray, int]:
    if data[:4] != b"RIFF":
        raise InputError(f"{label}: {data[:4].decode('latin-1')} WAV files are not supported (only RIFF)")
    if len(data) < 12 or data[8:12] != b"WAVE":
        raise InputError(f"{label}: corrupt WAV header (RIFF without WAVE)")
    fmt = None
    payload = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body_start = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body_start + size > len(data):
                raise InputError(f"{label}: truncated or corrupt WAV header (fmt chunk)")
            fmt = data[body_start : body_start + size]
        elif chunk_id == b"data":
            if fmt is None:
                raise InputError(f"{label}: corrupt WAV header (data before fmt chunk)")
            end = body_start + size
            if size in (0, 0xFFFFFFFF) and len(data) > body_start:
                end = len(data)  # written by a streaming encoder that never patched the size
            elif end > len(data):
                raise InputError(
                    f"{label}: truncated WAV file (data chunk declares {size} bytes, "
                    f"{len(data) - body_start} present)"
                )
            payload = data[body_start:end]
            break
        pos = body_start + size + (size & 1)
    if fmt is None:
        raise InputError(f"{label}: corrupt WAV header (no fmt chunk)")
    if payload is None:
        raise InputError(f"{label}: truncated WAV file (no data chunk)")
    return _wav_samples(fmt, payload, label)


def _wav_samples(fmt: bytes, payload: bytes, label: str) -> tuple[np.ndarray, int]:
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", fmt, 0)
    if tag == _EXTENSIBLE:
        if len(fmt) < 40:
            raise InputError(f"{label}: corrupt WAV header (short WAVE_FORMAT_EXTENSIBLE fmt chunk)")
        tag = struct.unpack_from("<H", fmt, 24)[0]  # the first two bytes of the sub-format GUID
    if channels == 0:
        raise InputError(f"{label}: corrupt WAV header (zero channels)")
    if rate == 0:
        raise InputError(f"{label}: corrupt WAV header (sample rate 0)")
    width = bits // 8
    if bits % 8 or width == 0 or block_align != width * channels:
        raise InputError(f"{label}: corrupt WAV header ({bits} bits, {channels} channels, block {block_align})")
    if tag == _PCM and width in (1, 2, 3, 4):
        samples = _pcm(payload, width, channels)
    elif tag == _FLOAT and width in (4, 8):
        usable = len(payload) - len(payload) % (width * channels)
        samples = np.frombuffer(payload[:usable], dtype="<f4" if width == 4 else "<f8").astype(np.float32)
    else:
        raise InputError(f"{label}: unsupported WAV encoding (format tag {tag:#06x}, {bits} bits)")
    if samples.size == 0:
        raise InputError(f"{label}: audio is empty (zero samples)")
    return samples.reshape(-1, channels), rate


def _pcm(payload: bytes, width: int, channels: int) -> np.ndarray:
    usable = len(payload) - len(payload) % (width * channels)
    raw = np.frombuffer(payload[:usable], dtype=np.uint8)
    if width == 1:
        return (raw.astype(np.float32) - 128.0) / 128.0
    if width == 3:
        triplets = raw.reshape(-1, 3).astype(np.int32)
        values = triplets[:, 0] | (triplets[:, 1] << 8) | (triplets[:, 2] << 16)
        values = np.where(values >= 1 << 23, values - (1 << 24), values)
        return values.astype(np.float32) / float(1 << 23)
    dtype = "<i2" if width == 2 else "<i4"
    return np.frombuffer(raw.tobytes(), dtype=dtype).astype(np.float32) / float(1 << (8 * width - 1))


def _decode_other(data: bytes, label: str) -> tuple[np.ndarray, int]:
    try:
        import soundfile
    except ImportError:
        raise InputError(
            f"{label}: not a WAV file; other formats need soundfile (pip install 's2i[audio]')"
        ) from None
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception:  # soundfile raises several types for undecodable data
        raise InputError(f"{label}: not audio (neither WAV nor a format soundfile recognises)") from None
    if samples.size == 0:
        raise InputError(f"{label}: audio is empty (zero samples)")
    return samples, int(rate)


def _resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(samples, rate, target_rate, quality="HQ").astype(np.float32, copy=False)
