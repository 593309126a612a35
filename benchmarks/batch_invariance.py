"""How much batching moves pixels (docs/runtime-limits.md): the same inputs and seed through batch sizes 1..8
and through the dynamic batcher with concurrent callers, compared with batch size 1 on the PNG pixels.

    python -m benchmarks.batch_invariance [--bundle DIR] [--calls 40] [--threads 0] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

import numpy as np

from s2i_runtime import Pipeline
from s2i_runtime.audio import load_audio
from s2i_runtime.images import to_pil

EXAMPLES = Path(__file__).resolve().parents[1] / "s2i_runtime" / "examples"


def _inputs() -> list[np.ndarray]:
    """The three shipped examples, plus each cut short and slowed, so lengths (and padding) vary."""
    clips = [load_audio(p) for p in sorted(EXAMPLES.glob("*.wav"))]
    return clips + [c[: len(c) * 2 // 3] for c in clips] + [np.repeat(c, 2)[: 16000 * 4] for c in clips] + [clips[0]]


def _pixels(rows) -> np.ndarray:
    return np.stack([np.asarray(im, np.int16) for row in rows for im in row])


def _compare(got: np.ndarray, want: np.ndarray) -> tuple[int, int]:
    diff = np.abs(got - want).reshape(len(want), -1)
    return int((diff.max(axis=1) > 0).sum()), int(diff.max())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--calls", type=int, default=40, help="concurrent calls through the dynamic batcher")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = all cores)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    inputs = _inputs()
    k = 3
    with Pipeline.load(args.bundle, device="cpu", batch_size=1, threads=args.threads) as pipe:
        want = _pixels(pipe.generate(inputs, seed=args.seed, num_images=k))
    report = {"images": int(want.shape[0]), "batch_sizes": {}}
    for batch_size in range(2, 9):
        with Pipeline.load(args.bundle, device="cpu", batch_size=batch_size, threads=args.threads) as pipe:
            differing, worst = _compare(_pixels(pipe.generate(inputs, seed=args.seed, num_images=k)), want)
        report["batch_sizes"][batch_size] = {"images_differing": differing, "max_levels": worst}
    # the dynamic batcher: each call asks for one input at its position, concurrent calls share batches
    results: dict[int, np.ndarray] = {}
    with Pipeline.load(args.bundle, device="cpu", batch_size=8, max_wait_ms=20, threads=args.threads) as merged:

        def call(n: int) -> None:
            i = n % len(inputs)
            block = merged.generate_outcomes([inputs[i]], args.seed, k, start_index=i)[0]
            results[n] = np.stack([np.asarray(to_pil(img), np.int16) for img in block])

        threads = [threading.Thread(target=call, args=(n,)) for n in range(args.calls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    changed = 0
    worst = 0
    for n, got in results.items():
        i = n % len(inputs)
        d, w = _compare(got, want[i * k : (i + 1) * k])
        changed += int(d > 0)
        worst = max(worst, w)
    report["dynamic_batcher"] = {"calls": args.calls, "calls_with_a_changed_pixel": changed, "max_levels": worst}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
