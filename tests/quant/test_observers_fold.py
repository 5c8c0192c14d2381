"""Observers against direct statistics; BatchNorm folding against conv + BN in eval mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.quant.fold import fold_batchnorm, fold_conv_bn
from deepshrink.quant.linear import QScheme, choose_qparams, fake_quantize
from deepshrink.quant.observers import (MinMaxObserver, MovingAverageObserver, MSEObserver, PercentileObserver,
                                        make_observer)


def _batches(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 3, 5, 5, generator=g) * (i + 1) for i in range(n)]


def test_minmax_per_tensor_and_per_channel():
    xs = _batches()
    obs, per_c = MinMaxObserver(QScheme()), MinMaxObserver(QScheme(per_channel=True, axis=1))
    for x in xs:
        obs.update(x)
        per_c.update(x)
    allx = torch.cat(xs)
    lo, hi = obs.bounds()
    assert lo == allx.min() and hi == allx.max()
    lo_c, hi_c = per_c.bounds()
    assert torch.equal(lo_c, allx.transpose(0, 1).flatten(1).amin(1))
    assert torch.equal(hi_c, allx.transpose(0, 1).flatten(1).amax(1))


def test_moving_average_formula():
    xs = _batches()
    obs = MovingAverageObserver(QScheme(), momentum=0.25)
    lo = hi = None
    for x in xs:
        obs.update(x)
        lo = x.min() if lo is None else lo + 0.25 * (x.min() - lo)
        hi = x.max() if hi is None else hi + 0.25 * (x.max() - hi)
    assert torch.allclose(obs.bounds()[0], lo) and torch.allclose(obs.bounds()[1], hi)


def test_percentile_equals_quantile_of_all_values_when_unsampled():
    xs = _batches()
    obs = PercentileObserver(QScheme(), percentile=99.0)
    for x in xs:
        obs.update(x)
    allx = torch.cat([x.flatten() for x in xs])
    lo, hi = obs.bounds()
    assert torch.allclose(lo, torch.quantile(allx, 0.01)) and torch.allclose(hi, torch.quantile(allx, 0.99))
    assert hi < allx.max()


def test_mse_clips_outliers_and_lowers_the_error():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20000, generator=g)
    x[0] = 40.0                                              # one outlier
    sch = QScheme(4, symmetric=True)
    mse, mm = MSEObserver(sch), MinMaxObserver(sch)
    mse.update(x)
    mm.update(x)

    def err(obs):
        s, z = choose_qparams(*obs.bounds(), sch)
        return (fake_quantize(x, s, z, sch.qmin, sch.qmax) - x).pow(2).mean()
    assert mse.bounds()[1] < mm.bounds()[1]
    assert err(mse) < err(mm)


def test_unknown_observer_and_empty_observer_are_errors():
    with pytest.raises(ConfigError):
        make_observer("median", QScheme())
    with pytest.raises(ConfigError):
        MinMaxObserver(QScheme()).bounds()


@pytest.mark.parametrize("bias,groups,stride", [(False, 1, 1), (True, 1, 2), (True, 2, 1)])
def test_fold_conv_bn_equals_conv_then_bn(bias, groups, stride, randomise_bn):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=1, bias=bias, groups=groups)
    bn = randomise_bn(nn.Sequential(nn.BatchNorm2d(6)), 5)[0]
    x = torch.randn(3, 4, 7, 7)
    with torch.no_grad():
        assert torch.allclose(fold_conv_bn(conv, bn)(x), bn(conv(x)), atol=1e-5)


def test_fold_batchnorm_whole_models(tiny_convnet, tiny_resnet, images):
    x = images[0]
    for model in (tiny_convnet, tiny_resnet):
        folded = fold_batchnorm(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        with torch.no_grad():
            assert torch.allclose(folded(x), model(x), atol=1e-5)
        assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())   # original untouched
