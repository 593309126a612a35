"""`s2i-train eval`: figures of a trained run on the test split (held-out classes, held-out voices).

- encoder retrieval by class: speech→image (against the teacher's image features, when the encoder was
  taught in that space) and speech→speech (any encoder), mAP and R@1; image→image in that space (the
  geometry a teacher–student encoder inherits), each also by one spoken attribute at a time;
- the judge's accuracy on real held-out images (ones it never trained on), and on generated images for
  colour / shape / size (and background, not always spoken);
- judge-FID and judge-IS: Fréchet distance and Inception-style score on the judge's features and colour ×
  shape predictions — NOT comparable with ImageNet-Inception FID/IS;
- diversity: mean pairwise judge-feature distance among the images of one utterance (different z), against
  the same for real images of one class, of one class and size, and of everything the caption says (class,
  size, and the background where it names one: what a faithful generator can reach, and the one-class figure
  such a generator would score); also among correctly judged samples only, since a malformed image
  raises raw diversity too;
- an image grid PNG (one row per test class: a real image, then samples).

With `bundle`, the speech embeddings and the images come from an exported model bundle run by the runtime
(ONNX Runtime on the CPU, fp32 or fp16) instead of the run's torch modules: the figures of what is served,
read by the run's judge (and teacher). The report then lands beside the run's own, in
RUN/eval-bundle-<precision>.json.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from s2i_runtime.errors import InputError
from s2i_runtime.fsutil import atomic_path, atomic_write_text

from .checkpoint import (
    ENCODER,
    GENERATOR,
    TEACHER,
    encoder_image_space,
    encoder_teacher_name,
    has_module,
    load_judge,
    load_module,
    read_meta,
)
from .data import vocabulary
from .eval_conditions import cell_captions, condition_table, confusion_lines, read_as, table_lines, top_confusions
from .frontend import logmel_torch
from .metrics import (
    fit_softmax_regression,
    frechet_distance,
    inception_style_score,
    mean_pairwise_distance,
    retrieval_scores,
)
from .silhouette import SILHOUETTE_JUDGE, load_silhouette_judge, silhouette_shape_read
from .train.banks import (
    ATTRIBUTES,
    CaptionBank,
    ImageBank,
    caption_embeddings,
    load_caption_bank,
    load_image_bank,
    load_wave_bank,
    read_records,
    says_shape,
)
from .train.common import ATTRIBUTE_CLASSES, SPOKEN_ATTRIBUTES, cooccurrence_offsets
from .train.config import TrainConfig, load_run_config

EVAL_FILE = "eval.json"
GRID_FILE = "eval_grid.png"


def image_grid(first: torch.Tensor, rest: torch.Tensor, pad: int = 2) -> Image.Image:
    """PNG grid: row r is first[r] then rest[r, 0..K-1]; images in [-1, 1], (3, s, s) each."""
    rows, columns = rest.shape[0], rest.shape[1] + 1
    size = rest.shape[-1]
    if first.shape[-1] != size:
        first = torch.nn.functional.interpolate(first, size=(size, size), mode="bilinear", antialias=True)
    canvas = np.full((rows * (size + pad) + pad, columns * (size + pad) + pad, 3), 255, dtype=np.uint8)
    for r in range(rows):
        tiles = [first[r]] + [rest[r, k] for k in range(rest.shape[1])]
        for c, tile in enumerate(tiles):
            pixels = ((tile.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
            y, x = pad + r * (size + pad), pad + c * (size + pad)
            canvas[y : y + size, x : x + size] = pixels
    return Image.fromarray(canvas)


@torch.no_grad()
def _batched(fn, n: int, batch_size: int):
    outs = []
    for start in range(0, n, batch_size):
        outs.append(fn(torch.arange(start, min(start + batch_size, n))))
    return outs


@torch.no_grad()
def judge_read(judge, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(probabilities per attribute, trunk features) of the judge for images in [-1, 1]."""
    from .models import resize_to

    shared = judge.trunk(resize_to(images, judge.config.image_size))
    probs = {name: head(shared).softmax(1) for name, head in judge.heads.items()}
    return probs, shared


class Drawer(NamedTuple):
    """How images are drawn for the test captions: (embeddings, z, eps) -> images in [-1, 1]."""

    draw: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    z_dim: int
    ca_dim: int
    image_size: int


def _bundle_drawer(pipeline) -> Drawer:
    dims = pipeline.bundle.dims

    def draw(embeddings: torch.Tensor, z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(pipeline.render(embeddings.numpy(), z.numpy(), eps.numpy()))

    return Drawer(draw, dims.z_dim, dims.ca_dim, dims.image_size)


def run_drawer(run_dir: Path) -> Drawer:
    generator = load_module(run_dir, GENERATOR).eval()

    @torch.no_grad()
    def draw(embeddings: torch.Tensor, z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return generator(embeddings, z, eps).images[-1]

    return Drawer(draw, generator.config.z_dim, generator.config.ca_dim, generator.config.image_sizes[-1])


def report_names(bundle: str | Path | None, precision: str = "fp32") -> tuple[str, str]:
    """(JSON report, grid PNG) file names in the run directory: the run's own, or those of a bundle."""
    if bundle is None:
        return EVAL_FILE, GRID_FILE
    return f"eval-bundle-{precision}.json", f"eval-bundle-{precision}-grid.png"


def _self_retrieval(embeddings: torch.Tensor, items, kind: str) -> dict[str, Any]:
    """`kind` retrieval of a set among itself (speech->speech, image->image) by class, and by one spoken
    attribute at a time (where an embedding's classes blur, colour or shape)."""
    x = embeddings.numpy()
    labels = items.class_ids.numpy()
    out: dict[str, Any] = {kind: retrieval_scores(x, labels, x, labels, exclude_self=True)}
    by_attribute = {}
    for name in SPOKEN_ATTRIBUTES:
        said = items.attributes[:, ATTRIBUTES.index(name)].numpy()
        by_attribute[name] = retrieval_scores(x, said, x, said, exclude_self=True)["mAP"]
    out[f"{kind}_by_attribute"] = by_attribute
    return out


def _speech_retrieval(speech: torch.Tensor, captions) -> dict[str, Any]:
    return _self_retrieval(speech, captions, "speech_to_speech")


def attribute_accuracy(probs: dict[str, torch.Tensor], labels: torch.Tensor, names) -> dict[str, float]:
    """Per attribute in `names`, how often the most probable class is the label (labels in ATTRIBUTES order)."""
    return {n: float((probs[n].argmax(1) == labels[:, ATTRIBUTES.index(n)]).float().mean()) for n in names}


def evaluate(
    data: str | Path | None,
    run_dir: str | Path,
    *,
    images_per_caption: int | None = None,
    max_captions: int | None = None,
    grid_path: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    bundle: str | Path | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Evaluate `run_dir` on the test split of `data` (default: the dataset it was trained on); with `bundle`,
    evaluate that exported bundle (run by the runtime at `precision`) with the run's judge instead."""
    with contextlib.ExitStack() as stack:
        pipeline = None
        if bundle is not None:
            from s2i_runtime import Pipeline

            pipeline = stack.enter_context(Pipeline.load(bundle, backend="onnxruntime", device="cpu",
                                                         precision=precision))
        return _evaluate(data, Path(run_dir), images_per_caption=images_per_caption, max_captions=max_captions,
                         grid_path=grid_path, seed=seed, pipeline=pipeline, precision=precision)


@dataclass
class EvalInputs:
    """What the sections of the report read: the run, its judge and (once loaded) teacher, the test split and
    what draws the images."""

    root: Path
    run_dir: Path
    config: TrainConfig
    seed: int
    judge: nn.Module
    drawer: Drawer | None
    test_images: ImageBank
    all_test_captions: CaptionBank  # every voice: the table by voice and condition
    test_captions: CaptionBank  # the held-out espeak-ng voices: the headline figures
    pipeline: Any = None  # the runtime's Pipeline when a bundle is evaluated
    teacher: nn.Module | None = None

    @property
    def judge_size(self) -> int:
        return self.judge.config.image_size


class RealReads(NamedTuple):
    """The judge's (probabilities, features) of every real test image, in batches; and the features joined."""

    batches: list[tuple[dict[str, torch.Tensor], torch.Tensor]]
    features: torch.Tensor


class SpeechSide(NamedTuple):
    """The test captions' speech embeddings (None without an encoder), what embeds raw waves, and the attribute
    probe fitted on the training captions (None for a bundle)."""

    speech: torch.Tensor | None
    embed_waves: Callable[[list[np.ndarray]], torch.Tensor] | None
    probe: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None


class Samples(NamedTuple):
    """`per_caption` generated images for each test caption in `pick`, as the judge (and the teacher) read them."""

    pick: torch.Tensor  # rows of the test captions drawn, sorted
    per_caption: int
    probs: dict[str, torch.Tensor]  # the judge's, per image
    features: torch.Tensor  # the judge's trunk features, per image
    labels: torch.Tensor  # (images, 4) what each image was asked for
    teacher_hits: torch.Tensor | None  # (images, 3) the teacher's reading of the spoken attributes
    grid_samples: dict[int, tuple[int, torch.Tensor]]  # per test class: its first caption and that one's images

    def correct(self) -> torch.Tensor:
        """(images,) bool: the judge reads the asked colour, shape and size."""
        return torch.stack([self.probs[a].argmax(1) == self.labels[:, ATTRIBUTES.index(a)]
                            for a in ("colour", "shape", "size")]).all(0)


def _evaluate(data, run_dir: Path, *, images_per_caption: int | None, max_captions: int | None,
              grid_path: str | Path | None, seed: int, pipeline, precision: str) -> dict[str, Any]:
    config = load_run_config(run_dir)
    root = Path(data) if data is not None else Path(config.data.root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset directory does not exist")
    ecfg = config.eval
    k = images_per_caption or ecfg.images_per_caption
    limit = max_captions if max_captions is not None else ecfg.max_captions
    began = time.perf_counter()
    torch.manual_seed(seed)

    inputs = _eval_inputs(root, run_dir, config, seed, pipeline)
    report_file, grid_file = report_names(pipeline.bundle.path if pipeline is not None else None, precision)
    result: dict[str, Any] = {
        "dataset": str(root),
        "run": str(run_dir),
        "split": "test (held-out classes, held-out espeak-ng voices)",
        "test_images": len(inputs.test_images),
        "test_captions": len(inputs.test_captions),
        "judge_feature_note": "judge-FID / judge-IS use the judge's features; not comparable to Inception numbers",
    }
    if pipeline is not None:
        result["bundle"] = {"path": str(pipeline.bundle.path), "precision": precision,
                            "backend": "onnxruntime (cpu)"}
    result["judge_real"] = _judge_on_real_holdout(inputs)
    real = _judge_reads_of_real(inputs)
    inputs.teacher = load_module(run_dir, TEACHER).eval() if has_module(run_dir, TEACHER) else None
    side = _retrieval_section(inputs, result)
    if inputs.drawer is not None and side.speech is not None:
        samples = _draw_samples(inputs, side.speech, per_caption=k, limit=limit)
        result["generated"] = _generated_accuracies(inputs, samples)
        result.update(_fid_and_is(samples, real))
        result["diversity"] = _diversity(inputs, samples, real.features)
        result["grid"] = _write_grid(inputs, samples, Path(grid_path) if grid_path else run_dir / grid_file)
    if side.embed_waves is not None:
        result["conditions"] = _conditions(root, run_dir, inputs.all_test_captions, side.embed_waves, inputs.drawer,
                                           inputs.judge, ecfg, seed, side.probe)
    result["seconds"] = round(time.perf_counter() - began, 2)
    atomic_write_text(run_dir / report_file, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def _eval_inputs(root: Path, run_dir: Path, config: TrainConfig, seed: int, pipeline) -> EvalInputs:
    """The run's judge, what draws images (the bundle, else the run's generator, else nothing) and the test split,
    loaded at every size that reads it."""
    judge = load_judge(run_dir).eval()
    drawer = None
    if pipeline is not None:
        drawer = _bundle_drawer(pipeline)
    elif has_module(run_dir, GENERATOR):
        drawer = run_drawer(run_dir)
    gen_size = drawer.image_size if drawer is not None else None
    sizes = tuple(sorted({judge.config.image_size, *([gen_size] if gen_size else []), config.teacher.image_size}))
    test_images = load_image_bank(root, "test", sizes, run_dir)
    all_test_captions = load_caption_bank(root, "test", test_images, run_dir=run_dir)
    # The headline figures are read on the held-out espeak-ng voices, so they stay comparable with runs made before
    # the recorded voices existed; the table by voice and condition covers both kinds.
    test_captions = all_test_captions.subset(cell_captions(all_test_captions.records, "espeak", 0, seed))
    return EvalInputs(root, run_dir, config, seed, judge, drawer, test_images, all_test_captions, test_captions,
                      pipeline)


def _judge_on_real_holdout(inputs: EvalInputs) -> dict[str, Any]:
    """The judge's accuracy on the real held-out images it never trained on: how far its readings can be trusted."""
    from .train.judge import judge_holdout

    images = inputs.test_images
    rows = torch.nonzero(judge_holdout(images, inputs.config.judge.holdout_fraction)).flatten()
    probs, _ = judge_read(inputs.judge, images.images(rows, inputs.judge_size))
    return {"images": len(rows), **attribute_accuracy(probs, images.attributes[rows], ATTRIBUTES)}


def _judge_reads_of_real(inputs: EvalInputs) -> RealReads:
    """The judge on every real test image: the reference of judge-FID, judge-IS and diversity."""
    images = inputs.test_images
    batches = _batched(lambda r: judge_read(inputs.judge, images.images(r, inputs.judge_size)), len(images), 256)
    return RealReads(batches, torch.cat([f for _, f in batches]))


def _retrieval_section(inputs: EvalInputs, result: dict[str, Any]) -> SpeechSide:
    """Retrieval by class among the test captions (and against the teacher's image space where the encoder was
    taught in it), the teacher on real held-out images, and the linear probe of the speech embeddings; writes
    them into `result`."""
    run_dir, test_captions = inputs.run_dir, inputs.test_captions
    if inputs.pipeline is not None:
        pipeline = inputs.pipeline
        # The bundle's own front end and encoder on the WAV files. Speech->image retrieval and the linear probe
        # need the run's image space and training embeddings: run-only figures.
        speech = torch.from_numpy(pipeline.embed([inputs.root / r["audio"] for r in test_captions.records]))
        result["retrieval"] = {"objective": "bundle", **_speech_retrieval(speech, test_captions)}
        return SpeechSide(speech, lambda waves: torch.from_numpy(pipeline.embed(waves)), None)
    if not has_module(run_dir, ENCODER):
        return SpeechSide(None, None, None)
    encoder = load_module(run_dir, ENCODER).eval()
    objective = read_meta(run_dir, ENCODER).get("summary", {}).get("objective", "unknown")
    speech = caption_embeddings(encoder, test_captions)
    retrieval: dict[str, Any] = {"objective": objective, **_speech_retrieval(speech, test_captions)}
    if objective in ("teacher_student", "sen") and inputs.teacher is not None:
        retrieval.update(_image_space_retrieval(inputs, speech))
        result["teacher_real"] = _teacher_on_real(inputs)
    result["retrieval"] = retrieval
    probe = _attribute_probe(encoder, inputs.root, run_dir)
    result["encoder_probe"] = {name: float((probs.argmax(1) == test_captions.attributes[:, ATTRIBUTES.index(name)])
                                           .float().mean()) for name, probs in probe(speech).items()}
    return SpeechSide(speech, encoder_on_waves(encoder), probe)


def _image_space_retrieval(inputs: EvalInputs, speech: torch.Tensor) -> dict[str, Any]:
    """Speech->image retrieval in the image space the encoder was taught in, and image->image in it alone (the
    geometry a teacher-student encoder inherits)."""
    images, teacher = inputs.test_images, inputs.teacher
    size = teacher.config.image_size
    taught_by = encoder_teacher_name(inputs.run_dir)
    image_side = encoder_image_space(inputs.run_dir, teacher)
    feats = torch.cat(_batched(lambda r: image_side(images.images(r, size)).features, len(images), 256))
    out: dict[str, Any] = {
        "speech_to_image": retrieval_scores(speech.numpy(), inputs.test_captions.class_ids.numpy(), feats.numpy(),
                                            images.class_ids.numpy()),
        "teacher": taught_by,
    }
    out.update(_self_retrieval(feats, images, "image_to_image"))
    return out


@torch.no_grad()
def _teacher_on_real(inputs: EvalInputs) -> dict[str, float]:
    """The frozen teacher's accuracy on real held-out images: a teacher that reads unseen combinations badly hands
    that to the speech encoder and the generator."""
    images, teacher = inputs.test_images, inputs.teacher
    size = teacher.config.image_size
    heads = torch.cat([torch.cat([teacher(images.images(r, size)).attribute_logits[a].argmax(1, keepdim=True)
                                  for a in ATTRIBUTES], 1)
                       for r in torch.arange(len(images)).split(256)])
    return {a: float((heads[:, i] == images.attributes[:, i]).float().mean()) for i, a in enumerate(ATTRIBUTES)}


def _draw_samples(inputs: EvalInputs, speech: torch.Tensor, *, per_caption: int, limit: int) -> Samples:
    """Draw `per_caption` images for each of up to `limit` test captions (0 = all) and read them with the judge
    and the teacher."""
    test_captions, drawer, k = inputs.test_captions, inputs.drawer, per_caption
    batch = max(1, inputs.config.eval.batch_size // k)
    n = len(test_captions) if not limit else min(limit, len(test_captions))
    # Its own generator: which captions are drawn must not depend on what ran before (the probe does not run for
    # a bundle).
    pick = torch.randperm(len(test_captions), generator=torch.Generator().manual_seed(inputs.seed))[:n].sort().values
    gen = torch.Generator().manual_seed(inputs.seed)
    probs_all, feats_all, teacher_hits = [], [], []
    grid_samples: dict[int, tuple[int, torch.Tensor]] = {}
    for start in range(0, n, batch):
        sel = pick[start : start + batch]
        emb = speech[sel].repeat_interleave(k, 0)
        z = torch.randn(len(emb), drawer.z_dim, generator=gen)
        eps = torch.randn(len(emb), drawer.ca_dim, generator=gen)
        images = drawer.draw(emb, z, eps)
        probs, feats = judge_read(inputs.judge, images)
        if inputs.teacher is not None:
            # The teacher G was trained to satisfy, on the same images: where it reads far above the judge, G
            # satisfies it with images that do not show the attribute.
            with torch.no_grad():
                read = inputs.teacher(images).attribute_logits  # it resizes to its own input size
            teacher_hits.append(torch.stack([read[a].argmax(1) for a in SPOKEN_ATTRIBUTES], 1))
        probs_all.append(probs)
        feats_all.append(feats)
        for j, caption in enumerate(sel.tolist()):
            cls = int(test_captions.class_ids[caption])
            if cls not in grid_samples:
                grid_samples[cls] = (caption, images[j * k : (j + 1) * k])
    return Samples(
        pick=pick,
        per_caption=k,
        probs={name: torch.cat([p[name] for p in probs_all]) for name in ATTRIBUTES},
        features=torch.cat(feats_all),
        labels=test_captions.attributes[pick].repeat_interleave(k, 0),
        teacher_hits=torch.cat(teacher_hits) if teacher_hits else None,
        grid_samples=grid_samples,
    )


def _generated_accuracies(inputs: EvalInputs, samples: Samples) -> dict[str, Any]:
    """The judge's (and the teacher's) readings of the generated images against what each caption asked for."""
    probs, labels, k = samples.probs, samples.labels, samples.per_caption
    test_captions = inputs.test_captions
    size_small = labels[:, ATTRIBUTES.index("size")] == 0
    background_hits = probs["background"].argmax(1) == labels[:, ATTRIBUTES.index("background")]
    background_named = test_captions.spoken[samples.pick, ATTRIBUTES.index("background")].repeat_interleave(k, 0)
    teacher_accuracy = {}
    if samples.teacher_hits is not None:
        teacher_accuracy = {a: float((samples.teacher_hits[:, i] == labels[:, ATTRIBUTES.index(a)]).float().mean())
                            for i, a in enumerate(SPOKEN_ATTRIBUTES)}
    shape_hits = probs["shape"].argmax(1) == labels[:, 1]
    return {
        "captions": len(samples.pick),
        "images_per_caption": k,
        "judge_accuracy": attribute_accuracy(probs, labels, ATTRIBUTES),
        "judge_all_three_correct": float(samples.correct().float().mean()),
        "teacher_accuracy": teacher_accuracy,
        # The background is only asked for where the caption names it.
        "judge_background_where_named": (float(background_hits[background_named].float().mean())
                                         if background_named.any() else None),
        "judge_shape_by_size": {
            "small": float(shape_hits[size_small].float().mean()),
            "large": float(shape_hits[~size_small].float().mean()),
        },
        "judge_shape_by_class": _by_class(shape_hits, test_captions.class_ids[samples.pick].repeat_interleave(k, 0)),
        "judge_shape_read_as": read_as(labels[:, ATTRIBUTES.index("shape")], probs["shape"].argmax(1),
                                       vocabulary.SHAPES),
    }


def _fid_and_is(samples: Samples, real: RealReads) -> dict[str, Any]:
    """judge-FID of one image per caption against every real test image (and between two halves of the real
    images, its floor), and judge-IS on the 64-way colour x shape distribution of the generated and real images."""
    first = torch.arange(0, len(samples.features), samples.per_caption)
    out: dict[str, Any] = {
        "judge_fid": frechet_distance(samples.features[first].numpy(), real.features.numpy()),
        "judge_fid_real_halves": frechet_distance(real.features[0::2].numpy(), real.features[1::2].numpy()),
    }
    probs = samples.probs
    joint = (probs["colour"][:, :, None] * probs["shape"][:, None, :]).flatten(1)
    out["judge_is"], out["judge_is_std"] = inception_style_score(joint.numpy(), splits=1)
    real_joint = torch.cat([(p["colour"][:, :, None] * p["shape"][:, None, :]).flatten(1) for p, _ in real.batches])
    out["judge_is_real"], _ = inception_style_score(real_joint.numpy(), splits=1)
    return out


def _diversity(inputs: EvalInputs, samples: Samples, real_feats: torch.Tensor) -> dict[str, Any]:
    """Mean pairwise judge-feature distance among the images of one utterance (different z), against real images
    of one class, of one class and size, and of everything the caption says."""
    test_images, test_captions, pick = inputs.test_images, inputs.test_captions, samples.pick
    feats, k, n = samples.features, samples.per_caption, len(samples.pick)
    correct = samples.correct()
    groups = [feats[i * k : (i + 1) * k].numpy() for i in range(n)]
    # Correctly judged samples only: a malformed image spreads the features as much as a varied one does.
    good = [feats[i * k : (i + 1) * k][correct[i * k : (i + 1) * k]].numpy() for i in range(n)]
    real_groups = [real_feats[test_images.class_ids == c].numpy() for c in test_images.class_ids.unique()]
    # A caption fixes the size too (and sometimes the background): the stricter real reference holds the class and
    # size fixed, so a figure below 1 is not just the size the caption pinned.
    size_col = ATTRIBUTES.index("size")
    real_sized = [real_feats[(test_images.class_ids == c) & (test_images.attributes[:, size_col] == s)].numpy()
                  for c in test_images.class_ids.unique() for s in (0, 1)]
    # The fairest reference: real images that match everything the caption says (its class and size, and its
    # background where it names one); a model that draws exactly what it is told scores 1 here.
    bg_col = ATTRIBUTES.index("background")
    named_bg = test_captions.spoken[pick, bg_col]
    match_div = {}

    def matched_real_diversity(caption: int, named: bool) -> float:
        attrs = test_captions.attributes[caption]
        key = (int(test_captions.class_ids[caption]), int(attrs[size_col]), int(attrs[bg_col]) if named else -1)
        if key not in match_div:
            same = (test_images.class_ids == key[0]) & (test_images.attributes[:, size_col] == key[1])
            if named:
                same &= test_images.attributes[:, bg_col] == key[2]
            match_div[key] = mean_pairwise_distance([real_feats[same].numpy()])
        return match_div[key]

    matched = np.array([matched_real_diversity(int(c), bool(b)) for c, b in zip(pick, named_bg, strict=True)])
    own = np.array([mean_pairwise_distance([g]) for g in groups])
    open_bg = ~named_bg.numpy()
    generated_div = float(own.mean())  # every group holds k samples
    correct_div = mean_pairwise_distance(good)
    real_div = mean_pairwise_distance(real_groups)
    real_sized_div = mean_pairwise_distance(real_sized)
    return {
        "generated_same_utterance": generated_div,
        "generated_same_utterance_correct_only": correct_div,
        "real_same_class": real_div,
        "real_same_class_and_size": real_sized_div,
        "ratio": generated_div / real_div if real_div else None,
        "ratio_correct_only": correct_div / real_div if real_div else None,
        "ratio_vs_same_size": generated_div / real_sized_div if real_sized_div else None,
        "real_matching_caption": float(matched.mean()),
        # The most `ratio` can be for a generator that draws exactly what each caption says: real images matching
        # the captions spread this much less than real images of one class.
        "ratio_ceiling_for_faithful_generator": float(matched.mean() / real_div) if real_div else None,
        "ratio_vs_matching_caption": float(own.mean() / matched.mean()) if matched.mean() else None,
        "ratio_vs_matching_caption_open_background": (float(own[open_bg].mean() / matched[open_bg].mean())
                                                      if open_bg.any() and matched[open_bg].mean() else None),
    }


def _write_grid(inputs: EvalInputs, samples: Samples, path: Path) -> str:
    """The image grid: one row per held-out class (at most grid_rows * 2), a real image of its first caption then
    that caption's samples. Returns the path written."""
    grid_samples = samples.grid_samples
    classes = sorted(grid_samples)[: max(inputs.config.eval.grid_rows, 1) * 2]
    real_rows = inputs.test_captions.image_index[torch.tensor([grid_samples[c][0] for c in classes])]
    grid = image_grid(inputs.test_images.images(real_rows, inputs.drawer.image_size),
                      torch.stack([grid_samples[c][1] for c in classes]))
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
    return str(path)


def encoder_on_waves(encoder) -> Callable[[list[np.ndarray]], torch.Tensor]:
    @torch.no_grad()
    def embed(waves: list[np.ndarray]) -> torch.Tensor:
        batch = torch.zeros(len(waves), max(len(w) for w in waves))
        for row, wave in enumerate(waves):
            batch[row, : len(wave)] = torch.from_numpy(np.asarray(wave, dtype=np.float32))
        return encoder(*logmel_torch(batch, torch.tensor([len(w) for w in waves])))

    return embed


def _conditions(root: Path, run_dir: Path, captions, embed_waves, drawer: Drawer | None, judge, ecfg, seed: int,
                probe) -> dict[str, Any]:
    """The table by voice group and acoustic condition (eval_conditions), read by the judge and, where the run
    has one, the silhouette judge."""
    test_waves = load_wave_bank(root, "test", run_dir=run_dir)
    babble_voice = babble_source(root, run_dir)
    read = condition_reader(run_dir, judge)
    draw, z_dim, ca_dim = (drawer.draw, drawer.z_dim, drawer.ca_dim) if drawer is not None else (None, 0, 0)
    return condition_table(captions.records, captions.attributes, test_waves.wave, babble_voice, embed_waves,
                           draw, z_dim, ca_dim, read, probe=probe,
                           images_per_caption=ecfg.condition_images_per_caption, limit=ecfg.condition_captions,
                           seed=seed, batch_size=ecfg.batch_size)


def babble_source(root: Path, run_dir: Path) -> Callable[[np.random.Generator], np.ndarray]:
    """The training captions' voices, from which the noisy room's babble is drawn."""
    # Captions that name everything, as in data without shape-open captions: the same seed, the same babble.
    full = [row for row, record in enumerate(r for r in read_records(root) if r["split"] == "train")
            if says_shape(record)]
    train_waves = load_wave_bank(root, "train", run_dir=run_dir).subset(torch.tensor(full, dtype=torch.long))

    def babble_voice(rng: np.random.Generator) -> np.ndarray:
        return train_waves.wave(int(rng.integers(len(train_waves))))

    return babble_voice


def condition_reader(run_dir: Path, judge) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """What reads the table's images: the judge's colour, shape and size, and the silhouette judge's shape where
    the run has one."""
    silhouette = load_silhouette_judge(run_dir) if has_module(run_dir, SILHOUETTE_JUDGE) else None

    def read(images: torch.Tensor) -> dict[str, torch.Tensor]:
        probs, _ = judge_read(judge, images)
        out = {name: probs[name] for name in ("colour", "shape", "size")}
        if silhouette is not None:
            out["silhouette_shape"] = silhouette_shape_read(silhouette, images)
        return out

    return read


PROBE_L2 = 1e-3


def _attribute_probe(encoder, root: Path, run_dir: Path) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """A linear read-out per spoken attribute (softmax regression), fitted on the training captions' embeddings
    and applied to any embeddings: scored on the test captions it tells whether the attribute is encoded in a
    way that carries over to unseen pairs and voices (a generator can only draw what this reads)."""
    config = load_run_config(run_dir)
    train_images = load_image_bank(root, "train", (config.teacher.image_size,), run_dir)
    train_captions = load_caption_bank(root, "train", train_images, run_dir=run_dir).fully_said()
    train_speech = caption_embeddings(encoder, train_captions).numpy().astype(np.float64)
    mean, std = train_speech.mean(0), train_speech.std(0) + 1e-6
    offsets = {}
    if config.eval.probe_cooccurrence_prior:
        offsets = {name: o.double().numpy()
                   for name, o in cooccurrence_offsets(train_captions.attributes, train_captions.spoken).items()}
    fits = {}
    for name in SPOKEN_ATTRIBUTES:
        labels = train_captions.attributes[:, ATTRIBUTES.index(name)].numpy()
        fits[name] = fit_softmax_regression((train_speech - mean) / std, labels,
                                            ATTRIBUTE_CLASSES[name], PROBE_L2, offsets=offsets.get(name))

    def read(embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (embeddings.numpy().astype(np.float64) - mean) / std
        return {name: torch.from_numpy(x @ w + b).softmax(1) for name, (w, b) in fits.items()}

    return read


def _by_class(hits: torch.Tensor, class_ids: torch.Tensor) -> dict[str, float]:
    return {vocabulary.CLASSES[int(c)].name: float(hits[class_ids == c].float().mean()) for c in class_ids.unique()}


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Human-readable figures."""
    lines = []
    if "bundle" in result:
        b = result["bundle"]
        lines.append(f"bundle {b['path']} ({b['precision']}, {b['backend']}), read by the run's judge")
    jr = result.get("judge_real", {})
    if jr:
        lines.append("judge on real held-out images: " + ", ".join(f"{a} {jr[a]:.3f}" for a in ATTRIBUTES))
    tr = result.get("teacher_real", {})
    if tr:
        lines.append("teacher on real held-out images: " + ", ".join(f"{a} {tr[a]:.3f}" for a in ATTRIBUTES))
    probe = result.get("encoder_probe")
    if probe:
        lines.append("linear probe of speech embeddings (train -> test captions): "
                     + ", ".join(f"{a} {probe[a]:.3f}" for a in probe))
    ret = result.get("retrieval")
    if ret:
        for kind in ("speech_to_image", "speech_to_speech", "image_to_image"):
            if kind in ret:
                whose = ret.get("teacher") if kind == "image_to_image" else ret["objective"]
                lines.append(f"retrieval {kind} ({whose}): mAP {ret[kind]['mAP']:.3f}, "
                             f"R@1 {ret[kind]['R@1']:.3f}")
        for kind in ("speech_to_speech", "image_to_image"):
            if f"{kind}_by_attribute" in ret:
                lines.append(f"retrieval {kind} mAP by one attribute: "
                             + ", ".join(f"{a} {m:.3f}" for a, m in ret[f"{kind}_by_attribute"].items()))
    gen = result.get("generated")
    if gen:
        acc = gen["judge_accuracy"]
        lines.append("judge on generated: " + ", ".join(f"{a} {acc[a]:.3f}" for a in ATTRIBUTES)
                     + f"; all three {gen['judge_all_three_correct']:.3f};"
                     f" background where named {gen['judge_background_where_named'] or 0:.3f}")
        if gen.get("judge_shape_read_as"):
            worst = top_confusions(gen["judge_shape_read_as"])
            lines.append("shapes most often misdrawn: "
                         + ", ".join(f"{asked} read as {read} {share:.2f}" for asked, read, share in worst))
        if gen.get("teacher_accuracy"):
            whose = "the run's teacher" if "bundle" in result else "teacher (what G was trained to satisfy)"
            lines.append(f"{whose} on the same images: "
                         + ", ".join(f"{a} {v:.3f}" for a, v in gen["teacher_accuracy"].items()))
        d = result["diversity"]
        lines.append(f"diversity vs real same class {d['ratio']:.3f} (correct only {d['ratio_correct_only'] or 0:.3f};"
                     f" real images matching the captions score {d['ratio_ceiling_for_faithful_generator'] or 0:.3f}),"
                     f" vs real same class and size {d['ratio_vs_same_size'] or 0:.3f},"
                     f" vs real matching the caption {d['ratio_vs_matching_caption'] or 0:.3f}"
                     f" (background left open: {d['ratio_vs_matching_caption_open_background'] or 0:.3f})")
        lines.append(f"judge-FID {result['judge_fid']:.2f} (real halves {result['judge_fid_real_halves']:.2f}), "
                     f"judge-IS {result['judge_is']:.2f} (real {result['judge_is_real']:.2f})")
        lines.append(f"grid: {result['grid']}")
    if result.get("conditions"):
        lines.append("by voice and condition (held-out classes):")
        lines += ["  " + line for line in table_lines(result["conditions"]) + confusion_lines(result["conditions"])]
    return lines
