"""What `s2i-export onnx` writes into s2i.json (besides the hashes `write_manifest` adds).

Fields: frontend (FrontendSpec dict); model {embedding_dim, z_dim, ca_dim, image_sizes, encoder_input
("logmel", or "waveform" when the front end is in the encoder graph), encoder_arch, generator_arch,
encoder_config, generator_config, parameters}; dataset {name, vocabulary, ...};
training {encoder, generator (each checkpoint's summary), eval (the run's eval.json when small)};
export {opset, exporter, torch, onnx, onnxruntime versions, io names, source_run}.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from s2i_runtime.bundle import (
    ENCODER_OUTPUTS,
    GENERATOR_INPUTS,
    GENERATOR_OUTPUTS,
    LOGMEL_INPUT,
    Bundle,
    encoder_input_names,
    write_manifest,
)
from s2i_runtime.frontend import FrontendSpec

MAX_EVAL_BYTES = 64 * 1024  # eval.json goes into s2i.json only when it is a summary, not a dump
DEFAULT_DATASET = "spoken-shapes"


def add_section(bundle: Bundle, name: str, section: dict[str, Any]) -> dict[str, Any]:
    """Write the bundle's s2i.json again with `section` under `name` (and the hashes of the files now in the
    bundle, so a graph added beside the others is covered); returns the section."""
    write_manifest(bundle.path, {**bundle.manifest, name: section})
    return section


def default_dataset_meta() -> dict[str, Any]:
    """The project's own dataset, with the vocabulary from the one place that defines it."""
    from s2i_train.data.vocabulary import vocabulary_dict

    return {"name": DEFAULT_DATASET, "vocabulary": vocabulary_dict()}


def dataset_section(dataset_meta: dict[str, Any] | None, run_summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """dataset_meta wins; else what the run's checkpoints say; the vocabulary defaults to Spoken-Shapes'."""
    if dataset_meta is not None:
        section = dict(dataset_meta)
    else:
        section = {}
        for summary in run_summaries:
            found = summary.get("dataset")
            if isinstance(found, dict):
                section = {**found, **section}
            elif isinstance(found, str):
                section.setdefault("name", found)
    section.setdefault("name", DEFAULT_DATASET)
    if "vocabulary" not in section and section["name"] == DEFAULT_DATASET:
        section["vocabulary"] = default_dataset_meta()["vocabulary"]
    return section


def training_section(run_dir: Path, encoder_meta: dict[str, Any], generator_meta: dict[str, Any]) -> dict[str, Any]:
    section: dict[str, Any] = {
        "encoder": encoder_meta.get("summary", {}),
        "generator": generator_meta.get("summary", {}),
    }
    eval_path = run_dir / "eval.json"
    if eval_path.is_file() and eval_path.stat().st_size <= MAX_EVAL_BYTES:
        try:
            section["eval"] = json.loads(eval_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass  # a summary is nice to have; a broken one must not stop the export
    return section


def build_manifest(
    *,
    spec: FrontendSpec,
    encoder_input: str = LOGMEL_INPUT,
    encoder_meta: dict[str, Any],
    generator_meta: dict[str, Any],
    image_sizes: tuple[int, ...],
    run_dir: Path,
    dataset_meta: dict[str, Any] | None,
    export_info: dict[str, Any],
) -> dict[str, Any]:
    enc_cfg, gen_cfg = encoder_meta["config"], generator_meta["config"]
    if int(enc_cfg["embedding_dim"]) != int(gen_cfg["embedding_dim"]):
        from s2i_runtime.errors import InputError

        raise InputError(
            f"{run_dir}: encoder embedding_dim {enc_cfg['embedding_dim']} does not match the generator's "
            f"{gen_cfg['embedding_dim']}"
        )
    summaries = [encoder_meta.get("summary", {}), generator_meta.get("summary", {})]
    return {
        "frontend": spec.to_dict(),
        "model": {
            "embedding_dim": int(enc_cfg["embedding_dim"]),
            "z_dim": int(gen_cfg["z_dim"]),
            "ca_dim": int(gen_cfg["ca_dim"]),
            "image_sizes": list(image_sizes),
            "encoder_input": encoder_input,
            "encoder_arch": encoder_meta["arch"],
            "generator_arch": generator_meta["arch"],
            "encoder_config": enc_cfg,
            "generator_config": gen_cfg,
            "parameters": {
                "encoder": encoder_meta.get("parameters"),
                "generator": generator_meta.get("parameters"),
            },
        },
        "dataset": dataset_section(dataset_meta, summaries),
        "training": training_section(run_dir, encoder_meta, generator_meta),
        "export": {
            **export_info,
            "inputs": {"encoder": list(encoder_input_names(encoder_input)), "generator": list(GENERATOR_INPUTS)},
            "outputs": {"encoder": list(ENCODER_OUTPUTS), "generator": list(GENERATOR_OUTPUTS)},
        },
    }
