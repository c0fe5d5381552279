"""Experiment 1's measurements: the white-noise norm law, the input kinds, the closed form."""
import math

import numpy as np
import pytest
import torch

from rotrnn.analysis.norms import make_input, norm_curve, spread, units, white_noise_theory
from rotrnn.nn import LRU, RotRNN


@pytest.mark.parametrize("make", [lambda: RotRNN(6, 16, 4, r_min=0.8, r_max=0.95),
                                  lambda: LRU(6, 8, r_min=0.8, r_max=0.95)])
def test_white_noise_norm_follows_closed_form(float64_default, make):
    torch.manual_seed(0)
    layer = make()
    g = torch.Generator().manual_seed(1)
    L, n = 60, 3000
    u = make_input("white", n, L, 6, g)
    measured = norm_curve(layer, u)
    theory = white_noise_theory(layer, L)
    # per sequence ‖h_t‖²/U has a relative spread below ~2 (chi-square-like); 5 standard errors of the batch mean
    assert np.all(np.abs(measured - theory) <= 5 * 2 * theory / math.sqrt(n))


def test_rotrnn_closed_form_is_one_minus_gamma_power(float64_default):
    torch.manual_seed(0)
    layer = RotRNN(5, 12, 3, r_min=0.7, r_max=0.99)
    t = torch.arange(1, 41, dtype=torch.float64)[:, None]
    expected = (1 - layer.gamma.detach() ** (2 * t)).mean(-1).numpy()  # 1 − γ^{2t}, mean over heads
    np.testing.assert_allclose(white_noise_theory(layer, 40), expected, rtol=1e-10)
    assert units(layer) == 3


@pytest.mark.parametrize("kind", ["white", "ar0.9", "ar0.99", "mean", "student_t3"])
def test_inputs_have_unit_second_moment(kind):
    u = make_input(kind, 400, 200, 4, torch.Generator().manual_seed(0))
    assert u.shape == (400, 200, 4)
    # AR(0.99) mixes slowly across the 400 independent sequences only: a looser tolerance
    assert abs(float(u.pow(2).mean()) - 1) < (0.08 if kind == "ar0.99" else 0.05)


def test_input_structure():
    g = torch.Generator().manual_seed(0)
    ar = make_input("ar0.9", 500, 300, 2, g)
    lag1 = float((ar[:, 1:] * ar[:, :-1]).mean())
    assert abs(lag1 - 0.9) < 0.03
    mean = make_input("mean", 500, 100, 2, g)
    assert abs(float(mean.mean()) - 1 / math.sqrt(2)) < 0.01
    t3 = make_input("student_t3", 500, 100, 2, g)
    kurt = float(t3.pow(4).mean() / t3.pow(2).mean() ** 2)
    assert kurt > 4  # heavy tails (a normal gives 3)


def test_bad_kind_is_named():
    g = torch.Generator()
    with pytest.raises(ValueError, match="unknown input kind 'pink'"):
        make_input("pink", 1, 4, 1, g)
    with pytest.raises(ValueError, match="more than 2 degrees"):
        make_input("student_t2", 1, 4, 1, g)


def test_spread_uses_second_half():
    curves = [np.array([0.01, 0.5, 1.0, 2.0]), np.array([1.0, 1.0, 1.0, 1.0])]
    ratio, lo, hi = spread(curves, 0.5)
    assert (ratio, lo, hi) == (2.0, 1.0, 2.0)
