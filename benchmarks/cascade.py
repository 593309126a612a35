"""Latency at batch 1: the direct runtime against the two-stage baseline, one spoken caption -> one PIL image.

Contenders, each on the same clips in the same order:
- direct: the runtime (`Pipeline`, ONNX Runtime CPU fp32) on the WAV: front end, speech encoder, generator;
- ASR alone: decode the WAV, pocketsphinx with the caption grammar (the cascade's first stage);
- cascade, text encoder: ASR, then the run's text encoder (PyTorch), then the bundle's generator graph;
- cascade, parse: ASR, then the rule-based parse into the attribute code, then the run's generator (PyTorch: the
  exported graph takes an embedding, not a code).
Warm-up and interleaving as every benchmark here (`common.interleaved`).

    python -m benchmarks.cascade --run RUN --bundle BUNDLE [--data DIR] [--clips 8] [--repeats 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DIRECT = "direct: runtime (onnxruntime cpu fp32)"
ASR = "ASR alone (pocketsphinx, caption grammar)"
CASCADE = "cascade: ASR + text encoder + generator graph"
PARSED = "cascade: ASR + parse + generator"


def test_clips(data: Path, count: int) -> list[Path]:
    """The first `count` held-out captions spoken by held-out espeak-ng voices, then by recorded ones, alternating."""
    from s2i_train.train.banks import read_records

    records = [r for r in read_records(data) if r["split"] == "test"]
    espeak = [r for r in records if r.get("engine", "espeak-ng") == "espeak-ng"]
    recorded = [r for r in records if r.get("engine", "espeak-ng") != "espeak-ng"]
    mixed = [r for pair in zip(espeak, recorded, strict=False) for r in pair] or espeak
    return [data / r["audio"] for r in mixed[:count]]


def _cycler(paths: list[Path], job: Callable[[Path], object]) -> Callable[[], object]:
    position = [0]

    def run() -> object:
        path = paths[position[0] % len(paths)]
        position[0] += 1
        return job(path)

    return run


def run_cascade_latency(run_dir: Path, bundle: Path, data: Path, *, clips: int = 8, repeats: int = 40,
                        warmup: int = 2, threads: int = 1) -> dict[str, Any]:
    import torch

    from s2i_runtime.audio import load_audio
    from s2i_runtime.images import to_pil
    from s2i_runtime.noise import noise_block
    from s2i_runtime.pipeline import Pipeline
    from s2i_train.asr import Recogniser
    from s2i_train.cascade import code_drawer, parsed_code
    from s2i_train.checkpoint import GENERATOR, TEXT_ENCODER, load_module
    from s2i_train.train.text_encoder import text_embeddings

    from .common import interleaved, machine_info, pin_torch_threads, summarise

    pin_torch_threads(threads)
    paths = test_clips(data, clips)
    pipe = Pipeline.load(bundle, backend="onnxruntime", device="cpu", batch_size=1, threads=threads)
    dims = pipe.bundle.dims
    recogniser = Recogniser()
    text_encoder = load_module(run_dir, TEXT_ENCODER).eval()
    draw_code = code_drawer(load_module(run_dir, GENERATOR).eval())
    z, eps = noise_block(0, 0, 1, dims.z_dim, dims.ca_dim)

    def heard(path: Path) -> str:
        return recogniser.transcribe(load_audio(str(path))).text

    def cascade(path: Path) -> object:
        embedding = text_embeddings(text_encoder, [heard(path)]).numpy()
        return to_pil(pipe.render(embedding, z, eps)[0])

    def parsed(path: Path) -> object:
        image = draw_code(parsed_code([heard(path)]), torch.from_numpy(z), torch.from_numpy(eps))
        return to_pil(image[0].numpy())

    runs = {
        DIRECT: _cycler(paths, lambda path: pipe.generate([str(path)], seed=0)),
        ASR: _cycler(paths, heard),
        CASCADE: _cycler(paths, cascade),
        PARSED: _cycler(paths, parsed),
    }
    times = interleaved(runs, repeats * len(paths), warmup * len(paths))
    rows = {name: summarise(seconds) for name, seconds in times.items()}
    audio_seconds = sum(load_audio(str(p)).size for p in paths) / 16000 / len(paths)
    pipe.close()
    return {"clips": [str(p) for p in paths], "mean_clip_seconds": round(audio_seconds, 3), "batch": 1,
            "calls_per_contender": repeats * len(paths), "threads": threads, "contenders": rows,
            "machine": machine_info(threads),
            "cascade_over_direct": rows[CASCADE]["p50_ms"] / rows[DIRECT]["p50_ms"],
            "parsed_over_direct": rows[PARSED]["p50_ms"] / rows[DIRECT]["p50_ms"]}


def table_lines(result: dict[str, Any]) -> list[str]:
    lines = ["| contender | p50 ms | p95 ms | min ms |", "|---|---:|---:|---:|"]
    for name, row in result["contenders"].items():
        lines.append(f"| {name} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['min_ms']:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="trained run with a text encoder")
    parser.add_argument("--bundle", type=Path, required=True, help="the run's exported bundle")
    parser.add_argument("--data", type=Path, help="Spoken-Shapes folder (default: the run's)")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=40, help="timed calls per clip and contender")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args(argv)
    from s2i_runtime.errors import S2IError
    from s2i_train.train.config import load_run_config

    try:
        data = args.data or Path(load_run_config(args.run).data.root)
        if args.clips < 1 or args.repeats < 1 or args.threads < 1:
            raise S2IError("--clips, --repeats and --threads must be at least 1")
        result = run_cascade_latency(args.run, args.bundle, data, clips=args.clips, repeats=args.repeats,
                                     threads=args.threads)
    except S2IError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print("\n".join(table_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
