"""Feature distillation: hooks capture the named layers, adapters bridge widths and pooling
bridges sizes; the adapted shapes equal the teacher's pooled ones."""

import pytest
import torch
from torch import nn

from deepshrink import models
from deepshrink.distill.features import FeatureCapture, FeatureStudent, match_teacher, parse_pairs
from deepshrink.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def teacher_and_student():
    torch.manual_seed(0)
    teacher = models.build("vgg", cfg=(8, "M", 16, "M"), hidden=32)   # features.4: (N, 16, 14, 14) pre-pool
    student = models.build("lenet5", conv1=4, conv2=6, fc1=20)        # conv2: (N, 6, 8, 8), fc1: (N, 20)
    return teacher.eval(), student.eval()  # eval: no dropout, so outputs can be compared


def test_capture_returns_the_layer_outputs_and_unhooks():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 2))
    cap = FeatureCapture(net, ["0", "2"], "net")
    x = torch.randn(5, 3)
    out = net(x)
    pre = net[0](x)
    assert torch.allclose(cap.outputs["0"], pre)   # captured before the in-place ReLU changed it
    assert torch.equal(cap.outputs["2"], out)
    cap.remove()
    cap.outputs.clear()
    net(x)
    assert cap.outputs == {}


@pytest.mark.parametrize("pair,adapter,shape", [
    ("conv2:features.4", nn.Conv2d, (6, 16, 8, 8)),     # maps: 1x1 conv 6 -> 16, teacher pooled 14x14 -> 8x8
    ("fc1:classifier.1", nn.Linear, (6, 32)),           # vectors: linear 20 -> 32
    ("conv2:classifier.1", nn.Linear, (6, 32)),         # map with vector: global pooling, then linear
    ("fc1:features.4", nn.Linear, (6, 16)),             # vector with map: teacher pooled globally
])
def test_adapters_and_pooling_give_matching_shapes(pair, adapter, shape):
    teacher, student = teacher_and_student()
    x = torch.randn(6, 1, 28, 28)
    fs = FeatureStudent(student, teacher, [pair], x[:2])
    assert isinstance(fs.adapters[0], adapter)
    logits = fs(x)
    assert torch.equal(logits, student(x))           # the wrapper's forward is the student's
    assert tuple(fs.adapted[0].shape) == shape
    cap = FeatureCapture(teacher, [pair.split(":")[1]], "teacher")
    teacher(x)
    t_feat, = match_teacher(cap.outputs, fs.pairs, fs.targets)
    assert t_feat.shape == fs.adapted[0].shape
    fs.adapted[0].sum().backward()                   # gradients reach the student and the adapter
    assert student.conv1.weight.grad is not None and fs.adapters[0].weight.grad is not None
    assert fs.release() is student


def test_equal_widths_need_no_adapter_and_pooling_matches_sizes():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.LazyLinear(2))
    student = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(3, 1, 8, 8)
    teacher(x), student(x)
    fs = FeatureStudent(student, teacher, [("0", "0")], x)
    assert isinstance(fs.adapters[0], nn.Identity)
    fs(x)
    cap = FeatureCapture(teacher, ["0"], "teacher")
    teacher(x)
    t_feat, = match_teacher(cap.outputs, fs.pairs, fs.targets)
    expected = nn.functional.avg_pool2d(teacher[0](x), 2)   # 8x8 -> 4x4 is a 2x2 average
    assert torch.allclose(t_feat, expected, atol=1e-6)
    assert torch.allclose(fs.adapted[0], student[0](x))


def test_bad_layer_names_and_pairs_are_config_errors():
    teacher, student = teacher_and_student()
    x = torch.randn(2, 1, 28, 28)
    with pytest.raises(ConfigError, match="no layer 'nope'"):
        FeatureStudent(student, teacher, ["nope:features.4"], x)
    with pytest.raises(ConfigError, match="the teacher has no layer"):
        FeatureStudent(student, teacher, ["conv2:nope"], x)
    with pytest.raises(ConfigError, match="STUDENT_LAYER:TEACHER_LAYER"):
        parse_pairs(["conv2"])
    with pytest.raises(ConfigError, match="at least one"):
        FeatureStudent(student, teacher, [], x)
    assert parse_pairs(["a:b", ("c", "d")]) == [("a", "b"), ("c", "d")]
