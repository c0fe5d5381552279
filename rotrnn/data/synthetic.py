"""DLR's synthetic sequence-to-sequence tasks (Gupta, Mehta, Berant 2022, `src/dataloaders/sequence1d.py`), written
directly in the prepared format with per-position regression targets.

Common conventions (as DLR): a random sequence is standard normal divided by its max-abs value over time (|x| <= 1);
two positional channels cos(2*pi*t/T), sin(2*pi*t/T) (T = input length) are appended to every input. `length` is
DLR's `L` parameter; the input length T (meta `l_max`) depends on the task:

| task                | input (T x in_dim)                                  | target (at the last n_out positions)   |
|---------------------|-----------------------------------------------------|----------------------------------------|
| shift               | x (L x 3)                                           | L x H: x delayed by s_k = linspace(0, L-L/H, H) (floored), zeros before |
| cumsum              | x (L x 3)                                           | L x 1: cumsum(x)_t / sqrt(t), t from 1 |
| cummax              | x (L x 3)                                           | L x 1: running max                     |
| reverse             | [x, 0_L] (2L x 3)                                   | L x 1: x reversed                      |
| sort                | [x, 0_L] (2L x 3)                                   | L x 1: x ordered by |x_s - x_1|, stable |
| context_shift       | [cos(2 pi r/L), sin(2 pi r/L), x_1..x_{L-2}] (L x 3)| L x 1: the input delayed by r ~ U{0..L-3} |
| mips                | [q, k, v] unit vectors in R^D (L x 3D+2)            | L x D: v_j, j = argmax_{j<=t} q_t . k_j |
| masked_select(_fixed)| values of M+L noise tokens then M zeros, marker channel at M sorted positions among the first M+L (2M+L x 4) | M x 1: the marked values in order |
| solve(_fixed)       | [A | b] flattened row-major, zero-padded (L x 3)     | N x 1: x with A x = b; A orthogonal (U V^T of a Gaussian's SVD), x a unit vector, N = floor(sqrt(1+L) - 1) |

The `_fixed` variants use one set of marked positions / one matrix A for every sample of every split (drawn from
seed 0 as in DLR); the others draw them per sample. Targets shorter than the input sit at the last positions, the
rest is masked out by `label_mask` (inferred from S4's 'last' decoder convention; DLR's alignment is not documented).
DLR draws fresh training samples every epoch; here each split is a fixed set, deterministic given `seed`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rotrnn.data.prepared import PreparedWriter

TASKS = ("shift", "cumsum", "cummax", "reverse", "sort", "context_shift", "masked_select", "masked_select_fixed",
         "solve", "solve_fixed", "mips")
CHUNK = 256  # examples generated per random stream: keeps memory bounded and the output independent of machine
FIXED_SEED = 0
PREPROCESSING_VERSION = "synthetic-1"
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def _unit_max(x: np.ndarray) -> np.ndarray:
    return x / np.abs(x).max(axis=-1, keepdims=True)


def _with_pos(x: np.ndarray) -> np.ndarray:
    """(B, T, d) -> (B, T, d+2) with cos/sin of 2*pi*t/T appended."""
    T = x.shape[1]
    ang = 2 * np.pi * np.arange(T) / T
    pos = np.broadcast_to(np.stack([np.cos(ang), np.sin(ang)], -1), x.shape[:2] + (2,))
    return np.concatenate([x, pos], axis=-1)


def solve_size(L: int) -> int:
    """Largest N with N^2 + 2N <= L (the positive root of N^2 + 2N - L, floored)."""
    n = int(math.isqrt(L + 1)) - 1
    assert n * n + 2 * n <= L < (n + 1) ** 2 + 2 * (n + 1)
    return n


def shifts(L: int, H: int) -> np.ndarray:
    return np.floor(np.linspace(0, L - L / H, H)).astype(np.int64)


def _orthogonal(a: np.ndarray) -> np.ndarray:
    u, _, vh = np.linalg.svd(a)
    return u @ vh


class Spec:
    """Shapes of one task at one setting, and the function that generates a chunk (x, y) from a Generator."""

    def __init__(self, task: str, length: int, num_shifts: int = 8, mem: int = 32, dim: int = 4):
        if task not in TASKS:
            raise ValueError(f"unknown synthetic task {task!r}; known: {', '.join(TASKS)}")
        L = length
        self.task, self.L, self.H, self.M, self.D = task, L, num_shifts, mem, dim
        if task == "shift" and not L >= num_shifts > 1:
            raise ValueError(f"shift needs length >= num_shifts > 1, got {L}, {num_shifts}")
        if task == "context_shift" and L < 4:
            raise ValueError("context_shift needs length >= 4")
        if task.startswith("masked_select") and not (L > 1 and mem > 1):
            raise ValueError("masked_select needs length > 1 and mem > 1")
        if task.startswith("solve") and L < 3:
            raise ValueError("solve needs length >= 3")
        if task == "mips" and not (L > 1 and dim > 1):
            raise ValueError("mips needs length > 1 and dim > 1")
        if L < 2:
            raise ValueError("length must be >= 2")
        self.T = {"reverse": 2 * L, "sort": 2 * L}.get(task, 2 * mem + L if task.startswith("masked_select") else L)
        self.in_dim = 3 * dim + 2 if task == "mips" else (4 if task.startswith("masked_select") else 3)
        self.out_dim = {"shift": num_shifts, "mips": dim}.get(task, 1)
        self.n_out = {"reverse": L, "sort": L, "solve": solve_size(L), "solve_fixed": solve_size(L)}.get(
            task, mem if task.startswith("masked_select") else self.T)
        fixed = np.random.default_rng(FIXED_SEED)
        if task == "masked_select_fixed":
            self.fixed_pos = np.sort(fixed.permutation(mem + L)[:mem])
        if task == "solve_fixed":
            N = solve_size(L)
            self.fixed_A = _orthogonal(fixed.standard_normal((N, N)))

    def draw(self, rng: np.random.Generator, b: int) -> tuple[np.ndarray, np.ndarray]:
        """x (b, T, in_dim) and y (b, n_out, out_dim)."""
        L, t = self.L, self.task
        if t in ("shift", "cumsum", "cummax", "reverse", "sort"):
            x = _unit_max(rng.standard_normal((b, L)))
            if t == "shift":
                s = shifts(L, self.H)
                idx = np.arange(L)[:, None] - s[None, :]  # (L, H): source position of each output
                y = np.where(idx >= 0, x[:, np.clip(idx, 0, None)], 0.0)
            elif t == "cumsum":
                y = (np.cumsum(x, -1) / np.sqrt(np.arange(1, L + 1)))[..., None]
            elif t == "cummax":
                y = np.maximum.accumulate(x, -1)[..., None]
            elif t == "reverse":
                y = x[:, ::-1, None]
            else:
                order = np.argsort(np.abs(x - x[:, :1]), axis=-1, kind="stable")
                y = np.take_along_axis(x, order, -1)[..., None]
            if t in ("reverse", "sort"):
                x = np.concatenate([x, np.zeros_like(x)], -1)
            return _with_pos(x[..., None]), y
        if t == "context_shift":
            body = _unit_max(rng.standard_normal((b, L - 2)))
            r = rng.integers(0, L - 2, size=b)
            ang = 2 * np.pi * r / L
            x = np.concatenate([np.cos(ang)[:, None], np.sin(ang)[:, None], body], -1)
            idx = np.arange(L)[None, :] - r[:, None]
            y = np.where(idx >= 0, np.take_along_axis(x, np.clip(idx, 0, None), -1), 0.0)[..., None]
            return _with_pos(x[..., None]), y
        if t == "mips":
            D = self.D
            qkv = rng.standard_normal((b, 3 * L, D))
            qkv /= np.linalg.norm(qkv, axis=-1, keepdims=True)
            q, k, v = qkv[:, :L], qkv[:, L:2 * L], qkv[:, 2 * L:]
            y = np.empty((b, L, D))
            causal = np.tril(np.ones((L, L), bool))
            for i in range(b):  # one L x L similarity matrix at a time
                sim = np.where(causal, q[i] @ k[i].T, -np.inf)
                y[i] = v[i][sim.argmax(-1)]
            return _with_pos(np.concatenate([q, k, v], -1)), y
        if t.startswith("masked_select"):
            M = self.M
            vals = _unit_max(rng.standard_normal((b, M + L)))
            if t == "masked_select_fixed":
                pos = np.broadcast_to(self.fixed_pos, (b, M))
            else:
                pos = np.sort(np.argsort(rng.random((b, M + L)), -1)[:, :M], -1)
            x = np.zeros((b, 2 * M + L, 2))
            x[:, :M + L, 0] = vals
            np.put_along_axis(x[..., 1], pos, 1.0, -1)
            y = np.take_along_axis(vals, pos, -1)[..., None]
            return _with_pos(x), y
        # solve, solve_fixed
        N = solve_size(L)
        if t == "solve_fixed":
            A = np.broadcast_to(self.fixed_A, (b, N, N))
        else:
            A = np.stack([_orthogonal(a) for a in rng.standard_normal((b, N, N))])
        sol = rng.standard_normal((b, N))
        sol /= np.linalg.norm(sol, axis=-1, keepdims=True)
        rhs = np.einsum("bij,bj->bi", A, sol)
        flat = np.concatenate([A, rhs[..., None]], -1).reshape(b, N * (N + 1))
        x = np.zeros((b, L))
        x[:, :flat.shape[1]] = flat
        return _with_pos(x[..., None]), sol[..., None]


def generate(task: str, out_dir: str | Path, *, length: int = 4096, n_train: int = 16_000, n_val: int = 1_600,
             n_test: int = 1_600, seed: int = 0, num_shifts: int = 8, mem: int = 32, dim: int = 4,
             progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write task `task` as prepared data under `out_dir`; returns meta. Each chunk of CHUNK examples of a split has
    its own random stream, seeded by (seed, split, chunk), so the bytes depend only on the arguments."""
    spec = Spec(task, length, num_shifts, mem, dim)
    T, n_out = spec.T, spec.n_out
    meta = {
        "task": f"synthetic_{task}", "kind": "continuous", "in_dim": spec.in_dim, "l_max": T,
        "target": "sequence", "loss": "mse", "out_dim": spec.out_dim, "dual": False,
        "preprocessing_version": PREPROCESSING_VERSION, "sources": {},
        "generator": {"task": task, "length": length, "seed": seed, "num_shifts": num_shifts, "mem": mem,
                      "dim": dim, "fixed_seed": FIXED_SEED},
        "notes": "DLR sequence1d task regenerated with numpy (same definitions, different random numbers); a fixed "
                 "set per split where DLR draws fresh training samples each epoch; targets at the last positions "
                 "(label_mask marks them).",
    }
    with PreparedWriter(out_dir, meta) as w:
        for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            if n <= 0:
                continue
            x = w.array(split, "inputs", (n, T, spec.in_dim), np.float32)
            y = w.array(split, "labels", (n, T, spec.out_dim), np.float32)
            mask = np.zeros((n, T), dtype=bool)
            mask[:, T - n_out:] = True
            for c, start in enumerate(range(0, n, CHUNK)):
                b = min(CHUNK, n - start)
                rng = np.random.default_rng([seed, SPLIT_IDS[split], c])
                xc, yc = spec.draw(rng, b)
                x[start:start + b] = xc
                y[start:start + b, T - n_out:] = yc
                if progress:
                    progress(b)
            w.put(split, "lengths", np.full(n, T, dtype=np.int64))
            w.put(split, "label_mask", mask)
    return w.meta
