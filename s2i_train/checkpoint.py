"""The run directory (what training writes and export reads) and its module checkpoints.

```
RUN/
  config.toml                        full training config (written by the training loop)
  judge.safetensors + judge.json     teacher.safetensors + teacher.json
  checker-1.safetensors + checker-1.json ...   (optional extra teachers that check the generator;
                                             runs saved before the rename: critic-1.*, still read)
  encoder.safetensors + encoder.json
  teacher-whitening.safetensors + .json    (the encoder's target space, when encoder.teacher_whiten is on)
  generator.safetensors + generator.json   (the EMA generator)
  text-encoder.safetensors + .json         (optional: the two-stage baseline's text encoder)
  state/training.pt                  optimiser / EMA / RNG / data-order state for --resume
  metrics.jsonl  eval.json  samples/
```

Each module is `<name>.safetensors` (weights only) plus `<name>.json`:
`{"format": 1, "arch": ..., "config": {...dataclass fields...}, "summary": {...}, "parameters": N,
"sha256": <of the .safetensors>}`. The JSON carries everything needed to rebuild the module, so a
checkpoint loads without the training config. No pickle anywhere: safetensors for weights; the resume
state goes through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from s2i_runtime.bundle import sha256_file
from s2i_runtime.errors import InputError
from s2i_runtime.fsutil import atomic_path, atomic_write_text

from .models.configutil import config_to_dict

CHECKPOINT_FORMAT = 1
ENCODER = "encoder"
GENERATOR = "generator"
TEACHER = "teacher"
CHECKER = "checker"  # checker-1, checker-2, ...: extra teachers that only check the generator
JUDGE = "judge"
TEACHER_WHITENING = "teacher-whitening"  # the encoder's target space, when encoder.teacher_whiten is on
TEXT_ENCODER = "text-encoder"  # the two-stage baseline's: caption text into the speech encoder's space
STATE_DIR = "state"
TRAINING_STATE_FILE = "training.pt"

Builder = Callable[[dict[str, Any]], nn.Module]


def weights_path(run_dir: str | Path, name: str) -> Path:
    return Path(run_dir) / f"{name}.safetensors"


def meta_path(run_dir: str | Path, name: str) -> Path:
    return Path(run_dir) / f"{name}.json"


def _files_present(run_dir: str | Path, name: str) -> bool:
    return weights_path(run_dir, name).is_file() and meta_path(run_dir, name).is_file()


# Module names that were renamed: new prefix -> old prefix. Runs saved before a rename keep their files (and
# state/ folders) under the old name; they are read there whenever the new name's are absent. New files are
# always written under the new name.
RENAMED_MODULE_PREFIXES: dict[str, str] = {
    "checker-": "critic-",  # the extra frozen image classifiers (teacher.checker_widths), once "critics"
}


def legacy_module_name(name: str) -> str | None:
    """The name module `name` was saved under before its rename (`checker-2` -> `critic-2`); None if never renamed."""
    for new, old in RENAMED_MODULE_PREFIXES.items():
        if name.startswith(new):
            return old + name[len(new):]
    return None


def current_module_name(name: str) -> str:
    """An old module name as it is called now (`critic-2` -> `checker-2`); any other name unchanged."""
    for new, old in RENAMED_MODULE_PREFIXES.items():
        if name.startswith(old):
            return new + name[len(old):]
    return name


def stored_module_name(run_dir: str | Path, name: str) -> str:
    """The name under which module `name` (new or old spelling) lies in `run_dir`: its current name when its
    files are there, else its old name when those are, else its current name (so errors name the new file)."""
    name = current_module_name(name)
    old = legacy_module_name(name)
    if old is not None and not _files_present(run_dir, name) and _files_present(run_dir, old):
        return old
    return name


def has_module(run_dir: str | Path, name: str) -> bool:
    return _files_present(run_dir, stored_module_name(run_dir, name))


def module_arch(module: nn.Module, config: Any) -> str:
    """A module's architecture name: the config's `arch` field, else the module class's `arch`."""
    arch = getattr(config, "arch", None) or getattr(module, "arch", None)
    if not isinstance(arch, str):
        raise ValueError(f"cannot tell the architecture of {type(module).__name__}: give arch=")
    return arch


def save_module(
    run_dir: str | Path,
    name: str,
    module: nn.Module,
    config: Any,
    summary: dict[str, Any] | None = None,
    arch: str | None = None,
) -> Path:
    """Write `<name>.safetensors` then `<name>.json`, each atomically. Returns the weights path.

    `config` is the module's config dataclass; configs with `resolved()` are stored resolved, so "auto"
    settings never change meaning later."""
    if hasattr(config, "resolved"):
        config = config.resolved()
    arch = arch or module_arch(module, config)
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in module.state_dict().items()}
    target = weights_path(run_dir, name)
    with atomic_path(target) as tmp:
        # One metadata entry: safetensors keeps it in a Rust HashMap, whose order differs from map to map, so
        # two entries made the same weights hash differently from one save to the next.
        save_file(tensors, str(tmp), metadata={"arch": arch})
    meta = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "config": config_to_dict(config),
        "summary": dict(summary or {}),
        "parameters": sum(p.numel() for p in module.parameters()),
        "sha256": sha256_file(target),
    }
    atomic_write_text(meta_path(run_dir, name), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return target


def read_meta(run_dir: str | Path, name: str) -> dict[str, Any]:
    name = stored_module_name(run_dir, name)
    path = meta_path(run_dir, name)
    if not path.is_file():
        raise InputError(f"{run_dir}: no {name} checkpoint ({path.name} missing)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable checkpoint metadata ({exc})") from None
    if not isinstance(meta, dict) or "arch" not in meta or "config" not in meta:
        raise InputError(f"{path}: not a checkpoint description (needs 'arch' and 'config')")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: checkpoint format {meta.get('format')!r} is not supported")
    return meta


def load_state(run_dir: str | Path, name: str, verify: bool = True) -> dict[str, torch.Tensor]:
    """The weights of `<name>.safetensors` (CPU tensors), checked against the hash in `<name>.json`."""
    name = stored_module_name(run_dir, name)
    meta = read_meta(run_dir, name)
    path = weights_path(run_dir, name)
    if not path.is_file():
        raise InputError(f"{run_dir}: no {name} weights ({path.name} missing)")
    if verify and meta.get("sha256") and sha256_file(path) != meta["sha256"]:
        raise InputError(f"{path}: does not match the sha256 in {meta_path(run_dir, name).name}")
    return load_file(str(path), device="cpu")


def load_module(run_dir: str | Path, name: str, builder: Builder | None = None) -> nn.Module:
    """Rebuild `<name>` from its JSON and load its weights; returned in eval mode on the CPU.

    `builder(config_dict) -> nn.Module` overrides the registry of known architectures."""
    name = stored_module_name(run_dir, name)
    meta = read_meta(run_dir, name)
    if builder is None:
        builder = builder_for(meta["arch"])
    module = builder(meta["config"])
    state = load_state(run_dir, name)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{weights_path(run_dir, name)}: weights do not fit {meta['arch']} ({exc})") from None
    return module.eval()


def load_speech_encoder(run_dir: str | Path) -> nn.Module:
    return load_module(run_dir, ENCODER)


def load_generator(run_dir: str | Path) -> nn.Module:
    """The EMA generator saved as `generator`."""
    return load_module(run_dir, GENERATOR)


def load_teacher(run_dir: str | Path) -> nn.Module:
    return load_module(run_dir, TEACHER)


def encoder_teacher_name(run_dir: str | Path) -> str:
    """The module whose features the run's speech encoder was taught to match (`encoder.teacher`)."""
    return current_module_name(str(read_meta(run_dir, ENCODER).get("summary", {}).get("teacher", TEACHER)))


def encoder_image_space(run_dir: str | Path, teacher: nn.Module | None = None) -> nn.Module:
    """The image network whose features the run's speech encoder was taught to match, read through the
    encoder's target whitening when it was trained with one. `teacher`: the run's teacher if already loaded."""
    from .models import WhitenedImageNetwork

    name = encoder_teacher_name(run_dir)
    network = teacher if teacher is not None and name == TEACHER else load_module(run_dir, name)
    if read_meta(run_dir, ENCODER).get("summary", {}).get("teacher_whiten", "none") == "none":
        return network
    return WhitenedImageNetwork(network, load_module(run_dir, TEACHER_WHITENING)).eval()


def checker_name(index: int) -> str:
    """The module name of checker `index` (1, 2, ...)."""
    return f"{CHECKER}-{index}"


def checker_index(name: str) -> int:
    """The index of a checker's module name (`checker-2` -> 2); 0 for any other module."""
    prefix = CHECKER + "-"
    return int(name[len(prefix):]) if name.startswith(prefix) else 0


def load_checkers(run_dir: str | Path, count: int) -> list[nn.Module]:
    """Checkers 1..count; a missing one is an InputError that says how to train it."""
    for index in range(1, count + 1):
        if not has_module(run_dir, checker_name(index)):
            raise InputError(f"{run_dir}: no {checker_name(index)} checkpoint: run `s2i-train checkers --run "
                             f"{run_dir}` first (the config lists {count} teacher.checker_widths)")
    return [load_module(run_dir, checker_name(index)) for index in range(1, count + 1)]


def load_judge(run_dir: str | Path) -> nn.Module:
    return load_module(run_dir, JUDGE)


def load_config(run_dir: str | Path, name: str) -> Any:
    """The config dataclass stored with `<name>` (without loading weights)."""
    meta = read_meta(run_dir, name)
    config_class, _ = _registry()[_known(meta["arch"])]
    return config_class.from_dict(meta["config"])


def builder_for(arch: str) -> Builder:
    config_class, build = _registry()[_known(arch)]
    return lambda config: build(config_class.from_dict(config))


def _known(arch: str) -> str:
    registry = _registry()
    if arch not in registry:
        raise InputError(f"unknown architecture {arch!r} (known: {', '.join(sorted(registry))})")
    return arch


def _registry() -> dict[str, tuple[Any, Callable[[Any], nn.Module]]]:
    from .models import discriminator, generator, image_encoders, speech_encoder, text_encoder, whitening

    entries: dict[str, tuple[Any, Callable[[Any], nn.Module]]] = {
        arch: (speech_encoder.SpeechEncoderConfig, speech_encoder.build_speech_encoder) for arch in speech_encoder.ARCHS
    }
    entries[generator.ARCH] = (generator.GeneratorConfig, generator.build_generator)
    entries[discriminator.ARCH] = (discriminator.DiscriminatorConfig, discriminator.build_discriminator)
    entries[image_encoders.TEACHER_ARCH] = (image_encoders.ShapesTeacherConfig, image_encoders.ShapesTeacher)
    entries[image_encoders.JUDGE_ARCH] = (image_encoders.JudgeConfig, image_encoders.Judge)
    entries[whitening.WHITENING_ARCH] = (whitening.FeatureWhiteningConfig, whitening.FeatureWhitening)
    entries[text_encoder.ARCH] = (text_encoder.TextEncoderConfig, text_encoder.build_text_encoder)
    return entries


def save_training_state(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Resume state (optimiser/EMA/scheduler state dicts, RNG states as tensors, data order as lists or
    tensors, step counters) -> state/training.pt, atomically. Keep to tensors, numbers, strings, lists
    and dicts: it is read back with weights_only=True, which refuses anything else (numpy arrays included)."""
    target = Path(run_dir) / STATE_DIR / TRAINING_STATE_FILE
    with atomic_path(target) as tmp:
        torch.save(state, tmp)
    return target


def load_training_state(run_dir: str | Path) -> dict[str, Any] | None:
    """The saved resume state, or None when there is none."""
    path = Path(run_dir) / STATE_DIR / TRAINING_STATE_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which, do not unpickle further
        raise InputError(f"{path}: unreadable training state ({exc})") from None


def config_summary(config: Any) -> dict[str, Any]:
    """A config as a plain dict (for summaries and logs)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return config_to_dict(config)
    return dict(config)
