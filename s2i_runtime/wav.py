"""A streaming RIFF/WAVE reader: PCM 8/16/24/32-bit, IEEE float 32/64, WAVE_FORMAT_EXTENSIBLE, any channels.

The header is read first; the length it declares is checked against the caller's limit before a single
sample is read, and the payload is then read block by block and averaged to mono on the way. Memory is
therefore bounded by the mono result of the longest accepted clip, whatever the file claims or contains.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import BinaryIO

import numpy as np

from .errors import InputError
from .limits import MAX_RATE, MIN_RATE

_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_STREAMING_SIZES = (0, 0xFFFFFFFF)  # written by encoders that never patched the data size
_MAX_CHUNKS = 1024  # chunks before the data chunk; a real file has a handful
_MAX_FMT_BYTES = 1 << 16
_BLOCK_BYTES = 1 << 20
_MAX_SKIPPED_BYTES = 1 << 24  # other chunks read and dropped from a stream that cannot seek


@dataclasses.dataclass(frozen=True)
class WavFormat:
    tag: int
    channels: int
    rate: int
    width: int  # bytes per sample

    @property
    def frame_bytes(self) -> int:
        return self.width * self.channels


class MonoBuffer:
    """Blocks of (frames, channels) float32 samples, averaged to mono float32, refused past the length limit.

    With `expected_frames` (a header's promise, already checked against the limit) the result is written
    in place, so the largest accepted clip costs one mono copy, not two.
    """

    def __init__(self, label: str, rate: int, max_seconds: float | None, expected_frames: int | None = None):
        self.label = label
        self.rate = rate
        self.max_seconds = max_seconds
        self.max_frames = None if max_seconds is None else math.floor(max_seconds * rate)
        self.frames = 0
        self._blocks: list[np.ndarray] = []
        self._out = None
        if expected_frames is not None:
            self.refuse_if_too_long(expected_frames)
            if self.max_frames is not None:  # bounded by the limit, so safe to allocate up front
                self._out = np.empty(expected_frames, np.float32)

    def refuse_if_too_long(self, frames: int, *, total: bool = True) -> None:
        """`frames` is the clip's length (`total`), or only as much as has been read so far."""
        if self.max_frames is not None and frames > self.max_frames:
            length = f"{seconds_text(frames / self.rate)} long, more than" if total else "longer than"
            raise InputError(f"{self.label}: audio is {length} the maximum of {seconds_text(self.max_seconds)}")

    def add(self, block: np.ndarray) -> None:
        """`block` (frames, channels) float32; a non-finite channel makes its mono sample non-finite."""
        count = block.shape[0]
        if count == 0:
            return
        self.refuse_if_too_long(self.frames + count, total=False)
        # inf - inf in a downmix is NaN, as it should be: the caller rejects non-finite audio, warning-free.
        with np.errstate(all="ignore"):
            mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float64)
            if self._out is not None and self.frames + count <= self._out.size:
                self._out[self.frames : self.frames + count] = mono
            else:
                self._spill()
                self._blocks.append(np.asarray(mono, dtype=np.float32))
        self.frames += count

    def _spill(self) -> None:
        if self._out is not None:
            self._blocks.append(self._out[: self.frames])
            self._out = None

    def samples(self) -> np.ndarray:
        if self._out is not None:
            return self._out[: self.frames]
        if not self._blocks:
            return np.zeros(0, np.float32)
        return self._blocks[0] if len(self._blocks) == 1 else np.concatenate(self._blocks)


def seconds_text(seconds: float | None) -> str:
    """30.0 -> '30 s', 29.95 -> '29.95 s': never more digits than a person needs."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + " s"


def is_wav(head: bytes) -> bool:
    return head[:4] in (b"RIFF", b"RIFX", b"RF64")


def read_wav(stream: BinaryIO, head: bytes, label: str, max_seconds: float | None,
             size: int | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the rate of the WAV whose first bytes `head` were already read from `stream`.

    `size` is the whole file's length when known (a regular file, bytes); it lets a truncated file be
    reported without reading it.
    """
    if head[:4] != b"RIFF":
        raise InputError(f"{label}: {head[:4].decode('latin-1')} WAV files are not supported (only RIFF)")
    if len(head) < 12 or head[8:12] != b"WAVE":
        raise InputError(f"{label}: corrupt WAV header (RIFF without WAVE)")
    position = 12
    fmt = None
    skipped = 0
    for _ in range(_MAX_CHUNKS):
        header = _read(stream, 8)
        if len(header) < 8:
            break
        chunk_id, chunk_size = header[:4], struct.unpack("<I", header[4:])[0]
        position += 8
        if chunk_id == b"data":
            if fmt is None:
                raise InputError(f"{label}: corrupt WAV header (data before fmt chunk)")
            present = None if size is None else size - position
            return _read_payload(stream, fmt, chunk_size, present, label, max_seconds), fmt.rate
        padded = chunk_size + (chunk_size & 1)
        if chunk_id == b"fmt ":
            if not 16 <= chunk_size <= _MAX_FMT_BYTES:
                raise InputError(f"{label}: truncated or corrupt WAV header (fmt chunk)")
            body = _read(stream, chunk_size)
            if len(body) < chunk_size:
                raise InputError(f"{label}: truncated or corrupt WAV header (fmt chunk)")
            fmt = _parse_fmt(body, label)
            _skip(stream, padded - chunk_size)
        else:
            skipped += 0 if stream.seekable() else padded
            if skipped > _MAX_SKIPPED_BYTES:
                raise InputError(f"{label}: corrupt WAV header (more than {_MAX_SKIPPED_BYTES} bytes before the data)")
            if not _skip(stream, padded):
                break
        position += padded
    else:
        raise InputError(f"{label}: corrupt WAV header (more than {_MAX_CHUNKS} chunks before the data)")
    if fmt is None:
        raise InputError(f"{label}: corrupt WAV header (no fmt chunk)")
    raise InputError(f"{label}: truncated WAV file (no data chunk)")


def _parse_fmt(body: bytes, label: str) -> WavFormat:
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body, 0)
    if tag == _EXTENSIBLE:
        if len(body) < 40:
            raise InputError(f"{label}: corrupt WAV header (short WAVE_FORMAT_EXTENSIBLE fmt chunk)")
        tag = struct.unpack_from("<H", body, 24)[0]  # the first two bytes of the sub-format GUID
    if channels == 0:
        raise InputError(f"{label}: corrupt WAV header (zero channels)")
    if rate == 0:
        raise InputError(f"{label}: corrupt WAV header (sample rate 0)")
    width = bits // 8
    if bits % 8 or width == 0 or block_align != width * channels:
        raise InputError(f"{label}: corrupt WAV header ({bits} bits, {channels} channels, block {block_align})")
    if not (tag == _PCM and width in (1, 2, 3, 4)) and not (tag == _FLOAT and width in (4, 8)):
        raise InputError(f"{label}: unsupported WAV encoding (format tag {tag:#06x}, {bits} bits)")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InputError(f"{label}: sample rate {rate} Hz is outside the supported {MIN_RATE}-{MAX_RATE} Hz")
    return WavFormat(tag, channels, rate, width)


def _read_payload(stream: BinaryIO, fmt: WavFormat, declared: int, present: int | None, label: str,
                  max_seconds: float | None) -> np.ndarray:
    streaming = declared in _STREAMING_SIZES
    frames = None if streaming else declared // fmt.frame_bytes
    buffer = MonoBuffer(label, fmt.rate, max_seconds, expected_frames=frames)
    if not streaming and present is not None and declared > present:
        raise InputError(f"{label}: truncated WAV file (data chunk declares {declared} bytes, {present} present)")
    block_frames = max(1, _BLOCK_BYTES // fmt.frame_bytes)
    remaining = frames
    got = 0
    while remaining is None or remaining > 0:
        want = block_frames if remaining is None else min(block_frames, remaining)
        raw = _read(stream, want * fmt.frame_bytes)
        got += len(raw)
        usable = len(raw) - len(raw) % fmt.frame_bytes
        buffer.add(_decode(raw[:usable], fmt))
        if remaining is not None:
            remaining -= usable // fmt.frame_bytes
        if len(raw) < want * fmt.frame_bytes:
            break
    if remaining:
        raise InputError(f"{label}: truncated WAV file (data chunk declares {declared} bytes, {got} present)")
    if buffer.frames == 0:
        raise InputError(f"{label}: audio is empty (zero samples)")
    return buffer.samples()


def _decode(raw: bytes, fmt: WavFormat) -> np.ndarray:
    """(frames, channels) float32 in [-1, 1) for PCM; float files keep their values (cast to float32)."""
    if fmt.tag == _FLOAT:
        with np.errstate(over="ignore"):  # 1e300 becomes inf here, and the caller rejects it
            values = np.frombuffer(raw, dtype="<f4" if fmt.width == 4 else "<f8").astype(np.float32)
    elif fmt.width == 1:
        values = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif fmt.width == 3:
        triplets = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = triplets[:, 0] | (triplets[:, 1] << 8) | (triplets[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        values = ints.astype(np.float32) / float(1 << 23)
    else:
        ints = np.frombuffer(raw, dtype="<i2" if fmt.width == 2 else "<i4")
        values = ints.astype(np.float32) / float(1 << (8 * fmt.width - 1))
    return values.reshape(-1, fmt.channels)


def _read(stream: BinaryIO, count: int) -> bytes:
    """Up to `count` bytes; fewer only at the end of the stream (pipes deliver in pieces)."""
    parts = []
    while count > 0:
        part = stream.read(count)
        if not part:
            break
        parts.append(part)
        count -= len(part)
    return b"".join(parts)


def _skip(stream: BinaryIO, count: int) -> bool:
    """Skip `count` bytes; False when the stream ends first."""
    if count == 0:
        return True
    if stream.seekable():
        here = stream.tell()
        end = stream.seek(0, 2)
        if here + count > end:
            return False
        stream.seek(here + count)
        return True
    while count > 0:
        part = stream.read(min(count, _BLOCK_BYTES))
        if not part:
            return False
        count -= len(part)
    return True
