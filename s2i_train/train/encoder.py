"""Train the speech encoder on the training captions.

Objectives (config `encoder.objective`):
- "teacher_student" (Li et al., default): match the frozen image teacher's features of the caption's
  image — JEL + λ_norm·L1 + λ_KD·KD.
- "classifier" (Li et al.'s ablation baseline): a linear class head on the embedding, cross-entropy.
- "sen" (S2IGAN's speech-embedding network): matching loss against the image side plus a shared
  classifier on both embeddings (distinctive loss). The image side is the frozen teacher's features.
The teacher's features of every training image are computed once: it is frozen.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from s2i_runtime.batching import pad_features
from s2i_runtime.errors import InputError
from s2i_runtime.frontend import FrontendSpec, logmel

from .. import losses
from ..checkpoint import (
    CHECKER,
    ENCODER,
    TEACHER,
    TEACHER_WHITENING,
    checker_index,
    checker_name,
    load_module,
    save_module,
)
from ..data import vocabulary
from ..metrics import retrieval_scores
from ..models import FeatureWhitening, build_speech_encoder
from ..models.ema import EMA
from ..models.speech_encoder import SpeechEncoder
from . import distributed
from .augment import spec_augment
from .banks import ATTRIBUTES, load_caption_bank, load_image_bank, load_wave_bank
from .common import (
    ATTRIBUTE_CLASSES,
    SPOKEN_ATTRIBUTES,
    attribute_loss,
    cooccurrence_tables,
    prior_offsets,
    train_class_targets,
)
from .config import TrainConfig
from .loop import StepSampler
from .precision import backward
from .transcripts import transcripts
from .wave_augment import augment as augment_wave

OBJECTIVES = ("teacher_student", "classifier", "sen")
TEACHER_TARGETS = ("image", "spoken_mean")
TEACHER_WHITENINGS = ("none", "class")
# What the wave bank holds and the model reads: the bundle's front end.
FRONTEND_SPEC = FrontendSpec()
# CTC spells a caption's words one per step at least: a step must be well under a spoken word's length.
MAX_WORD_STEP_MS = 100


@torch.no_grad()
def teacher_features(teacher: nn.Module, images, size: int, batch_size: int = 256) -> torch.Tensor:
    """The frozen teacher's features of every image in an ImageBank, (N, D)."""
    teacher.eval()
    out = []
    for start in range(0, len(images), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(images)))
        out.append(teacher(images.images(rows, size)).features)
    return torch.cat(out)


def class_retrieval_map(features: torch.Tensor, class_ids: torch.Tensor) -> float:
    """How well features retrieve the other images of their class (cosine, mAP, each image left out)."""
    x, labels = features.numpy(), class_ids.numpy()
    return retrieval_scores(x, labels, x, labels, exclude_self=True)["mAP"]


def teacher_candidates(choice: str, checkers: int) -> list[str]:
    """The modules `encoder.teacher = choice` may pick from, given the number of configured checkers."""
    if choice == "best":
        return [TEACHER] + [checker_name(i) for i in range(1, checkers + 1)]
    if choice == TEACHER or checker_index(choice) > 0:
        return [choice]
    raise InputError(f"encoder.teacher must be 'teacher', 'best' or '{CHECKER}-N', got {choice!r}")


def choose_teacher(run_dir: Path, candidates: list[str], images, size: int
                   ) -> tuple[str, torch.Tensor, dict[str, float]]:
    """The teaching module, its features of every training image, and (when there is a choice) each
    candidate's class-retrieval mAP on those images: only training data decides."""
    features = {name: teacher_features(load_module(run_dir, name), images, size) for name in candidates}
    if len(candidates) == 1:
        return candidates[0], features[candidates[0]], {}
    scores = {name: class_retrieval_map(f, images.class_ids) for name, f in features.items()}
    best = max(candidates, key=lambda name: scores[name])
    return best, features[best], scores


def spoken_mean_targets(features: torch.Tensor, image_attributes: torch.Tensor, captions) -> torch.Tensor:
    """Per caption, the mean teacher feature of the training images that agree with every attribute the
    caption names (N_captions, D). Its own image always agrees, so no group is empty."""
    said = captions.spoken
    # unsaid attributes become -1 so captions that leave the same things open share a key
    caption_keys = torch.where(said, captions.attributes, torch.full_like(captions.attributes, -1))
    keys, group = torch.unique(caption_keys, dim=0, return_inverse=True)
    means = torch.empty(len(keys), features.shape[1])
    for k, key in enumerate(keys):
        named = key >= 0
        agree = (image_attributes[:, named] == key[named]).all(dim=1)
        means[k] = features[agree].mean(dim=0)
    return means[group]


class Encoded(NamedTuple):
    embedding: torch.Tensor
    speech_logits: torch.Tensor | None  # the class head's, classifier and SEN objectives
    image_logits: torch.Tensor | None
    attributes: dict[str, torch.Tensor] | None
    words: tuple[torch.Tensor, torch.Tensor] | None  # per-step word logits (B, T', classes), valid steps (B, T', 1)


class EncoderWithHead(nn.Module):
    """The speech encoder and the heads on its embedding: for the classifier and SEN objectives a class head
    shared by the speech and image embeddings, optionally linear attribute heads, and optionally a word read-out
    on the encoder's steps. One module, so one forward and one backward per step (what DDP expects)."""

    def __init__(self, encoder: nn.Module, head: nn.Module | None, attribute_heads: nn.ModuleDict | None = None,
                 word_head: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.attribute_heads = attribute_heads
        self.word_head = word_head

    def forward(self, mel, lengths, image_features=None) -> Encoded:
        words = None
        if self.word_head is None:
            embedding = self.encoder(mel, lengths)
        else:
            steps, valid = self.encoder.steps(mel, lengths)
            embedding = self.encoder.pool(steps, valid)
            words = (self.word_head(steps), valid)
        attributes = None
        if self.attribute_heads is not None:
            attributes = {name: head(embedding) for name, head in self.attribute_heads.items()}
        if self.head is None:
            return Encoded(embedding, None, None, attributes, words)
        image_logits = None if image_features is None else self.head(image_features)
        return Encoded(embedding, self.head(embedding), image_logits, attributes, words)


class EncoderStage:
    name = ENCODER
    _augment_pool: ThreadPoolExecutor | None = None

    def __init__(self, config: TrainConfig, run_dir: Path):
        self.config = config
        self.cfg = cfg = config.encoder
        for field, allowed in (("objective", OBJECTIVES), ("teacher_target", TEACHER_TARGETS),
                               ("teacher_whiten", TEACHER_WHITENINGS)):
            value = getattr(cfg, field)
            if value not in allowed:
                raise InputError(f"encoder.{field} must be one of {', '.join(allowed)}, got {value!r}")
        if not 0.0 <= cfg.ema_decay < 1.0:
            raise InputError(f"encoder.ema_decay must be in [0, 1), got {cfg.ema_decay}")
        self.run_dir = run_dir
        root = config.data.root
        size = config.teacher.image_size
        images = load_image_bank(root, "train", (size,), run_dir)
        self.targets, self.whitening = None, None
        self.teacher_name, self.teacher_scores = None, {}
        if cfg.objective in ("teacher_student", "sen"):
            self.teacher_name, self.targets, self.teacher_scores = self._teacher(images, size)
            self.whitening = self._whitening(images)
            if self.whitening is not None:
                self.targets = self.whitening(self.targets)
        captions = load_caption_bank(root, "train", images, run_dir=run_dir)
        # Only the spoken-mean target has an answer for a caption that leaves the shape open (every shape of its
        # colour and size); the image target and the class heads would name its image's shape, so they train on
        # the captions that name everything.
        self.caption_rows = None
        if not (cfg.objective == "teacher_student" and cfg.teacher_target == "spoken_mean"):
            full = captions.fully_said_rows()
            if len(full) < len(captions):
                self.caption_rows, captions = full, captions.subset(full)
        self.captions = captions
        self._load_inputs()
        self.class_targets = train_class_targets(self.captions.class_ids)
        # Indexed by caption from here on, so a step gathers its targets the same way whichever target is chosen.
        if self.targets is not None:
            if cfg.teacher_target == "spoken_mean":
                self.targets = spoken_mean_targets(self.targets, images.attributes, self.captions)
            else:
                self.targets = self.targets[self.captions.image_index]
        torch.manual_seed(config.run.seed)
        self.model_config, self.model = self._build_model()
        dim = self.model.config.embedding_dim
        if self.targets is not None and self.targets.shape[1] != dim:
            raise ValueError(f"teacher features are {self.targets.shape[1]}-d, the encoder's embedding {dim}-d")
        self.head = None
        if cfg.objective in ("classifier", "sen"):
            self.head = nn.Linear(dim, len(vocabulary.TRAIN_CLASSES))
        heads = {name: ATTRIBUTE_CLASSES[name] for name in SPOKEN_ATTRIBUTES} if cfg.attribute_weight > 0 else {}
        if cfg.background_weight > 0:
            heads["background"] = ATTRIBUTE_CLASSES["background"] + 1  # the last class is "not said"
        attribute_heads = nn.ModuleDict({name: nn.Linear(dim, n) for name, n in heads.items()}) if heads else None
        self.prior_tables = {}
        if cfg.attribute_cooccurrence_prior:
            if cfg.attribute_weight <= 0:
                raise InputError("encoder.attribute_cooccurrence_prior adjusts the attribute heads; it needs "
                                 "encoder.attribute_weight > 0")
            self.prior_tables = cooccurrence_tables(self.captions.attributes, self.captions.spoken)
        self.transcripts, word_head = None, None
        if cfg.word_weight > 0 and isinstance(self.model, SpeechEncoder):
            step_ms = 1000 * self.model.config.time_reduction * FRONTEND_SPEC.hop_length / FRONTEND_SPEC.sample_rate
            if step_ms > MAX_WORD_STEP_MS:
                raise InputError(f"encoder.word_weight needs encoder steps shorter than a word; "
                                 f"{self.model.config.arch}'s are {step_ms:.0f} ms (use arch = 's2igan' or weight 0)")
            self.transcripts = transcripts(self.captions.records, str(root))
            word_head = nn.Linear(2 * self.model.config.hidden, self.transcripts.num_classes)
        self.trainable = EncoderWithHead(self.model, self.head, attribute_heads, word_head)
        distributed.broadcast_module(self.trainable)
        self.trained = distributed.wrap(self.trainable)
        self.opt = torch.optim.Adam(self.trainable.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.ema = EMA(self.model, decay=cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.sampler = StepSampler(len(self.captions), cfg.batch_size, config.run.seed,
                                   distributed.rank(), distributed.world_size())

    def _teacher(self, images, size: int) -> tuple[str, torch.Tensor, dict[str, float]]:
        candidates = teacher_candidates(self.cfg.teacher, len(self.config.teacher.checker_widths))
        return choose_teacher(self.run_dir, candidates, images, size)

    def _whitening(self, images) -> FeatureWhitening | None:
        if self.cfg.teacher_whiten != "class":
            return None
        return FeatureWhitening.fit(self.targets, images.class_ids, self.cfg.teacher_whiten_shrink)

    def _load_inputs(self) -> None:
        self.waves = (load_wave_bank(self.config.data.root, "train", run_dir=self.run_dir)
                      if self.cfg.wave_augment.enabled else None)
        if self.waves is not None and self.caption_rows is not None:
            self.waves = self.waves.subset(self.caption_rows)

    def _build_model(self) -> tuple[Any, nn.Module]:
        return self.cfg.model, build_speech_encoder(self.cfg.model)

    def _inputs(self, idx: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's input for the step's captions: their (augmented) features."""
        mel, lengths = self.augmented_batch(idx, step) if self.waves is not None else self.captions.batch(idx)
        if self.cfg.augment.enabled:
            masks = torch.Generator().manual_seed((self.config.run.seed * 1_000_003 + step) * 64 + distributed.rank())
            mel = spec_augment(mel, lengths, self.cfg.augment, self.captions.pad_value, masks)
        return mel, lengths

    def _extra_loss(self, student: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]] | None:
        """A further term on the embeddings, for stages built on this one; none for the speech encoder."""
        return None

    def train_step(self, step: int) -> dict[str, float]:
        idx = torch.tensor(self.sampler.indices(step))
        inputs, lengths = self._inputs(idx, step)
        classes = self.captions.class_ids[idx]
        self.trainable.train()
        target = self.targets[idx] if self.targets is not None else None
        student, speech_logits, image_logits, attribute_logits, word_logits = self.trained(inputs, lengths, target)
        figures: dict[str, float] = {}
        if self.cfg.objective == "teacher_student":
            loss, parts = losses.teacher_student_loss(
                student, target, classes, l1_weight=self.cfg.lambda_norm, kd_weight=self.cfg.lambda_kd
            )
            figures.update(parts)
        elif self.cfg.objective == "classifier":
            loss = losses.classifier_loss(speech_logits, self.class_targets[idx])
            figures["acc"] = float((speech_logits.argmax(1) == self.class_targets[idx]).float().mean())
        else:
            # losses.s2igan_speech_loss, spelled out: the shared head runs inside the (DDP) module.
            matching = losses.matching_loss(student, target, classes)
            distinctive = losses.distinctive_loss(speech_logits, image_logits, self.class_targets[idx])
            loss = matching + distinctive
            figures.update(matching=matching.item(), distinctive=distinctive.item())
        if attribute_logits is not None:
            labels = self.captions.attributes[idx]
            if self.cfg.attribute_weight > 0:
                named = self.captions.named_attributes(idx)
                adjusted = dict(attribute_logits)
                for name, offset in prior_offsets(self.prior_tables, named).items():
                    adjusted[name] = adjusted[name] + offset.to(adjusted[name].dtype)
                spoken, accs = attribute_loss(adjusted, named, SPOKEN_ATTRIBUTES)
                loss = loss + self.cfg.attribute_weight * spoken
                figures.update(attributes=spoken.item(), **accs)
            if self.cfg.background_weight > 0:
                column = ATTRIBUTES.index("background")
                said = labels.clone()
                said[~self.captions.spoken[idx, column], column] = ATTRIBUTE_CLASSES["background"]
                background, accs = attribute_loss(attribute_logits, said, ("background",))
                loss = loss + self.cfg.background_weight * background
                figures.update(background=background.item(), **accs)
        if word_logits is not None:
            words = losses.word_ctc_loss(*word_logits, *self.transcripts.batch(idx))
            loss = loss + self.cfg.word_weight * words
            figures["words"] = words.item()
        extra = self._extra_loss(student, idx)
        if extra is not None:
            loss = loss + extra[0]
            figures.update(extra[1])
        self.opt.zero_grad(set_to_none=True)
        backward(loss)
        self.opt.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return {"loss": loss.item(), **{k: float(v) for k, v in figures.items()}}

    def augmented_wave(self, caption: int, step: int, row: int) -> np.ndarray:
        """Caption `caption`'s waveform as augmented for row `row` of step `step`: every draw depends only on (seed,
        step, rank, row), so a resumed run hears the same sounds."""
        bank = self.waves
        rng = np.random.default_rng([self.config.run.seed, step, distributed.rank(), 17, row])
        return augment_wave(bank.wave(caption), self.cfg.wave_augment, rng,
                            lambda r: bank.wave(int(r.integers(len(bank)))))

    def augmented_batch(self, idx: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of the step's captions after waveform augmentation (`augmented_wave`)."""

        def features(row: int, caption: int) -> np.ndarray:
            # The runtime's own front end, one clip per thread: about half the cost of the torch one on the padded
            # batch, and the features are exactly the ones a served model is given.
            return logmel(self.augmented_wave(caption, step, row), FRONTEND_SPEC, threads=1)

        if self._augment_pool is None:
            # The model's threads wait while the batch is augmented; numpy and soxr release the GIL, so the
            # captions are augmented on as many threads, each with its own generator (the same result in any order).
            self._augment_pool = ThreadPoolExecutor(max(1, torch.get_num_threads()), "wave-augment")
        mels = list(self._augment_pool.map(features, range(len(idx)), idx.tolist()))
        width = max(max(mel.shape[1] for mel in mels), FRONTEND_SPEC.min_frames)
        mel, lengths = pad_features(mels, width, FRONTEND_SPEC.pad_value)
        return torch.from_numpy(mel), torch.from_numpy(lengths)

    def synced_modules(self) -> list:
        """Modules every rank must hold identically (checked at the end of a multi-process run)."""
        return [self.trainable]

    def state(self) -> dict[str, Any]:
        tree = {"model": self.trainable.state_dict(), "opt": self.opt.state_dict()}
        if self.ema is not None:
            tree["ema"] = self.ema.state_dict()
        return tree

    def load_state(self, tree: dict[str, Any]) -> None:
        self.trainable.load_state_dict(tree["model"])
        self.opt.load_state_dict(tree["opt"])
        if self.ema is not None:
            if "ema" not in tree:
                raise InputError("the checkpoint has no weight average; resume with encoder.ema_decay = 0")
            self.ema.load_state_dict(tree["ema"])

    def saved_model(self) -> nn.Module:
        """The weights the stage saves: the moving average when it keeps one, else the last step's."""
        return (self.ema.module if self.ema is not None else self.model).eval()

    def summary(self, step: int) -> dict[str, Any]:
        summary = {"step": step, "objective": self.cfg.objective, "captions": len(self.captions)}
        if self.caption_rows is not None:
            summary["captions_note"] = "only the captions that name their shape: this target names one"
        if self.teacher_name is not None:
            summary["teacher"] = self.teacher_name
        if self.teacher_scores:
            summary["teacher_class_map"] = {name: round(v, 4) for name, v in self.teacher_scores.items()}
        if self.whitening is not None:
            summary["teacher_whiten"] = self.cfg.teacher_whiten
        if self.ema is not None:
            summary["ema_decay"] = self.cfg.ema_decay
        return summary

    def save_outputs(self, step: int) -> None:
        summary = self.summary(step)
        if self.whitening is not None:
            # Written before the encoder, whose summary is what says the targets were whitened.
            save_module(self.run_dir, TEACHER_WHITENING, self.whitening, self.whitening.config,
                        {"fitted_on": self.teacher_name})
        save_module(self.run_dir, ENCODER, self.saved_model(), self.model_config, summary)
