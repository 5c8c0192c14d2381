"""deepshrink.targets: which weights fine-grained pruning acts on, for models defined here (a CNN,
a small Transformer of torch layers, a tiny random ``transformers.BertModel``), not only the zoo."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink import models
from deepshrink.errors import ConfigError
from deepshrink.targets import candidate_weights, is_linear_or_conv, output_layer, prunable_weights


class SmallCNN(nn.Module):
    """A user's CNN: conv -> BN -> conv (grouped) -> pool -> two-layer head."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.Conv2d(4, 8, 3, groups=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.hidden = nn.Linear(8, 16)
        self.head = nn.Linear(16, classes)

    def forward(self, x):  # (N, 1, H, W) -> (N, classes)
        return self.head(torch.relu(self.hidden(self.features(x).flatten(1))))


class ToyTransformer(nn.Module):
    """Token ids -> embedding -> one torch encoder layer -> mean over tokens -> Linear head."""

    def __init__(self, vocab: int = 50, dim: int = 16, classes: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.encoder = nn.TransformerEncoderLayer(dim, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids):  # (N, L) -> (N, classes)
        return self.head(self.encoder(self.embed(ids)).mean(1))


def tiny_bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    return transformers.BertModel(transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                          num_attention_heads=2, intermediate_size=64)).eval()


# ----------------------------------------------------------------------------- default targets

def test_cnn_defaults_leave_norms_and_the_output_layer():
    model = SmallCNN()
    assert output_layer(model) == "head"
    assert list(prunable_weights(model)) == ["features.0.weight", "features.3.weight", "hidden.weight"]
    assert set(candidate_weights(model)) == {"features.0.weight", "features.3.weight", "hidden.weight",
                                             "head.weight"}  # the BN scale is a vector: never a candidate


def test_toy_transformer_defaults():
    model = ToyTransformer()
    assert output_layer(model) == "head"
    assert list(prunable_weights(model)) == ["encoder.self_attn.in_proj_weight",
                                             "encoder.self_attn.out_proj.weight",
                                             "encoder.linear1.weight", "encoder.linear2.weight"]
    assert "embed.weight" in candidate_weights(model)


def test_tiny_bert_defaults_are_the_encoder_linears():
    model = tiny_bert()
    weights = prunable_weights(model)
    per_layer = ["attention.self.query", "attention.self.key", "attention.self.value",
                 "attention.output.dense", "intermediate.dense", "output.dense"]
    assert list(weights) == [f"encoder.layer.{i}.{m}.weight" for i in range(2) for m in per_layer]
    # no embedding, no LayerNorm; the pooler's dense is the last Linear, so the output layer
    assert output_layer(model) == "pooler.dense"
    assert set(candidate_weights(model)) - set(weights) == {
        "embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight", "pooler.dense.weight"}


def test_zoo_output_layers():
    assert output_layer(models.build("lenet300")) == "fc3"
    assert output_layer(models.build("lenet5")) == "fc2"
    assert "fc3.weight" not in prunable_weights(models.build("lenet300"))


def test_layer_kinds_by_type_and_by_name():
    class Conv1D(nn.Module):  # transformers' GPT-2 layer, recognised by its name without importing it
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 6))

    class MyLinear(nn.Linear):
        pass

    for m in (nn.Linear(2, 3), MyLinear(2, 3), nn.Conv1d(1, 2, 3), nn.Conv3d(1, 2, 1), nn.ConvTranspose2d(1, 2, 3),
              nn.Bilinear(2, 2, 3), Conv1D()):
        assert is_linear_or_conv(m), type(m).__name__
    for m in (nn.Embedding(5, 3), nn.LayerNorm(3), nn.BatchNorm2d(3), nn.Sequential(nn.Linear(2, 2))):
        assert not is_linear_or_conv(m), type(m).__name__
    net = nn.Sequential(Conv1D(), nn.ReLU(), Conv1D())
    assert list(prunable_weights(net)) == ["0.weight"] and output_layer(net) == "2"


def test_a_weight_tied_to_an_embedding_is_no_default_target():
    class TiedLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(20, 8)
            self.mix = nn.Linear(8, 8)
            self.decoder = nn.Linear(8, 20, bias=False)
            self.proj = nn.Linear(8, 20, bias=False)  # defined last, but tied to the embedding
            self.proj.weight = self.embed.weight

    model = TiedLM()
    assert output_layer(model) == "proj"
    assert list(prunable_weights(model)) == ["mix.weight", "decoder.weight"]
    assert list(candidate_weights(model)) == ["embed.weight", "mix.weight", "decoder.weight"]  # listed once


# ----------------------------------------------------------------------------- include / exclude

def test_include_adds_the_embedding_and_the_classifier():
    model = ToyTransformer()
    default = list(prunable_weights(model))
    got = prunable_weights(model, include=["embed", "head.weight"])  # a module name, a parameter name
    assert list(got) == ["embed.weight"] + default + ["head.weight"]
    assert got["embed.weight"] is model.embed.weight


def test_exclude_by_glob_wins_over_include():
    model = tiny_bert()
    got = prunable_weights(model, exclude=["encoder.layer.0.*", "*.attention.self.key"])
    assert list(got) == [f"encoder.layer.1.{m}.weight" for m in
                         ("attention.self.query", "attention.self.value", "attention.output.dense",
                          "intermediate.dense", "output.dense")]
    assert list(prunable_weights(model, include="pooler*", exclude="pooler.dense")) == list(prunable_weights(model))
    both = prunable_weights(model, include=["embeddings.word_embeddings", "pooler.dense"])
    assert list(both)[0] == "embeddings.word_embeddings.weight" and list(both)[-1] == "pooler.dense.weight"


def test_globs_are_case_sensitive_and_cross_dots():
    model = SmallCNN()
    assert list(prunable_weights(model, exclude="features*")) == ["hidden.weight"]
    with pytest.raises(ConfigError, match="'Head'"):
        prunable_weights(model, include="Head")


@pytest.mark.parametrize("kw,name", [(dict(include=["head", "nosuch.*"]), "nosuch.*"),
                                     (dict(exclude="features.1"), "features.1"),  # the BN: a vector
                                     (dict(include="hidden.bias"), "hidden.bias")])
def test_a_glob_matching_nothing_is_a_config_error_naming_it(kw, name):
    with pytest.raises(ConfigError, match=f"{'include' if 'include' in kw else 'exclude'} glob '{name}'") as err:
        prunable_weights(SmallCNN(), **kw)
    assert "\n" not in str(err.value) and "features.0.weight" in str(err.value)  # one line, listing the weights


@pytest.mark.parametrize("bad", [[""], [3]])
def test_bad_globs(bad):
    with pytest.raises(ConfigError, match="globs"):
        prunable_weights(SmallCNN(), include=bad)
