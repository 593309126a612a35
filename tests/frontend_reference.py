"""A test-only reference of the front end (docs/design.md) built from librosa, independent of our implementations."""

import librosa
import numpy as np
import scipy.signal


def librosa_logmel(audio: np.ndarray) -> np.ndarray:
    y = np.asarray(audio, dtype=np.float64)
    y = y - y.mean()
    y = np.concatenate([y[:1], y[1:] - 0.97 * y[:-1]])
    window = scipy.signal.get_window("hamming", 400, fftbins=False)  # symmetric
    stft = librosa.stft(y, n_fft=400, hop_length=160, win_length=400, window=window, center=True, pad_mode="reflect")
    filters = librosa.filters.mel(sr=16000, n_fft=400, n_mels=40, fmin=20.0, fmax=8000.0, dtype=np.float64)
    mel = filters @ (np.abs(stft) ** 2)
    return librosa.power_to_db(mel, ref=np.max, amin=1e-10, top_db=80.0)
