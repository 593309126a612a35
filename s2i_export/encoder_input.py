"""The commands that only handle log-Mel encoders refuse a bundle whose encoder holds the front end.

FP16 conversion, TensorRT profiles and Triton configs are all shaped for the (B, n_mels, T) input; for a
waveform encoder they would need their own (not done yet), and a silently wrong one is worse than none.
"""

from __future__ import annotations

from s2i_runtime.bundle import LOGMEL_INPUT, Bundle
from s2i_runtime.errors import InputError


def require_logmel_encoder(bundle: Bundle, command: str) -> None:
    if bundle.encoder_input != LOGMEL_INPUT:
        raise InputError(
            f"{bundle.path}: its encoder holds the front end (exported with --frontend-in-graph); "
            f"`s2i-export {command}` handles log-Mel encoders only: export the run again without that option"
        )
