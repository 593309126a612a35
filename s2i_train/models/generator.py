"""StackGAN-v2 generator conditioned on a speech embedding (Zhang et al., StackGAN++).

Conditioning augmentation (Linear -> GLU -> mu, logvar; c = mu + exp(logvar/2) * eps), stage 1 from
concat(z, c) to 4x4 and four up-blocks to 64x64, then per extra branch: joint conditioning with tiled c,
residual blocks and an up-block (128, 256). Each branch ends in conv3x3 -> 3 channels -> tanh.

All randomness (z and eps) is an input: forward never samples, so the exported graph is deterministic and
the runtime's seeded numpy draws give the same image on every backend.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .configutil import config_from_dict, config_to_dict

ARCH = "stackgan-v2"


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Generator settings. Defaults are the CPU-sized model of docs/design.md (one 64x64 branch, ~3.2 M
    parameters); the paper's is ngf 64, init_mult 16, branches 3 (64/128/256)."""

    embedding_dim: int = 1024
    z_dim: int = 100
    ca_dim: int = 128
    ngf: int = 32  # StackGAN-v2's GF_DIM
    init_mult: int = 8  # stage-1 width at 4x4 = init_mult * ngf (paper: 16)
    branches: int = 1  # 1, 2 or 3 -> images of 64, 128, 256
    residual_blocks: int = 2
    # Attribute code: class counts of frozen linear read-outs of the (centred) embedding whose softmax joins
    # the condition, e.g. (8, 8, 2, 2) for Spoken-Shapes' colour / shape / size / background; () = off.
    # The generator stage fits them to the training captions' labels before GAN training.
    attribute_code: tuple[int, ...] = ()
    # False: only the attribute code reaches the conditioning augmentation, not the embedding itself.
    condition_on_embedding: bool = True
    # Blocks of the code that each image draws from the read-out's distribution (a one-hot; the i-th drawn
    # block uses z[:, i] as its random number) instead of receiving the probabilities: what a caption leaves
    # open (uniform read-out) then varies with z, and what it names (a confident read-out) is drawn almost
    # surely. Training feeds the real image's class for these blocks. Needs condition_on_embedding = false.
    sampled_code_blocks: tuple[int, ...] = ()
    # Layout shift: the last two components of z move the 16x16 layout by up to this fraction of the image side
    # (times a gate learned from the condition, so a large figure can be given less room than a small one);
    # the later up-blocks draw the detail at the new place. 0 = off. Without it the generator drew nearly every
    # figure in the middle, where real figures lie anywhere (docs/experiments/layout-and-background.md).
    layout_shift: float = 0.0

    # Settings renamed since checkpoints and bundles were written ({old: new}); from_dict reads both.
    RENAMED_FIELDS: ClassVar[dict[str, str]] = {"drawn_blocks": "sampled_code_blocks"}

    def __post_init__(self) -> None:
        if self.branches not in (1, 2, 3):
            raise ValueError(f"branches must be 1, 2 or 3, got {self.branches}")
        if self.init_mult * self.ngf % 16 or self.init_mult * self.ngf < 32:
            raise ValueError("init_mult * ngf must be a multiple of 16 and at least 32 (four halvings)")
        for name in ("embedding_dim", "z_dim", "ca_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if any(k < 2 for k in self.attribute_code):
            raise ValueError("every attribute_code entry is a class count >= 2")
        if not self.condition_on_embedding and not self.attribute_code:
            raise ValueError("condition_on_embedding = false needs an attribute_code")
        if self.sampled_code_blocks:
            if self.condition_on_embedding:
                raise ValueError("sampled_code_blocks needs condition_on_embedding = false")
            if len(set(self.sampled_code_blocks)) != len(self.sampled_code_blocks) or not all(
                    0 <= i < len(self.attribute_code) for i in self.sampled_code_blocks):
                raise ValueError(f"sampled_code_blocks must be distinct indices into attribute_code "
                                 f"(0..{len(self.attribute_code) - 1}), got {list(self.sampled_code_blocks)}")
        if not 0.0 <= self.layout_shift <= 0.5:
            raise ValueError(f"layout_shift is a fraction of the image side in [0, 0.5], got {self.layout_shift}")
        if len(self.sampled_code_blocks) + 2 * (self.layout_shift > 0) > self.z_dim:
            raise ValueError("sampled_code_blocks needs one z component per drawn block, layout_shift the last two")

    @property
    def image_sizes(self) -> tuple[int, ...]:
        return tuple(64 * 2**i for i in range(self.branches))

    @property
    def stage1_channels(self) -> int:
        return self.init_mult * self.ngf

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GeneratorConfig:
        return config_from_dict(cls, data)


class GeneratorOutput(NamedTuple):
    images: list[torch.Tensor]  # one (B, 3, s, s) per branch, smallest first, in [-1, 1]
    mu: torch.Tensor  # (B, ca_dim)
    logvar: torch.Tensor  # (B, ca_dim)


class GLU(nn.Module):
    """Gated linear unit over channels: first half * sigmoid(second half)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(x, dim=1)


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)


def up_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """Nearest x2, conv3x3, BN, GLU."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), _conv3x3(in_ch, out_ch * 2), nn.BatchNorm2d(out_ch * 2), GLU()
    )


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv3x3(channels, channels * 2),
            nn.BatchNorm2d(channels * 2),
            GLU(),
            _conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConditioningAugmentation(nn.Module):
    """Linear(embedding -> 4*ca) -> GLU -> (mu, logvar); c = mu + exp(logvar / 2) * eps.

    The embedding is first centred and scaled by fixed statistics of the training captions' embeddings
    (`set_embedding_statistics`, buffers saved with the weights): an L2-normalised 256-d embedding has
    components of about 0.06, so without this mu starts near 0, c is almost pure eps, and the KL term holds
    it there — the condition barely reaches G. Identity until set.

    With an attribute code, frozen linear read-outs of the centred embedding add their softmax to the input
    of the linear layer: a caption of an unseen colour-shape pair gets an embedding the generator never
    trained on, but its code is two familiar one-hot blocks side by side, and from such codes the
    generator draws unseen pairs."""

    def __init__(self, embedding_dim: int, ca_dim: int, attribute_code: tuple[int, ...] = (),
                 use_embedding: bool = True) -> None:
        super().__init__()
        self.ca_dim = ca_dim
        self.use_embedding = use_embedding
        self.readouts = nn.ModuleList(nn.Linear(embedding_dim, k) for k in attribute_code)
        self.readouts.requires_grad_(False)
        # The code enters at the centred embedding's scale (norm about sqrt(D)): one-hot blocks of norm 1
        # would start the condition ~10x weaker than eps, and the KL term would keep it there.
        self.code_scale = (embedding_dim / max(len(attribute_code), 1)) ** 0.5
        self.fc = nn.Linear(embedding_dim * use_embedding + sum(attribute_code), ca_dim * 4)
        self.glu = GLU()
        self.register_buffer("embedding_mean", torch.zeros(embedding_dim))
        self.register_buffer("embedding_scale", torch.ones(1))

    def centred(self, embedding: torch.Tensor) -> torch.Tensor:
        """What the read-outs (and the linear layer) see."""
        return (embedding - self.embedding_mean) * self.embedding_scale

    @torch.no_grad()
    def set_readouts(self, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> None:
        """Install fitted read-outs: weights[i] (classes_i, embedding_dim), biases[i] (classes_i,)."""
        if len(weights) != len(self.readouts):
            raise ValueError(f"{len(self.readouts)} read-outs, got {len(weights)} weight matrices")
        for readout, weight, bias in zip(self.readouts, weights, biases, strict=True):
            readout.weight.copy_(weight)
            readout.bias.copy_(bias)

    @torch.no_grad()
    def set_embedding_statistics(self, embeddings: torch.Tensor) -> None:
        """Centre on the mean embedding; one scale so the average component variance is 1 (directions and
        relative distances are kept)."""
        self.embedding_mean.copy_(embeddings.mean(0))
        self.embedding_scale.fill_(float(embeddings.var(0).mean().clamp(min=1e-12).rsqrt()))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the statistics existed: identity.
        state_dict.setdefault(prefix + "embedding_mean", torch.zeros_like(self.embedding_mean))
        state_dict.setdefault(prefix + "embedding_scale", torch.ones_like(self.embedding_scale))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def attribute_code(self, embedding: torch.Tensor) -> list[torch.Tensor]:
        """The read-outs' class probabilities, one (B, classes) block per attribute."""
        return self._read(self.centred(embedding))

    def _read(self, centred: torch.Tensor) -> list[torch.Tensor]:
        return [readout(centred).softmax(1) for readout in self.readouts]

    def forward(self, embedding: torch.Tensor, eps: torch.Tensor,
                code: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
        """`code` replaces the read-outs' probabilities (training asks for attribute combinations that no
        caption has); the embedding itself is then ignored, so it needs condition_on_embedding = false."""
        if code is not None and self.use_embedding:
            raise ValueError("an explicit attribute code needs condition_on_embedding = false")
        centred = self.centred(embedding)
        parts = [centred] if self.use_embedding else []
        if code is None:
            code = self._read(centred)
        parts += [block * self.code_scale for block in code]
        hidden = self.glu(self.fc(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]))
        mu, logvar = hidden[:, : self.ca_dim], hidden[:, self.ca_dim :]
        return mu + torch.exp(0.5 * logvar) * eps, mu, logvar


def draw_one_hot(probs: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """(B, K) class probabilities and (B,) standard-normal numbers -> (B, K) one-hot draws: the normal's CDF
    is a uniform number, and the class is the interval of the cumulative probabilities it falls in. Built from
    erf, cumsum and comparisons so that it exports to ONNX and runs under TensorRT; deterministic given z."""
    uniform = 0.5 * (1.0 + torch.erf(normal * 0.7071067811865476))[:, None]
    cumulative = probs.cumsum(1)
    # Each interval starts exactly where the last ends (no gap or overlap from rounding), and the last is
    # closed above, so probabilities summing to 0.99999994 cannot leave a row empty.
    lower = torch.cat([torch.zeros_like(cumulative[:, :1]), cumulative[:, :-1]], dim=1)
    upper = torch.cat([cumulative[:, :-1], torch.full_like(cumulative[:, -1:], 2.0)], dim=1)
    return ((uniform >= lower) & (uniform < upper)).to(probs.dtype)


def shift_matrices(offset: torch.Tensor, size: int) -> torch.Tensor:
    """(B,) offsets in pixels -> (B, size, size) matrices M with (M @ x)[i] = x[i - offset] along one axis,
    bilinear between pixels and clamped at the border. Built from arange, abs and relu rather than grid_sample
    so that it exports at any opset and runs as a plain batched MatMul under TensorRT."""
    target = torch.arange(size, dtype=offset.dtype, device=offset.device)
    source = (target[None, :] - offset[:, None]).clamp(0, size - 1)  # (B, size): where each output pixel reads
    return F.relu(1.0 - (source[:, :, None] - target[None, None, :]).abs())


class LayoutShift(nn.Module):
    """Moves a feature map by (dx, dy) = range * gate(c) * u, with u uniform in (-1, 1)^2 from two standard-normal
    components of z (u = erf(z / sqrt 2)). Convolutions are translation-equivariant, so the up-blocks after it draw
    the same figure at the new place; the gate lets the condition ask for less room (a large figure)."""

    def __init__(self, ca_dim: int, max_fraction: float) -> None:
        super().__init__()
        self.max_fraction = max_fraction
        self.gate = nn.Linear(ca_dim, 1)

    def forward(self, h: torch.Tensor, z_pair: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        uniform = torch.erf(z_pair * 0.7071067811865476)
        pixels = uniform * (torch.sigmoid(self.gate(c)) * (self.max_fraction * h.shape[-1]))  # (B, 2)
        rows = shift_matrices(pixels[:, 1], h.shape[-2])
        cols = shift_matrices(pixels[:, 0], h.shape[-1])
        return rows[:, None] @ h @ cols.transpose(1, 2)[:, None]


class _InitStage(nn.Module):
    """(z, c) -> concat -> 4x4 x width -> four up-blocks -> 64x64 x width/16; with a layout shift, the 16x16 map is
    moved between the second and third up-block."""

    def __init__(self, in_dim: int, width: int, shift: LayoutShift | None = None) -> None:
        super().__init__()
        self.width = width
        self.fc = nn.Sequential(nn.Linear(in_dim, width * 16 * 2, bias=False), nn.BatchNorm1d(width * 16 * 2), GLU())
        self.ups = nn.Sequential(
            up_block(width, width // 2),
            up_block(width // 2, width // 4),
            up_block(width // 4, width // 8),
            up_block(width // 8, width // 16),
        )
        self.shift = shift

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, c], dim=1)).view(-1, self.width, 4, 4)
        if self.shift is None:
            return self.ups(h)
        h = self.shift(self.ups[1](self.ups[0](h)), z[:, -2:], c)
        return self.ups[3](self.ups[2](h))


class _NextStage(nn.Module):
    """Joint conditioning (features + tiled c), residual blocks, up-block: doubles the resolution."""

    def __init__(self, channels: int, ca_dim: int, residual_blocks: int) -> None:
        super().__init__()
        self.joint = nn.Sequential(_conv3x3(channels + ca_dim, channels * 2), nn.BatchNorm2d(channels * 2), GLU())
        self.residual = nn.Sequential(*[ResidualBlock(channels) for _ in range(residual_blocks)])
        self.up = up_block(channels, channels // 2)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        tiled = c[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
        return self.up(self.residual(self.joint(torch.cat([h, tiled], dim=1))))


def _to_image(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, 3, 3, padding=1, bias=False), nn.Tanh())


class Generator(nn.Module):
    """forward(embedding (B, D), z (B, z_dim), eps (B, ca_dim)) -> GeneratorOutput."""

    arch = ARCH

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.ca = ConditioningAugmentation(config.embedding_dim, config.ca_dim, tuple(config.attribute_code),
                                           config.condition_on_embedding)
        width = config.stage1_channels
        shift = LayoutShift(config.ca_dim, config.layout_shift) if config.layout_shift > 0 else None
        self.init_stage = _InitStage(config.z_dim + config.ca_dim, width, shift)
        channels = width // 16
        self.next_stages = nn.ModuleList()
        self.to_images = nn.ModuleList([_to_image(channels)])
        for _ in range(config.branches - 1):
            self.next_stages.append(_NextStage(channels, config.ca_dim, config.residual_blocks))
            channels //= 2
            self.to_images.append(_to_image(channels))

    def forward(self, embedding: torch.Tensor, z: torch.Tensor, eps: torch.Tensor,
                code: list[torch.Tensor] | None = None) -> GeneratorOutput:
        """`code`: explicit attribute-code blocks instead of the embedding's read-outs (training only)."""
        if code is None and self.config.sampled_code_blocks:
            code = self.ca.attribute_code(embedding)
            for i, block in enumerate(self.config.sampled_code_blocks):
                code[block] = draw_one_hot(code[block], z[:, i])
        c, mu, logvar = self.ca(embedding, eps, code)
        h = self.init_stage(z, c)
        images = [self.to_images[0](h)]
        for stage, to_image in zip(self.next_stages, self.to_images[1:], strict=True):
            h = stage(h, c)
            images.append(to_image(h))
        return GeneratorOutput(images, mu, logvar)

    def sample_inputs(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, eps), both standard normal: what training feeds forward."""
        z = torch.randn(batch, self.config.z_dim, generator=generator, device=device)
        eps = torch.randn(batch, self.config.ca_dim, generator=generator, device=device)
        return z, eps


class ExportableGenerator(nn.Module):
    """What goes into generator.onnx: (embedding, z, eps) -> the last branch's image (B, 3, H, W) in [-1, 1]."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, embedding: torch.Tensor, z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.generator(embedding, z, eps).images[-1]


def build_generator(config: GeneratorConfig) -> Generator:
    return Generator(config)
