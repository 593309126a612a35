"""Training configuration: dataclasses that round-trip through TOML.

One `TrainConfig` holds every stage (judge, teacher, encoder, generator, eval); each command reads its own
section. A run directory keeps the full config it was trained with (`RUN/config.toml`), so `--resume` and
evaluation need no other arguments. `--set section.field=value` overrides single fields from the command line.

Names: a training stage's settings are `<Stage>TrainConfig` (JudgeTrainConfig, TeacherTrainConfig,
EncoderTrainConfig, TextEncoderTrainConfig, GeneratorTrainConfig); the network it trains has its own
`<Model>Config` in s2i_train/models (JudgeConfig, ShapesTeacherConfig, SpeechEncoderConfig, TextEncoderConfig,
GeneratorConfig), stored with its checkpoint; the encoder and generator sections nest theirs as `model`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import tomli_w
import tomllib

from s2i_runtime.errors import InputError
from s2i_runtime.fsutil import atomic_write_text

from ..models import GeneratorConfig, SpeechEncoderConfig
from .augment import SpecAugmentConfig
from .precision import check_precision
from .wave_augment import WaveAugmentConfig

CONFIG_FILE = "config.toml"


@dataclasses.dataclass
class DataConfig:
    root: str = ""  # Spoken-Shapes directory (s2i-train data shapes --out DIR); --data overrides it
    num_workers: int = 0


@dataclasses.dataclass
class RunConfig:
    seed: int = 0
    log_every: int = 10  # steps between metrics.jsonl lines
    checkpoint_every: int = 200  # steps between checkpoints (and always at the end)
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default
    # "fp32", or "bf16": forward passes under CPU autocast (train/precision.py), faster where the CPU has AMX or
    # AVX512-BF16 and slower where it has neither; or "auto": bf16 on such a CPU, fp32 elsewhere, saved in the
    # run's config.toml as the one chosen. Evaluation and export stay fp32.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_precision(self.precision)


@dataclasses.dataclass
class JudgeTrainConfig:
    """The evaluation judge: a CNN reading colour/shape/size, trained on real images only.

    It trains on the training classes and on part of each held-out class's real images: it is a measuring
    instrument, never part of the model, and reading unseen combinations reliably is its whole job. The
    rest of the held-out images measure its own accuracy."""

    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    image_size: int = 64
    width: int = 16
    # Share of each test class's images the judge never trains on; its accuracy is reported on them.
    holdout_fraction: float = 0.5


@dataclasses.dataclass
class TeacherTrainConfig:
    """The frozen image teacher (stand-in for Li et al.'s ImageNet GoogLeNet), trained on training classes."""

    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    image_size: int = 64
    width: int = 32  # its feature size is the speech encoder's embedding_dim (encoder.model.embedding_dim)
    # Shape/size/background heads also see colour-swapped or greyed copies (scramble_fraction of each batch), so
    # the teacher cannot read shape off colour and hand that entanglement to the speech encoder.
    decorrelate_colour: bool = True
    scramble_fraction: float = 0.5
    # Checkers: more teachers trained alike, one per width listed, from other seeds (`s2i-train checkers`). They
    # only check the generator: its images must satisfy the teacher and every checker, and a pattern that
    # fools one network rarely fools three that were trained apart. () = the teacher alone.
    checker_widths: tuple[int, ...] = ()


@dataclasses.dataclass
class EncoderTrainConfig:
    objective: str = "teacher_student"  # teacher_student | classifier | sen
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3  # Li et al.
    weight_decay: float = 1e-5  # Li et al.
    lambda_norm: float = 5.0
    lambda_kd: float = 1000.0  # the distillation temperature is losses.KD_TEMPERATURE (2)
    # What the teacher-student objective pulls a caption towards: "image" = the teacher's features of the
    # caption's own image (Li et al.); "spoken_mean" = the mean of the teacher's features over every training
    # image that agrees with what the caption says (colour, shape, size, and the background when named). A
    # caption cannot know its image's position, rotation or unsaid background, so the per-image target asks
    # the student to guess them; the mean is what it can be right about.
    teacher_target: str = "image"
    # Which frozen image network teaches: "teacher" (the run's teacher, Li et al.), a checker ("checker-2"), or
    # "best" = of the teacher and the checkers, the one whose features retrieve the *training* images by class
    # best (cosine mAP), since only training data may decide. The ranking held on unseen pairs, but the students
    # of the three retrieved speech alike (docs/experiments/encoder-targets.md).
    teacher: str = "teacher"
    # Whiten the teacher's features before they become targets: "none" (Li et al.) or "class" = centre them and
    # whiten their within-class scatter, fitted on the training images (shrunk towards its mean variance by
    # teacher_whiten_shrink), kept at the raw features' mean norm; saved as `teacher-whitening`, through which
    # eval and the generator's speech matching read images too. The colour-decorrelated teacher spends most
    # of its variance on position, rotation and shape, little on colour, and the student copies that layout.
    # Whitening raises each image's pose to the size of the class directions, so it goes with
    # teacher_target = "spoken_mean" (shapes64.toml sets both; docs/experiments/encoder-targets.md measures them).
    teacher_whiten: str = "none"
    teacher_whiten_shrink: float = 0.8
    # Attribute heads on the speech embedding (linear colour/shape/size classifiers, cross-entropy on the
    # caption's annotated attributes, added to any objective). The teacher-student target is one point per
    # training class, so the encoder can learn 48 whole-class patterns and misread an unseen colour-shape
    # pair; naming each attribute separately pushes it to encode the words independently. 0 = off.
    attribute_weight: float = 0.0
    # Weight of a background head on the embedding with three answers: dark, light, or not said. The
    # teacher-student target carries the image's background even where the caption leaves it open, so
    # without it the embedding holds the background word weakly and guesses the unsaid one from the voice.
    # 0 = off.
    background_weight: float = 0.0
    # Weight of a word-recognition term on the speech encoder's steps before pooling: a linear read-out per step
    # must spell the caption's words in order (CTC against its transcript; training only, the read-out is not
    # saved). The attribute heads read the pooled embedding, which can learn a colour-shape phrase as a unit; the
    # steps under a colour word must say that word whatever follows it. Needs every training caption's text;
    # text encoders ignore it. 0 = off.
    word_weight: float = 0.0
    # Train the colour and shape heads with the training captions' co-occurrence prior added to their logits
    # (log p(colour | shape), log p(shape | colour); train/common.py says why). Needs attribute_weight > 0.
    attribute_cooccurrence_prior: bool = False
    # Keep an exponential moving average of the encoder's weights (this decay per step, warmed up as the
    # generator's) and save the average instead of the last step's weights. Recorded-voice scores move by more
    # between nearby checkpoints of one run than most changes this config can make; the average is one
    # checkpoint smoothed over ~1 / (1 - decay) steps. 0 = off.
    ema_decay: float = 0.0
    augment: SpecAugmentConfig = dataclasses.field(default_factory=SpecAugmentConfig)
    # Augmentation of the sound itself (voice, speed, room, noise, telephone, gain, silence), drawn afresh every step;
    # when on, each step computes its features from the augmented waves instead of the cached features.
    wave_augment: WaveAugmentConfig = dataclasses.field(default_factory=WaveAugmentConfig)
    model: SpeechEncoderConfig = dataclasses.field(default_factory=SpeechEncoderConfig)


@dataclasses.dataclass
class TextEncoderTrainConfig:
    """The two-stage baseline's text encoder (`s2i-train text-encoder`). It trains exactly as the speech encoder
    does (the `encoder` section's objective, teacher, targets, heads, steps, batch and optimiser), so the two
    differ only in what they hear; these are the sizes of its own layers. Its embedding size and normalisation
    are the speech encoder's."""

    word_dim: int = 64
    hidden: int = 128
    attention_dim: int = 64
    # Weight of one term the speech encoder does not have: the run's generator's own frozen attribute read-outs
    # must read the caption's colour, shape and size off the text embedding (cross-entropy; needs the generator).
    # The read-outs were fitted to the speech embeddings, and the same teacher targets leave the text embedding
    # free in directions they rely on (docs/cascade.md). 0 = trained exactly as the speech encoder.
    readout_weight: float = 0.0


@dataclasses.dataclass
class GeneratorTrainConfig:
    steps: int = 2000
    batch_size: int = 32
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    kl_weight: float = 2.0
    ema_decay: float = 0.999
    # Training batches on which the saved EMA's BatchNorm statistics are measured again, since the running
    # statistics it copies are the live G's, gathered on other weights. 0 = keep them as copied.
    ema_batchnorm_batches: int = 100
    ndf: int = 32
    # Semantic-consistency switches: without them the generated shape stays near chance, because D's conditional
    # logit learns to check colour, which tells most mismatched images apart, and hardly ever shape.
    d_attribute_heads: bool = True
    d_attribute_weight: float = 1.0
    teacher_consistency: bool = True
    teacher_consistency_weight: float = 1.0
    # The teacher reads a randomly shifted (up to this fraction of the side) and mirrored copy of each
    # generated image, so G cannot satisfy it with patterns that only work in place. 0 = reads it as is.
    teacher_jitter: float = 0.0
    # Each step, the generated rows are dealt at random among the frozen image classifiers (the teacher and its
    # checkers), so each sees a share of the batch instead of all of it: the same loss in expectation for a
    # fraction of their cost, time a fixed budget can spend on more steps. false = each classifier reads every row.
    teacher_split_rows: bool = False
    # Mode seeking (MSGAN, Mao et al. 2019): pairs in the batch share a caption and differ in z, and G is
    # asked to keep their images apart, so one caption does not collapse to one image. 0 = off.
    mode_seeking_weight: float = 0.0
    # The attribute code leaves what a caption does not say (the background, in half the templates) at uniform
    # probabilities (with generator.model.sampled_code_blocks each image then draws one). false = read-outs fitted
    # to the image's labels, which learn to guess an unsaid background from the voice. (Once `open_unspoken`.)
    unsaid_attributes_uniform: bool = False
    # Fit the conditioning's colour and shape read-outs with the training captions' co-occurrence prior added to
    # their logits (train/common.py says why); the served read-outs use their own logits alone.
    readout_cooccurrence_prior: bool = False
    # Novel codes: per step, batch_size * novel_code_fraction extra samples conditioned on attribute
    # combinations drawn uniformly from the vocabulary (most never spoken in the data), trained only by the
    # terms that need no matching real image: D's unconditional logit, D's attribute heads and the teacher.
    # Needs an attribute code and condition_on_embedding = false. 0 = off.
    novel_code_fraction: float = 0.0
    # Terms from the papers, kept so their ablation can be rerun; each 0 = off:
    # Li et al.'s class-aware loss: D's pooled features of each generated image must lie nearest (scaled cosine,
    # softmax over the batch) the real images of its caption's class.
    class_aware_weight: float = 0.0
    # AttnGAN's DAMSM-style matching on the teacher's features of the generated images: each must pick out the
    # utterance that conditioned it among the batch's (S2IGAN's matching loss, both directions).
    speech_matching_weight: float = 0.0
    # S2IGAN's relation supervisor: an MLP over pairs of teacher features learns same / similar / fake /
    # different (a real image with itself, with another of its class, with its caption's generated image, with
    # another class); G is asked to make its image read as "similar". S2IGAN used 1.
    relation_weight: float = 0.0
    sample_every: int = 0  # extra sample grids in RUN/samples/ every N steps; 0 = at checkpoints only
    model: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)


@dataclasses.dataclass
class EvalConfig:
    images_per_caption: int = 4  # z samples per test utterance (diversity, grid)
    max_captions: int = 0  # 0 = every test utterance
    batch_size: int = 64
    grid_rows: int = 8
    # The table by voice and condition: test captions per (voice group, condition) cell (0 = all), samples each.
    condition_captions: int = 480
    condition_images_per_caption: int = 2
    # Fit the linear probe of the speech embeddings with the training captions' co-occurrence prior as a logit
    # offset on colour and shape, as generator.readout_cooccurrence_prior fits the conditioning's read-outs.
    # false: the plain probe the experiment pages report.
    probe_cooccurrence_prior: bool = False


@dataclasses.dataclass
class TrainConfig:
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    judge: JudgeTrainConfig = dataclasses.field(default_factory=JudgeTrainConfig)
    teacher: TeacherTrainConfig = dataclasses.field(default_factory=TeacherTrainConfig)
    encoder: EncoderTrainConfig = dataclasses.field(default_factory=EncoderTrainConfig)
    text_encoder: TextEncoderTrainConfig = dataclasses.field(default_factory=TextEncoderTrainConfig)
    generator: GeneratorTrainConfig = dataclasses.field(default_factory=GeneratorTrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


# ---------------------------------------------------------------- dataclass <-> plain data


def to_plain(obj: Any) -> Any:
    """A dataclass tree as TOML-ready dicts, lists and scalars (tuples become lists, None is dropped)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for field in dataclasses.fields(obj):
            value = to_plain(getattr(obj, field.name))
            if value is not None:
                out[field.name] = value
        return out
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    return obj


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(tp: Any, value: Any, where: str) -> Any:
    tp = _strip_optional(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise InputError(f"{where}: expected a table, got {value!r}")
        return from_plain(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise InputError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
        inner = args[0] if args else Any
        items = [_coerce(inner, v, where) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise InputError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_plain(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass `cls` from plain data; unknown keys are errors (a typo must not pass silently)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(unknown)}")
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from None


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.field=value` overrides (values in TOML syntax; bare words are strings)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {item!r}: expected KEY=VALUE, e.g. generator.steps=100")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"--set {item!r}: {part} is not a table")
        node[parts[-1]] = _parse_value(raw.strip())
    return data


# ---------------------------------------------------------------- files


def config_to_toml(config: TrainConfig) -> str:
    return tomli_w.dumps(to_plain(config))


def config_from_toml(text: str, where: str = "config") -> TrainConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{where}: not valid TOML ({exc})") from None
    return from_plain(TrainConfig, data, where)


# Fields that were experiment switches, measured worse and removed. Run directories saved before their removal still
# list them in config.toml; a file's copies are dropped so those runs stay readable, while `--set` still refuses them.
REMOVED_FIELDS: dict[str, tuple[str, ...]] = {
    "teacher": ("colour_free_scrambled_only",),
    "encoder": ("lr_decay_every",),
    "generator": ("pair_weight", "teacher_blur", "wrong_same_colour_fraction", "background_weight"),
}


def drop_removed_fields(data: dict[str, Any]) -> dict[str, Any]:
    """`data` (a parsed config file) without the REMOVED_FIELDS, whatever their values."""
    for section, names in REMOVED_FIELDS.items():
        table = data.get(section)
        if isinstance(table, dict):
            for name in names:
                table.pop(name, None)
    return data


# Fields renamed for clearer names: section (dotted for nested tables) -> {old: new}. Run directories saved
# before a rename still list the old key in config.toml; a file's old keys are read as the new ones, so those
# runs stay readable, while `--set` with an old name is refused with a message naming the new one.
RENAMED_FIELDS: dict[str, dict[str, str]] = {
    "teacher": {"critic_widths": "checker_widths"},  # the extra frozen image classifiers, once "critics"
    "generator": {"open_unspoken": "unsaid_attributes_uniform"},
    "generator.model": {"drawn_blocks": "sampled_code_blocks"},
}


def _table(data: dict[str, Any], section: str) -> dict[str, Any] | None:
    node: Any = data
    for part in section.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def rename_old_fields(data: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """`data` (a parsed config file) with the RENAMED_FIELDS' old keys under their new names, and an
    `encoder.teacher` that names a module by its old name ("critic-2") naming it by its new one ("checker-2").
    A table that gives both the old and the new key is an error."""
    from ..checkpoint import current_module_name

    for section, names in RENAMED_FIELDS.items():
        table = _table(data, section)
        if table is None:
            continue
        for old, new in names.items():
            if old in table:
                if new in table:
                    raise InputError(f"{where}: [{section}] gives both {old} and {new} ({old} is the old name of "
                                     f"{new}); keep {new}")
                table[new] = table.pop(old)
    encoder = _table(data, "encoder")
    if encoder is not None and isinstance(encoder.get("teacher"), str):
        encoder["teacher"] = current_module_name(encoder["teacher"])
    return data


def _refuse_old_names(overrides: list[str]) -> None:
    for item in overrides:
        key = item.partition("=")[0].strip()
        section, _, name = key.rpartition(".")
        new = RENAMED_FIELDS.get(section, {}).get(name)
        if new is not None:
            raise InputError(f"--set {item!r}: {key} has been renamed; use {section}.{new}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """The defaults, updated by the TOML file at `path` (if any, less its REMOVED_FIELDS, its RENAMED_FIELDS under
    their new names), then by `overrides`."""
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        path = Path(path)
        where = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InputError(f"{path}: cannot read config ({exc})") from None
        drop_removed_fields(data)
        rename_old_fields(data, where)
    _refuse_old_names(list(overrides or []))
    apply_overrides(data, list(overrides or []))
    return from_plain(TrainConfig, data, where)


def save_config(run_dir: str | Path, config: TrainConfig) -> Path:
    path = Path(run_dir) / CONFIG_FILE
    atomic_write_text(path, config_to_toml(config))
    return path


def load_run_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{run_dir}: no {CONFIG_FILE} (not a training run directory)")
    return load_config(path)


def builtin_config_path(name: str) -> Path:
    """A config shipped in s2i_train/configs/ (e.g. "shapes64")."""
    path = Path(__file__).resolve().parent.parent / "configs" / f"{name}.toml"
    if not path.is_file():
        raise InputError(f"no built-in config named {name!r}")
    return path
