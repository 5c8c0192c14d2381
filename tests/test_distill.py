"""kd_loss against its formula written out with plain tensor ops; teacher_loss freezes a copy."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepshrink.distill import kd_loss, teacher_loss
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
