"""Train the judge: a CNN that reads colour, shape, size and background from real images only.

It learns from the training classes and from part of every held-out class (it is an evaluation instrument,
not part of the model); `judge_holdout` names the held-out images it never sees, on which its own
accuracy is reported by `s2i-train eval`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import JUDGE, save_module
from ..models import Judge, JudgeConfig
from .banks import ATTRIBUTES, ImageBank, load_image_bank
from .common import ATTRIBUTE_CLASSES, OneCycleImageStage, attribute_loss
from .config import TrainConfig
from .precision import backward


def judge_holdout(bank: ImageBank, fraction: float) -> torch.Tensor:
    """(N,) bool: the last `fraction` of each class's images in key order (keys are zero-padded), kept from
    the judge."""
    holdout = torch.zeros(len(bank), dtype=torch.bool)
    for cls in bank.class_ids.unique():
        rows = sorted(torch.nonzero(bank.class_ids == cls).flatten().tolist(), key=lambda i: bank.keys[i])
        keep = len(rows) - int(round(len(rows) * fraction))
        holdout[rows[keep:]] = True
    return holdout


def augment(images: torch.Tensor) -> torch.Tensor:
    """Mirror half the batch and add a little noise: nothing that changes colour, shape or size, and enough
    that the judge does not hang on pixel-exact rendering (generated images are never pixel-exact)."""
    flip = torch.rand(images.shape[0]) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    noise = torch.randn_like(images) * (torch.rand(images.shape[0], 1, 1, 1) * 0.08)
    return (images + noise).clamp(-1.0, 1.0)


class JudgeStage(OneCycleImageStage):
    name = JUDGE

    def __init__(self, config: TrainConfig, run_dir: Path):
        self.config = config
        self.cfg = config.judge
        self.run_dir = run_dir
        root = config.data.root
        size = self.cfg.image_size
        train = load_image_bank(root, "train", (size,), run_dir)
        test = load_image_bank(root, "test", (size,), run_dir)
        seen = ~judge_holdout(test, self.cfg.holdout_fraction)
        self.pixels = torch.cat([train.pixels[size], test.pixels[size][seen]])
        self.labels = torch.cat([train.attributes, test.attributes[seen]])
        self.model_config = JudgeConfig(width=self.cfg.width, image_size=size, attributes=dict(ATTRIBUTE_CLASSES))
        self._set_up_training(Judge(self.model_config), config.run.seed)

    def train_step(self, step: int) -> dict[str, float]:
        idx = torch.tensor(self.sampler.indices(step))
        images = augment(self.pixels[idx].float().div_(127.5).sub_(1.0))
        self.model.train()
        logits = self.trained(images)
        loss, accs = attribute_loss(logits, self.labels[idx], ATTRIBUTES)
        self.opt.zero_grad(set_to_none=True)
        backward(loss)
        self.opt.step()
        self.sched.step()
        return {"loss": loss.item(), **accs}

    def save_outputs(self, step: int) -> None:
        summary = {"step": step, "images": len(self.pixels), "holdout_fraction": self.cfg.holdout_fraction}
        save_module(self.run_dir, JUDGE, self.model.eval(), self.model_config, summary)
