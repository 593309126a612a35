"""On-disk cache of log-Mel features, so epochs do not recompute them.

Features come from the shared front end (`s2i_runtime.frontend.logmel` on `s2i_runtime.audio.load_audio`),
never from a copy. A cache entry is named by the hash of the audio file's bytes and the front-end spec, so a
changed file or a changed spec simply misses the cache. Entries are .npy (read with allow_pickle=False) and
written atomically, so parallel DataLoader workers may fill the cache at the same time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from s2i_runtime.audio import load_audio
from s2i_runtime.errors import InputError
from s2i_runtime.frontend import FrontendSpec, logmel
from s2i_runtime.fsutil import atomic_path

from .records import DatasetError


def spec_hash(spec: FrontendSpec) -> str:
    return hashlib.sha256(spec.to_json().encode()).hexdigest()[:16]


def compute_features(path: Path, spec: FrontendSpec) -> np.ndarray:
    """(n_mels, frames) float32 features of one audio file; DatasetError naming the file if unreadable."""
    try:
        audio = load_audio(path, max_seconds=None, target_rate=spec.sample_rate)
    except InputError as exc:
        raise DatasetError(str(exc)) from None
    return logmel(audio, spec)


class FeatureCache:
    """Features per audio file, computed once and kept under `cache_dir/logmel-<spec hash>/`."""

    def __init__(self, cache_dir: str | os.PathLike | None, spec: FrontendSpec = FrontendSpec()) -> None:
        self.spec = spec
        self.folder = None if cache_dir is None else Path(cache_dir) / f"logmel-{spec_hash(spec)}"
        self._entries: dict[Path, Path] = {}  # audio path -> cache file, per process

    def features(self, audio_path: Path) -> np.ndarray:
        if self.folder is None:
            return compute_features(audio_path, self.spec)
        entry = self._entries.get(audio_path)
        if entry is not None and entry.is_file():
            return np.load(entry, allow_pickle=False)
        try:
            data = audio_path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"{audio_path}: cannot read audio ({exc.strerror or exc})") from None
        digest = hashlib.sha256(data + self.spec.to_json().encode()).hexdigest()[:40]
        entry = self.folder / digest[:2] / f"{digest}.npy"
        self._entries[audio_path] = entry
        if entry.is_file():
            try:
                return np.load(entry, allow_pickle=False)
            except (OSError, ValueError):
                pass  # a damaged entry: recompute and replace it
        features = compute_features(audio_path, self.spec)
        with atomic_path(entry) as tmp, open(tmp, "wb") as handle:
            np.save(handle, features, allow_pickle=False)
        return features

    def fill(self, audio_paths: Iterable[Path], progress: bool = False) -> int:
        """Compute every missing entry now (e.g. before training); returns the number of files seen."""
        paths = list(audio_paths)
        if progress:
            from rich.progress import track

            paths_iter = track(paths, description="log-Mel features", transient=True)
        else:
            paths_iter = paths
        for path in paths_iter:
            self.features(path)
        return len(paths)
