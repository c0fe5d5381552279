"""Experiment 1's measurements: the closed form 1 − r^(2t), the level ratio, matched decay draws, BatchNorm
calibration of an untrained network."""
import math

import numpy as np
import pytest
import torch

from rotrnn.analysis.norms import (calibrate_batchnorm, closed_form, level_ratio, norm_curve, unit_decays, units)
from rotrnn.models.sequence import SequenceClassifier
from rotrnn.nn import LRU, RotRNN


@pytest.mark.parametrize("make", [lambda: RotRNN(6, 16, 4, r_min=0.8, r_max=0.95),
                                  lambda: LRU(6, 8, r_min=0.8, r_max=0.95),
                                  lambda: LRU(6, 8, r_min=0.8, r_max=0.95, radius_init="double_exponential")])
def test_white_noise_norm_follows_closed_form_at_init(float64_default, make):
    # the normalisation's promise (RotRNN: ξ, Dolga et al. §3; LRU: γ = sqrt(1 − |λ|²), Orvieto et al. §3.3):
    # E ‖h_t‖² per unit = mean_u (1 − r_u^{2t}) for unit white noise from a zero state
    torch.manual_seed(0)
    layer = make()
    L, n = 60, 4000
    u = torch.randn(n, L, 6, generator=torch.Generator().manual_seed(1))
    measured, theory = norm_curve(layer, u), closed_form(unit_decays(layer), L)
    # per sequence ‖h_t‖²/U has a relative spread below ~2; 5 standard errors of the batch mean (the LRU's rows of
    # B have unit norm only in expectation: 20% more room)
    assert np.all(np.abs(measured - theory) <= 1.2 * 5 * 2 * theory / math.sqrt(n))


def test_closed_form_is_one_minus_gamma_power(float64_default):
    torch.manual_seed(0)
    layer = RotRNN(5, 12, 3, r_min=0.7, r_max=0.99)
    t = torch.arange(1, 41, dtype=torch.float64)[:, None]
    expected = (1 - layer.gamma.detach() ** (2 * t)).mean(-1).numpy()  # 1 − γ^{2t}, mean over heads
    np.testing.assert_allclose(closed_form(unit_decays(layer), 40), expected, rtol=1e-10)
    assert units(layer) == 3
    lru = LRU(5, 7)
    assert units(lru) == 7 and unit_decays(lru).shape == (7,)


def test_level_ratio_detects_a_scaled_input_map(float64_default):
    # the LRU's learned γ scales its input map: doubling γ quadruples the level, and the ratio says so
    torch.manual_seed(0)
    layer = LRU(6, 8, r_min=0.8, r_max=0.95)
    u = torch.randn(2000, 80, 6, generator=torch.Generator().manual_seed(2))
    closed = closed_form(unit_decays(layer), 80)
    _, _, before = level_ratio(norm_curve(layer, u), closed, 40)
    with torch.no_grad():
        layer.gamma_log += math.log(2)
    level, ref, after = level_ratio(norm_curve(layer, u), closed, 40)
    assert abs(before - 1) < 0.05 and abs(after / before - 4) < 1e-6
    assert ref == pytest.approx(float(closed[39:].mean()))


def test_lru_double_exponential_draw_matches_rotrnn():
    # the two models' decay distributions: log(−log r) uniform on [log(−log r_max), log(−log r_min)] for both
    torch.manual_seed(0)
    r_min, r_max, n = 0.9, 0.999, 20000
    gamma = RotRNN(4, 2 * n, n, r_min=r_min, r_max=r_max).gamma.detach().double().numpy()
    lam = unit_decays(LRU(4, n, r_min=r_min, r_max=r_max, radius_init="double_exponential"))
    ring = unit_decays(LRU(4, n, r_min=r_min, r_max=r_max))
    slow = math.exp(-1 / 256)  # decays slower than 256 steps
    frac = [float((x > slow).mean()) for x in (gamma, lam, ring)]
    assert abs(frac[0] - frac[1]) < 0.015 and abs(frac[0] - 0.29) < 0.02 and frac[2] < 0.06, frac
    for x in (gamma, lam):  # uniform in log(−log r): the quartiles at a quarter of the range
        z = np.log(-np.log(x))
        lo, hi = math.log(-math.log(r_max)), math.log(-math.log(r_min))
        np.testing.assert_allclose(np.quantile(z, [0.25, 0.5, 0.75]), lo + (hi - lo) * np.array([.25, .5, .75]),
                                   atol=0.03)
    # the LRU keeps its normalisation γ_j = sqrt(1 − |λ_j|²) with either draw
    layer = LRU(4, 50, radius_init="double_exponential")
    np.testing.assert_allclose(torch.exp(2 * layer.gamma_log).detach().numpy(), 1 - unit_decays(layer) ** 2,
                               rtol=1e-5)
    with pytest.raises(ValueError, match="radius_init"):
        LRU(4, 5, radius_init="log")


def test_batchnorm_calibration_sets_the_statistics_of_the_calibration_batch():
    torch.manual_seed(0)
    model = SequenceClassifier("rotrnn", 11, 3, d_model=8, n_layers=3, tokens=True,
                               layer_kwargs={"d_state": 8, "n_heads": 2}).eval()
    tokens = torch.randint(3, 11, (6, 30))
    seen = []
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    hook = bn.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    assert calibrate_batchnorm(model, tokens, chunk=2) == 3
    hook.remove()
    x = torch.cat(seen)  # three chunks: the cumulative average is the mean over all rows
    np.testing.assert_allclose(bn.running_mean.numpy(), x.mean(0).numpy(), rtol=1e-4, atol=1e-6)
    assert not bn.training and not model.training
    assert float((bn.running_var - 1).abs().max()) > 1e-3  # no longer the identity of an untrained network
