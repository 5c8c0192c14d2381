"""deepshrink.masks: masks held through fine-tuning, squash, save/load, sparsity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink import models
from deepshrink.errors import ConfigError
from deepshrink.io import ModelInfo, load_model, save_model
from deepshrink.prune import get_masks, layer_sparsities, prunable_weights, prune_, sparsity, squash
from deepshrink.masks import MaskCallback, apply_masks, set_mask
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


def test_without_callback_pruned_weights_revive(make_dataset):
    """The control: the optimizer (momentum, weight decay, gradients) does move pruned weights."""
    ds = make_dataset()
    model = mlp()
    prune_(model, 0.8)
    fit(model, ds, quiet(epochs=1))
    mask = model.fc1.weight_mask
    assert (model.fc1.weight[~mask] != 0).any()
    apply_masks(model)
    assert (model.fc1.weight[~mask] == 0).all()


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
