"""Deterministic corpora of hostile inputs for the runtime's fuzz tests and `python -m tests.fuzz_runtime`.

`audio_case(i)` is the i-th malformed or odd audio file: its family is i modulo the number of families and
its details come from numpy's generator seeded with i, so case i can be rebuilt alone from its number.
`tampered_manifests(manifest)` lists edits of s2i.json that the runtime must refuse with one line.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

RATES = [8000, 11025, 16000, 22050, 44100, 48000, 96000, 192000]
ODD_RATES = [0, 1, 7999, 192001, 4000, 2**31, 2**32 - 1]


def riff(chunks: list[tuple[bytes, bytes]], *, riff_size: int | None = None, sizes: dict[int, int] | None = None,
         magic: bytes = b"RIFF", form: bytes = b"WAVE") -> bytes:
    """A RIFF file from (id, body) chunks; `sizes` overrides the declared size of chunk i."""
    body = b""
    for i, (chunk_id, data) in enumerate(chunks):
        size = (sizes or {}).get(i, len(data))
        body += chunk_id + struct.pack("<I", size & 0xFFFFFFFF) + data + (b"\0" if len(data) & 1 else b"")
    size = 4 + len(body) if riff_size is None else riff_size
    return magic + struct.pack("<I", size & 0xFFFFFFFF) + form + body


def fmt_chunk(tag: int, channels: int, rate: int, bits: int, *, block_align: int | None = None,
              extensible_tag: int | None = None) -> bytes:
    block = channels * bits // 8 if block_align is None else block_align
    fields = (tag & 0xFFFF, channels & 0xFFFF, rate & 0xFFFFFFFF, (rate * block) & 0xFFFFFFFF, block & 0xFFFF,
              bits & 0xFFFF)
    fmt = struct.pack("<HHIIHH", *fields)
    if extensible_tag is not None:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += struct.pack("<HHI", 22, bits & 0xFFFF, 0) + struct.pack("<H", extensible_tag & 0xFFFF) + guid_tail
    return fmt


def encode_samples(samples: np.ndarray, bits: int, floating: bool) -> bytes:
    """(frames, channels) float64 in [-1, 1] (or anything, for float files) as WAV payload bytes."""
    if floating:
        return samples.astype("<f4" if bits == 32 else "<f8").tobytes()
    if bits == 8:
        return np.clip(np.round(samples * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    scale = float(1 << (bits - 1))
    ints = np.clip(np.round(samples * scale), -scale, scale - 1).astype("<i8")
    return ints.view(np.uint8).reshape(-1, 8)[:, : bits // 8].tobytes()


def valid_wav(rng: np.random.Generator, *, max_seconds: float = 2.0) -> bytes:
    bits, floating = [(8, False), (16, False), (24, False), (32, False), (32, True), (64, True)][rng.integers(6)]
    rate = int(rng.choice(RATES))
    channels = int(rng.choice([1, 1, 1, 2, 2, 3, 6, 8]))
    # log-uniform length, from a single frame (too short after resampling) to a couple of seconds
    frames = int(np.exp(rng.uniform(0, np.log(max_seconds * rate))))
    t = np.arange(frames) / rate
    freq = rng.uniform(80, 3000)
    mono = 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(frames)
    samples = np.stack([mono * rng.uniform(0.1, 1.0) for _ in range(channels)], axis=1)
    extensible = bool(rng.integers(4) == 0)
    tag = 3 if floating else 1
    fmt = (fmt_chunk(0xFFFE, channels, rate, bits, extensible_tag=tag) if extensible
           else fmt_chunk(tag, channels, rate, bits))
    chunks = [(b"fmt ", fmt)]
    if rng.integers(3) == 0:
        chunks.append((b"LIST", b"INFOISFT" + struct.pack("<I", 5) + b"s2i\0\0"))
    chunks.append((b"data", encode_samples(samples, bits, floating)))
    return riff(chunks)


def _truncated(rng):
    data = valid_wav(rng)
    return data[: int(rng.integers(0, len(data)))]


def _header_flips(rng):
    data = bytearray(valid_wav(rng))
    for _ in range(int(rng.integers(1, 6))):
        data[int(rng.integers(0, min(64, len(data))))] = int(rng.integers(256))
    return bytes(data)


def _extreme_fields(rng):
    tag = int(rng.choice([0, 1, 2, 3, 0x55, 0xFFFE, int(rng.integers(65536))]))
    channels = int(rng.choice([0, 1, 2, 255, 4096, 65535]))
    rate = int(rng.choice(RATES + ODD_RATES))
    bits = int(rng.choice([0, 1, 7, 8, 12, 16, 24, 32, 48, 64, 128, 65535]))
    block = None if rng.integers(2) else int(rng.integers(65536))
    ext = int(rng.choice([1, 3, 2, 0x55])) if tag == 0xFFFE else None
    payload = rng.bytes(int(rng.integers(0, 4096)))
    return riff([(b"fmt ", fmt_chunk(tag, channels, rate, bits, block_align=block, extensible_tag=ext)),
                 (b"data", payload)])


def _declared_sizes(rng):
    data = valid_wav(rng, max_seconds=0.5)
    fmt_end = 12 + 8 + struct.unpack_from("<I", data, 16)[0]
    position = data.find(b"data", fmt_end)
    size = int(rng.choice([0, 1, 3, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF, int(rng.integers(2**32))]))
    out = bytearray(data)
    out[position + 4 : position + 8] = struct.pack("<I", size)
    if rng.integers(2):
        out[4:8] = struct.pack("<I", int(rng.integers(2**32)))
    return bytes(out)


def _chunk_games(rng):
    fmt = fmt_chunk(1, 1, 16000, 16)
    payload = encode_samples(0.3 * np.sin(np.arange(1600)[:, None] / 5.0), 16, False)
    game = int(rng.integers(7))
    if game == 0:  # many junk chunks first
        chunks = [(b"junk", rng.bytes(int(rng.integers(0, 9)))) for _ in range(int(rng.integers(1, 3000)))]
        return riff([*chunks, (b"fmt ", fmt), (b"data", payload)])
    if game == 1:
        return riff([(b"data", payload), (b"fmt ", fmt)])
    if game == 2:
        return riff([(b"fmt ", fmt), (b"fmt ", fmt_chunk(3, 2, 44100, 32)), (b"data", payload)])
    if game == 3:  # a fmt chunk of an odd size
        return riff([(b"fmt ", fmt[: int(rng.integers(0, 16))]), (b"data", payload)])
    if game == 4:  # a chunk claiming to be huge, before the data
        return riff([(b"fmt ", fmt), (b"LIST", b"abcd"), (b"data", payload)], sizes={1: 0xFFFFFFF0})
    if game == 5:
        return riff([(b"fmt ", fmt)])
    return riff([(b"fmt ", fmt), (b"data", payload)], magic=bytes(rng.choice([b"RIFX", b"RF64", b"RIFF"])),
                form=bytes(rng.choice([b"WAVE", b"AVI ", b"wave"])))


def _extreme_values(rng):
    frames = int(rng.integers(1, 8000))
    channels = int(rng.choice([1, 2]))
    bits = int(rng.choice([32, 64]))
    special = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-310, 3.4e38, -0.0, 1e30, 0.0]
    samples = np.full((frames, channels), float(rng.choice(special)))
    if rng.integers(2):  # a few extreme values in an otherwise ordinary signal
        samples = 0.3 * rng.standard_normal((frames, channels))
        for _ in range(int(rng.integers(1, 4))):
            samples[int(rng.integers(frames)), int(rng.integers(channels))] = float(rng.choice(special))
    with np.errstate(over="ignore"):
        payload = encode_samples(samples, bits, True)
    rate = int(rng.choice(RATES))
    return riff([(b"fmt ", fmt_chunk(3, channels, rate, bits)), (b"data", payload)])


def _random_bytes(rng):
    magic = [b"", b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"ID3", b"FORM", b".snd", b"\xff\xfb", b"MThd"]
    return bytes(rng.choice(magic)) + rng.bytes(int(rng.integers(0, 3000)))


def _foreign(rng):
    try:
        import soundfile
    except ImportError:
        return _random_bytes(rng)
    fmt, subtype = [("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("AIFF", "PCM_16"), ("AU", "PCM_16"),
                    ("W64", "PCM_16"), ("CAF", "PCM_16")][rng.integers(6)]
    rate = int(rng.choice([8000, 16000, 22050, 44100, 48000]))
    frames = int(rng.integers(1, rate))
    samples = 0.3 * np.sin(np.arange(frames) / rng.uniform(2, 40))
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, subtype=subtype)
    data = bytearray(buffer.getvalue())
    mangle = int(rng.integers(3))
    if mangle == 1:
        del data[int(rng.integers(0, len(data))) :]
    elif mangle == 2:
        for _ in range(int(rng.integers(1, 8))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(256))
    return bytes(data)


def _text_and_tiny(rng):
    return bytes(rng.choice([b"", b"\0", b"R", b"RIFF", b"RIFF\0\0\0\0WAVE", b"hello, this is not audio\n",
                             b'{"json": true}', b"\xef\xbb\xbfRIFF"]))


FAMILIES: list[tuple[str, Callable[[np.random.Generator], bytes]]] = [
    ("valid", valid_wav),
    ("truncated", _truncated),
    ("header_flips", _header_flips),
    ("extreme_fields", _extreme_fields),
    ("declared_sizes", _declared_sizes),
    ("chunk_games", _chunk_games),
    ("extreme_values", _extreme_values),
    ("random_bytes", _random_bytes),
    ("foreign", _foreign),
    ("text_and_tiny", _text_and_tiny),
]


def audio_case(index: int, seed: int = 0) -> tuple[str, bytes]:
    """(family, file bytes) of case `index`."""
    family, make = FAMILIES[index % len(FAMILIES)]
    return family, make(np.random.default_rng([seed, index]))


# -- s2i.json ------------------------------------------------------------------------------------------------


def _set(manifest: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    edited = json.loads(json.dumps(manifest))
    *parents, last = path.split(".")
    node = edited
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return edited


_DELETE = object()

# (field, value): each must be refused with a line naming the field, hash or no hash.
FIELD_EDITS = [
    ("frontend.sample_rate", "16000"), ("frontend.sample_rate", 0), ("frontend.sample_rate", -16000),
    ("frontend.sample_rate", 16000.5), ("frontend.sample_rate", True), ("frontend.sample_rate", None),
    ("frontend.sample_rate", 10**9), ("frontend.n_fft", 10**9), ("frontend.n_fft", 0), ("frontend.n_fft", "400"),
    ("frontend.win_length", 0), ("frontend.win_length", 401), ("frontend.hop_length", 0),
    ("frontend.preemphasis", 1.5), ("frontend.preemphasis", "0.97"), ("frontend.top_db", 0),
    ("frontend.top_db", -80.0), ("frontend.fmin", 9000.0), ("frontend.fmax", 0.0), ("frontend.fmax", 20000.0),
    ("frontend.amin", 0.0), ("frontend.n_mels", 0), ("frontend.n_mels", 10000), ("frontend.min_frames", 0),
    ("frontend.min_frames", 5000), ("frontend.max_frames", 0), ("frontend.max_frames", 10**9),
    ("frontend.window", "hann"), ("frontend.remove_dc", "yes"), ("frontend.center", 1),
    ("frontend.surprise", 1), ("frontend.hop_length", _DELETE), ("frontend", []), ("frontend", _DELETE),
    ("model.image_sizes", []), ("model.image_sizes", "64"), ("model.image_sizes", [0]),
    ("model.image_sizes", [10**6]), ("model.image_sizes", [64.0]), ("model.image_sizes", None),
    ("model.embedding_dim", "256"), ("model.embedding_dim", 0), ("model.embedding_dim", 10**12),
    ("model.z_dim", True), ("model.ca_dim", _DELETE), ("model", "big"), ("model.encoder_input", "spectrogram"),
    ("model.encoder_input", None),
    ("format_version", 2), ("format_version", "1"), ("format_version", 1.0), ("format_version", _DELETE),
    ("files", []), ("dataset", "shapes"), ("dataset.name", 7), ("engines", {}), ("engines", [{"dir": "../x"}]),
    ("fp16", 3), ("manifest_sha256", "not-a-hash"),
]

# Raw JSON texts the parser itself must refuse: (name, text with {manifest} standing for the real one).
RAW_EDITS = [
    ("sample_rate_nan", lambda m: m.replace('"sample_rate": 16000', '"sample_rate": NaN')),
    ("preemphasis_nan", lambda m: m.replace('"preemphasis": 0.97', '"preemphasis": NaN')),
    ("top_db_infinity", lambda m: m.replace('"top_db": 80.0', '"top_db": Infinity')),
    ("top_db_1e400", lambda m: m.replace('"top_db": 80.0', '"top_db": 1e400')),
    ("int_5000_digits", lambda m: m.replace('"sample_rate": 16000', '"sample_rate": ' + "9" * 5000)),
    ("int_4000_digits", lambda m: m.replace('"sample_rate": 16000', '"sample_rate": ' + "9" * 4000)),
    ("deep_nesting", lambda m: m.replace('"training": {', '"deep": ' + "[" * 100000 + "]" * 100000
                                         + ', "training": {')),
    ("nesting_40", lambda m: m.replace('"training": {', '"deep": ' + "[" * 40 + "]" * 40 + ', "training": {')),
    ("duplicate_key", lambda m: m.replace('"model": {', '"model": {"z_dim": 1, ')),
    ("not_an_object", lambda m: "[" + m + "]"),
    ("truncated", lambda m: m[: len(m) // 2]),
    ("empty", lambda m: ""),
    ("latin1_bytes", lambda m: m.replace('"name": "', '"name": "\udcff', 1)),
    ("huge_padding", lambda m: m[:-2] + " " * (5 << 20) + m[-2:]),
]

# Valid edits, caught only by manifest_sha256.
SEALED_EDITS = [
    ("frontend.top_db", 70.0), ("frontend.fmin", 30.0), ("frontend.max_frames", 2000), ("dataset.name", "other"),
    ("model.image_sizes", [32]), ("model.encoder_arch", "something-else"),
]


def tampered_manifests(text: str) -> list[tuple[str, bytes]]:
    """(case name, raw s2i.json bytes) for a bundle whose s2i.json reads `text` (written with a seal)."""
    manifest = json.loads(text)
    cases = [(f"{field}={value if value is not _DELETE else 'deleted'!s:.30}",
              json.dumps(_set(manifest, field, value), indent=2).encode()) for field, value in FIELD_EDITS]
    cases += [(f"raw:{name}", make(text).encode("utf-8", "surrogateescape")) for name, make in RAW_EDITS]
    cases += [(f"sealed:{field}", json.dumps(_set(manifest, field, value), indent=2).encode())
              for field, value in SEALED_EDITS]
    return cases
