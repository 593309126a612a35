"""A second, independent reading of shape: a small CNN that sees only the figure's silhouette.

The judge reads shape from the whole image, colour included, so an image that is half one shape and half
another can still read as the intended shape by its colour and texture cues. This reader gets a binary mask
of the figure and nothing else; where it and the judge disagree on generated images, the shapes themselves
are ambiguous.

The mask comes from chroma (max - min of RGB): render.py paints a fully saturated-ish figure (HSV saturation
at least 0.45, value at least 0.85, so chroma at least 0.38) over a background that is exactly grey in every
pixel (its texture is added to all three channels alike), so chroma is zero off the figure whatever the
background level or texture. The threshold is relative to the image's own figure chroma, which keeps pale
pink and vivid yellow outlines at the same anti-aliasing level; the border's chroma is subtracted first so
a generator that tints its background does not flood the mask.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_module, save_module
from .data import vocabulary
from .models.configutil import config_from_dict, config_to_dict

SILHOUETTE_JUDGE = "silhouette_judge"  # module name in the run directory
ARCH = "silhouette-judge"
HEADS = {"shape": len(vocabulary.SHAPES), "size": len(vocabulary.SIZES)}
# A high quantile rather than the maximum stands for the figure's chroma: a small star still covers several
# percent of the image, while one stray saturated pixel in a generated image does not move it.
PEAK_QUANTILE = 0.99


@dataclasses.dataclass
class SilhouetteConfig:
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    image_size: int = 48  # side of the mask the CNN sees
    source_size: int = 64  # real images are read at this side (the generator's) before masking
    width: int = 16
    threshold: float = 0.4  # a pixel is figure when its chroma reaches this fraction of the figure's
    min_chroma: float = 0.2  # figure chroma assumed at least this, so a colourless image gives an empty mask

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SilhouetteConfig:
        return config_from_dict(cls, data)


def silhouette(images: torch.Tensor, threshold: float = 0.4, min_chroma: float = 0.2) -> torch.Tensor:
    """Images in [-1, 1] (B, 3, H, W) -> (B, 1, H, W) float mask, 1 on the figure and 0 elsewhere."""
    rgb = (images.float().clamp(-1.0, 1.0) + 1.0) * 0.5
    chroma = rgb.amax(dim=1) - rgb.amin(dim=1)
    border = torch.cat([chroma[:, 0, :], chroma[:, -1, :], chroma[:, :, 0], chroma[:, :, -1]], dim=1)
    chroma = (chroma - border.median(dim=1).values[:, None, None]).clamp(min=0.0)
    peak = torch.quantile(chroma.flatten(1), PEAK_QUANTILE, dim=1).clamp(min=min_chroma)
    return (chroma >= threshold * peak[:, None, None]).float().unsqueeze(1)


class SilhouetteJudge(nn.Module):
    """forward(images in [-1, 1], any size) -> {"shape": (B, 8), "size": (B, 2)} logits, read from the mask
    alone; `classify` takes masks already at `image_size`."""

    arch = ARCH

    def __init__(self, config: SilhouetteConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_ch = 1
        for mult in (1, 2, 4):
            out_ch = config.width * mult
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
        # Mean and max pooling: position-free, as shapes sit anywhere in the frame.
        self.heads = nn.ModuleDict({name: nn.Linear(2 * in_ch, count) for name, count in HEADS.items()})

    def masks(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, image_size, image_size): the binary mask at the image's resolution, area-averaged down, so
        the outline's sub-pixel position survives as grey edge pixels."""
        mask = silhouette(images, self.config.threshold, self.config.min_chroma)
        size = self.config.image_size
        return mask if mask.shape[-1] == size else F.adaptive_avg_pool2d(mask, size)

    def classify(self, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.body(masks * 2.0 - 1.0)
        pooled = torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)
        return {name: head(pooled) for name, head in self.heads.items()}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.classify(self.masks(images))


@torch.no_grad()
def silhouette_read(model: SilhouetteJudge, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """{"shape": (B, 8), "size": (B, 2)} probabilities for images in [-1, 1]."""
    model.eval()
    parts = [model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return {name: torch.cat([p[name] for p in parts]).softmax(1) for name in HEADS}


def silhouette_shape_read(model: SilhouetteJudge, images: torch.Tensor) -> torch.Tensor:
    """(B, 8) shape probabilities, in vocabulary.SHAPES order, for images in [-1, 1]."""
    return silhouette_read(model, images)["shape"]


def load_silhouette_judge(run_dir: str | Path) -> SilhouetteJudge:
    return load_module(run_dir, SILHOUETTE_JUDGE, lambda data: SilhouetteJudge(SilhouetteConfig.from_dict(data)))


def _augment(masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Mirroring keeps every shape's label (all eight are left-right symmetric); no vertical flips or quarter
    # turns, which would make upside-down hearts and pointy-topped hexagons that no image ever shows.
    flip = torch.rand(masks.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], masks.flip(-1), masks)


def fit_silhouette_judge(
    images: torch.Tensor, shapes: torch.Tensor, sizes: torch.Tensor, config: SilhouetteConfig, progress: bool = False
) -> SilhouetteJudge:
    """Train on real images (uint8 (N, 3, H, W) or float in [-1, 1]) with their shape and size labels."""
    from .train.loop import Progress, StepSampler

    if images.dtype == torch.uint8:
        images = images.float().div_(127.5).sub_(1.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = SilhouetteJudge(config)
    masks = torch.cat([model.masks(images[i : i + 512]) for i in range(0, len(images), 512)])
    labels = {"shape": shapes.long(), "size": sizes.long()}
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.15)
    sampler = StepSampler(len(masks), config.batch_size, config.seed)
    generator = torch.Generator().manual_seed(config.seed + 1)
    model.train()
    with Progress(SILHOUETTE_JUDGE, config.steps, 0, progress) as bar:
        for step in range(config.steps):
            idx = torch.tensor(sampler.indices(step))
            logits = model.classify(_augment(masks[idx], generator))
            losses = {name: F.cross_entropy(logits[name], labels[name][idx]) for name in HEADS}
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                acc = (logits["shape"].argmax(1) == labels["shape"][idx]).float().mean()
            bar.update(step + 1, {"loss": loss.item(), "acc_shape": acc.item()}, (step + 1) % 100 == 0)
    return model.eval()


def shape_accuracy(model: SilhouetteJudge, images: torch.Tensor, shapes: torch.Tensor, sizes: torch.Tensor
                   ) -> dict[str, Any]:
    """Accuracy of the silhouette reading: shape overall and per shape, size, and what each shape is read as."""
    if images.dtype == torch.uint8:
        images = images.float().div_(127.5).sub_(1.0)
    probs = silhouette_read(model, images)
    said = probs["shape"].argmax(1)
    per_shape, read_as = {}, {}
    for index, name in enumerate(vocabulary.SHAPES):
        rows = shapes == index
        if rows.any():
            per_shape[name] = float((said[rows] == index).float().mean())
            counts = torch.bincount(said[rows], minlength=len(vocabulary.SHAPES))
            read_as[name] = {vocabulary.SHAPES[j]: int(c) for j, c in enumerate(counts.tolist()) if c and j != index}
    return {
        "images": len(images),
        "shape": float((said == shapes).float().mean()),
        "size": float((probs["size"].argmax(1) == sizes).float().mean()),
        "shape_by_shape": per_shape,
        "shape_misread_as": {k: v for k, v in read_as.items() if v},
    }


def train_silhouette_judge(run_dir: str | Path, data_root: str | Path, config: SilhouetteConfig | None = None,
                           progress: bool = True) -> dict[str, Any]:
    """Train on the dataset's real training images, save `silhouette_judge` into `run_dir`, and return a summary
    with its accuracy on the real test-split images (classes it never saw) and the seconds it took."""
    from .train.banks import ATTRIBUTES, load_image_bank

    config = config or SilhouetteConfig()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    shape_col, size_col = ATTRIBUTES.index("shape"), ATTRIBUTES.index("size")
    train = load_image_bank(data_root, "train", (config.source_size,), run_dir)
    test = load_image_bank(data_root, "test", (config.source_size,), run_dir)
    loaded, cpu_began = time.perf_counter(), time.process_time()
    model = fit_silhouette_judge(train.pixels[config.source_size], train.attributes[:, shape_col],
                                 train.attributes[:, size_col], config, progress)
    trained, cpu_seconds = time.perf_counter(), time.process_time() - cpu_began
    real_test = shape_accuracy(model, test.pixels[config.source_size], test.attributes[:, shape_col],
                               test.attributes[:, size_col])
    summary = {"train_images": len(train), "real_test": real_test, "load_seconds": round(loaded - began, 2),
               "train_seconds": round(trained - loaded, 2),
               # CPU seconds of all threads: on a shared machine the wall clock says more about the neighbours.
               "train_cpu_seconds": round(cpu_seconds, 2)}
    save_module(run_dir, SILHOUETTE_JUDGE, model, config, summary)
    summary["seconds"] = round(time.perf_counter() - began, 2)
    if progress:
        print(f"[{SILHOUETTE_JUDGE}] real test images: shape {real_test['shape']:.3f}, size {real_test['size']:.3f} "
              f"({summary['train_seconds']:.0f} s training)", file=sys.stderr, flush=True)
    return summary
