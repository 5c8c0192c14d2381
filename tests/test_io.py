"""deepshrink.io: safetensors model files, safe .pt loading, pruned shapes, atomic writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save
from torch import nn

from deepshrink import models
from deepshrink.errors import FormatError, ModelError
from deepshrink.io import ModelInfo, load_model, read_info, save_model

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def _rand_bn(bn: nn.BatchNorm2d, gen: torch.Generator) -> None:
    """Non-trivial BN statistics so that a wrong tensor would change the outputs."""
    n = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(torch.rand(n, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(n, generator=gen) * 0.1)
        bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
        bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)


def _randomize_bns(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            _rand_bn(m, gen)


def _input(shape=(2, 1, 28, 28), seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _outputs(model, x):
    return model.eval()(x)


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("name", models.names())
def test_round_trip_every_zoo_model(tmp_path, name):
    torch.manual_seed(0)
    model = models.build(name)
    _randomize_bns(model)
    x = _input()
    want = _outputs(model, x)
    path = tmp_path / f"{name}.safetensors"
    save_model(model, path, ModelInfo(arch=name))
    loaded, info = load_model(path)
    assert not loaded.training
    assert type(loaded) is type(model)
    assert info.arch == name
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    torch.testing.assert_close(_outputs(loaded, x), want, rtol=0, atol=0)


def test_round_trip_with_kwargs_and_metadata(tmp_path):
    torch.manual_seed(0)
    model = models.build("lenet300", num_classes=4, in_features=64, dropout=0.1)
    info = ModelInfo(arch="lenet300", kwargs={"num_classes": 4, "in_features": 64, "dropout": 0.1},
                     input_shape=[1, 8, 8], mean=[0.25], std=[0.5], accuracy=0.875,
                     data="npz:/some/where.npz",
                     history=[{"op": "train", "config": {"epochs": 3, "lr": 0.05}, "seconds": 1.5}],
                     extra={"masks": {"fc1.weight": 0.5}, "note": "ünïcode ✓"})
    path = tmp_path / "m.safetensors"
    save_model(model, path, info)
    assert read_info(path) == info
    loaded, got = load_model(path)
    assert got == info
    assert loaded.fc3.out_features == 4 and loaded.fc1.in_features == 64
    x = _input((3, 1, 8, 8))
    torch.testing.assert_close(_outputs(loaded, x), _outputs(model, x), rtol=0, atol=0)


def test_save_overwrites_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "m.safetensors"  # the folder is created
    torch.manual_seed(0)
    save_model(models.build("lenet300"), path, ModelInfo(arch="lenet300", accuracy=0.1))
    save_model(models.build("lenet300"), path, ModelInfo(arch="lenet300", accuracy=0.2))
    assert read_info(path).accuracy == 0.2
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.safetensors"]


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
def test_saved_file_permissions_follow_umask_or_existing_file(tmp_path):
    path = tmp_path / "m.safetensors"
    old = os.umask(0o027)
    try:
        save_model(models.build("lenet300"), path, ModelInfo(arch="lenet300"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
    path.chmod(0o604)
    save_model(models.build("lenet300"), path, ModelInfo(arch="lenet300"))
    assert path.stat().st_mode & 0o777 == 0o604  # overwriting keeps the file's permissions


# ----------------------------------------------------------------------------- plain .pt files

def test_pt_state_dict_needs_arch(tmp_path):
    torch.manual_seed(0)
    model = models.build("lenet300")
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ModelError, match="--model"):
        load_model(path)
    loaded, info = load_model(path, arch="lenet300")
    assert info.arch == "lenet300"
    x = _input()
    torch.testing.assert_close(_outputs(loaded, x), _outputs(model, x), rtol=0, atol=0)


def test_pt_nested_state_dict_and_ddp_prefix(tmp_path):
    torch.manual_seed(0)
    model = models.build("lenet5")
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    loaded, _ = load_model(path, arch="lenet5")
    x = _input()
    torch.testing.assert_close(_outputs(loaded, x), _outputs(model, x), rtol=0, atol=0)


def test_pt_wrong_arch_is_model_error(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(models.build("lenet300").state_dict(), path)
    with pytest.raises(ModelError, match="plain.pt"):
        load_model(path, arch="lenet5")


class _Payload:
    """Unpickling this object would call open(marker, 'w'): the marker proves code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["object", "in-dict", "function"])
def test_pt_with_pickled_code_is_refused_and_runs_nothing(tmp_path, kind):
    marker = tmp_path / "PWNED"
    if kind == "object":
        obj = _Payload(marker)
    elif kind == "in-dict":
        obj = {"fc1.weight": torch.zeros(300, 784), "evil": _Payload(marker)}
    else:
        obj = {"fc1.weight": torch.zeros(1), "hook": os.getcwd}
    path = tmp_path / "evil.pt"
    torch.save(obj, path)
    for arch in (None, "lenet300"):
        with pytest.raises(FormatError, match="evil.pt"):
            load_model(path, arch=arch)
    assert not marker.exists()


@pytest.mark.parametrize("obj", [
    {"fc1.weight": torch.zeros(1), "step": 3},   # a non-tensor value
    {0: torch.zeros(1)},                         # a non-string key
    [torch.zeros(1)],                            # not a mapping
], ids=["value", "key", "list"])
def test_pt_not_a_state_dict_refused(tmp_path, obj):
    path = tmp_path / "odd.pt"
    torch.save(obj, path)
    with pytest.raises(FormatError, match="odd.pt"):
        load_model(path, arch="lenet300")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "absent.safetensors")
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "absent.pt", arch="lenet300")
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(ModelError, match="folder"):
        load_model(tmp_path / "dir.safetensors")


# ----------------------------------------------------------------------------- corrupt safetensors

def _good_blob() -> bytes:
    torch.manual_seed(0)
    model = models.build("lenet300", in_features=16, num_classes=3)
    info = ModelInfo(arch="lenet300", kwargs={"in_features": 16, "num_classes": 3}, input_shape=[1, 4, 4])
    return st_save({k: v.contiguous() for k, v in model.state_dict().items()},
                   metadata={"deepshrink": info.to_json()})


def _corrupt(kind: str) -> bytes:
    blob = _good_blob()
    n = int.from_bytes(blob[:8], "little")
    if kind == "empty":
        return b""
    if kind == "too-short":
        return b"\x01\x02\x03"
    if kind == "truncated-data":
        return blob[:-100]
    if kind == "truncated-header":
        return blob[: 8 + n // 2]
    if kind == "huge-header-length":
        return (1 << 62).to_bytes(8, "little") + blob[8:]
    if kind == "header-length-past-end":
        return (len(blob)).to_bytes(8, "little") + blob[8:]
    if kind == "garbage":
        gen = torch.Generator().manual_seed(0)
        return bytes(torch.randint(0, 256, (4096,), generator=gen, dtype=torch.uint8).tolist())
    if kind == "garbage-small-length":
        return (16).to_bytes(8, "little") + b"\xff\xfe not json \x00\x01" + bytes(64)
    if kind == "header-not-object":
        head = b"[1, 2, 3]"
        return len(head).to_bytes(8, "little") + head
    if kind == "flipped-offsets":
        head = json.loads(blob[8:8 + n])
        key = next(k for k in head if k != "__metadata__")
        head[key]["data_offsets"] = [0, 10**9]
        text = json.dumps(head).encode()
        return len(text).to_bytes(8, "little") + text + blob[8 + n:]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "empty", "too-short", "truncated-data", "truncated-header", "huge-header-length",
    "header-length-past-end", "garbage", "garbage-small-length", "header-not-object", "flipped-offsets",
])
def test_corrupt_safetensors_is_format_error(tmp_path, kind):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_corrupt(kind))
    with pytest.raises(FormatError, match="bad.safetensors"):
        load_model(path)
    with pytest.raises(FormatError, match="bad.safetensors"):
        read_info(path)


def test_good_blob_loads(tmp_path):  # the corruptions above start from a loadable file
    path = tmp_path / "good.safetensors"
    path.write_bytes(_good_blob())
    model, info = load_model(path)
    assert info.input_shape == [1, 4, 4] and model.fc1.in_features == 16


def test_safetensors_without_metadata(tmp_path):
    torch.manual_seed(0)
    model = models.build("lenet300")
    path = tmp_path / "nometa.safetensors"
    path.write_bytes(st_save({k: v.contiguous() for k, v in model.state_dict().items()}))
    with pytest.raises(FormatError, match="nometa.safetensors"):
        read_info(path)
    # a plain safetensors state dict is like a .pt one: it needs an architecture
    with pytest.raises(ModelError, match="nometa.safetensors"):
        load_model(path)
    loaded, _ = load_model(path, arch="lenet300")
    x = _input()
    torch.testing.assert_close(_outputs(loaded, x), _outputs(model, x), rtol=0, atol=0)


@pytest.mark.parametrize("meta", [
    "not json {",
    json.dumps({"format": "something-else", "version": 1, "arch": "lenet300"}),
    json.dumps({"format": "deepshrink-model", "version": 99, "arch": "lenet300"}),
    json.dumps({"format": "deepshrink-model", "version": 1}),
    json.dumps({"format": "deepshrink-model", "version": 1, "arch": 5}),
    json.dumps({"format": "deepshrink-model", "version": 1, "arch": "lenet300", "kwargs": [1]}),
    json.dumps([1, 2]),
])
def test_bad_metadata_is_format_error(tmp_path, meta):
    state = {k: v.contiguous() for k, v in models.build("lenet300").state_dict().items()}
    path = tmp_path / "badmeta.safetensors"
    path.write_bytes(st_save(state, metadata={"deepshrink": meta}))
    with pytest.raises(FormatError, match="badmeta.safetensors"):
        load_model(path)


def test_unknown_arch_and_mismatched_tensors(tmp_path):
    state = {k: v.contiguous() for k, v in models.build("lenet300").state_dict().items()}
    path = tmp_path / "m.safetensors"
    path.write_bytes(st_save(state, metadata={"deepshrink": ModelInfo(arch="nosuchnet").to_json()}))
    with pytest.raises(ModelError, match="nosuchnet"):
        load_model(path)
    path.write_bytes(st_save(state, metadata={"deepshrink": ModelInfo(arch="resnet20").to_json()}))
    with pytest.raises(ModelError, match="m.safetensors"):
        load_model(path)


# ----------------------------------------------------------------------------- module:callable

ARCH_MOD = "ds_test_io_arch_mod"


def _tiny_arch(num_classes=3):
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, num_classes))


def test_callable_arch_needs_trust(tmp_path, monkeypatch):
    marker = tmp_path / "IMPORTED"
    (tmp_path / f"{ARCH_MOD}.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        from torch import nn
        Path({str(marker)!r}).write_text("imported")

        def make(num_classes=3):
            return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, num_classes))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    model = _tiny_arch(num_classes=5)
    path = tmp_path / "custom.safetensors"
    save_model(model, path, ModelInfo(arch=f"{ARCH_MOD}:make", kwargs={"num_classes": 5}, input_shape=[1, 4, 4]))
    try:
        assert read_info(path).arch == f"{ARCH_MOD}:make"  # reading metadata imports nothing
        with pytest.raises(ModelError, match="trust"):
            load_model(path)
        assert not marker.exists() and ARCH_MOD not in sys.modules
        loaded, info = load_model(path, trust_code=True)
        assert marker.exists()
        x = _input((2, 1, 4, 4))
        torch.testing.assert_close(_outputs(loaded, x), _outputs(model, x), rtol=0, atol=0)
        # naming the callable explicitly counts as trusting it
        loaded2, _ = load_model(path, arch=f"{ARCH_MOD}:make")
        torch.testing.assert_close(_outputs(loaded2, x), _outputs(model, x), rtol=0, atol=0)
    finally:
        sys.modules.pop(ARCH_MOD, None)


def test_callable_arch_missing_module(tmp_path):
    path = tmp_path / "custom.safetensors"
    save_model(_tiny_arch(), path, ModelInfo(arch="ds_no_such_module_xyz:make"))
    with pytest.raises(ModelError, match="cannot import"):
        load_model(path, trust_code=True)


@pytest.mark.parametrize("text,words", [("def make(:\n", "SyntaxError"),
                                        ("raise ValueError('bad build\\nmore')\n", "ValueError: bad build")])
def test_callable_arch_whose_module_fails_to_import(tmp_path, monkeypatch, text, words):
    mod = "ds_test_io_failing_arch_mod"
    (tmp_path / f"{mod}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "custom.safetensors"
    save_model(_tiny_arch(), path, ModelInfo(arch=f"{mod}:make"))
    with pytest.raises(ModelError, match=f"custom.safetensors: cannot import '{mod}'.*{words}") as exc:
        load_model(path, trust_code=True)
    assert "more" not in str(exc.value) and mod not in sys.modules


# ----------------------------------------------------------------------------- pruned shapes

def _slice_conv(conv: nn.Conv2d, out_idx=None, in_idx=None, depthwise=False) -> nn.Conv2d:
    w = conv.weight.detach()
    if out_idx is not None:
        w = w[out_idx]
    if in_idx is not None and not depthwise:
        w = w[:, in_idx]
    out_c = w.shape[0]
    in_c = out_c if depthwise else w.shape[1] * conv.groups
    new = nn.Conv2d(in_c, out_c, conv.kernel_size, conv.stride, conv.padding,
                    groups=out_c if depthwise else conv.groups, bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach()[out_idx] if out_idx is not None else conv.bias.detach())
    return new


def _slice_bn(bn: nn.BatchNorm2d, idx) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(idx))
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new, name).copy_(getattr(bn, name).detach()[idx])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def test_pruned_resnet20_block_round_trip(tmp_path):
    torch.manual_seed(0)
    model = models.build("resnet20")
    _randomize_bns(model)
    block = model.layer2[1]  # 32 channels inside
    keep = torch.tensor([0, 3, 4, 9, 10, 17, 20, 31])
    block.conv1 = _slice_conv(block.conv1, out_idx=keep)
    block.bn1 = _slice_bn(block.bn1, keep)
    block.conv2 = _slice_conv(block.conv2, in_idx=keep)
    x = _input()
    want = _outputs(model, x)
    path = tmp_path / "pruned.safetensors"
    save_model(model, path, ModelInfo(arch="resnet20", history=[{"op": "prune"}]))
    loaded, _ = load_model(path)
    b = loaded.layer2[1]
    assert b.conv1.weight.shape == (8, 32, 3, 3) and b.conv1.out_channels == 8
    assert b.bn1.num_features == 8 and b.bn1.running_mean.shape == (8,)
    assert b.conv2.weight.shape == (32, 8, 3, 3) and b.conv2.in_channels == 8
    assert loaded.layer2[0].conv1.out_channels == 32  # untouched layers keep their shapes
    assert isinstance(b.conv1.weight, nn.Parameter) and b.conv1.weight.requires_grad
    torch.testing.assert_close(_outputs(loaded, x), want, rtol=0, atol=0)
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())
    # the loaded model is a working model: it trains (backward through the resized layers)
    loaded.train()
    loaded(x).sum().backward()
    assert b.conv1.weight.grad.shape == (8, 32, 3, 3)


def test_pruned_mobilenetv2_depthwise_round_trip(tmp_path):
    torch.manual_seed(0)
    model = models.build("mobilenetv2")
    _randomize_bns(model)
    ir = model.blocks[1]  # t=6: 16 -> 96 (expand) -> depthwise 96 -> 24 (project)
    expand, dw, project = ir.block[0], ir.block[1], ir.block[2]
    assert dw[0].groups == 96
    keep = torch.arange(0, 96, 3)  # 32 of the 96 hidden channels
    expand[0] = _slice_conv(expand[0], out_idx=keep)
    expand[1] = _slice_bn(expand[1], keep)
    dw[0] = _slice_conv(dw[0], out_idx=keep, depthwise=True)
    dw[1] = _slice_bn(dw[1], keep)
    project[0] = _slice_conv(project[0], in_idx=keep)
    x = _input()
    want = _outputs(model, x)
    path = tmp_path / "pruned-mb.safetensors"
    save_model(model, path, ModelInfo(arch="mobilenetv2"))
    loaded, _ = load_model(path)
    conv = loaded.blocks[1].block[1][0]
    assert conv.weight.shape == (32, 1, 3, 3)
    assert conv.groups == conv.in_channels == conv.out_channels == 32
    assert loaded.blocks[1].block[0][0].out_channels == 32
    assert loaded.blocks[1].block[2][0].in_channels == 32
    assert loaded.blocks[2].block[1][0].groups == 144  # the next block's depthwise is untouched
    torch.testing.assert_close(_outputs(loaded, x), want, rtol=0, atol=0)


def test_pruned_linear_round_trip(tmp_path):
    torch.manual_seed(0)
    model = models.build("lenet300")
    keep = torch.arange(0, 300, 2)
    with torch.no_grad():
        fc1, fc2 = nn.Linear(784, 150), nn.Linear(150, 100)
        fc1.weight.copy_(model.fc1.weight[keep]); fc1.bias.copy_(model.fc1.bias[keep])
        fc2.weight.copy_(model.fc2.weight[:, keep]); fc2.bias.copy_(model.fc2.bias)
    model.fc1, model.fc2 = fc1, fc2
    path = tmp_path / "pruned-fc.safetensors"
    save_model(model, path, ModelInfo(arch="lenet300"))
    loaded, _ = load_model(path)
    assert (loaded.fc1.out_features, loaded.fc2.in_features) == (150, 150)
    x = _input()
    torch.testing.assert_close(_outputs(loaded, x), _outputs(model, x), rtol=0, atol=0)


# ----------------------------------------------------------------------------- atomic writes

_KILL_SCRIPT = r"""
import os, sys
import torch
from deepshrink import models
from deepshrink.io import ModelInfo, save_model

path, mode = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
save_model(models.build("lenet300"), path, ModelInfo(arch="lenet300", accuracy=0.5))
second = models.build("lenet300")  # other weights

if mode == "fsync":          # everything written to the temp file, killed before the rename
    os.fsync = lambda fd: os._exit(17)
else:                        # killed in the middle of writing the bytes
    real_fdopen = os.fdopen

    class Dying:
        def __init__(self, fh):
            self.fh = fh
        def write(self, data):
            data = bytes(data)
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            os._exit(17)
        def __getattr__(self, name):
            return getattr(self.fh, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.fh.__exit__(*exc)

    os.fdopen = lambda *a, **k: Dying(real_fdopen(*a, **k))

save_model(second, path, ModelInfo(arch="lenet300", accuracy=0.9))
print("second save completed", flush=True)
sys.exit(0)
"""


@pytest.mark.parametrize("mode", ["mid-write", "fsync"])
def test_killed_save_leaves_previous_file_intact(tmp_path, mode):
    script = tmp_path / "kill_save.py"
    script.write_text(_KILL_SCRIPT)
    path = tmp_path / "model.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(path), mode], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, proc.stdout + proc.stderr
    assert "second save completed" not in proc.stdout
    # the first file is intact and loadable, with the first model's weights
    model, info = load_model(path)
    assert info.accuracy == 0.5
    torch.manual_seed(0)
    first = models.build("lenet300")
    for k, v in first.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    # whatever the kill left is a hidden temp file beside it, never the model file itself
    strays = [p.name for p in tmp_path.iterdir() if p.name not in ("model.safetensors", "kill_save.py")]
    assert all(s.startswith(".model.safetensors.") and s.endswith(".tmp") for s in strays), strays
    if mode == "mid-write":
        assert strays, "the partial write should be in a temp file"
        assert all((tmp_path / s).stat().st_size < path.stat().st_size for s in strays)
    # and the next save still works and replaces the file
    save_model(models.build("lenet300"), path, ModelInfo(arch="lenet300", accuracy=0.75))
    assert read_info(path).accuracy == 0.75
