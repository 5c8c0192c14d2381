"""deepshrink.masks: masks held through fine-tuning (deepshrink's and plain PyTorch's), squash/remove,
save/load, deepcopy, tracing and export, sparsity."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

from deepshrink import models
from deepshrink.errors import ConfigError
from deepshrink.io import ModelInfo, load_model, save_model
from deepshrink import masks as masks_module
from deepshrink import prune as prune_package
from deepshrink.prune import get_masks, layer_sparsities, prunable_weights, prune_, remove, sparsity, squash
from deepshrink.masks import MaskCallback, apply_masks, hold_masks, set_mask
from deepshrink.tracing import trace
from deepshrink.train import TrainConfig, fit, predict


pytestmark = pytest.mark.usefixtures("one_thread")


KWARGS = dict(in_features=64, num_classes=4, dropout=0.2)


def mlp(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("lenet300", **KWARGS)


def quiet(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=64, lr=0.05, augment=False, progress=False, verbose=False)
    return TrainConfig(**{**base, **kw})


def test_mask_callback_keeps_pruned_weights_zero(make_dataset):
    ds = make_dataset()
    model = mlp()
    prune_(model, 0.8)
    masks = {k: v.clone() for k, v in get_masks(model).items()}
    before = {k: w.detach().clone() for k, w in prunable_weights(model).items()}
    seen = []

    def check(m, info):  # after the mask callback, at every step
        for name, w in prunable_weights(m).items():
            seen.append(bool((w[~masks[name]] == 0).all()))

    fit(model, ds, quiet(), callbacks=[MaskCallback(), check])
    assert seen and all(seen)
    for name, w in prunable_weights(model).items():
        mask = masks[name]
        assert torch.equal(get_masks(model)[name], mask)         # the mask itself never changes
        assert (w[~mask] == 0).all()                              # fine-tuning never revives
        assert not torch.equal(w[mask], before[name][mask])      # ... but the survivors did train
    assert sparsity(model) == pytest.approx(0.8, abs=1e-4)


def test_without_callback_the_hooks_hold_and_after_remove_pruned_weights_revive(make_dataset):
    """The masks' own hooks hold the zeros without MaskCallback; the control: once ``remove``d, the
    optimizer (momentum, weight decay, gradients) does move pruned weights."""
    ds = make_dataset()
    model = mlp()
    prune_(model, 0.8)
    mask = model.fc1.weight_mask.clone()
    fit(model, ds, quiet(epochs=1))
    assert (model.fc1.weight[~mask] == 0).all()
    remove(model)
    fit(model, ds, quiet(epochs=1))
    assert (model.fc1.weight[~mask] != 0).any()


def test_squash_removes_buffers_keeps_zeros():
    model = mlp()
    prune_(model, 0.7)
    with torch.no_grad():  # simulate an optimizer step that moved pruned weights
        model.fc2.weight.add_(0.01)
    s_masks = {k: v.clone() for k, v in get_masks(model).items()}
    out = squash(model)
    assert out is model
    assert get_masks(model) == {}
    assert not any(k.endswith("_mask") for k in model.state_dict())
    assert not hasattr(model.fc1, "weight_mask")
    for name, w in prunable_weights(model).items():
        assert (w[~s_masks[name]] == 0).all()
    assert sparsity(model) == pytest.approx(0.7, abs=1e-4)
    squash(model)  # idempotent on a model without masks


def test_save_load_round_trip_keeps_masks(tmp_path):
    model = mlp()
    prune_(model, {"fc1.weight": 0.9, "fc3.weight": 0.5})
    model.eval()
    path = tmp_path / "pruned.safetensors"
    save_model(model, path, ModelInfo(arch="lenet300", kwargs=KWARGS, input_shape=[1, 8, 8]))
    loaded, info = load_model(path)
    masks, lmasks = get_masks(model), get_masks(loaded)
    assert set(lmasks) == {"fc1.weight", "fc3.weight"}
    for k in masks:
        assert lmasks[k].dtype == torch.bool
        assert torch.equal(lmasks[k], masks[k])
    assert not hasattr(loaded.fc2, "weight_mask")
    assert sparsity(loaded) == sparsity(model)
    assert layer_sparsities(loaded) == layer_sparsities(model)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(predict(loaded, x), predict(model, x))
    # the re-attached masks still act
    with torch.no_grad():
        loaded.fc1.weight.fill_(1.0)
    apply_masks(loaded)
    assert int((loaded.fc1.weight == 0).sum()) == round(loaded.fc1.weight.numel() * 0.9)


def test_sparsity_values():
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].weight.view(-1)[:10] = 0.0
        net[2].weight.fill_(2.0)
        net[0].bias.zero_()  # biases are not counted
    # unmasked: over the default targets, which leave the output layer "2" out
    assert layer_sparsities(net) == {"0.weight": 0.5}
    assert sparsity(net) == pytest.approx(0.5)
    assert sparsity(net, ["0.weight", "2.weight"]) == pytest.approx(10 / 30)
    assert layer_sparsities(net, ["0.weight", "2.weight"]) == {"0.weight": 0.5, "2.weight": 0.0}
    assert sparsity(net, ["0.weight"]) == pytest.approx(0.5)
    assert sparsity(net, ["2.weight"]) == 0.0
    set_mask(net, "2.weight", torch.ones(2, 5, dtype=torch.bool))  # masked: over what was pruned
    assert layer_sparsities(net) == {"2.weight": 0.0} and sparsity(net) == 0.0


def test_set_mask_errors():
    model = mlp()
    with pytest.raises(ConfigError, match="shape"):
        set_mask(model, "fc1.weight", torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ConfigError, match="nosuch"):
        set_mask(model, "nosuch.weight", torch.ones(3, 3, dtype=torch.bool))


def test_set_mask_replaces_and_converts():
    model = mlp()
    mask = torch.rand(model.fc3.weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    set_mask(model, "fc3.weight", mask.float())
    assert model.fc3.weight_mask.dtype == torch.bool
    assert torch.equal(model.fc3.weight_mask, mask)
    set_mask(model, "fc3.weight", torch.ones_like(mask))
    assert model.fc3.weight_mask.all()
    assert len([k for k in model.state_dict() if k.endswith("_mask")]) == 1


def test_tiny_bert_file_keeps_its_masks(tmp_path):
    """A Hugging Face model (hf:DIR) pruned by default: encoder Linears only; the masks survive the file."""
    pytest.importorskip("transformers")
    from hf_files import bert_folder

    model, info = load_model(f"hf:{bert_folder(tmp_path / 'bert')}", seq_len=8)
    embeddings = model.model.embeddings.word_embeddings.weight.detach().clone()
    prune_(model, 0.5)
    masks = get_masks(model)
    assert len(masks) == 12 and all(k.startswith("model.encoder.layer.") for k in masks)
    assert torch.equal(model.model.embeddings.word_embeddings.weight, embeddings)
    path = tmp_path / "pruned.safetensors"
    save_model(model, path, info)
    loaded, _ = load_model(path)
    assert get_masks(loaded).keys() == masks.keys()
    assert all(torch.equal(get_masks(loaded)[k], masks[k]) for k in masks)
    assert sparsity(loaded) == sparsity(model) == 0.5
    ids = torch.tensor([[2, 5, 7, 9, 3, 0, 0, 0]])
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))


# ----------------------------------------------------------------------------- plain PyTorch training

def _mask_hooks(model: nn.Module) -> tuple[int, int]:
    """(forward pre-hooks, gradient hooks) the masks attached, over the whole model."""
    pre = sum(h is masks_module._mask_pre_hook for m in model.modules() for h in m._forward_pre_hooks.values())
    grad = sum(isinstance(h, masks_module._MaskGrad) for p in model.parameters()
               for h in (p._backward_hooks or {}).values())
    return pre, grad


def _plain_steps(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 5, seed: int = 0) -> None:
    """A training loop that knows nothing of deepshrink."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _pruned_file(tmp_path) -> nn.Module:
    model = mlp()
    prune_(model, {"fc1.weight": 0.9, "fc2.weight": 0.5})
    path = tmp_path / "pruned.safetensors"
    save_model(model, path, ModelInfo(arch="lenet300", kwargs=KWARGS, input_shape=[1, 8, 8]))
    return load_model(path)[0]


OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=1e-2),
}


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_loaded_pruned_file_keeps_its_zeros_under_plain_optimizers(tmp_path, opt):
    model = _pruned_file(tmp_path)
    assert _mask_hooks(model) == (2, 2)
    oracle = {k: v.clone() for k, v in get_masks(model).items()}
    before = {k: model.get_parameter(k).detach().clone() for k in oracle}
    _plain_steps(model, OPTIMIZERS[opt](model.parameters()))
    for name, mask in oracle.items():
        w = model.get_parameter(name)
        assert torch.equal(get_masks(model)[name], mask)
        assert torch.count_nonzero(w[~mask]) == 0                    # exactly zero, every pruned weight
        assert not torch.equal(w[mask], before[name][mask])         # the survivors trained
    assert sparsity(model) == pytest.approx((0.9 * 300 * 64 + 0.5 * 100 * 300) / (300 * 64 + 100 * 300), abs=1e-4)


def test_weights_written_directly_are_masked_again_before_the_next_training_forward():
    model = mlp()
    prune_(model, 0.7)
    mask = model.fc1.weight_mask
    with torch.no_grad():
        model.fc1.weight.fill_(1.0)                                  # code that writes the weights
    model.eval()(torch.zeros(1, 1, 8, 8))                            # inference leaves the weights alone
    assert (model.fc1.weight == 1).all()
    model.train()(torch.zeros(1, 1, 8, 8))                           # a training forward masks them again
    assert torch.equal(model.fc1.weight != 0, mask)


def _mul_ops(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The in-place multiplications (the mask's ``mul_``) the autograd profiler records in one
    forward (no dispatch mode: the pre-hook stays visible to it; dropout's ``mul`` is not counted)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(x)
    return [e.name for e in prof.events() if e.name == "aten::mul_"]


def test_an_inference_forward_of_a_loaded_pruned_model_runs_no_mask_operation(tmp_path):
    model = _pruned_file(tmp_path).eval()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    weights = {k: (model.get_parameter(k).data_ptr(), model.get_parameter(k).detach().clone())
               for k in get_masks(model)}
    with torch.no_grad():
        assert _mul_ops(model, x) == []                              # eval mode, no_grad: what profile times
    assert _mul_ops(model, x) == []                                  # eval mode, grad enabled
    model.train()
    with torch.no_grad():
        assert _mul_ops(model, x) == []                              # no grad: no training step follows
    for k, (ptr, w) in weights.items():
        p = model.get_parameter(k)
        assert p.data_ptr() == ptr and torch.equal(p, w)
    assert _mul_ops(model, x) == ["aten::mul_"] * 2                  # the control, a training forward: fc1, fc2


def test_pruning_twice_updates_the_mask_and_never_stacks_hooks():
    model = mlp()
    prune_(model, 0.5)
    assert _mask_hooks(model) == (2, 2)                              # fc1, fc2 (the output layer is kept)
    prune_(model, 0.8)
    set_mask(model, "fc1.weight", model.fc1.weight_mask.clone())
    hold_masks(model)
    assert _mask_hooks(model) == (2, 2)
    _plain_steps(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), steps=2)
    assert _mask_hooks(model) == (2, 2)
    for name, mask in get_masks(model).items():                       # the second, sparser masks hold
        assert int((~mask).sum()) == round(mask.numel() * 0.8)
        assert torch.count_nonzero(model.get_parameter(name)[~mask]) == 0


def test_deepcopy_keeps_the_masks_holding(tmp_path):
    model = _pruned_file(tmp_path)
    twin = copy.deepcopy(model)
    _plain_steps(twin, torch.optim.AdamW(twin.parameters(), lr=1e-2))
    assert _mask_hooks(twin) == (2, 2)                               # re-attached to the copied parameters
    for name, mask in get_masks(twin).items():
        assert torch.count_nonzero(twin.get_parameter(name)[~mask]) == 0
    assert _mask_hooks(model) == (2, 2)


def test_two_forwards_before_one_backward():
    """The pre-hook writes through ``.data``: a graph built by an earlier forward stays valid."""
    model = mlp()
    prune_(model, 0.5)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    (model(x).sum() + model(x + 1).sum()).backward()
    assert (model.fc1.weight.grad[~model.fc1.weight_mask] == 0).all()


def test_remove_is_squash_under_torchs_name(tmp_path):
    assert prune_package.remove is masks_module.remove
    model = _pruned_file(tmp_path)
    oracle = {k: v.clone() for k, v in get_masks(model).items()}
    assert remove(model) is model
    assert get_masks(model) == {} and _mask_hooks(model) == (0, 0)
    assert not any(k.endswith("_mask") for k in model.state_dict())
    for name, mask in oracle.items():                                # the zeros are baked in ...
        assert torch.count_nonzero(model.get_parameter(name)[~mask]) == 0
    _plain_steps(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4), steps=1)
    for name, mask in oracle.items():                                # ... and training then moves them
        assert torch.count_nonzero(model.get_parameter(name)[~mask]) > 0


def test_remove_one_parameter_as_torch_does():
    model = mlp()
    prune_(model, 0.5)
    remove(model.fc1, "weight")                                      # torch: prune.remove(module, name)
    assert set(get_masks(model)) == {"fc2.weight"} and _mask_hooks(model) == (1, 1)
    with pytest.raises(ConfigError, match="fc1.weight"):
        remove(model, "fc1.weight")


def test_held_masks_trace_script_export_and_save_cleanly():
    model = mlp()
    prune_(model, 0.6)
    model.eval()
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = model(x)
    scripted, traced, graph = torch.jit.script(model), torch.jit.trace(model, x), trace(model)
    for out in (scripted(x), traced(x), graph(x)):
        assert torch.equal(out, ref)
    assert "mul_" not in str(traced.graph) and "mul_" not in str(graph.graph)   # nothing recorded
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert set(state) == set(mlp().state_dict()) | {"fc1.weight_mask", "fc2.weight_mask"}
    fresh = mlp(seed=1)
    for name, mask in get_masks(model).items():
        set_mask(fresh, name, torch.ones_like(mask))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.eval()(x), ref)
    pytest.importorskip("onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        blob = io.BytesIO()
        torch.onnx.export(model, (x,), blob, dynamo=False)
    import onnx
    ops = [n.op_type for n in onnx.load_from_string(blob.getvalue()).graph.node]
    assert "Mul" not in ops


def test_a_dispatch_mode_sees_no_mask_op():
    """Op counters (the profiler's recorder, FLOP counters) run under a dispatch mode: the pre-hook
    keeps out of their counts."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    model = mlp()
    prune_(model, 0.5)
    with torch.no_grad(), Ops() as ops:
        model.eval()(torch.zeros(1, 1, 8, 8))
    assert ops.seen and not any("mul" in op for op in ops.seen)
