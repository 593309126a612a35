"""What the pipeline hands the encoder graph for each utterance, by the bundle's `model.encoder_input`.

- "logmel": features (n_mels, frames) made here by the backend's front end (numpy, or a CUDA kernel);
  a batch is the features padded with the dB floor, lengths in frames.
- "waveform": the front end is inside the encoder graph, so the item is the samples themselves; a batch is
  the samples zero-padded, lengths in samples.

Both count an utterance in frames, so length buckets, batch widths and limits are the same for either.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .batching import pad_features, pad_waveforms
from .bundle import LOGMEL_INPUT, WAVEFORM_INPUT, Bundle
from .frontend import FrontendSpec


class LogMelFeed:
    """The encoder reads log-Mel features, computed here before it runs."""

    kind = LOGMEL_INPUT
    frontend = "runtime"  # numpy, or the backend's CUDA kernel (its describe() says which)

    def __init__(self, spec: FrontendSpec) -> None:
        self.spec = spec

    def prepare(self, audio: np.ndarray, backend: Any) -> np.ndarray:
        return backend.logmel(audio, self.spec)

    def prepare_each(self, audios: list[np.ndarray], backend: Any) -> list[np.ndarray]:
        return backend.logmel_each(audios, self.spec)

    def frames(self, item: np.ndarray) -> int:
        return int(item.shape[1])

    def batch(self, items: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
        return pad_features(items, width, self.spec.pad_value)


class WaveformFeed:
    """The encoder graph computes the features itself from the samples."""

    kind = WAVEFORM_INPUT
    frontend = "in-graph"

    def __init__(self, spec: FrontendSpec) -> None:
        self.spec = spec

    def prepare(self, audio: np.ndarray, backend: Any) -> np.ndarray:
        return np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)

    def prepare_each(self, audios: list[np.ndarray], backend: Any) -> list[np.ndarray]:
        return [self.prepare(audio, backend) for audio in audios]

    def frames(self, item: np.ndarray) -> int:
        return self.spec.num_frames(int(item.size))

    def batch(self, items: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
        # The graph makes 1 + (N + 2·pad − n_fft) // hop frames of N samples: this N gives exactly `width`,
        # the width the log-Mel path pads the same batch to (a longer clip still fits: it has <= width frames).
        samples = (width - 1) * self.spec.hop_length + self.spec.n_fft - 2 * self.spec.edge_pad
        return pad_waveforms(items, samples)


def encoder_feed(bundle: Bundle) -> LogMelFeed | WaveformFeed:
    return WaveformFeed(bundle.frontend) if bundle.encoder_input == WAVEFORM_INPUT else LogMelFeed(bundle.frontend)
