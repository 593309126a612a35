"""Train the image teacher on training-class images, then it is frozen: its features teach the speech
encoder, its attribute heads check the generator.

A plainly trained teacher learns which colour goes with which shape and reads held-out combinations badly, and
would hand that entanglement to the speech encoder. So part of each batch is colour-scrambled (RGB permuted or
greyed): those images train the colour-free heads but not the colour head or the class head.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import TEACHER, checker_name, save_module
from ..data import vocabulary
from ..models import ShapesTeacher, ShapesTeacherConfig, colour_scrambled
from .banks import load_image_bank
from .common import ATTRIBUTE_CLASSES, OneCycleImageStage, attribute_loss, train_class_targets
from .config import TrainConfig
from .judge import augment
from .precision import backward

COLOUR_FREE = ("shape", "size", "background")


class TeacherStage(OneCycleImageStage):
    """`member` 0 is the teacher; member i > 0 is checker i: trained alike, at teacher.checker_widths[i - 1] and
    from seed run.seed + i (its own batch order; the runner seeds its initial weights the same way)."""

    def __init__(self, config: TrainConfig, run_dir: Path, member: int = 0):
        self.config = config
        self.cfg = config.teacher
        self.run_dir = run_dir
        self.member = member
        self.name = checker_name(member) if member else TEACHER
        width = self.cfg.checker_widths[member - 1] if member else self.cfg.width
        size = self.cfg.image_size
        bank = load_image_bank(config.data.root, "train", (size,), run_dir)
        self.pixels = bank.pixels[size]
        self.labels = bank.attributes
        self.class_targets = train_class_targets(bank.class_ids)
        self.model_config = ShapesTeacherConfig(
            feature_dim=config.encoder.model.embedding_dim,
            width=width,
            image_size=size,
            num_classes=len(vocabulary.TRAIN_CLASSES),
            attributes=dict(ATTRIBUTE_CLASSES),
        )
        self._set_up_training(ShapesTeacher(self.model_config), config.run.seed + member)

    def train_step(self, step: int) -> dict[str, float]:
        idx = torch.tensor(self.sampler.indices(step))
        images = augment(self.pixels[idx].float().div_(127.5).sub_(1.0))
        labels = self.labels[idx]
        if self.cfg.decorrelate_colour:
            images, changed = colour_scrambled(images, self.cfg.scramble_fraction)
        else:
            changed = torch.zeros(len(idx), dtype=torch.bool)
        intact = (~changed).float()
        self.model.train()
        out = self.trained(images)
        free_loss, accs = attribute_loss(out.attribute_logits, labels, COLOUR_FREE)
        colour_loss, colour_acc = attribute_loss(out.attribute_logits, labels, ("colour",), keep=~changed)
        class_loss = (F.cross_entropy(out.class_logits, self.class_targets[idx], reduction="none") * intact).sum()
        class_loss = class_loss / intact.sum().clamp(min=1.0)
        loss = free_loss + colour_loss + class_loss
        self.opt.zero_grad(set_to_none=True)
        backward(loss)
        self.opt.step()
        self.sched.step()
        return {"loss": loss.item(), "class_loss": class_loss.item(), **accs, **colour_acc}

    def save_outputs(self, step: int) -> None:
        summary = {"step": step, "images": len(self.pixels), "decorrelate_colour": self.cfg.decorrelate_colour}
        save_module(self.run_dir, self.name, self.model.eval(), self.model_config, summary)
