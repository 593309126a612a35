"""Pieces the stages share: attribute vocabularies, label plumbing, attribute losses with accuracies."""

from __future__ import annotations

from typing import Any

import torch

from s2i_runtime.errors import InputError

from .. import losses
from ..data import vocabulary
from . import distributed
from .banks import ATTRIBUTES
from .loop import StepSampler

ATTRIBUTE_CLASSES = {
    "colour": len(vocabulary.COLOURS),
    "shape": len(vocabulary.SHAPES),
    "size": len(vocabulary.SIZES),
    "background": len(vocabulary.BACKGROUNDS),
}
# What a caption always names (some templates leave the background out).
SPOKEN_ATTRIBUTES = ("colour", "shape", "size")

# Training classes as 0..47 for class heads that never see the held-out 16.
TRAIN_CLASS_INDEX = {c.class_id: i for i, c in enumerate(vocabulary.TRAIN_CLASSES)}


def train_class_targets(class_ids: torch.Tensor) -> torch.Tensor:
    return torch.tensor([TRAIN_CLASS_INDEX[int(c)] for c in class_ids], dtype=torch.long)


def attribute_labels(labels: torch.Tensor, names: tuple[str, ...], keep: torch.Tensor | None = None
                     ) -> dict[str, torch.Tensor]:
    """(B, 4) labels in ATTRIBUTES order -> {name: (B,)}; rows where `keep` is False get -100 (ignored)."""
    out = {}
    for name in names:
        target = labels[:, ATTRIBUTES.index(name)]
        if keep is not None:
            target = torch.where(keep, target, torch.full_like(target, -100))
        out[name] = target
    return out


def attribute_loss(
    logits: dict[str, torch.Tensor],
    labels: torch.Tensor,
    names: tuple[str, ...],
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """`losses.attribute_loss` over `names` (labels (B, 4) in ATTRIBUTES order), and accuracies to log.

    `keep` (B,) bool selects which rows count (e.g. no colour loss on colour-scrambled images)."""
    targets = attribute_labels(labels, names, keep)
    total = losses.attribute_loss({n: logits[n] for n in names}, targets)
    accs = {}
    with torch.no_grad():
        for name in names:
            valid = targets[name] != -100
            hit = (logits[name].argmax(1) == targets[name]) & valid
            accs[f"acc_{name}"] = float(hit.sum() / valid.sum().clamp(min=1))
    return total, accs


class OneCycleImageStage:
    """State handling shared by the image CNN stages (judge, teacher): one model, Adam, a one-cycle schedule.

    Subclasses set `name`, `cfg` (with `steps`, `lr`, `weight_decay`, `batch_size`) and `pixels`, then call
    `_set_up_training`.
    """

    def _set_up_training(self, model: torch.nn.Module, seed: int) -> None:
        self.model = model
        distributed.broadcast_module(self.model)
        self.trained = distributed.wrap(self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=self.cfg.lr, total_steps=self.cfg.steps,
                                                         pct_start=0.15)
        self.sampler = StepSampler(len(self.pixels), self.cfg.batch_size, seed,
                                   distributed.rank(), distributed.world_size())

    def synced_modules(self) -> list:
        """Modules every rank must hold identically (checked at the end of a multi-process run)."""
        return [self.model]

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load_state(self, tree: dict[str, Any]) -> None:
        saved_total = tree["sched"].get("total_steps")
        if saved_total is not None and int(saved_total) != self.cfg.steps:
            from ..checkpoint import checker_index

            section = "teacher" if checker_index(self.name) else self.name  # checkers train by teacher.steps
            raise InputError(f"{self.name}: the one-cycle schedule was laid out for {saved_total} steps; "
                             f"resume with {section}.steps={saved_total} or start afresh")
        self.model.load_state_dict(tree["model"])
        self.opt.load_state_dict(tree["opt"])
        self.sched.load_state_dict(tree["sched"])
