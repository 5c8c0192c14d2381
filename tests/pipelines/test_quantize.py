"""quantize_file, linear with QAT: the PTQ model (calibrated once) is the QAT start; the result is
the same as quantizing and calibrating again for QAT (the former behaviour, the oracle)."""

from __future__ import annotations

import pytest
import torch

from deepshrink.io import ModelInfo, load_model, save_model
from deepshrink.models import build
from deepshrink.pipelines import quantize as quantize_pipeline
from deepshrink.pipelines.quantize import QuantizeConfig, quantize_file
from deepshrink.quant import ptq as ptq_module

pytestmark = pytest.mark.usefixtures("one_thread")


def _model_file(tmp_path, write_npz) -> str:
    spec = write_npz(tmp_path / "tiny.npz", n_train=128, n_test=64, hw=8, classes=4)
    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    save_model(build("lenet300", in_features=64, num_classes=4), path,
               ModelInfo(arch="lenet300", kwargs={"in_features": 64, "num_classes": 4}, input_shape=[1, 8, 8],
                         data=spec))
    return str(path)


@pytest.mark.parametrize("lsq", [False, True])
def test_qat_starts_from_the_ptq_model_calibrated_once(tmp_path, write_npz, monkeypatch, lsq):
    src = _model_file(tmp_path, write_npz)
    cfg = dict(bits=4, calib=32, qat_epochs=1, lsq=lsq, progress=False, verbose=False)
    calibrations = []
    real_calibrate = ptq_module.calibrate

    def counting_calibrate(*args, **kwargs):
        calibrations.append(1)
        return real_calibrate(*args, **kwargs)

    monkeypatch.setattr(ptq_module, "calibrate", counting_calibrate)
    run = quantize_file(src, tmp_path / "once.safetensors", QuantizeConfig(**cfg))
    assert len(calibrations) == 1

    # the oracle: QAT quantizing and calibrating again, as it did before
    real_qat = quantize_pipeline.qat_finetune
    monkeypatch.setattr(quantize_pipeline, "qat_finetune", lambda *a, ptq=None, **kw: real_qat(*a, **kw))
    calibrations.clear()
    twice = quantize_file(src, tmp_path / "twice.safetensors", QuantizeConfig(**cfg))
    assert len(calibrations) == 2
    assert run.accuracy_ptq == twice.accuracy_ptq and run.accuracy_after == twice.accuracy_after
    ours, theirs = run.model.state_dict(), twice.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    a, _ = load_model(tmp_path / "once.safetensors")
    b, _ = load_model(tmp_path / "twice.safetensors")
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))
