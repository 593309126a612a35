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


# Logit adjustment by co-occurrence: each head's logits get the log-probability of its class given the other
# attribute the caption names, in training only. Unseen colour-shape pairs never occur in training, so a plain
# head learns to rule a colour out by the shape word (right on every training caption, wrong on every unseen pair);
# with the prior added, ruling out is already done and earns the head nothing.
COOCCURRING = {"colour": "shape", "shape": "colour"}
# log-probability of a pair that never occurs: e^-30 is nil beside any pair that does, and stays finite in bf16.
PRIOR_FLOOR = -30.0


def cooccurrence_log_prior(labels: torch.Tensor, said: torch.Tensor, target: str, given: str) -> torch.Tensor:
    """log p(target | given) over the captions that name both (labels and said (N, 4) in ATTRIBUTES order):
    (classes of `given`, classes of `target`) float32, PRIOR_FLOOR where a pair never occurs."""
    t, g = ATTRIBUTES.index(target), ATTRIBUTES.index(given)
    both = said[:, t] & said[:, g]
    counts = torch.zeros(ATTRIBUTE_CLASSES[given], ATTRIBUTE_CLASSES[target], dtype=torch.float64)
    counts.index_put_((labels[both, g], labels[both, t]), torch.ones(int(both.sum()), dtype=torch.float64),
                      accumulate=True)
    share = counts / counts.sum(dim=1, keepdim=True).clamp(min=1.0)
    return torch.log(share).clamp(min=PRIOR_FLOOR).float()


def cooccurrence_tables(labels: torch.Tensor, said: torch.Tensor) -> dict[str, torch.Tensor]:
    """cooccurrence_log_prior of every head in COOCCURRING, given the attribute it is paired with."""
    return {name: cooccurrence_log_prior(labels, said, name, given) for name, given in COOCCURRING.items()}


def cooccurrence_offsets(labels: torch.Tensor, said: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each head's logit offsets (N, classes) for the captions the prior is counted on (labels and said (N, 4))."""
    named = torch.where(said, labels, torch.full_like(labels, -100))
    return prior_offsets(cooccurrence_tables(labels, said), named)


def prior_offsets(tables: dict[str, torch.Tensor], named: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each head's logit offsets (B, classes) for captions whose attributes are `named` (B, 4), -100 where unsaid:
    the row of its table for the other attribute's class; zeros where the caption leaves either one open (a read-out
    fitted to a uniform target for an unsaid shape must be free to reach it)."""
    out = {}
    for name, table in tables.items():
        given = named[:, ATTRIBUTES.index(COOCCURRING[name])]
        both = (given >= 0) & (named[:, ATTRIBUTES.index(name)] >= 0)
        rows = table[given.clamp(min=0)]
        out[name] = torch.where(both[:, None], rows, torch.zeros_like(rows))
    return out


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
