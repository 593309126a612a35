"""A fixed affine map of the teacher's features: the space a speech encoder is taught in when
`encoder.teacher_whiten = "class"`, and what reads generated or test images into that space afterwards.

The colour-decorrelated teacher spends most of its feature variance on what varies inside a class (position,
rotation) and on shape, little on colour. Whitening the within-class scatter, fitted on the training images,
makes the directions that separate classes the long ones, colour among them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .configutil import config_from_dict, config_to_dict
from .image_encoders import TeacherOutput

WHITENING_ARCH = "feature-whitening"


@dataclasses.dataclass(frozen=True)
class FeatureWhiteningConfig:
    dim: int = 1024
    shrink: float = 0.0  # the within-class scatter is shrunk this far towards its mean variance before whitening

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureWhiteningConfig:
        return config_from_dict(cls, data)


class FeatureWhitening(nn.Module):
    """features (B, dim) -> (features - mean) @ matrix."""

    arch = WHITENING_ARCH

    def __init__(self, config: FeatureWhiteningConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.zeros(config.dim))
        self.register_buffer("matrix", torch.eye(config.dim))

    @classmethod
    def fit(cls, features: torch.Tensor, class_ids: torch.Tensor, shrink: float) -> FeatureWhitening:
        """Centre the features and make their within-class scatter (shrunk towards its mean variance by
        `shrink`) the identity, then rescale so the whitened features keep the raw ones' mean norm."""
        x = features.double()
        classes, which = torch.unique(class_ids, return_inverse=True)
        class_means = torch.zeros(len(classes), x.shape[1], dtype=x.dtype).index_add_(0, which, x)
        class_means /= torch.bincount(which, minlength=len(classes)).unsqueeze(1)
        within = x - class_means[which]
        scatter = within.T @ within / len(x)
        average = scatter.diagonal().mean()
        scatter = (1 - shrink) * scatter + shrink * average * torch.eye(len(scatter), dtype=x.dtype)
        values, vectors = torch.linalg.eigh(scatter)
        matrix = vectors @ torch.diag(values.clamp(min=values.max() * 1e-8).rsqrt()) @ vectors.T
        mean = x.mean(dim=0)
        matrix *= x.norm(dim=1).mean() / ((x - mean) @ matrix).norm(dim=1).mean()
        module = cls(FeatureWhiteningConfig(dim=x.shape[1], shrink=shrink))
        module.mean.copy_(mean.float())
        module.matrix.copy_(matrix.float())
        return module

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) @ self.matrix


class WhitenedImageNetwork(nn.Module):
    """An image network (teacher or checker) whose features are read through a FeatureWhitening; its heads'
    logits pass unchanged."""

    def __init__(self, network: nn.Module, whitening: FeatureWhitening) -> None:
        super().__init__()
        self.network = network
        self.whitening = whitening

    def forward(self, images: torch.Tensor) -> TeacherOutput:
        out = self.network(images)
        return out._replace(features=self.whitening(out.features))
