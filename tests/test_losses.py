"""Losses on small cases computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from s2i_train import losses
from s2i_train.models import DiscriminatorOutput

LN2 = math.log(2.0)


def _d_output(cond: float | None, uncond: float, batch: int = 3) -> DiscriminatorOutput:
    return DiscriminatorOutput(
        uncond_logits=torch.full((batch,), uncond),
        cond_logits=None if cond is None else torch.full((batch,), cond),
        attribute_logits={},
        class_logits=None,
        features=torch.zeros(batch, 4),
    )


def test_jel_hand_cases():
    eye = torch.eye(2)
    assert losses.joint_embedding_loss(eye, eye, torch.tensor([0, 1])).item() == 0.0
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # scores [[1, 0], [1, 0]], diagonal [1, 0]: only row 1 / column 0 costs: relu(1 - 0 + 1) = 2 -> 2 / 4
    assert losses.joint_embedding_loss(student, eye, torch.tensor([0, 1])).item() == pytest.approx(0.5)
    # the same pair within one class: margin 0, weight 0.1 -> 0.1 * relu(1 - 0) / 4
    assert losses.joint_embedding_loss(student, eye, torch.tensor([5, 5])).item() == pytest.approx(0.025)


def test_batch_normalised_l1_hand_case():
    # [3, 4] / 5 = [0.6, 0.8]; [0, 2] / 2 = [0, 1]; mean |diff| = (0.6 + 0.2) / 2
    got = losses.batch_normalised_l1(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 2.0]]))
    assert got.item() == pytest.approx(0.4)
    # Scale-free: multiplying either batch changes nothing.
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    assert losses.batch_normalised_l1(a, b).item() == pytest.approx(losses.batch_normalised_l1(7 * a, b / 3).item())


def test_distillation_kl_hand_case():
    # teacher [0, 2 ln 3] / T=2 -> softmax [1/4, 3/4]; student [0, 0] -> [1/2, 1/2]; mean over 2 elements
    teacher = torch.tensor([[0.0, 2.0 * math.log(3.0)]])
    expected = (0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)) / 2
    assert losses.distillation_kl(torch.zeros(1, 2), teacher).item() == pytest.approx(expected, rel=1e-5)
    assert losses.distillation_kl(teacher / 2, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_teacher_student_loss_combines_with_paper_weights_and_trains_only_the_student():
    torch.manual_seed(0)
    student = torch.randn(4, 8, requires_grad=True)
    teacher = torch.randn(4, 8, requires_grad=True)
    labels = torch.tensor([0, 1, 1, 2])
    total, parts = losses.teacher_student_loss(student, teacher, labels)
    expected = parts["jel"] + 5 * parts["l1"] + 1000 * parts["kd"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    assert student.grad is not None and teacher.grad is None


def test_classifier_loss_is_cross_entropy():
    logits = torch.zeros(2, 4)
    assert losses.classifier_loss(logits, torch.tensor([0, 3])).item() == pytest.approx(math.log(4))


def test_matching_loss_hand_cases():
    eye = torch.eye(2)
    # cos = I, x10: each direction's CE per row = log(1 + e^-10)
    got = losses.matching_loss(eye, eye, torch.tensor([0, 1]))
    assert got.item() == pytest.approx(2 * math.log(1 + math.exp(-10)), abs=1e-6)
    # Same class: the other pair is masked, not a negative -> nothing to pay.
    assert losses.matching_loss(eye, eye, torch.tensor([3, 3])).item() == pytest.approx(0.0, abs=1e-7)
    # Three items, 0 and 1 share a class; image 2 equals image 0 in direction.
    speech = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    sims = torch.nn.functional.normalize(speech, dim=1) @ torch.nn.functional.normalize(image, dim=1).t() * 10
    rows = [
        -sims[0, 0] + torch.logsumexp(sims[0, [0, 2]], 0),
        -sims[1, 1] + torch.logsumexp(sims[1, [1, 2]], 0),
        -sims[2, 2] + torch.logsumexp(sims[2, :], 0),
    ]
    cols = [
        -sims[0, 0] + torch.logsumexp(sims[[0, 2], 0], 0),
        -sims[1, 1] + torch.logsumexp(sims[[1, 2], 1], 0),
        -sims[2, 2] + torch.logsumexp(sims[:, 2], 0),
    ]
    expected = (sum(rows) + sum(cols)) / 3
    assert losses.matching_loss(speech, image, labels).item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_matching_loss_gradients_are_finite_with_masked_entries():
    speech = torch.randn(4, 3, requires_grad=True)
    losses.matching_loss(speech, torch.randn(4, 3), torch.tensor([0, 0, 1, 1])).backward()
    assert torch.isfinite(speech.grad).all()


def test_s2igan_speech_loss_uses_one_shared_classifier():
    classifier = torch.nn.Linear(2, 3)
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.zero_()
    eye = torch.eye(2)
    total, parts = losses.s2igan_speech_loss(eye, eye, torch.tensor([0, 1]), classifier)
    assert parts["distinctive"].item() == pytest.approx(2 * math.log(3))
    assert total.item() == pytest.approx(2 * math.log(3) + 2 * math.log(1 + math.exp(-10)), abs=1e-6)


def test_discriminator_loss_terms_and_labels():
    undecided = _d_output(0.0, 0.0)
    total, parts = losses.discriminator_loss(undecided, undecided, undecided)
    assert total.item() == pytest.approx(6 * LN2)
    assert set(parts) == {"real_cond", "real_uncond", "wrong_cond", "wrong_uncond", "fake_cond", "fake_uncond"}
    total, _ = losses.discriminator_loss(undecided, undecided, undecided, uncond_weight=0.5)
    assert total.item() == pytest.approx(4.5 * LN2)
    total, _ = losses.discriminator_loss(undecided, undecided)
    assert total.item() == pytest.approx(4 * LN2)
    # A perfect D: real -> real, fake -> fake, wrong pair -> fake when conditioned but real unconditioned.
    big = 50.0
    perfect, _ = losses.discriminator_loss(
        real=_d_output(big, big), fake=_d_output(-big, -big), wrong=_d_output(-big, big)
    )
    assert perfect.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="without a condition"):
        losses.discriminator_loss(_d_output(None, 0.0), undecided)


def test_generator_adversarial_loss_labels_fakes_real():
    assert losses.generator_adversarial_loss(_d_output(0.0, 0.0)).item() == pytest.approx(2 * LN2)
    assert losses.generator_adversarial_loss(_d_output(0.0, 0.0), uncond_weight=0.0).item() == pytest.approx(LN2)
    assert losses.generator_adversarial_loss(_d_output(50.0, 50.0)).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_loss_hand_cases():
    assert losses.kl_loss(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0.0
    # mu = 1, logvar = 0: -0.5 (1 + 0 - 1 - 1) = 0.5
    assert losses.kl_loss(torch.ones(2, 3), torch.zeros(2, 3)).item() == pytest.approx(0.5)
    # mu = 0, logvar = ln 2: -0.5 (1 + ln 2 - 2)
    logvar = torch.full((1, 1), math.log(2))
    assert losses.kl_loss(torch.zeros(1, 1), logvar).item() == pytest.approx(-0.5 * (math.log(2) - 1))
    assert losses.KL_WEIGHT == 2.0


def test_attribute_loss_sums_attributes_and_honours_ignore():
    logits = {"colour": torch.zeros(2, 4), "shape": torch.zeros(2, 4), "size": torch.zeros(2, 2)}
    labels = {"colour": torch.tensor([0, 1]), "shape": torch.tensor([2, 3])}
    assert losses.attribute_loss(logits, labels).item() == pytest.approx(2 * math.log(4))
    labels["colour"] = torch.tensor([-100, -100])
    assert losses.attribute_loss(logits, labels).item() == pytest.approx(math.log(4))
    assert losses.attribute_loss(logits, labels, weights={"shape": 3.0}).item() == pytest.approx(3 * math.log(4))
    assert losses.attribute_loss(logits, {}).item() == 0.0
    confident = {"shape": torch.tensor([[0.0, 0.0, 60.0, 0.0]])}
    assert losses.attribute_loss(confident, {"shape": torch.tensor([2])}).item() == pytest.approx(0.0, abs=1e-6)


def test_teacher_consistency_adds_the_class_term():
    attributes = {"shape": torch.zeros(2, 8)}
    labels = {"shape": torch.tensor([1, 2])}
    class_logits = torch.zeros(2, 5)
    got = losses.teacher_consistency_loss(attributes, labels, class_logits, torch.tensor([0, 4]), class_weight=0.5)
    assert got.item() == pytest.approx(math.log(8) + 0.5 * math.log(5))
    assert losses.teacher_consistency_loss(attributes, labels).item() == pytest.approx(math.log(8))


def test_class_aware_feature_loss():
    real = torch.eye(3)
    # Every fake equals its own real image, classes all different: softmax mass ~1 on the right one.
    assert losses.class_aware_feature_loss(real, real, torch.tensor([0, 1, 2]), gamma=50).item() < 1e-6
    # All one class: all mass is on the right class whatever the features.
    fake = torch.randn(3, 3)
    assert losses.class_aware_feature_loss(fake, real, torch.tensor([1, 1, 1])).item() == pytest.approx(0, abs=1e-6)
    # Both fakes look like real 1: fake 0 (class 0) pays -log(e^0 / (e^0 + e^10)), fake 1 -log(e^10 / (1 + e^10))
    fake = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    real = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    got = losses.class_aware_feature_loss(fake, real, torch.tensor([0, 1]), gamma=10)
    expected = (math.log(1 + math.exp(10)) + math.log(1 + math.exp(-10))) / 2
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_image_speech_matching_is_the_matching_loss():
    speech, image = torch.randn(4, 5), torch.randn(4, 5)
    labels = torch.tensor([0, 1, 2, 2])
    assert torch.equal(
        losses.image_speech_matching_loss(image, speech, labels), losses.matching_loss(speech, image, labels)
    )


def test_relation_loss_labels_every_pair_with_one_relation():
    from s2i_train.models import RELATIONS

    assert RELATIONS == ("same", "similar", "fake", "different")
    # Uniform logits: log 4 whatever the relation.
    assert losses.relation_loss(torch.zeros(3, 4), "fake").item() == pytest.approx(math.log(4))
    # Logits (0, 2, 0, 0) for every pair: "similar" costs -log(e^2 / (e^2 + 3)), "different" -log(1 / (e^2 + 3)).
    logits = torch.tensor([[0.0, 2.0, 0.0, 0.0]]).repeat(2, 1)
    assert losses.relation_loss(logits, "similar").item() == pytest.approx(math.log(math.exp(2) + 3) - 2)
    assert losses.relation_loss(logits, "different").item() == pytest.approx(math.log(math.exp(2) + 3))
    with pytest.raises(ValueError):
        losses.relation_loss(logits, "identical")


def test_word_ctc_loss_hand_cases():
    # Two steps, one word (class 1): the paths are "1 1", "1 -", "- 1". With every step certain of word 1 the only
    # path left has probability 1; with each step 50/50 between word 1 and the blank, 3 of 4 paths spell it.
    words, counts = torch.tensor([[1]]), torch.tensor([1])
    valid = torch.ones(1, 2, 1, dtype=torch.bool)
    sure = torch.tensor([[[-30.0, 30.0], [-30.0, 30.0]]])
    assert losses.word_ctc_loss(sure, valid, words, counts).item() == pytest.approx(0.0, abs=1e-6)
    even = torch.zeros(1, 2, 2)
    assert losses.word_ctc_loss(even, valid, words, counts).item() == pytest.approx(-math.log(0.75), rel=1e-5)
    # Steps beyond an utterance's length do not count: a third, padded step saying "blank" changes nothing.
    padded = torch.cat([even, torch.tensor([[[30.0, -30.0]]])], dim=1)
    mask = torch.tensor([[[True], [True], [False]]])
    assert losses.word_ctc_loss(padded, mask, words, counts).item() == pytest.approx(-math.log(0.75), rel=1e-5)
    # Three words cannot fit two steps: that utterance adds nothing rather than an infinite loss.
    too_many = losses.word_ctc_loss(even, valid, torch.tensor([[1, 1, 1]]), torch.tensor([3]))
    assert too_many.item() == 0.0
    # Computed in float32 from bf16 logits.
    assert losses.word_ctc_loss(even.bfloat16(), valid, words, counts).dtype == torch.float32
