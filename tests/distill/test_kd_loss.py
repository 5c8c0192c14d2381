"""Distillation losses against their formulas written out with plain tensor ops and torch's
KLDivLoss, gradients by gradcheck; teacher_loss freezes a copy."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepshrink.distill import LOSSES, kd_loss, teacher_loss
from deepshrink.distill.losses import cosine_loss, feature_distance, l2_loss, logit_loss
from deepshrink.errors import ConfigError


def reference(zs, zt, y, t, alpha):
    p_t = torch.softmax(zt / t, dim=1)
    log_p_s = torch.log_softmax(zs / t, dim=1)
    kl = (p_t * (torch.log(p_t) - log_p_s)).sum(dim=1).mean()
    ce = -torch.log_softmax(zs, dim=1)[torch.arange(len(y)), y].mean()
    return alpha * t * t * kl + (1 - alpha) * ce


@pytest.mark.parametrize("t,alpha", [(1.0, 0.5), (4.0, 0.9), (2.0, 0.0), (8.0, 1.0)])
def test_kd_loss_matches_formula_and_gradient(t, alpha):
    torch.manual_seed(0)
    zs = torch.randn(16, 10, requires_grad=True)
    zt, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    ours = kd_loss(zs, zt, y, t, alpha)
    ref = reference(zs, zt, y, t, alpha)
    assert torch.allclose(ours, ref, atol=1e-6)
    g_ours, = torch.autograd.grad(ours, zs)
    g_ref, = torch.autograd.grad(reference(zs, zt, y, t, alpha), zs)
    assert torch.allclose(g_ours, g_ref, atol=1e-6)


def test_kd_loss_is_cross_entropy_when_teacher_equals_student_and_alpha_one_is_zero():
    zs, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert kd_loss(zs, zs, y, 4.0, 1.0).abs().item() < 1e-6
    assert math.isclose(kd_loss(zs, zs, y, 4.0, 0.0).item(), F.cross_entropy(zs, y).item(), rel_tol=1e-6)


@pytest.mark.parametrize("t,alpha", [(0.0, 0.5), (-1.0, 0.5), (4.0, 1.5), (4.0, -0.1)])
def test_kd_loss_rejects_bad_settings(t, alpha):
    with pytest.raises(ConfigError):
        kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), t, alpha)
    with pytest.raises(ConfigError):
        teacher_loss(nn.Linear(2, 2), t, alpha)


def test_teacher_loss_uses_a_frozen_copy():
    torch.manual_seed(0)
    teacher = nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        teacher_logits = teacher(x)
    loss_fn = teacher_loss(teacher, 2.0, 0.7)
    with torch.no_grad():
        teacher.weight.zero_()  # changing the original afterwards must not change the teacher
    student = nn.Linear(4, 3)
    logits = student(x)
    got = loss_fn(student, logits, x, y)
    assert torch.allclose(got, reference(logits, teacher_logits, y, 2.0, 0.7), atol=1e-6)
    got.backward()
    assert student.weight.grad is not None
    assert all(p.requires_grad for p in teacher.parameters())  # only the copy is frozen


# ----------------------------------------------------------------------------- more oracles

def test_kd_loss_equals_torch_kldivloss_on_probabilities():
    torch.manual_seed(1)
    zs, zt, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    t, alpha = 3.0, 0.6
    kl = nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(zs / t, 1), torch.softmax(zt / t, 1))
    expected = alpha * t * t * kl + (1 - alpha) * nn.CrossEntropyLoss()(zs, y)
    assert torch.allclose(kd_loss(zs, zt, y, t, alpha), expected, atol=1e-6)


def test_temperature_squared_scaling_of_the_soft_term():
    torch.manual_seed(2)
    zs, zt, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    for t in (1.0, 2.0, 5.0):
        kl = F.kl_div(F.log_softmax(zs / t, 1), F.softmax(zt / t, 1), reduction="batchmean")
        assert math.isclose(kd_loss(zs, zt, y, t, 1.0).item(), t * t * kl.item(), rel_tol=1e-5)


def test_kd_gradient_check_in_double_precision():
    torch.manual_seed(3)
    zs = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    zt, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 2, 1, 1])
    for fn in (lambda z: kd_loss(z, zt, y, 2.5, 0.7), lambda z: l2_loss(z, zt, y, 0.7),
               lambda z: cosine_loss(z, zt, y, 0.7)):
        assert torch.autograd.gradcheck(fn, (zs,))


def test_alpha_zero_is_cross_entropy_for_every_loss():
    torch.manual_seed(4)
    zs, zt, y = torch.randn(6, 4), torch.randn(6, 4), torch.randint(0, 4, (6,))
    ce = F.cross_entropy(zs, y)
    for name in LOSSES:
        assert torch.allclose(logit_loss(name, zs, zt, y, 4.0, 0.0), ce, atol=1e-7)


def test_l2_and_cosine_against_written_out_formulas():
    torch.manual_seed(5)
    zs, zt, y = torch.randn(6, 4), torch.randn(6, 4), torch.randint(0, 4, (6,))
    ce = F.cross_entropy(zs, y)
    mse = ((zs - zt) ** 2).sum(1).mean() / 4
    cos = (1 - (zs * zt).sum(1) / (zs.norm(dim=1) * zt.norm(dim=1))).mean()
    assert torch.allclose(logit_loss("l2", zs, zt, y, 9.0, 0.8), 0.8 * mse + 0.2 * ce, atol=1e-6)
    assert torch.allclose(logit_loss("cosine", zs, zt, y, 9.0, 0.8), 0.8 * cos + 0.2 * ce, atol=1e-6)
    # the direction alone counts for cosine: a scaled teacher gives the same loss
    assert torch.allclose(cosine_loss(zs, 3 * zt, y, 1.0), cosine_loss(zs, zt, y, 1.0), atol=1e-6)


def test_unknown_loss_names_are_config_errors():
    z, y = torch.zeros(1, 2), torch.zeros(1, dtype=torch.long)
    with pytest.raises(ConfigError, match="kl, l2, cosine"):
        logit_loss("mse", z, z, y)
    with pytest.raises(ConfigError):
        teacher_loss(nn.Linear(2, 2), 4.0, 0.9, "hinge")
    with pytest.raises(ConfigError):
        feature_distance("kl", z, z)


def test_feature_distance_matches_formulas():
    torch.manual_seed(6)
    s, t = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    assert torch.allclose(feature_distance("l2", s, t), ((s - t) ** 2).mean())
    sf, tf = s.flatten(1), t.flatten(1)
    cos = (sf * tf).sum(1) / (sf.norm(dim=1) * tf.norm(dim=1))
    assert torch.allclose(feature_distance("cosine", s, t), (1 - cos).mean(), atol=1e-6)
    with pytest.raises(ConfigError, match="shapes differ"):
        feature_distance("l2", s, t[:, :2])


def test_teacher_loss_with_each_logit_loss_matches_logit_loss():
    torch.manual_seed(7)
    teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        zt = teacher(x)
    for name in LOSSES:
        logits = student(x)
        got = teacher_loss(teacher, 2.0, 0.5, name)(student, logits, x, y)
        assert torch.allclose(got, logit_loss(name, logits, zt, y, 2.0, 0.5), atol=1e-6)
