"""Training state on disk without pickle: tensors in safetensors, everything else in JSON.

A state is any tree of dicts, lists, tuples, tensors, numpy arrays and JSON scalars (optimiser state dicts,
RNG states, EMA shadows, counters). Each checkpoint is a fresh folder `state/step-XXXXXXXX/`; the pointer
`state/latest.json` is replaced atomically only after the folder is complete, so a crash mid-save leaves
the previous checkpoint in force.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from s2i_runtime.errors import InputError
from s2i_runtime.fsutil import atomic_path, atomic_write_text

STATE_DIR = "state"
LATEST = "latest.json"
_TENSORS = "tensors.safetensors"
_TREE = "tree.json"


def flatten_tree(tree: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a tree into a JSON-able skeleton and a flat dict of tensors it refers to by key."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = node.detach().cpu().contiguous().clone()
            return {"__tensor__": key}
        if isinstance(node, np.ndarray):
            key = f"t{len(tensors)}"
            tensors[key] = torch.from_numpy(np.ascontiguousarray(node).copy())
            return {"__ndarray__": key}
        if isinstance(node, dict):
            return {"__dict__": [[walk(k), walk(v)] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {"__tuple__": [walk(v) for v in node]}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, (np.integer, np.floating)):
            return node.item()
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot store {type(node).__name__} in a training state")

    return walk(tree), tensors


def unflatten_tree(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "__tensor__" in node:
                return tensors[node["__tensor__"]]
            if "__ndarray__" in node:
                return tensors[node["__ndarray__"]].numpy()
            if "__tuple__" in node:
                return tuple(walk(v) for v in node["__tuple__"])
            if "__dict__" in node:
                return {walk(k): walk(v) for k, v in node["__dict__"]}
            raise ValueError(f"unexpected node in state tree: {sorted(node)}")
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(skeleton)


def save_state(run_dir: str | Path, stage: str, step: int, tree: Any, keep: int = 1) -> Path:
    """Write `tree` as checkpoint `step` of `stage`; keep the newest `keep` checkpoints of that stage."""
    root = Path(run_dir) / STATE_DIR / stage
    folder = root / f"step-{step:08d}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    skeleton, tensors = flatten_tree(tree)
    with atomic_path(folder / _TENSORS) as tmp:
        save_file(tensors, str(tmp))
    atomic_write_text(folder / _TREE, json.dumps(skeleton))
    atomic_write_text(root / LATEST, json.dumps({"step": step, "folder": folder.name}) + "\n")
    older = sorted(p for p in root.glob("step-*") if p.is_dir() and p.name != folder.name)
    for stale in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return folder


def stage_state_dirs(run_dir: str | Path, stage: str) -> list[Path]:
    """Where `stage`'s checkpoints may lie: `state/<stage>/`, then, for a renamed module (checkpoint.
    RENAMED_MODULE_PREFIXES), the folder of its old name, which runs saved before the rename have."""
    from ..checkpoint import legacy_module_name

    old = legacy_module_name(stage)
    return [Path(run_dir) / STATE_DIR / name for name in (stage, old) if name is not None]


def stage_state_dir(run_dir: str | Path, stage: str) -> Path:
    """The folder `stage` resumes from: the first of `stage_state_dirs` with a checkpoint pointer, else the
    current name's (where new checkpoints are written)."""
    dirs = stage_state_dirs(run_dir, stage)
    return next((d for d in dirs if (d / LATEST).is_file()), dirs[0])


def latest_step(run_dir: str | Path, stage: str) -> int | None:
    pointer = stage_state_dir(run_dir, stage) / LATEST
    if not pointer.is_file():
        return None
    return int(json.loads(pointer.read_text())["step"])


def load_state(run_dir: str | Path, stage: str) -> tuple[int, Any]:
    """The newest complete checkpoint of `stage`: (step, tree)."""
    root = stage_state_dir(run_dir, stage)
    pointer = root / LATEST
    if not pointer.is_file():
        raise InputError(f"{run_dir}: no saved {stage} state to resume from")
    info = json.loads(pointer.read_text())
    folder = root / info["folder"]
    try:
        tensors = load_file(str(folder / _TENSORS))
        skeleton = json.loads((folder / _TREE).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder}: unreadable training state ({exc})") from None
    return int(info["step"]), unflatten_tree(skeleton, tensors)


def rng_state() -> dict[str, Any]:
    """Every global random stream a training step may draw from."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)
