"""DLR synthetic tasks: every target recomputed directly (loops) from the stored inputs; format, masks, fixed vs
variable variants, determinism by seed."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rotrnn.data import load_dataset
from rotrnn.data.synthetic import TASKS, generate, solve_size

L = 24


def make(tmp_path, task, seed=0, n=(6, 3, 3), **kw):
    out = tmp_path / f"{task}-{seed}"
    meta = generate(task, out, length=L, n_train=n[0], n_val=n[1], n_test=n[2], seed=seed, **kw)
    return meta, out


def arrays(out, split="train"):
    return (np.load(out / f"{split}.inputs.npy"), np.load(out / f"{split}.labels.npy"),
            np.load(out / f"{split}.label_mask.npy"))


@pytest.mark.parametrize("task", TASKS)
def test_format_and_common_conventions(tmp_path, task):
    meta, out = make(tmp_path, task, num_shifts=4, mem=5, dim=3)
    x, y, mask = arrays(out)
    T, n_out = meta["l_max"], int(mask[0].sum())
    assert x.shape == (6, T, meta["in_dim"]) and y.shape == (6, T, meta["out_dim"]) and x.dtype == np.float32
    assert meta["loss"] == "mse" and meta["target"] == "sequence" and meta["splits"] == {"train": 6, "val": 3, "test": 3}
    assert (mask[:, T - n_out:]).all() and not mask[:, :T - n_out].any()
    assert (y[~mask] == 0).all()
    ang = 2 * np.pi * np.arange(T) / T
    np.testing.assert_allclose(x[0, :, -2], np.cos(ang), atol=1e-6)
    np.testing.assert_allclose(x[0, :, -1], np.sin(ang), atol=1e-6)
    assert np.abs(x[..., :-2]).max() <= 1 + 1e-6
    ds = load_dataset(out, "val")
    b = ds.collate([ds[0], ds[1]])
    assert b["inputs"].shape == (2, T, meta["in_dim"]) and b["labels"].shape == (2, T, meta["out_dim"])
    assert b["label_mask"].sum().item() == 2 * n_out


def test_shift(tmp_path):
    meta, out = make(tmp_path, "shift", num_shifts=4)
    x, y, _ = arrays(out)
    assert meta["l_max"] == L and meta["in_dim"] == 3 and meta["out_dim"] == 4
    s = [int((L - L / 4) * k / 3) for k in range(4)]  # linspace(0, L - L/H, H), floored: 0, 6, 12, 18
    assert s == [0, 6, 12, 18]
    for i in range(6):
        u = x[i, :, 0]
        assert np.isclose(np.abs(u).max(), 1.0)  # normalised by the max-abs value
        for t in range(L):
            for k in range(4):
                assert y[i, t, k] == (u[t - s[k]] if t >= s[k] else 0.0)


def test_cumsum_cummax(tmp_path):
    _, out = make(tmp_path, "cumsum")
    x, y, _ = arrays(out)
    for i in range(6):
        u = x[i, :, 0].astype(np.float64)
        for t in range(L):
            assert math.isclose(y[i, t, 0], sum(u[:t + 1]) / math.sqrt(t + 1), rel_tol=1e-5, abs_tol=1e-6)
    _, out = make(tmp_path, "cummax")
    x, y, _ = arrays(out)
    for i in range(6):
        assert [y[i, t, 0] for t in range(L)] == [max(x[i, :t + 1, 0]) for t in range(L)]


def test_reverse_sort(tmp_path):
    meta, out = make(tmp_path, "reverse")
    x, y, _ = arrays(out)
    assert meta["l_max"] == 2 * L
    assert (x[:, L:, 0] == 0).all()
    for i in range(6):
        assert list(y[i, L:, 0]) == list(x[i, :L, 0])[::-1]
    _, out = make(tmp_path, "sort")
    x, y, _ = arrays(out)
    for i in range(6):
        u = list(x[i, :L, 0])
        order = sorted(range(L), key=lambda s: abs(u[s] - u[0]))  # Python's sort is stable
        assert list(y[i, L:, 0]) == [u[s] for s in order]
        assert y[i, L, 0] == u[0]


def test_context_shift(tmp_path):
    _, out = make(tmp_path, "context_shift", n=(40, 1, 1))
    x, y, _ = arrays(out)
    rs = []
    for i in range(40):
        u = x[i, :, 0]
        r = round(math.atan2(u[1], u[0]) * L / (2 * math.pi)) % L  # the shift is encoded in the first two tokens
        assert 0 <= r <= L - 3
        rs.append(r)
        assert np.isclose(np.abs(u[2:]).max(), 1.0)
        assert list(y[i, :, 0]) == [u[t - r] if t >= r else 0.0 for t in range(L)]
    assert len(set(rs)) > 5  # the shift varies per sample


def test_mips(tmp_path):
    meta, out = make(tmp_path, "mips", dim=3)
    x, y, _ = arrays(out)
    assert meta["in_dim"] == 11 and meta["out_dim"] == 3
    for i in range(6):
        q, k, v = x[i, :, 0:3], x[i, :, 3:6], x[i, :, 6:9]
        np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, rtol=1e-5)
        for t in range(L):
            j = max(range(t + 1), key=lambda j: float(q[t] @ k[j]))
            np.testing.assert_array_equal(y[i, t], v[j])


@pytest.mark.parametrize("task", ["masked_select", "masked_select_fixed"])
def test_masked_select(tmp_path, task):
    M = 5
    meta, out = make(tmp_path, task, mem=M)
    assert meta["l_max"] == 2 * M + L and meta["in_dim"] == 4 and meta["out_dim"] == 1
    positions = []
    for split in ("train", "test"):
        x, y, mask = arrays(out, split)
        for i in range(len(x)):
            marked = [t for t in range(2 * M + L) if x[i, t, 1] == 1]
            assert len(marked) == M and max(marked) < M + L and (x[i, M + L:, :2] == 0).all()
            assert list(y[i, M + L:, 0]) == [x[i, t, 0] for t in marked]
            positions.append(tuple(marked))
    if task == "masked_select_fixed":
        assert len(set(positions)) == 1  # the same positions in every sample of every split
    else:
        assert len(set(positions)) == len(positions)


@pytest.mark.parametrize("task", ["solve", "solve_fixed"])
def test_solve(tmp_path, task):
    N = solve_size(L)
    assert N == 4 and N * N + 2 * N <= L < (N + 1) ** 2 + 2 * (N + 1)
    assert [solve_size(v) for v in (4096, 3, 15, 16)] == [63, 1, 3, 3]
    _, out = make(tmp_path, task)
    mats = []
    for split in ("train", "val"):
        x, y, mask = arrays(out, split)
        assert mask[0].sum() == N
        for i in range(len(x)):
            ab = x[i, :N * (N + 1), 0].astype(np.float64).reshape(N, N + 1)
            A, b = ab[:, :N], ab[:, N]
            assert (x[i, N * (N + 1):, 0] == 0).all()
            np.testing.assert_allclose(A @ A.T, np.eye(N), atol=1e-5)
            sol = y[i, L - N:, 0]
            np.testing.assert_allclose(np.linalg.solve(A, b), sol, atol=1e-5)
            assert math.isclose(np.linalg.norm(sol), 1, rel_tol=1e-5)
            mats.append(A.round(5).tobytes())
    assert (len(set(mats)) == 1) == (task == "solve_fixed")


def test_deterministic_by_seed(tmp_path):
    m1, a = make(tmp_path / "a", "cumsum", seed=3)
    m2, b = make(tmp_path / "b", "cumsum", seed=3)
    m3, _ = make(tmp_path / "c", "cumsum", seed=4)
    assert m1["checksum"] == m2["checksum"] != m3["checksum"]
    for p in a.iterdir():
        assert p.read_bytes() == (b / p.name).read_bytes()
    assert not np.array_equal(arrays(a, "train")[0][0], arrays(a, "val")[0][0])  # splits use separate streams


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown synthetic task 'copy'"):
        generate("copy", "/nonexistent", length=8)
    with pytest.raises(ValueError, match="num_shifts"):
        generate("shift", "/nonexistent", length=4, num_shifts=8)
