"""StackGAN-v2 discriminators, one per generator branch (64/128/256), with optional attribute heads.

Each reads an image down to a 4x4 x 8*ndf code, then gives
- an unconditional logit (real vs fake),
- a conditional logit from the code joined with the condition (the CA mean mu, tiled to 4x4),
- optionally, AC-GAN auxiliary logits per attribute (colour/shape/size/background) and per class,
- pooled features (B, 8*ndf) for a class-aware or matching loss.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import nn

from .configutil import config_from_dict, config_to_dict

ARCH = "stackgan-v2-d"


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    image_size: int = 64  # 64, 128 or 256
    ndf: int = 32  # paper 64; 32 keeps the CPU-sized model of docs/design.md trainable in minutes
    condition_dim: int = 128  # = the generator's ca_dim; 0 = no conditional logit
    attributes: dict[str, int] = dataclasses.field(default_factory=dict)  # name -> classes; {} = no heads
    num_classes: int = 0  # > 0 adds a class head (AC-GAN on the class itself)

    def __post_init__(self) -> None:
        if self.image_size not in (64, 128, 256):
            raise ValueError(f"discriminator image_size must be 64, 128 or 256, got {self.image_size}")
        if self.ndf < 1 or self.condition_dim < 0 or self.num_classes < 0:
            raise ValueError("ndf must be positive; condition_dim and num_classes non-negative")
        for name, count in self.attributes.items():
            if int(count) < 2:
                raise ValueError(f"attribute {name!r} needs at least 2 classes, got {count}")

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DiscriminatorConfig:
        return config_from_dict(cls, data)


class DiscriminatorOutput(NamedTuple):
    uncond_logits: torch.Tensor  # (B,)
    cond_logits: torch.Tensor | None  # (B,), None without a condition
    attribute_logits: dict[str, torch.Tensor]  # name -> (B, classes); {} without heads
    class_logits: torch.Tensor | None  # (B, num_classes) or None
    features: torch.Tensor  # (B, 8*ndf), globally pooled image code

    def rows(self, index: slice) -> DiscriminatorOutput:
        """The same outputs for a slice of the batch."""
        return DiscriminatorOutput(
            self.uncond_logits[index],
            None if self.cond_logits is None else self.cond_logits[index],
            {name: logits[index] for name, logits in self.attribute_logits.items()},
            None if self.class_logits is None else self.class_logits[index],
            self.features[index],
        )


def _down(in_ch: int, out_ch: int, norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False)]
    if norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def _block3x3(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2, inplace=True)
    )


class Discriminator(nn.Module):
    arch = ARCH

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        ndf = config.ndf
        layers = [_down(3, ndf, norm=False), _down(ndf, ndf * 2), _down(ndf * 2, ndf * 4), _down(ndf * 4, ndf * 8)]
        if config.image_size == 128:
            layers += [_down(ndf * 8, ndf * 16), _block3x3(ndf * 16, ndf * 8)]
        elif config.image_size == 256:
            layers += [
                _down(ndf * 8, ndf * 16),
                _down(ndf * 16, ndf * 32),
                _block3x3(ndf * 32, ndf * 16),
                _block3x3(ndf * 16, ndf * 8),
            ]
        self.encode = nn.Sequential(*layers)  # -> (B, 8*ndf, 4, 4)
        code = ndf * 8
        self.uncond = nn.Conv2d(code, 1, 4, stride=4)
        if config.condition_dim:
            self.joint = _block3x3(code + config.condition_dim, code)
            self.cond = nn.Conv2d(code, 1, 4, stride=4)
        else:
            self.joint = None
            self.cond = None
        self.attribute_heads = nn.ModuleDict(
            {name: nn.Linear(code * 16, int(count)) for name, count in config.attributes.items()}
        )
        self.class_head = nn.Linear(code * 16, config.num_classes) if config.num_classes else None
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def forward(self, images: torch.Tensor, condition: torch.Tensor | None = None) -> DiscriminatorOutput:
        return self.heads(self.encode(images), condition)

    def heads(self, code: torch.Tensor, condition: torch.Tensor | None = None) -> DiscriminatorOutput:
        """Logits from an image code already computed by `encode` (reuse it for real and wrong pairs)."""
        uncond = self.uncond(code).flatten()
        cond = None
        if condition is not None:
            if self.joint is None or self.cond is None:
                raise ValueError("this discriminator has no conditional branch (condition_dim = 0)")
            tiled = condition[:, :, None, None].expand(-1, -1, code.shape[2], code.shape[3])
            cond = self.cond(self.joint(torch.cat([code, tiled], dim=1))).flatten()
        flat = code.flatten(1)
        attributes = {name: head(flat) for name, head in self.attribute_heads.items()}
        classes = self.class_head(flat) if self.class_head is not None else None
        return DiscriminatorOutput(uncond, cond, attributes, classes, code.mean(dim=(2, 3)))


def build_discriminator(config: DiscriminatorConfig) -> Discriminator:
    return Discriminator(config)


def build_discriminators(
    image_sizes: tuple[int, ...] | list[int],
    ndf: int = 32,
    condition_dim: int = 128,
    attributes: dict[str, int] | None = None,
    num_classes: int = 0,
) -> nn.ModuleList:
    """One discriminator per generator branch, in the generator's order (smallest image first)."""
    return nn.ModuleList(
        Discriminator(
            DiscriminatorConfig(
                image_size=size,
                ndf=ndf,
                condition_dim=condition_dim,
                attributes=dict(attributes or {}),
                num_classes=num_classes,
            )
        )
        for size in image_sizes
    )
