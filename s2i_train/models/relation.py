"""S2IGAN's relation supervisor: a small MLP that reads a pair of image features (from the frozen teacher) and
says how the second image relates to the first."""

from __future__ import annotations

import torch
from torch import nn

# What the second image of a pair is, seen from the first (a real image): the image itself, another real image
# of its class, the image generated from its caption, a real image of another class.
RELATIONS = ("same", "similar", "fake", "different")


class RelationSupervisor(nn.Module):
    """forward(anchor (B, D), other (B, D)) -> logits (B, len(RELATIONS))."""

    def __init__(self, feature_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * feature_dim, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, len(RELATIONS)))

    def forward(self, anchor: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([anchor, other], dim=1))
