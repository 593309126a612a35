"""Train the StackGAN-v2 generator on the frozen speech encoder's embeddings of the training captions.

Per step: D learns real/cond, real/uncond, wrong (a real image of another class with this caption's
condition), fake; G learns to fool every scale's D, plus 2·KL of the conditioning augmentation; G's EMA
is what gets saved. Semantic-consistency switches, without which the generated shape stays near chance:
`d_attribute_heads` (AC-GAN: D reads colour/shape/size/background on real images; G is asked for the
caption's colour/shape/size on fakes) and `teacher_consistency` (the frozen teacher's attribute heads
read the fakes, optionally shifted and mirrored: `teacher_jitter`; with `teacher.checker_widths` the checkers
read them too and the term is the mean over all). `novel_code_fraction` adds samples
conditioned on attribute combinations drawn from the vocabulary, which no caption may have: they get only the
terms that need no matching real image, so G learns every combination, not just the training pairs'. The
papers' own terms are switches too: Li et al.'s class-aware loss on D's features (`class_aware_weight`),
DAMSM-style image-speech matching on the teacher's features (`speech_matching_weight`) and S2IGAN's relation
supervisor (`relation_weight`). The encoder is frozen, so every caption's embedding is computed once up front.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from s2i_runtime.errors import InputError

from .. import losses
from ..checkpoint import (
    GENERATOR,
    encoder_image_space,
    load_checkers,
    load_speech_encoder,
    load_teacher,
    save_module,
)
from ..metrics import fit_softmax_regression
from ..models import EMA, RelationSupervisor, build_discriminators, build_generator, freeze
from ..models.generator import Generator, GeneratorOutput
from . import distributed
from .banks import ATTRIBUTES, caption_embeddings, load_caption_bank, load_image_bank
from .common import (
    ATTRIBUTE_CLASSES,
    SPOKEN_ATTRIBUTES,
    attribute_labels,
    attribute_loss,
    cooccurrence_offsets,
)
from .config import TrainConfig
from .image_augment import jitter_images
from .loop import StepSampler
from .precision import backward

SAMPLES_DIR = "samples"


# Logits of the fitted read-outs are multiplied by this, so a caption the fit is less sure of (an unseen pair or
# voice) gets a near one-hot code like the training ones rather than a blend the generator never saw; the argmax
# is unchanged.
READOUT_SHARPNESS = 10.0


def fit_attribute_readouts(ca, embeddings: torch.Tensor, labels: torch.Tensor, code: tuple[int, ...],
                           spoken: torch.Tensor | None = None, cooccurrence_prior: bool = False) -> None:
    """Fit the conditioning's frozen attribute read-outs to the training captions' labels (ATTRIBUTES order:
    the code's i-th block reads ATTRIBUTES[i]). Where `spoken` (N, 4) says a caption leaves an attribute open,
    the target is uniform, because a read-out fitted to the image's label learns to guess an unsaid background
    from the voice, confidently, and G then draws that one background for every z. With `cooccurrence_prior` the
    colour and shape read-outs are fitted with the captions' co-occurrence prior added to their logits."""
    expected = tuple(ATTRIBUTE_CLASSES[name] for name in ATTRIBUTES[: len(code)])
    if code != expected:
        raise InputError(f"generator.model.attribute_code must list the class counts of {ATTRIBUTES[: len(code)]} "
                         f"in that order, {list(expected)}; got {list(code)}")
    x = ca.centred(embeddings).double().numpy()
    offsets = {}
    if cooccurrence_prior:
        said = torch.ones_like(labels, dtype=torch.bool) if spoken is None else spoken
        offsets = {ATTRIBUTES.index(name): offset.double().numpy()
                   for name, offset in cooccurrence_offsets(labels, said).items()}
    weights, biases = [], []
    for column, classes in enumerate(code):
        targets = F.one_hot(labels[:, column], classes).double()
        sharpness = READOUT_SHARPNESS
        if spoken is not None and not bool(spoken[:, column].all()):
            targets[~spoken[:, column]] = 1.0 / classes
            sharpness = 1.0  # sharpening would turn "either" (logits a hair apart) back into a confident guess
        w, b = fit_softmax_regression(x, targets.numpy(), classes, offsets=offsets.get(column))
        weights.append(torch.from_numpy(w.T * sharpness).float())
        biases.append(torch.from_numpy(b * sharpness).float())
    ca.set_readouts(weights, biases)


class Reading(NamedTuple):
    """One frozen image classifier's (the teacher's or a checker's) attribute logits for the generated rows
    `rows` (None: all), and its weight in the classifiers' terms (None: they are averaged)."""
    logits: dict[str, torch.Tensor]
    rows: torch.Tensor | None
    weight: float | None


def _rows(values, rows: torch.Tensor | None):
    """The rows `rows` of a tensor or of each tensor of a dict; None = all of them."""
    if rows is None:
        return values
    if isinstance(values, dict):
        return {name: value[rows] for name, value in values.items()}
    return values[rows]


def _over_classifiers(readings: list[Reading], term) -> torch.Tensor:
    """The frozen classifiers' terms combined: the mean when each read every row (one scale whatever their
    number), else weighted by each one's share of the rows."""
    if all(r.weight is None for r in readings):
        return sum(term(r) for r in readings) / len(readings)
    return sum(r.weight * term(r) for r in readings)


class GeneratorInputs(NamedTuple):
    embedding: torch.Tensor
    z: torch.Tensor
    eps: torch.Tensor
    code: list[torch.Tensor] | None  # explicit attribute code (drawn blocks, novel codes), else None
    labels: torch.Tensor  # (rows, 4) the attributes each row is asked for


class StepBatch(NamedTuple):
    """What one training step works on."""

    step: int
    idx: torch.Tensor  # the captions; with mode seeking, rows i and i + half share one
    rows: torch.Tensor  # their real images
    wrong_rows: torch.Tensor  # a real image of another class per caption (StackGAN's mismatched pairs)
    half: int  # rows [0, half) pair with [half, 2 half) for mode seeking; 0 = no pairs
    inputs: GeneratorInputs
    out: GeneratorOutput
    captions: slice  # G's output rows of the captions
    novel: slice  # ... and of the novel codes, which have no real image to match


class LossSum:
    """G's loss summed term by term in the order the terms are added (so the sum and its graph are the same on
    every run); a named term's unweighted value is logged in `figures`."""

    def __init__(self, figures: dict[str, float]):
        self.figures = figures
        self.total = torch.zeros(())
        self.kl = torch.zeros(())

    def add(self, term: torch.Tensor, weight: float | None = None, name: str | None = None) -> None:
        self.total = self.total + (term if weight is None else weight * term)
        if name is not None:
            self.figures[name] = term.item()


# Columns that make the class: what the relation supervisor's "similar" images share.
CLASS_COLUMNS = (ATTRIBUTES.index("colour"), ATTRIBUTES.index("shape"))


class GeneratorStage:
    name = GENERATOR

    def __init__(self, config: TrainConfig, run_dir: Path):
        self.config = config
        self.cfg = cfg = config.generator
        self.run_dir = run_dir
        encoder = load_speech_encoder(run_dir)
        self.model_config = replace(cfg.model, embedding_dim=encoder.config.embedding_dim)
        self.sizes = self.model_config.image_sizes
        root = config.data.root
        self.images = load_image_bank(root, "train", self.sizes, run_dir)
        # The generator draws what a caption names; a caption that leaves the shape open would ask it for any shape
        # while the checkers and the discriminator hold it to its image's.
        self.captions = load_caption_bank(root, "train", self.images, run_dir=run_dir).fully_said()
        self.embeddings = caption_embeddings(encoder, self.captions)
        del encoder
        needs_teacher = cfg.teacher_consistency or cfg.speech_matching_weight > 0 or cfg.relation_weight > 0
        self.teacher = freeze(load_teacher(run_dir)) if needs_teacher else None
        # Speech-image matching compares the embedding with image features of the space it was taught in.
        self.speech_space = None
        if cfg.speech_matching_weight > 0:
            self.speech_space = freeze(encoder_image_space(run_dir, self.teacher))
        self.checkers = ([freeze(c) for c in load_checkers(run_dir, len(config.teacher.checker_widths))]
                        if cfg.teacher_consistency else [])
        torch.manual_seed(config.run.seed)
        self.generator = build_generator(self.model_config)
        self.generator.ca.set_embedding_statistics(self.embeddings)
        if cfg.novel_code_fraction > 0 and (self.model_config.condition_on_embedding
                                            or not self.model_config.attribute_code):
            raise InputError("generator.novel_code_fraction needs generator.model.attribute_code and "
                             "generator.model.condition_on_embedding = false")
        if self.model_config.attribute_code:
            fit_attribute_readouts(self.generator.ca, self.embeddings, self.captions.attributes,
                                   tuple(self.model_config.attribute_code),
                                   self.captions.spoken if cfg.unsaid_attributes_uniform else None,
                                   cfg.readout_cooccurrence_prior)
        heads = dict(ATTRIBUTE_CLASSES) if cfg.d_attribute_heads else None
        self.discriminators = build_discriminators(self.sizes, ndf=cfg.ndf, condition_dim=self.model_config.ca_dim,
                                                   attributes=heads)
        distributed.broadcast_module(self.generator)
        distributed.broadcast_module(self.discriminators)
        self.ema = EMA(self.generator, decay=cfg.ema_decay)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas))
        self.opt_d = [torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=tuple(cfg.betas))
                      for d in self.discriminators]
        self.relation = None
        if cfg.relation_weight > 0:
            self.relation = RelationSupervisor(self.teacher.config.feature_dim)
            distributed.broadcast_module(self.relation)
            self.opt_relation = torch.optim.Adam(self.relation.parameters(), lr=cfg.lr_d, betas=tuple(cfg.betas))
        self.sampler = StepSampler(len(self.captions), cfg.batch_size, config.run.seed,
                                   distributed.rank(), distributed.world_size())

    # ------------------------------------------------------------------ one step

    def train_step(self, step: int) -> dict[str, float]:
        """D at every scale, then the relation supervisor (when weighted), then G and its EMA."""
        batch = self.sample_batch(step)
        figures: dict[str, float] = {}
        real_features = self.discriminator_step(batch, figures)
        anchor = None
        if self.relation is not None:
            anchor = self.train_relation_supervisor(batch.rows, batch.wrong_rows,
                                                    batch.out.images[-1][batch.captions].detach(), step, figures)
        g_loss = self.generator_loss(batch, real_features, anchor, figures)
        self.opt_g.zero_grad(set_to_none=True)
        backward(g_loss.total)
        distributed.average_gradients(self.generator)
        self.opt_g.step()
        self.ema.update(self.generator)
        if self.cfg.sample_every and (step + 1) % self.cfg.sample_every == 0 and distributed.is_main():
            self.save_samples(step + 1)
        figures["g"] = g_loss.total.item()
        figures["kl"] = g_loss.kl.item()
        return figures

    def sample_batch(self, step: int) -> StepBatch:
        """The step's captions, their real and mismatched images, and G's output for them (plus novel codes)."""
        idx = torch.tensor(self.sampler.indices(step))
        half = len(idx) // 2 if self.cfg.mode_seeking_weight > 0 else 0
        if half > 0:
            idx[half : 2 * half] = idx[:half]  # pairs (i, i + half) share a caption, not z
        rows = self.captions.image_index[idx]
        wrong_rows = self.images.wrong_indices(rows, self.step_generator(step, stream=2))
        self.generator.train()
        self.discriminators.train()
        inputs = self.generator_inputs(idx, rows, step)
        out = self.generator(inputs.embedding, inputs.z, inputs.eps, inputs.code)
        return StepBatch(step, idx, rows, wrong_rows, half, inputs, out, slice(0, len(idx)), slice(len(idx), None))

    def discriminator_step(self, batch: StepBatch, figures: dict[str, float]) -> list[torch.Tensor]:
        """One update of each scale's D on real, mismatched and generated images (and its attribute heads on
        the real ones). Returns D's pooled features of the real images per scale: the class-aware reference."""
        cfg = self.cfg
        mu = batch.out.mu.detach()
        real_labels = self.images.attributes[batch.rows]
        real_features = []
        for i, (size, disc, opt) in enumerate(zip(self.sizes, self.discriminators, self.opt_d, strict=True)):
            real_out = disc(self.images.images(batch.rows, size), mu[batch.captions])
            real_features.append(real_out.features.detach())
            wrong_out = disc(self.images.images(batch.wrong_rows, size), mu[batch.captions])
            fake_out = disc(batch.out.images[i].detach(), mu)
            d_loss, _ = losses.discriminator_loss(real_out, fake_out.rows(batch.captions), wrong_out)
            if cfg.novel_code_fraction > 0:
                d_loss = d_loss + cfg.novel_code_fraction * losses.unconditional_loss(fake_out.rows(batch.novel),
                                                                                      real=False)
            if cfg.d_attribute_heads:
                attr, _ = attribute_loss(real_out.attribute_logits, real_labels, ATTRIBUTES)
                d_loss = d_loss + cfg.d_attribute_weight * attr
                figures[f"d{size}_attr"] = attr.item()
            opt.zero_grad(set_to_none=True)
            backward(d_loss)
            distributed.average_gradients(disc)
            opt.step()
            figures[f"d{size}"] = d_loss.item()
        return real_features

    def generator_loss(self, batch: StepBatch, real_features: list[torch.Tensor], anchor: torch.Tensor | None,
                       figures: dict[str, float]) -> LossSum:
        """G's loss, term by term in a fixed order: per scale the adversarial terms, D's attribute heads and the
        class-aware term; then mode seeking, the conditioning KL, the papers' teacher-feature terms and the
        teacher consistency."""
        cfg = self.cfg
        g_loss = LossSum(figures)
        for i, disc in enumerate(self.discriminators):
            fake_out = disc(batch.out.images[i], batch.out.mu)
            self.adversarial_terms(g_loss, batch, fake_out)
            if cfg.d_attribute_heads:
                attr, _ = attribute_loss(fake_out.attribute_logits, batch.inputs.labels, SPOKEN_ATTRIBUTES)
                g_loss.add(attr, cfg.d_attribute_weight, "g_d_attr")
            if cfg.class_aware_weight > 0:
                classes = self.images.class_ids[batch.rows]
                class_aware = losses.class_aware_feature_loss(fake_out.features[batch.captions], real_features[i],
                                                              classes)
                g_loss.add(class_aware, cfg.class_aware_weight, "g_class_aware")
        if batch.half > 0:
            g_loss.add(self.mode_seeking_loss(batch), cfg.mode_seeking_weight, "mode_seeking")
        g_loss.kl = losses.kl_loss(batch.out.mu, batch.out.logvar)
        g_loss.add(g_loss.kl, cfg.kl_weight)
        self.teacher_feature_terms(g_loss, batch, anchor)
        if cfg.teacher_consistency:
            self.teacher_consistency_term(g_loss, batch)
        return g_loss

    def adversarial_terms(self, g_loss: LossSum, batch: StepBatch, fake_out) -> None:
        """One scale's D must take the captions' images for real and matching, and the novel codes' images for
        real (their unconditional logit only: no caption to match). Each novel term is scaled by the novel rows'
        share of a batch, so a novel sample counts as much as a caption's."""
        g_loss.add(losses.generator_adversarial_loss(fake_out.rows(batch.captions)))
        if self.cfg.novel_code_fraction > 0:
            g_loss.add(losses.unconditional_loss(fake_out.rows(batch.novel), real=True), self.cfg.novel_code_fraction)

    @staticmethod
    def mode_seeking_loss(batch: StepBatch) -> torch.Tensor:
        """MSGAN: the inverse of how far apart two samples of one caption lie for how far apart their z are."""
        images, z, half = batch.out.images[-1], batch.inputs.z, batch.half
        image_gap = (images[:half] - images[half : 2 * half]).abs().mean(dim=(1, 2, 3))
        z_gap = (z[:half] - z[half : 2 * half]).abs().mean(dim=1)
        return 1.0 / ((image_gap / z_gap).mean() + 1e-5)

    def teacher_feature_terms(self, g_loss: LossSum, batch: StepBatch, anchor: torch.Tensor | None) -> None:
        """The papers' terms on the frozen teacher's features of the captions' images: S2IGAN's image-speech
        matching and its relation supervisor (each only when weighted)."""
        cfg = self.cfg
        fake_features = None
        if self.speech_space is not None:
            fake_features = self.speech_space(batch.out.images[-1][batch.captions]).features
            classes = self.images.class_ids[batch.rows]
            matching = losses.image_speech_matching_loss(fake_features, batch.inputs.embedding[batch.captions],
                                                         classes)
            g_loss.add(matching, cfg.speech_matching_weight, "g_matching")
        if self.relation is not None:
            # The supervisor learned the teacher's features; reuse the matching's read when it was the teacher's.
            teacher_read = (fake_features if fake_features is not None and self.speech_space is self.teacher
                            else self.teacher(batch.out.images[-1][batch.captions]).features)
            relation = losses.relation_loss(self.relation(anchor, teacher_read), "similar")
            g_loss.add(relation, cfg.relation_weight, "g_relation")

    def teacher_consistency_term(self, g_loss: LossSum, batch: StepBatch) -> None:
        """The frozen teacher and its checkers must read the asked colour, shape and size off every generated
        image (jittered when configured, and dealt among them with `teacher_split_rows`); logs the teacher's
        accuracies."""
        cfg = self.cfg
        seen = batch.out.images[-1]
        if cfg.teacher_jitter > 0:
            seen = jitter_images(seen, cfg.teacher_jitter, self.step_generator(batch.step, stream=1))
        shares = self.classifier_shares(len(seen), batch.step)
        readings = [Reading(net(_rows(seen, rows)).attribute_logits, rows, weight)
                   for net, (rows, weight) in zip([self.teacher, *self.checkers], shares, strict=True)]
        targets = attribute_labels(batch.inputs.labels, SPOKEN_ATTRIBUTES)
        consistency = _over_classifiers(
            readings, lambda r: losses.teacher_consistency_loss(r.logits, _rows(targets, r.rows)))
        teacher = readings[0]
        accs = {f"teacher_acc_{n}": float((teacher.logits[n].argmax(1) == _rows(t, teacher.rows)).float().mean())
                for n, t in targets.items()}
        g_loss.add(consistency, cfg.teacher_consistency_weight, "g_teacher")
        g_loss.figures.update(accs)

    def generator_inputs(self, idx: torch.Tensor, rows: torch.Tensor, step: int,
                         generator: torch.Generator | None = None) -> GeneratorInputs:
        """What G is fed in one training step: the captions `idx` (showing the real images `rows`), then the
        step's novel codes. z and eps come from `generator` (None: torch's global one)."""
        embedding = self.embeddings[idx]
        labels = self.captions.attributes[idx]
        z, eps = self.generator.sample_inputs(len(idx), generator)
        code = (self.caption_code(embedding, self.images.attributes[rows]) if self.model_config.sampled_code_blocks
                else None)
        if self.cfg.novel_code_fraction <= 0:
            return GeneratorInputs(embedding, z, eps, code, labels)
        novel_labels = self.novel_labels(step)
        zn, epsn = self.generator.sample_inputs(len(novel_labels), generator)
        code = [torch.cat([block, F.one_hot(novel_labels[:, j], block.shape[1]).float()])
                for j, block in enumerate(code or self.generator.ca.attribute_code(embedding))]
        return GeneratorInputs(torch.cat([embedding, embedding.new_zeros(len(novel_labels), embedding.shape[1])]),
                               torch.cat([z, zn]), torch.cat([eps, epsn]), code, torch.cat([labels, novel_labels]))

    @torch.no_grad()
    def recalibrated_ema(self) -> Generator:
        """A copy of G's EMA whose BatchNorm statistics are its own. The EMA copies the running statistics of
        the live G, which were measured on other weights than the averaged ones; this measures them again on
        `generator.ema_batchnorm_batches` training batches (captions and novel codes, as in a step), like
        SWA's update_bn. The EMA state itself is left alone, so a resumed run continues exactly."""
        model = copy.deepcopy(self.ema.module)
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if self.cfg.ema_batchnorm_batches <= 0 or not norms:
            return model.eval()
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a plain mean over the batches
        model.train()
        for k in range(self.cfg.ema_batchnorm_batches):
            gen = self.step_generator(k, stream=5)
            idx = torch.randint(len(self.captions), (self.cfg.batch_size,), generator=gen)
            inputs = self.generator_inputs(idx, self.captions.image_index[idx], k, gen)
            model(inputs.embedding, inputs.z, inputs.eps, inputs.code)
        return model.eval()

    def train_relation_supervisor(self, rows: torch.Tensor, wrong_rows: torch.Tensor, fakes: torch.Tensor,
                                  step: int, figures: dict[str, float]) -> torch.Tensor:
        """One step of the relation supervisor on the teacher's features of the captions' real images paired with
        themselves, with another image of their class, with their generated images and with the wrong (other
        class) images. Returns the real images' features: the anchors of G's relation term."""
        size = self.sizes[-1]
        similar_rows = self.images.partner_indices(rows, CLASS_COLUMNS, self.step_generator(step, stream=6))
        with torch.no_grad():
            anchor, similar, different, fake = (
                self.teacher(images).features for images in (
                    self.images.images(rows, size), self.images.images(similar_rows, size),
                    self.images.images(wrong_rows, size), fakes))
        pairs = {"same": anchor, "similar": similar, "fake": fake, "different": different}
        loss = sum(losses.relation_loss(self.relation(anchor, other), relation)
                   for relation, other in pairs.items()) / len(pairs)
        self.opt_relation.zero_grad(set_to_none=True)
        backward(loss)
        distributed.average_gradients(self.relation)
        self.opt_relation.step()
        figures["relation"] = loss.item()
        return anchor

    def caption_code(self, embedding: torch.Tensor, image_labels: torch.Tensor) -> list[torch.Tensor]:
        """The captions' attribute code for training: the read-outs, and for the drawn blocks the class the
        real image shows (at inference each image draws it from the read-out)."""
        code = self.generator.ca.attribute_code(embedding)
        for block in self.model_config.sampled_code_blocks:
            code[block] = F.one_hot(image_labels[:, block], code[block].shape[1]).float()
        return code

    def classifier_shares(self, rows: int, step: int) -> list[tuple[torch.Tensor | None, float | None]]:
        """(rows read, weight) for the teacher and each checker: (None, None) = every row, the classifiers
        averaged; with `teacher_split_rows` the rows are dealt at random (a pure function of seed and step, so a
        resumed run deals the same) and a classifier's weight is its share of the rows, so the term stays the mean
        over rows of the loss of the classifier that read it."""
        count = 1 + len(self.checkers)
        if not self.cfg.teacher_split_rows or count == 1:
            return [(None, None)] * count
        if rows < count:
            raise InputError(f"generator.teacher_split_rows needs at least {count} generated images per step "
                             f"(one per frozen classifier: the teacher and each checker); got {rows}")
        dealt = torch.randperm(rows, generator=self.step_generator(step, stream=7)).tensor_split(count)
        return [(share, len(share) / rows) for share in dealt]

    def novel_labels(self, step: int) -> torch.Tensor:
        """(n, 4) labels in ATTRIBUTES order drawn uniformly for the novel codes; a pure function of
        (seed, step, rank), so a resumed run draws the same."""
        n = max(1, round(self.cfg.batch_size * self.cfg.novel_code_fraction))
        gen = self.step_generator(step, stream=0)
        return torch.stack([torch.randint(ATTRIBUTE_CLASSES[name], (n,), generator=gen) for name in ATTRIBUTES], 1)

    def step_generator(self, step: int, stream: int) -> torch.Generator:
        """A generator seeded by (seed, step, stream, rank): random draws that a resumed run repeats."""
        seed = ((self.config.run.seed * 1_000_003 + step) * 16 + stream) * 1024 + distributed.rank()
        return torch.Generator().manual_seed(seed)

    # ------------------------------------------------------------------ state and outputs

    def synced_modules(self) -> list:
        """Modules every rank must hold identically (checked at the end of a multi-process run)."""
        return [self.generator, self.discriminators] + ([self.relation] if self.relation is not None else [])

    def state(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "discriminators": self.discriminators.state_dict(),
            "ema": self.ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": [opt.state_dict() for opt in self.opt_d],
        } | ({"relation": self.relation.state_dict(), "opt_relation": self.opt_relation.state_dict()}
             if self.relation is not None else {})

    def load_state(self, tree: dict[str, Any]) -> None:
        self.generator.load_state_dict(tree["generator"])
        self.discriminators.load_state_dict(tree["discriminators"])
        self.ema.load_state_dict(tree["ema"])
        self.opt_g.load_state_dict(tree["opt_g"])
        for opt, state in zip(self.opt_d, tree["opt_d"], strict=True):
            opt.load_state_dict(state)
        if self.relation is not None:
            if "relation" not in tree:
                raise InputError("cannot resume with generator.relation_weight > 0: the checkpoint was trained "
                                 "without the relation supervisor")
            self.relation.load_state_dict(tree["relation"])
            self.opt_relation.load_state_dict(tree["opt_relation"])

    def save_outputs(self, step: int) -> None:
        summary = {
            "step": step,
            "ema_decay": self.cfg.ema_decay,
            "ema_updates": self.ema.updates,
            "d_attribute_heads": self.cfg.d_attribute_heads,
            "teacher_consistency": self.cfg.teacher_consistency,
            "captions": len(self.captions),
        }
        generator = self.recalibrated_ema()
        summary["ema_batchnorm_batches"] = self.cfg.ema_batchnorm_batches
        save_module(self.run_dir, GENERATOR, generator, self.model_config, summary)
        self.save_samples(step, generator)

    @torch.no_grad()
    def save_samples(self, step: int, generator: Generator | None = None, rows: int = 8, columns: int = 6) -> None:
        """A grid of samples of `generator` (default: the EMA) for a fixed set of training captions and fixed
        noise."""
        generator = generator or self.ema.module
        from ..eval import image_grid

        gen = torch.Generator().manual_seed(1234)
        picks = torch.randperm(len(self.captions), generator=gen)[:rows]
        z = torch.randn(rows * columns, self.model_config.z_dim, generator=gen)
        eps = torch.randn(rows * columns, self.model_config.ca_dim, generator=gen)
        emb = self.embeddings[picks].repeat_interleave(columns, 0)
        generator.eval()
        images = generator(emb, z, eps).images[-1]
        real = self.images.images(self.captions.image_index[picks], self.sizes[-1])
        grid = image_grid(real, images.view(rows, columns, *images.shape[1:]))
        path = self.run_dir / SAMPLES_DIR / f"step-{step:08d}.png"
        from s2i_runtime.fsutil import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            grid.save(tmp, format="PNG")
