"""Image networks that read images (in [-1, 1], any size; resized to `image_size`):

- `ShapesTeacher`: the image teacher for Spoken-Shapes. A CNN trained on training-class images with class
  and attribute heads, then frozen; its 1024-d features teach the speech encoder and its heads check the
  generator's output. Its shape/size/background heads must generalise to unseen colour-shape
  combinations, so they also train on `colour_scrambled` copies (docs/design.md, "Training choices").
- `Judge`: a small CNN that reads colour/shape/size/background; trained on real images only, separately
  from the teacher; quality figures are its accuracies on generated images.
- `build_imagenet_teacher`: the papers' frozen ImageNet GoogLeNet (1024-d) / Inception-v3 (2048-d) for real
  data. Needs torchvision and its downloaded weights, and says so clearly when either is missing.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from s2i_runtime.errors import BackendUnavailable

from .configutil import config_from_dict, config_to_dict

TEACHER_ARCH = "shapes-teacher"
JUDGE_ARCH = "shapes-judge"


def resize_to(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class ConvTrunk(nn.Module):
    """(B, 3, s, s) -> (B, 2 * 8 * width): four (conv3x3, strided conv4x4) stages with BN/ReLU, then
    global average and max pooling (position-free, so shapes anywhere in the image read the same)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for mult in (1, 2, 4, 8):
            out_ch = width * mult
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
                nn.Conv2d(out_ch, out_ch, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
            in_ch = out_ch
        self.body = nn.Sequential(*layers)
        self.out_features = 2 * in_ch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.body(images)
        return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)


@dataclasses.dataclass(frozen=True)
class ShapesTeacherConfig:
    feature_dim: int = 1024  # = the speech encoder's embedding_dim
    width: int = 32
    image_size: int = 64
    num_classes: int = 48  # training classes (the 16 held-out classes are never seen)
    attributes: dict[str, int] = dataclasses.field(default_factory=dict)  # e.g. {"colour": 8, "shape": 8}

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ShapesTeacherConfig:
        return config_from_dict(cls, data)


class TeacherOutput(NamedTuple):
    features: torch.Tensor  # (B, feature_dim): what the speech encoder learns to match
    class_logits: torch.Tensor  # (B, num_classes)
    attribute_logits: dict[str, torch.Tensor]  # name -> (B, classes)


class ShapesTeacher(nn.Module):
    arch = TEACHER_ARCH

    def __init__(self, config: ShapesTeacherConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk = ConvTrunk(config.width)
        self.embed = nn.Linear(self.trunk.out_features, config.feature_dim)
        self.class_head = nn.Linear(config.feature_dim, config.num_classes)
        self.attribute_heads = nn.ModuleDict(
            {name: nn.Linear(config.feature_dim, int(count)) for name, count in config.attributes.items()}
        )

    def forward(self, images: torch.Tensor) -> TeacherOutput:
        features = self.embed(self.trunk(resize_to(images, self.config.image_size)))
        # Heads read the features through a ReLU so the features themselves stay unconstrained in sign.
        hidden = F.relu(features)
        attributes = {name: head(hidden) for name, head in self.attribute_heads.items()}
        return TeacherOutput(features, self.class_head(hidden), attributes)


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    width: int = 16
    image_size: int = 64
    attributes: dict[str, int] = dataclasses.field(default_factory=dict)  # e.g. {"colour": 8, "shape": 8, ...}

    def __post_init__(self) -> None:
        if not self.attributes:
            raise ValueError("a judge needs at least one attribute to read")

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> JudgeConfig:
        return config_from_dict(cls, data)


class Judge(nn.Module):
    """forward(images in [-1, 1]) -> {attribute: logits (B, classes)}."""

    arch = JUDGE_ARCH

    def __init__(self, config: JudgeConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk = ConvTrunk(config.width)
        self.heads = nn.ModuleDict(
            {name: nn.Linear(self.trunk.out_features, int(count)) for name, count in config.attributes.items()}
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.trunk(resize_to(images, self.config.image_size))
        return {name: head(shared) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Most likely class index per attribute, (B,) int64 each."""
        return {name: logits.argmax(dim=1) for name, logits in self(images).items()}


# All six orderings of RGB; index 0 (identity) is never drawn.
_CHANNEL_ORDERS = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])


def colour_scrambled(
    images: torch.Tensor, fraction: float = 0.5, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decouple colour from shape for the teacher's shape/size/background heads.

    A classifier trained plainly on seen classes learns which colour goes with which shape.

    A `fraction` of the batch gets either its RGB channels permuted (a different hue; grey backgrounds
    stay grey) or is turned grey (luma repeated over the channels). Returns (images, changed (B,) bool):
    for changed images, train only colour-free heads (shape, size, background), not colour or class."""
    batch = images.shape[0]
    device = images.device
    changed = torch.rand(batch, generator=generator).lt(fraction).to(device)
    to_grey = torch.rand(batch, generator=generator).lt(1.0 / 3.0).to(device)
    orders = _CHANNEL_ORDERS[torch.randint(1, len(_CHANNEL_ORDERS), (batch,), generator=generator)].to(device)
    permuted = torch.gather(images, 1, orders[:, :, None, None].expand(-1, -1, *images.shape[2:]))
    luma = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2])[:, None].expand_as(images)
    altered = torch.where(to_grey[:, None, None, None], luma, permuted)
    return torch.where(changed[:, None, None, None], altered, images), changed


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_IMAGENET_MODELS = {"googlenet": (224, 1024), "inception_v3": (299, 2048)}


class ImageNetTeacher(nn.Module):
    """A frozen torchvision backbone giving its pooled features for images in [-1, 1]."""

    def __init__(self, backbone: nn.Module, input_size: int, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.input_size = input_size
        self.feature_dim = feature_dim
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN)[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD)[None, :, None, None], persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_to((images + 1.0) / 2.0, self.input_size)
        return self.backbone((x - self.mean) / self.std)


def build_imagenet_teacher(kind: str = "googlenet") -> ImageNetTeacher:
    """The papers' ImageNet image encoder, frozen: GoogLeNet (Li et al., 1024-d) or Inception-v3 (S2IGAN,
    2048-d). Raises BackendUnavailable with the reason when torchvision or its weights are missing."""
    if kind not in _IMAGENET_MODELS:
        raise ValueError(f"ImageNet teacher must be one of {sorted(_IMAGENET_MODELS)}, got {kind!r}")
    try:
        import torchvision.models as tv_models
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        raise BackendUnavailable(
            f"the ImageNet {kind} teacher needs torchvision, which cannot be imported here ({exc}); "
            "install torchvision matching your torch, or use the Spoken-Shapes teacher"
        ) from None
    input_size, feature_dim = _IMAGENET_MODELS[kind]
    try:
        if kind == "googlenet":
            backbone = tv_models.googlenet(weights=tv_models.GoogLeNet_Weights.DEFAULT)
        else:
            backbone = tv_models.inception_v3(weights=tv_models.Inception_V3_Weights.DEFAULT)
    except Exception as exc:  # no network, no cached weights
        raise BackendUnavailable(f"could not load the pretrained ImageNet {kind} weights ({exc})") from None
    backbone.fc = nn.Identity()  # keep the pooled features, drop the ImageNet classifier
    if hasattr(backbone, "aux_logits"):
        backbone.aux_logits = False
        backbone.AuxLogits = None
    teacher = ImageNetTeacher(backbone, input_size, feature_dim)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher
