"""Losses of s2i: the speech encoder's (Li et al., S2IGAN), the GAN's (StackGAN-v2) and the semantic terms.

Every function takes tensors (or the models' output tuples) and returns a scalar; composite losses also
return their parts (detached) for logging. Each semantic-consistency term is a separate function so the
training loop can switch it on or off.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from .models.discriminator import DiscriminatorOutput
from .models.relation import RELATIONS

# Li et al.'s weights
JEL_DIFFERENT_CLASS_WEIGHT = 1.0
JEL_SAME_CLASS_WEIGHT = 0.1
L1_WEIGHT = 5.0
KD_WEIGHT = 1000.0
KD_TEMPERATURE = 2.0
# StackGAN-v2: the conditioning-augmentation KL enters G's loss with this weight (applied by the caller)
KL_WEIGHT = 2.0
# S2IGAN: cosine similarities are scaled by this before the softmax
MATCHING_GAMMA = 10.0

Parts = dict[str, torch.Tensor]


# ---------------------------------------------------------------- speech encoder: teacher-student


def joint_embedding_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Li et al.'s JEL over the score matrix s_ij = student_i . teacher_j.

    Pairs of different classes cost relu(s_ij - s_ii + 1) with weight 1; pairs of the same class
    relu(s_ij - s_ii) with weight 0.1 (the diagonal adds 0); the sum is divided by B^2."""
    scores = student @ teacher.t()
    positive = scores.diagonal()[:, None]
    same = labels[:, None] == labels[None, :]
    different_cost = F.relu(scores - positive + 1.0) * JEL_DIFFERENT_CLASS_WEIGHT
    same_cost = F.relu(scores - positive) * JEL_SAME_CLASS_WEIGHT
    batch = student.shape[0]
    return torch.where(same, same_cost, different_cost).sum() / (batch * batch)


def batch_normalised_l1(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the two batches, each first divided by its Frobenius norm.

    Mean over elements (PyTorch's L1 default), which is the scale Li et al.'s weight 5 goes with."""
    return F.l1_loss(student / student.norm().clamp(min=1e-12), teacher / teacher.norm().clamp(min=1e-12))


def distillation_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = KD_TEMPERATURE) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student)) over feature dimensions, averaged over all elements
    (PyTorch's kl_div "mean", the scale Li et al.'s weight 1000 goes with). The student is not divided
    by T, as in the reference."""
    pointwise = F.kl_div(F.log_softmax(student, dim=1), F.softmax(teacher / temperature, dim=1), reduction="none")
    return pointwise.mean()


def teacher_student_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    l1_weight: float = L1_WEIGHT,
    kd_weight: float = KD_WEIGHT,
) -> tuple[torch.Tensor, Parts]:
    """Li et al.: JEL + 5 * batch-normalised L1 + 1000 * KD. `teacher` is the frozen image features."""
    teacher = teacher.detach()
    jel = joint_embedding_loss(student, teacher, labels)
    l1 = batch_normalised_l1(student, teacher)
    kd = distillation_kl(student, teacher)
    total = jel + l1_weight * l1 + kd_weight * kd
    return total, {"jel": jel.detach(), "l1": l1.detach(), "kd": kd.detach()}


def classifier_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The classifier-based baseline: cross-entropy on class labels."""
    return F.cross_entropy(logits, labels)


# ---------------------------------------------------------------- speech encoder: S2IGAN


def matching_loss(
    speech: torch.Tensor, image: torch.Tensor, labels: torch.Tensor, gamma: float = MATCHING_GAMMA
) -> torch.Tensor:
    """S2IGAN matching loss: cosine similarities x gamma, other pairs of the same class masked out (they
    are not negatives), cross-entropy towards the matching pair in both directions (speech->image and
    image->speech), summed. Also usable as a DAMSM-like image-speech term on generated images."""
    sims = F.normalize(speech, dim=1) @ F.normalize(image, dim=1).t() * gamma
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(sims.shape[0], dtype=torch.bool, device=sims.device)
    sims = sims.masked_fill(same & ~eye, float("-inf"))
    target = torch.arange(sims.shape[0], device=sims.device)
    return F.cross_entropy(sims, target) + F.cross_entropy(sims.t(), target)


def distinctive_loss(speech_logits: torch.Tensor, image_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """S2IGAN distinctive loss: one shared class classifier applied to both embeddings (the caller runs the
    classifier), cross-entropy on each, summed."""
    return F.cross_entropy(speech_logits, labels) + F.cross_entropy(image_logits, labels)


def s2igan_speech_loss(
    speech: torch.Tensor,
    image: torch.Tensor,
    labels: torch.Tensor,
    classifier: torch.nn.Module,
    distinctive_weight: float = 1.0,
) -> tuple[torch.Tensor, Parts]:
    """Matching + distinctive loss for the S2IGAN speech-embedding network."""
    matching = matching_loss(speech, image, labels)
    distinctive = distinctive_loss(classifier(speech), classifier(image), labels)
    total = matching + distinctive_weight * distinctive
    return total, {"matching": matching.detach(), "distinctive": distinctive.detach()}


def word_ctc_loss(step_logits: torch.Tensor, valid: torch.Tensor, words: torch.Tensor,
                  word_counts: torch.Tensor) -> torch.Tensor:
    """CTC of each utterance's words (class indices, 0 = blank, padded) against its steps' word logits
    (B, T', classes); `valid` (B, T', 1) marks the steps within each utterance. Mean over utterances of the loss
    per word, in float32 whatever the autocast."""
    log_probs = F.log_softmax(step_logits.float(), dim=2).transpose(0, 1)  # (T', B, classes)
    steps = valid.reshape(valid.shape[0], -1).sum(dim=1)
    # zero_infinity: an utterance squeezed (speed, silence) into fewer steps than its words cannot be aligned and
    # is left out of the step rather than giving an infinite loss.
    return F.ctc_loss(log_probs, words, steps, word_counts, blank=0, reduction="mean", zero_infinity=True)


# ---------------------------------------------------------------- GAN


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def _cond(output: DiscriminatorOutput) -> torch.Tensor:
    if output.cond_logits is None:
        raise ValueError("the discriminator was run without a condition: no conditional logits")
    return output.cond_logits


def discriminator_loss(
    real: DiscriminatorOutput,
    fake: DiscriminatorOutput,
    wrong: DiscriminatorOutput | None = None,
    uncond_weight: float = 1.0,
) -> tuple[torch.Tensor, Parts]:
    """One branch's D loss (StackGAN-v2), BCE with logits:
    real/cond (real) + real/uncond (real) + wrong/cond (fake) + wrong/uncond (real) + fake/cond (fake) +
    fake/uncond (fake); the unconditional terms are scaled by `uncond_weight`.

    `real`: D(real images, their mu); `wrong`: D(real images, mismatched mu) (None skips both wrong
    terms); `fake`: D(generated images, their mu) — detach the images for this step."""
    parts = {
        "real_cond": _bce(_cond(real), True),
        "real_uncond": uncond_weight * _bce(real.uncond_logits, True),
        "fake_cond": _bce(_cond(fake), False),
        "fake_uncond": uncond_weight * _bce(fake.uncond_logits, False),
    }
    if wrong is not None:
        parts["wrong_cond"] = _bce(_cond(wrong), False)
        parts["wrong_uncond"] = uncond_weight * _bce(wrong.uncond_logits, True)
    total = torch.stack(list(parts.values())).sum()
    return total, {name: value.detach() for name, value in parts.items()}


def generator_adversarial_loss(fake: DiscriminatorOutput, uncond_weight: float = 1.0) -> torch.Tensor:
    """One branch's G loss: fake/cond + uncond_weight * fake/uncond, both labelled real."""
    return _bce(_cond(fake), True) + uncond_weight * _bce(fake.uncond_logits, True)


def unconditional_loss(output: DiscriminatorOutput, real: bool) -> torch.Tensor:
    """BCE of the unconditional logit alone: for images that have no real counterpart to condition on
    (generated from attribute combinations no caption has)."""
    return _bce(output.uncond_logits, real)


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Conditioning-augmentation KL to N(0, I): mean(-0.5 (1 + logvar - mu^2 - exp(logvar))).
    The caller multiplies by KL_WEIGHT (2, StackGAN-v2)."""
    return torch.mean(-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()))


# ---------------------------------------------------------------- semantic consistency


def attribute_loss(
    logits: Mapping[str, torch.Tensor],
    labels: Mapping[str, torch.Tensor],
    weights: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """Sum over attributes of cross-entropy (batch mean); label -100 ignores a sample for that attribute
    (e.g. colour on a colour-scrambled image). Attributes without labels are skipped.

    AC-GAN use: D's heads on REAL images vs their labels trains D; D's heads on FAKE images vs the
    conditioned attributes trains G. Teacher consistency: the frozen teacher's heads on G's output."""
    total = None
    for name, head_logits in logits.items():
        if name not in labels:
            continue
        target = labels[name]
        if not bool((target != -100).any()):
            continue
        term = F.cross_entropy(head_logits, target, ignore_index=-100)
        term = term * (1.0 if weights is None else weights.get(name, 1.0))
        total = term if total is None else total + term
    if total is None:
        first = next(iter(logits.values()), None)
        return torch.zeros((), device=None if first is None else first.device)
    return total


def teacher_consistency_loss(
    attribute_logits: Mapping[str, torch.Tensor],
    attribute_labels: Mapping[str, torch.Tensor],
    class_logits: torch.Tensor | None = None,
    class_labels: torch.Tensor | None = None,
    class_weight: float = 1.0,
) -> torch.Tensor:
    """A frozen image teacher (trained only on seen classes) must read the conditioned attributes — and,
    where given, the class — in G's output. Pass the teacher's outputs on the generated images; the
    teacher's parameters should be frozen (models.freeze) so only G gets gradients."""
    total = attribute_loss(attribute_logits, attribute_labels)
    if class_logits is not None and class_labels is not None:
        total = total + class_weight * F.cross_entropy(class_logits, class_labels, ignore_index=-100)
    return total


def class_aware_feature_loss(
    fake_features: torch.Tensor, real_features: torch.Tensor, labels: torch.Tensor, gamma: float = MATCHING_GAMMA
) -> torch.Tensor:
    """Class-aware loss on discriminator features (our reading of Li et al.'s class-aware term): each
    generated image's feature, compared by scaled cosine similarity with the batch's real-image features,
    should put its softmax mass on real images of its own class:
    mean_i -log sum_{j: class_j = class_i} softmax_j(gamma * cos(fake_i, real_j)).
    `labels` are the classes of both batches (fake_i was conditioned on real_i's class)."""
    sims = F.normalize(fake_features, dim=1) @ F.normalize(real_features, dim=1).t() * gamma
    same = labels[:, None] == labels[None, :]
    log_probs = F.log_softmax(sims, dim=1)
    return -torch.logsumexp(log_probs.masked_fill(~same, float("-inf")), dim=1).mean()


def image_speech_matching_loss(
    image_features: torch.Tensor, speech: torch.Tensor, labels: torch.Tensor, gamma: float = MATCHING_GAMMA
) -> torch.Tensor:
    """DAMSM-like term: generated images' features (e.g. from the frozen teacher) must match the speech
    embeddings that conditioned them, against the other utterances of the batch (both directions)."""
    return matching_loss(speech, image_features, labels, gamma)


def relation_loss(logits: torch.Tensor, relation: str) -> torch.Tensor:
    """Cross-entropy of the relation supervisor's logits (B, len(RELATIONS)) when every pair of the batch
    stands in `relation` (one of models.relation.RELATIONS)."""
    target = torch.full((logits.shape[0],), RELATIONS.index(relation), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)
