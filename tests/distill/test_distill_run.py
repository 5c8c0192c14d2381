"""distill() on synthetic data: a student learns from the teacher alone (alpha = 1, no labels),
the cache is built only without augmentation and then serves every image, masks are held,
feature distillation trains through fit, and two DDP ranks agree."""

import pytest
import torch
from torch import nn

from deepshrink import models
from deepshrink.distill import DistillConfig, distill, teacher_loss, with_input_stats
from deepshrink.distill.cache import build_logit_cache
from deepshrink.errors import ConfigError
from deepshrink.prune import prune_, sparsity
from deepshrink.train import TrainConfig, evaluate, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def quiet(**kw):
    return TrainConfig(**{"epochs": 3, "batch_size": 32, "lr": 0.05, "augment": False, "seed": 0,
                          "progress": False, "verbose": False, "eval_every": 0, **kw})


@pytest.fixture(scope="module")
def ds(make_dataset):
    return make_dataset(n_train=256, n_test=128, classes=4, hw=8, noise=0.8)


@pytest.fixture(scope="module")
def teacher(ds):
    torch.manual_seed(0)
    net = models.build("lenet300", in_features=64, num_classes=4)
    fit(net, ds, quiet(epochs=4))
    return net.eval()


def student():
    torch.manual_seed(1)
    return models.build("lenet300", in_features=64, num_classes=4)


def test_student_learns_from_the_teacher_without_labels(ds, teacher):
    net = student()
    untrained = evaluate(net, ds.test)
    res = distill(teacher, net, ds, DistillConfig(alpha=1.0, temperature=2.0), quiet())
    assert res.accuracy > max(untrained + 0.3, 0.7), (untrained, res.accuracy)
    assert res.cache_hits == 3 * 256 and res.cache_misses == 0
    assert all(p.requires_grad for p in teacher.parameters())   # the caller's teacher is left alone


def test_cached_and_live_teacher_train_the_same_student(ds, teacher):
    a, b = student(), student()
    ra = distill(teacher, a, ds, DistillConfig(loss="kl"), quiet(epochs=1))
    rb = distill(teacher, b, ds, DistillConfig(loss="kl", cache=False), quiet(epochs=1))
    assert ra.cache_hits == 256 and rb.cache_hits == 0 and rb.cache_misses == 256
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5)


def test_augmented_training_runs_the_teacher_live(make_dataset):
    ds = make_dataset(n_train=64, n_test=16, classes=3, hw=8)
    teacher = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 3))
    res = distill(teacher, nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), ds, DistillConfig(),
                  quiet(epochs=1, augment=True))
    assert res.cache_hits == 0 and res.cache_misses == 64 and res.cache_seconds == 0


def test_pruned_student_keeps_its_zeros(ds, teacher):
    net = student()
    prune_(net, 0.8, "magnitude", "layer", 0)
    before = sparsity(net)
    distill(teacher, net, ds, DistillConfig(), quiet(epochs=1))
    assert sparsity(net) == pytest.approx(before) and before > 0.79


def test_feature_distillation_trains_student_and_adapter(ds, teacher):
    net = student()
    w0 = net.fc1.weight.detach().clone()
    res = distill(teacher, net, ds, DistillConfig(features=["fc2:fc1", "fc3:fc3"], feature_weight=0.5),
                  quiet(epochs=1))
    assert res.adapter_params == 100 * 300 + 300 and res.cache_hits == 0 and res.cache_misses == 256
    assert not torch.equal(net.fc1.weight, w0)
    assert isinstance(net, nn.Module) and not net._forward_hooks and not net.fc2._forward_hooks


def test_teacher_loss_with_a_cache_and_no_teacher(ds, teacher):
    cache = build_logit_cache(teacher, ds.train)
    net = student()
    fit(net, ds, quiet(epochs=1), loss_fn=teacher_loss(None, cache=cache))
    with pytest.raises(ConfigError, match="teacher model or a logit cache"):
        teacher_loss(None)


def test_with_input_stats_feeds_the_teacher_its_own_normalisation():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    raw = torch.rand(3, 1, 2, 2)
    x_data = (raw - 0.5) / 0.25      # the student's data
    x_teacher = (raw - 0.2) / 0.4    # what the teacher was trained on
    wrapped = with_input_stats(teacher, [0.5], [0.25], [0.2], [0.4])
    assert torch.allclose(wrapped(x_data), teacher(x_teacher), atol=1e-5)
    assert with_input_stats(teacher, [0.5], [0.25], [0.5], [0.25]) is teacher


def test_with_input_stats_ignores_float32_rounding_so_teacher_layers_keep_their_names():
    # the lenet5 and vgg baselines record Fashion-MNIST's mean as 0.28604060411453247 and 0.2860405743122101
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    assert with_input_stats(teacher, [0.28604060411453247], [0.3530242443084717],
                            [0.2860405743122101], [0.3530242443084717]) is teacher
    assert with_input_stats(teacher, [0.2860], [0.3530], [0.2870], [0.3530]) is not teacher


def test_bad_configs_fail_before_training(ds, teacher):
    for cfg in (DistillConfig(loss="mse"), DistillConfig(feature_loss="kl"), DistillConfig(feature_weight=-1),
                DistillConfig(features=["fc1"])):
        with pytest.raises(ConfigError):
            distill(teacher, student(), ds, cfg, quiet())


_DDP_SCRIPT = r"""
from deepshrink import models
from deepshrink.distill import DistillConfig, distill
from deepshrink.train import TrainConfig

out, features = sys.argv[1], sys.argv[2] == "features"
ds = synthetic_dataset()
torch.manual_seed(0)
teacher = models.build("lenet300", in_features=64, num_classes=4)
rank = int(os.environ["RANK"])
torch.manual_seed(100 + rank)
student = models.build("lenet300", in_features=64, num_classes=4)
cfg = DistillConfig(features=["fc2:fc2"] if features else [])
res = distill(teacher, student, ds, cfg, TrainConfig(epochs=1, batch_size=32, augment=False, progress=False,
                                                     verbose=False))
torch.save({"state": student.state_dict(), "hits": res.cache_hits}, os.path.join(out, f"rank{rank}.pt"))
finish()
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["logits", "features"])
def test_ddp_two_ranks_distill_identical_students(tmp_path, mode, torchrun_two_ranks):
    torchrun_two_ranks(_DDP_SCRIPT, tmp_path, mode, timeout=200)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    if mode == "logits":  # each rank looked up its own half of every epoch
        assert r0["hits"] == r1["hits"] == 128
