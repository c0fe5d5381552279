"""The analysis suite's generators: targets recomputed independently, coarse splits' lengths, dtypes and values."""
import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from rotrnn.data import load_dataset
from rotrnn.data import multiscale, sines


def test_multiscale_delay_targets_recomputed(tmp_path):
    meta = multiscale.generate(tmp_path / "ms", length=40, kernel="delay", scales=[1, 3, 10], n_train=5, n_val=2,
                               n_test=3, seed=4)
    assert meta["splits"] == {"train": 5, "val": 2, "test": 3}
    assert meta["target_variance"] == 3.0
    x = np.load(tmp_path / "ms" / "train.inputs.npy")[..., 0].astype(np.float64)
    y = np.load(tmp_path / "ms" / "train.labels.npy")[..., 0]
    mask = np.load(tmp_path / "ms" / "train.label_mask.npy")
    for b in range(5):
        for t in range(40):
            expected = sum(x[b, t - lag] for lag in (1, 3, 10) if t - lag >= 0)
            assert y[b, t] == pytest.approx(expected, abs=1e-5)
    assert not mask[:, :10].any() and mask[:, 10:].all()


def test_multiscale_ema_is_the_sum_of_convolutions_with_unit_energy_kernels(tmp_path):
    """y_t = Σ_k √(1−a_k²) Σ_{u≤t} a_k^(t−u) x_u, a_k = exp(−1/s_k), written as an explicit convolution."""
    scales = [1, 4, 16]
    multiscale.generate(tmp_path / "ms", length=48, kernel="ema", scales=scales, n_train=4, n_val=0, n_test=0,
                        seed=1)
    x = np.load(tmp_path / "ms" / "train.inputs.npy")[..., 0].astype(np.float64)
    y = np.load(tmp_path / "ms" / "train.labels.npy")[..., 0]
    ell = np.arange(48)
    kernel = sum(np.sqrt(1 - np.exp(-2 / s)) * np.exp(-ell / s) for s in scales)
    expected = np.stack([np.convolve(row, kernel)[:48] for row in x])
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)
    mask = np.load(tmp_path / "ms" / "train.label_mask.npy")
    assert not mask[:, :16].any() and mask[:, 16:].all()


def test_multiscale_target_variance_matches_a_monte_carlo_estimate():
    """The analytic mean of y² over the scored positions (what predicting zero scores) against 4000 draws."""
    scales, length = [2, 8, 30], 64
    rng = np.random.default_rng(0)
    y = multiscale.ema_sum(rng.standard_normal((4000, length)), scales)
    estimate = float((y[:, max(scales):] ** 2).mean())
    exact = multiscale.target_variance("ema", scales, length)
    assert estimate == pytest.approx(exact, rel=0.03)
    # each integrator alone has unit stationary variance; driven by the same x they are positively correlated
    assert 3.0 < exact < 9.0


def test_multiscale_bad_scales():
    with pytest.raises(ValueError, match="largest scale 64 must be shorter than length=64"):
        multiscale.check_scales([2, 64], 64)
    with pytest.raises(ValueError, match="distinct"):
        multiscale.check_scales([2, 2], 64)
    with pytest.raises(ValueError, match=">= 1 for kernel ema"):
        multiscale.check_scales([0, 2], 64, "ema")
    with pytest.raises(ValueError, match="kernel must be one of delay, ema"):
        multiscale.check_scales([2], 64, "boxcar")


def test_sines_labels_match_the_spectrum():
    edges = sines.band_edges(4, 0.02, 0.2)
    x, labels, freqs = sines.draw(np.random.default_rng(0), 64, 2048, edges, components=1, noise=0.0)
    peak = np.abs(np.fft.rfft(x, axis=-1)).argmax(-1) / 2048
    for p, c in zip(peak, labels):  # the spectral peak lies in the labelled band (to one FFT bin)
        assert edges[c] - 1 / 2048 <= p <= edges[c + 1] + 1 / 2048
    assert ((freqs >= edges[labels, None]) & (freqs <= edges[labels + 1, None])).all()


def test_sines_coarse_splits(tmp_path):
    meta = sines.generate(tmp_path / "sn", length=64, n_train=6, n_val=2, n_test=5, factors=[2, 4], f_max=0.1)
    assert meta["step"] == {"test_dec2": 2, "test_rs2": 2, "test_dec4": 4, "test_rs4": 4}
    fine = load_dataset(tmp_path / "sn", "test")
    x = fine.collate([fine[i] for i in range(5)])["inputs"][..., 0].double()
    for s in (2, 4):
        dec = load_dataset(tmp_path / "sn", f"test_dec{s}")
        rs = load_dataset(tmp_path / "sn", f"test_rs{s}")
        bd, br = (d.collate([d[i] for i in range(5)]) for d in (dec, rs))
        for b in (bd, br):
            assert b["inputs"].shape == (5, 64 // s, 1) and b["inputs"].dtype == torch.float32
            assert (b["lengths"] == 64 // s).all()
            assert torch.equal(b["labels"], fine.collate([fine[i] for i in range(5)])["labels"])
        torch.testing.assert_close(bd["inputs"][..., 0].double(), x[:, ::s].float().double())
        torch.testing.assert_close(br["inputs"][..., 0], AF.resample(x, s, 1).float(), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(bd["inputs"], br["inputs"])  # the two makers differ (noise above Nyquist)
        assert dec.step == rs.step == s


def test_sines_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="coarsest Nyquist"):
        sines.generate(tmp_path / "a", length=64, f_max=0.2, factors=[4], n_train=2, n_val=0, n_test=2)
    with pytest.raises(ValueError, match="dividing length=60"):
        sines.generate(tmp_path / "b", length=60, factors=[8], f_max=0.05, n_train=2, n_val=0, n_test=2)
    with pytest.raises(ValueError, match="f_min < f_max"):
        sines.band_edges(3, 0.2, 0.1)
