"""`s2i-train eval --two-stage`: the direct model against the two-stage baseline on the table by voice and
condition (held-out espeak-ng and recorded voices; clean, noisy room, telephone).

Every cell hears the same conditioned sounds and draws with the same noise for each system:
- direct: the run's speech encoder and generator;
- cascade: pocketsphinx with the caption grammar, then the run's text encoder, then the same generator;
- parsed: the same transcripts read by the rule-based parse straight into the generator's attribute code (what a
  perfect text model could do with them).
Each is read by the judge (and the silhouette judge where the run has one); the recogniser's cells add how many
colour, shape and size words it got right. The report lands in RUN/eval-two-stage.json.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from s2i_runtime.errors import InputError
from s2i_runtime.fsutil import atomic_write_text

from .asr import Recogniser
from .cascade import asr_scores, can_take_code, code_drawer, parsed_code
from .checkpoint import ENCODER, GENERATOR, TEXT_ENCODER, has_module, load_judge, load_module
from .eval import babble_source, condition_reader, encoder_on_waves
from .eval_conditions import conditioned_cells, read_cell
from .train.banks import ATTRIBUTES, load_wave_bank, read_records
from .train.config import load_run_config
from .train.text_encoder import text_embeddings
from .train.wave_augment import CONDITIONS

REPORT_FILE = "eval-two-stage.json"
SYSTEMS = ("direct", "cascade", "parsed")
SYSTEM_NAMES = {"direct": "direct (speech)", "cascade": "ASR + text encoder", "parsed": "ASR + parse"}


def evaluate_two_stage(
    data: str | Path | None,
    run_dir: str | Path,
    *,
    captions_per_group: int | None = None,
    images_per_caption: int | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    root = Path(data) if data is not None else Path(config.data.root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset directory does not exist")
    for name in (ENCODER, GENERATOR):
        if not has_module(run_dir, name):
            raise InputError(f"{run_dir}: no {name} checkpoint: the two-stage comparison needs a trained run")
    ecfg = config.eval
    limit = ecfg.condition_captions if captions_per_group is None else captions_per_group
    k = images_per_caption or ecfg.condition_images_per_caption
    began = time.perf_counter()
    recogniser = Recogniser()
    judge = load_judge(run_dir).eval()
    generator = load_module(run_dir, GENERATOR).eval()
    embed_speech = encoder_on_waves(load_module(run_dir, ENCODER).eval())
    text_encoder = load_module(run_dir, TEXT_ENCODER).eval() if has_module(run_dir, TEXT_ENCODER) else None

    @torch.no_grad()
    def draw_embedding(embeddings: torch.Tensor, z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return generator(embeddings, z, eps).images[-1]

    draws = {"direct": draw_embedding, "cascade": draw_embedding,
             "parsed": code_drawer(generator) if can_take_code(generator) else None}
    read = condition_reader(run_dir, judge)
    records = [r for r in read_records(root) if r["split"] == "test"]
    labels = torch.tensor([[r["attributes"][a] for a in ATTRIBUTES] for r in records], dtype=torch.long)
    waves = load_wave_bank(root, "test", run_dir=run_dir)
    z_dim, ca_dim = generator.config.z_dim, generator.config.ca_dim
    table: dict[str, Any] = {}
    for group, name, rows, heard in conditioned_cells(records, waves.wave, babble_source(root, run_dir), limit,
                                                      seed, progress):
        transcripts = recogniser.transcribe_all(heard)
        texts = [t.text for t in transcripts]
        conditions = {"direct": torch.cat([embed_speech(heard[s : s + ecfg.batch_size])
                                           for s in range(0, len(heard), ecfg.batch_size)]),
                      "parsed": parsed_code(texts)}
        if text_encoder is not None:
            conditions["cascade"] = text_embeddings(text_encoder, texts)
        cell: dict[str, Any] = {"captions": len(rows),
                                "asr": asr_scores(transcripts, [records[i] for i in rows.tolist()])}
        for system in SYSTEMS:
            if system in conditions and draws[system] is not None:
                cell[system] = read_cell(conditions[system], labels[rows], draws[system], z_dim, ca_dim, read, k,
                                         seed, ecfg.batch_size)
        cell["transcripts"] = [{"row": int(r), "said": records[int(r)]["text"], "heard": t.text}
                               for r, t in zip(rows[:5].tolist(), transcripts[:5], strict=False)]
        table.setdefault(group, {})[name] = cell
    result = {
        "dataset": str(root),
        "run": str(run_dir),
        "recogniser": "pocketsphinx en-us, caption grammar",
        "text_encoder": text_encoder is not None,
        "parsed": draws["parsed"] is not None,
        "captions_per_group": limit,
        "images_per_caption": k,
        "conditions": table,
        "seconds": round(time.perf_counter() - began, 2),
    }
    atomic_write_text(run_dir / REPORT_FILE, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def _triple(cell: dict[str, Any]) -> str:
    return "/".join(f"{cell[a]:.2f}" for a in ("colour", "shape", "size"))


def two_stage_lines(result: dict[str, Any]) -> list[str]:
    """The combined table: per voice group, a row per system of the judge's colour/shape/size (and the
    silhouette judge's shape), and a row of the recogniser's colour/shape/size word accuracy and word error rate."""
    lines = [f"{'voices':<10}{'system':<22}" + "".join(f"{name:>24}" for name in CONDITIONS)]
    for group, cells in result["conditions"].items():
        for system in (*SYSTEMS, "asr"):
            label = "ASR words (WER)" if system == "asr" else SYSTEM_NAMES[system]
            row = f"{group:<10}{label:<22}"
            shown = False
            for name in CONDITIONS:
                cell = cells.get(name, {}).get(system)
                text = "-"
                if cell is not None and system == "asr":
                    text = f"{_triple(cell)} ({cell['word_error_rate']:.2f})"
                elif cell is not None:
                    text = _triple(cell) + (f" ({cell['silhouette_shape']:.2f})" if "silhouette_shape" in cell else "")
                shown |= cell is not None
                row += f"{text:>24}"
            if shown:
                lines.append(row)
    lines.append("judge's colour/shape/size of the drawn images (the silhouette judge's shape); ASR words: share of "
                 "captions whose transcript names the right colour/shape/size, and the word error rate")
    return lines
