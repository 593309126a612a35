"""The PyTorch baseline: the same work as the lean runtime, done the training-code way.

wav -> torch front end (`logmel_torch`) -> speech encoder -> generator -> uint8 image, with the models
rebuilt from the run directory's safetensors checkpoints and run under `torch.inference_mode()`. The noise
is the runtime's (`noise_block`), so for the same seed both sides should give the same pixels — the
benchmark checks that, which is how we know the two contenders do the same work.

    python -m benchmarks.torch_baseline one.wav --run RUN --out one.png [--threads 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s2i_runtime.noise import noise_block


class TorchBaseline:
    """Encoder + generator from `run_dir` on `device`, in eager mode or under torch.compile."""

    def __init__(self, run_dir: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 compile_models: bool = False) -> None:
        from s2i_runtime.frontend import FrontendSpec
        from s2i_train.checkpoint import load_generator, load_speech_encoder
        from s2i_train.models.generator import ExportableGenerator

        self.device = torch.device(device)
        self.dtype = dtype
        self.spec = FrontendSpec()
        self.encoder = load_speech_encoder(run_dir).to(self.device, dtype).eval()
        generator = load_generator(run_dir)
        self.z_dim, self.ca_dim = generator.config.z_dim, generator.config.ca_dim
        self.generator = ExportableGenerator(generator).to(self.device, dtype).eval()
        if compile_models:
            self.encoder = torch.compile(self.encoder)
            self.generator = torch.compile(self.generator)

    def noise(self, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The runtime's noise for inputs 0..count-1, one image each."""
        draws = [noise_block(seed, index, 1, self.z_dim, self.ca_dim) for index in range(count)]
        return np.concatenate([d[0] for d in draws]), np.concatenate([d[1] for d in draws])

    @torch.inference_mode()
    def features(self, clips: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        from s2i_train.frontend import logmel_torch

        lengths = torch.tensor([len(c) for c in clips], dtype=torch.int64)
        waves = torch.zeros(len(clips), int(lengths.max()))
        for row, clip in enumerate(clips):
            waves[row, : len(clip)] = torch.from_numpy(np.asarray(clip, dtype=np.float32))
        return logmel_torch(waves.to(self.device), lengths.to(self.device), self.spec)

    @torch.inference_mode()
    def images(self, clips: Sequence[np.ndarray], seed: int = 0) -> np.ndarray:
        """uint8 images (B, H, W, 3), one per clip (16 kHz float32 mono arrays)."""
        mel, frame_lengths = self.features(clips)
        embedding = self.encoder(mel.to(self.dtype), frame_lengths)
        z, eps = self.noise(len(clips), seed)
        image = self.generator(embedding, torch.from_numpy(z).to(self.device, self.dtype),
                               torch.from_numpy(eps).to(self.device, self.dtype))
        pixels = ((image.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        return pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()

    def pil_images(self, clips: Sequence[np.ndarray], seed: int = 0) -> list[Any]:
        from PIL import Image

        return [Image.fromarray(array) for array in self.images(clips, seed)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wav", type=Path)
    parser.add_argument("--run", required=True, type=Path, help="run directory with encoder/generator checkpoints")
    parser.add_argument("--out", required=True, type=Path, help="PNG to write")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from s2i_runtime.audio import load_audio
    from s2i_runtime.errors import S2IError
    from s2i_runtime.images import save_png

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        baseline = TorchBaseline(args.run)
        clip = load_audio(args.wav, target_rate=baseline.spec.sample_rate)
        (image,) = baseline.pil_images([clip], args.seed)
        save_png(image, args.out)
    except S2IError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
