"""Hidden-state distillation (deepshrink/distill/hidden.py) against a brute-force oracle."""

import copy

import pytest
import torch
from torch import nn

from deepshrink.distill.fidelity_loss import fidelity_loss
from deepshrink.distill.hidden import HiddenMatch, repeated_blocks
from deepshrink.errors import ConfigError


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        return (torch.tanh(self.fc(x)), "extra")     # a tuple, as Hugging Face layers return


class Stack(nn.Module):
    """Blocks run on the batch in two halves, as an encoder that groups rows by length does."""

    def __init__(self, d=6, n=3):
        super().__init__()
        self.inp = nn.Linear(d, d)
        self.layers = nn.ModuleList(Block(d) for _ in range(n))
        self.heads = nn.ModuleList([nn.Linear(d, 2), nn.ReLU()])       # mixed classes: not blocks

    def forward(self, x):
        outs = []
        for part in (x[: len(x) // 2], x[len(x) // 2:]):
            h = self.inp(part)
            for layer in self.layers:
                h = layer(h)[0]
            outs.append(h)
        return torch.cat(outs).mean(dim=1, keepdim=True).expand(-1, 4)


def _oracle(student, teacher, x):
    """mean over blocks of sum((s - t)^2) / sum(t^2), every block output collected by hand."""
    def collect(m):
        got = {i: [] for i in range(len(m.layers))}
        for part in (x[: len(x) // 2], x[len(x) // 2:]):
            h = m.inp(part)
            for i, layer in enumerate(m.layers):
                h = layer(h)[0]
                got[i].append(h)
        return got
    s, t = collect(student), collect(teacher)
    terms = [sum(((a - b) ** 2).sum() for a, b in zip(s[i], t[i])) / sum((b ** 2).sum() for b in t[i])
             for i in s]
    return sum(terms) / len(terms)


def test_repeated_blocks_finds_the_longest_list_of_one_class():
    assert repeated_blocks(Stack(n=3)) == ["layers.0", "layers.1", "layers.2"]
    assert repeated_blocks(nn.Sequential(nn.Linear(2, 2), nn.ReLU())) == []


def test_distance_matches_the_oracle_over_grouped_calls():
    torch.manual_seed(0)
    teacher = Stack().eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(10, 6)
    match = HiddenMatch(student, teacher)
    student(x), teacher(x)
    assert torch.allclose(match.distance(), _oracle(student, teacher, x), rtol=1e-6)
    student(x), teacher(x)            # a second forward replaces the first, not appended to it
    assert torch.allclose(match.distance(), _oracle(student, teacher, x), rtol=1e-6)
    match.close()
    student(x)
    assert all(not calls for calls in match.student.outputs.values())   # hooks gone


def test_identical_models_are_at_distance_zero_and_gradients_reach_the_student():
    torch.manual_seed(1)
    teacher = Stack().eval()
    student = copy.deepcopy(teacher)
    x = torch.randn(8, 6)
    match = HiddenMatch(student, teacher)
    student(x), teacher(x)
    assert match.distance().item() == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        student.layers[0].fc.weight.add_(0.5)
    teacher(x)
    student(x)
    match.distance().backward()
    assert student.layers[0].fc.weight.grad.abs().sum() > 0
    assert teacher.layers[0].fc.weight.grad is None


def test_fidelity_loss_adds_the_weighted_hidden_term():
    torch.manual_seed(2)
    teacher = Stack().eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.layers[1].fc.bias.add_(0.3)
    x = torch.randn(6, 6)
    plain = fidelity_loss(teacher, "embedding")
    both = fidelity_loss(teacher, "embedding", hidden_weight=2.0, student=student)
    out = student(x)
    expected = plain(student, out, x, None) + 2.0 * _oracle(student, teacher, x)
    out = student(x)                  # the hooked forward the loss reads
    assert torch.allclose(both(student, out, x, None), expected, rtol=1e-6)
    assert both.targets.misses == len(x)       # the original ran live, not from a cache
    both.close()


def test_bad_settings_are_config_errors():
    teacher = Stack()
    with pytest.raises(ConfigError, match="hidden_weight"):
        fidelity_loss(teacher, "embedding", hidden_weight=-1.0, student=Stack())
    with pytest.raises(ConfigError, match="student"):
        fidelity_loss(teacher, "embedding", hidden_weight=1.0)
    with pytest.raises(ConfigError, match="repeated blocks"):
        HiddenMatch(nn.Linear(2, 2), nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="no module"):
        HiddenMatch(Stack(), nn.Linear(2, 2), names=["layers.0"])
