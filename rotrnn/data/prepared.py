"""The prepared-data format shared by every task: a directory of `.npy` arrays per split plus `meta.json`.

Layout of `<out>/`:
- `meta.json` (see `REQUIRED_KEYS` and `_check_meta` for the fields),
- per split `<split>.inputs.npy`, `<split>.lengths.npy`, `<split>.labels.npy`, optionally `<split>.label_mask.npy`,
  and for dual (retrieval) tasks `<split>.inputs2.npy`, `<split>.lengths2.npy`.

`PreparedWriter` writes into a temporary directory beside the target and renames it into place only after the
arrays pass validation, so a failed or interrupted `prepare` never leaves a half-written directory behind.
`load_dataset` memory-maps the arrays; one example is read at a time, never a whole split.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from rotrnn import atomic
from rotrnn.errors import UserError

ARRAY_NAMES = ("inputs", "lengths", "labels", "label_mask", "inputs2", "lengths2")
REQUIRED_KEYS = ("task", "kind", "l_max", "target", "loss", "preprocessing_version", "sources", "notes")
KINDS = ("tokens", "continuous")
TARGETS = ("class", "sequence")
LOSSES = ("cross_entropy", "mse")
# rows validated per chunk: bounds the memory validation needs on multi-GB splits (Path-X, Speech Commands)
_CHUNK_BYTES = 64 << 20


class PreparedFormatError(UserError, ValueError):
    """Prepared arrays or meta.json do not satisfy the format contract."""


class MissingDataError(UserError, FileNotFoundError):
    """No prepared data where a command expects it."""


def release_pages(arr: np.ndarray) -> None:
    """Unmap the pages of a memory-mapped array from this process (madvise MADV_DONTNEED on its file mapping).

    Every page of an output memmap that a prepare fills stays in the process's resident set until it is unmapped,
    so without this the resident set grows to the whole split (1.2 GB for AAN's train inputs, 3.3 GB for Path-X):
    what a cluster job's memory request would have to cover. On a shared file mapping MADV_DONTNEED only drops the
    mapping: dirty pages stay in the page cache, marked dirty, and reach the file as usual; the next access maps
    them again. Arrays that are not file mappings are left alone."""
    mm = getattr(arr, "_mmap", None)  # numpy.memmap (and its slices) keep their mmap.mmap here
    if isinstance(mm, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def rows_per_chunk(arr: np.ndarray) -> int:
    """How many rows of `arr` make one chunk of _CHUNK_BYTES (at least 1): the cadence of release_pages."""
    return max(1, _CHUNK_BYTES // max(1, arr.strides[0] if arr.ndim else 1))


def _array_file(root: Path, split: str, name: str) -> Path:
    return root / f"{split}.{name}.npy"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | Path) -> str:
    """sha256 of one file, read in blocks (for meta["sources"])."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_checksum(root: Path, names: Iterable[str]) -> str:
    """sha256 over the named files in sorted order, each preceded by its name (so renames change the hash)."""
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(name.encode() + b"\0")
        with open(root / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class PreparedWriter:
    """Write one task's prepared directory atomically.

    >>> with PreparedWriter(out_dir, meta) as w:
    ...     x = w.array("train", "inputs", (n, l_max), np.int16)   # memmap, fill incrementally
    ...     w.put("train", "lengths", lengths)
    On clean exit: validate, hash the array files into meta["checksum"], fill meta["splits"], write meta.json,
    fsync and rename into `out_dir` (replacing an existing one). On an exception the temp directory is removed.
    """

    def __init__(self, out_dir: str | Path, meta: dict[str, Any]):
        self.out_dir = Path(out_dir)
        self.meta = dict(meta)
        self.tmp: Path | None = None
        self._open: dict[tuple[str, str], np.memmap] = {}
        self._names: set[tuple[str, str]] = set()

    def __enter__(self) -> PreparedWriter:
        parent = self.out_dir.parent
        parent.mkdir(parents=True, exist_ok=True)
        self.tmp = atomic.mkdtemp(f".{self.out_dir.name}.tmp-", parent)
        return self

    def _path(self, split: str, name: str) -> Path:
        if self.tmp is None:
            raise RuntimeError("PreparedWriter must be used as a context manager")
        if name not in ARRAY_NAMES:
            raise PreparedFormatError(f"unknown array name {name!r}; expected one of {ARRAY_NAMES}")
        if not split or "." in split or "/" in split:
            raise PreparedFormatError(f"invalid split name {split!r}")
        if (split, name) in self._names:
            raise PreparedFormatError(f"array {split}.{name} written twice")
        self._names.add((split, name))
        return _array_file(self.tmp, split, name)

    def array(self, split: str, name: str, shape: tuple[int, ...], dtype: Any) -> np.memmap:
        """A writable memory-mapped `.npy` file, zero-initialised, to be filled in place."""
        arr = np.lib.format.open_memmap(self._path(split, name), mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))
        self._open[(split, name)] = arr
        return arr

    def put(self, split: str, name: str, array: np.ndarray) -> None:
        """Write a whole array at once."""
        np.save(self._path(split, name), np.ascontiguousarray(array), allow_pickle=False)

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self.tmp is not None
        try:
            if exc_type is None:
                self._finish()
        except BaseException:
            self._cleanup()
            raise
        if exc_type is not None:
            self._cleanup()
        return False

    def _cleanup(self) -> None:
        self._open.clear()
        if self.tmp is not None and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _finish(self) -> None:
        assert self.tmp is not None
        for arr in self._open.values():
            arr.flush()
        self._open.clear()  # drop the memmaps so the files are closed before hashing and renaming
        meta = _complete_meta(self.meta, self.tmp, self._names)
        validate_dir(self.tmp, meta)
        names = [_array_file(self.tmp, s, n).name for s, n in self._names]
        meta["checksum"] = files_checksum(self.tmp, names)
        with open(self.tmp / "meta.json", "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.write("\n")
        for name in names + ["meta.json"]:
            _fsync_path(self.tmp / name)
        _fsync_path(self.tmp)
        # swap in: move any old directory aside first so that out_dir is always either old or new, never partial
        old = None
        if self.out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.old-", dir=self.out_dir.parent))
            os.rename(self.out_dir, old / "d")
        os.rename(self.tmp, self.out_dir)
        _fsync_path(self.out_dir.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.tmp = None
        self.meta = meta


def _complete_meta(meta: dict[str, Any], root: Path, names: set[tuple[str, str]]) -> dict[str, Any]:
    """Fill defaults and `splits` (from the written arrays); a caller-given `splits` must agree."""
    meta = dict(meta)
    meta.setdefault("dual", False)
    meta.setdefault("input_scale", 1.0)
    meta.setdefault("input_offset", 0.0)
    counts = {}
    for split in sorted({s for s, _ in names}):
        if (split, "lengths") not in names:
            raise PreparedFormatError(f"split {split!r}: no lengths array")
        counts[split] = int(np.load(_array_file(root, split, "lengths"), mmap_mode="r").shape[0])
    if "splits" in meta and dict(meta["splits"]) != counts:
        raise PreparedFormatError(f"meta splits {meta['splits']} disagree with the arrays written {counts}")
    meta["splits"] = counts
    return meta


def _check_meta(meta: dict[str, Any]) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise PreparedFormatError(f"meta.json lacks required keys {missing}")
    if meta["kind"] not in KINDS:
        raise PreparedFormatError(f"meta kind {meta['kind']!r} not in {KINDS}")
    if meta["target"] not in TARGETS:
        raise PreparedFormatError(f"meta target {meta['target']!r} not in {TARGETS}")
    if meta["loss"] not in LOSSES:
        raise PreparedFormatError(f"meta loss {meta['loss']!r} not in {LOSSES}")
    need = ["vocab_size"] if meta["kind"] == "tokens" else ["in_dim"]
    need += ["n_classes"] if meta["loss"] == "cross_entropy" else ["out_dim"]
    for k in need:
        if not isinstance(meta.get(k), int) or meta[k] < 1:
            raise PreparedFormatError(f"meta {k} must be a positive int for kind={meta['kind']} loss={meta['loss']}")
    if meta["target"] == "class" and meta["loss"] != "cross_entropy":
        raise PreparedFormatError("class targets need loss cross_entropy")
    if not isinstance(meta["l_max"], int) or meta["l_max"] < 1:
        raise PreparedFormatError(f"meta l_max must be a positive int, got {meta['l_max']!r}")
    if "vocab" in meta and len(meta["vocab"]) != meta.get("vocab_size"):
        raise PreparedFormatError(f"meta vocab has {len(meta['vocab'])} entries but vocab_size={meta.get('vocab_size')}")
    for split, step in (meta.get("step") or {}).items():
        if not isinstance(step, int) or step < 1:
            raise PreparedFormatError(f"meta step[{split!r}] must be a positive int")


def _row_chunks(n: int, row_bytes: int) -> Iterable[slice]:
    step = max(1, _CHUNK_BYTES // max(1, row_bytes))
    for i in range(0, n, step):
        yield slice(i, min(n, i + step))


def validate_dir(root: Path, meta: dict[str, Any]) -> None:
    """Check every split's arrays against meta: presence, shapes, dtypes, lengths in [1, l_max], token and label
    ranges, zero padding of token inputs beyond each length. Reads in row chunks (bounded memory)."""
    _check_meta(meta)
    l_max, dual = meta["l_max"], bool(meta.get("dual", False))
    tokens = meta["kind"] == "tokens"
    for split, n in meta["splits"].items():
        def load(name: str, required: bool = True) -> np.ndarray | None:
            p = _array_file(root, split, name)
            if not p.exists():
                if required:
                    raise PreparedFormatError(f"split {split!r}: missing {p.name}")
                return None
            return np.load(p, mmap_mode="r")

        def err(msg: str) -> PreparedFormatError:
            return PreparedFormatError(f"{meta['task']} split {split!r}: {msg}")

        for pre in ("", "2") if dual else ("",):
            x, lengths = load("inputs" + pre), load("lengths" + pre)
            if lengths.shape != (n,) or lengths.dtype != np.int64:
                raise err(f"lengths{pre} must be int64 of shape ({n},), got {lengths.dtype} {lengths.shape}")
            if n and (lengths.min() < 1 or lengths.max() > l_max):
                raise err(f"lengths{pre} must lie in [1, {l_max}], got [{lengths.min()}, {lengths.max()}]")
            if tokens:
                if x.ndim != 2 or x.shape != (n, l_max) or not np.issubdtype(x.dtype, np.integer):
                    raise err(f"token inputs{pre} must be integer ({n}, {l_max}), got {x.dtype} {x.shape}")
                pos = np.arange(l_max)
                for sl in _row_chunks(n, x.strides[0]):
                    xc = np.asarray(x[sl])
                    if xc.size and (xc.min() < 0 or xc.max() >= meta["vocab_size"]):
                        raise err(f"token ids in inputs{pre} outside [0, {meta['vocab_size']})")
                    beyond = pos[None, :] >= lengths[sl, None]
                    if np.any(xc[beyond] != 0):
                        raise err(f"inputs{pre} are not zero (<pad>) beyond each example's length")
                    release_pages(x)
            else:
                shape = (n, l_max, meta["in_dim"])
                if x.shape != shape:
                    raise err(f"continuous inputs{pre} must have shape {shape}, got {x.shape}")
        if not dual and (load("inputs2", False) is not None or load("lengths2", False) is not None):
            raise err("inputs2/lengths2 present but meta dual is false")
        y = load("labels")
        mask = load("label_mask", required=False)
        if meta["target"] == "class":
            if mask is not None:
                raise err("label_mask is only for sequence targets")
            if y.shape != (n,) or y.dtype != np.int64:
                raise err(f"class labels must be int64 of shape ({n},), got {y.dtype} {y.shape}")
            if n and (y.min() < 0 or y.max() >= meta["n_classes"]):
                raise err(f"labels outside [0, {meta['n_classes']})")
            continue
        if mask is not None and (mask.shape != (n, l_max) or mask.dtype != np.bool_):
            raise err(f"label_mask must be bool ({n}, {l_max}), got {mask.dtype} {mask.shape}")
        if mask is None and n and load("lengths").min() < l_max:
            # the reader treats a missing mask as all-true, which would count padded positions in the loss
            raise err("sequence targets with lengths below l_max need a label_mask")
        if meta["loss"] == "cross_entropy":
            if y.shape != (n, l_max) or y.dtype != np.int64:
                raise err(f"sequence labels must be int64 ({n}, {l_max}), got {y.dtype} {y.shape}")
        else:
            shape = (n, l_max, meta["out_dim"])
            if y.shape != shape or y.dtype != np.float32:
                raise err(f"mse labels must be float32 {shape}, got {y.dtype} {y.shape}")
        for sl in _row_chunks(n, y.strides[0]):
            yc = np.asarray(y[sl])
            counted = np.asarray(mask[sl]) if mask is not None else np.ones(yc.shape[:2], bool)
            if meta["loss"] == "cross_entropy":
                vals = yc[counted]
                if vals.size and (vals.min() < 0 or vals.max() >= meta["n_classes"]):
                    raise err(f"sequence labels (where counted) outside [0, {meta['n_classes']})")
            elif not np.all(np.isfinite(yc[counted])):
                raise err("mse labels contain non-finite values where counted")
            release_pages(y)
            if mask is not None:
                release_pages(mask)


def read_meta(path: str | Path) -> dict[str, Any]:
    p = Path(path) / "meta.json"
    if not p.exists():
        raise MissingDataError(f"{p.parent}: no prepared data here (meta.json missing): prepare it first with "
                               "`rotrnn stage prepare --suite SUITE --task TASK` (or `snakemake`, `dvc repro`, "
                               "`rotrnn data prepare`)")
    with open(p) as f:
        return json.load(f)


class PreparedDataset(Dataset):
    """One split of a prepared task, memory-mapped lazily (opened on first access, and again in each DataLoader
    worker, since memmaps are dropped when pickled). Items are dicts of numpy arrays; use `collate` as the
    DataLoader's collate_fn."""

    def __init__(self, path: str | Path, split: str, limit: int | None = None):
        self.path = Path(path)
        self.split = split
        self.meta = read_meta(self.path)
        if split not in self.meta["splits"]:
            raise KeyError(f"{self.path}: no split {split!r}; available: {sorted(self.meta['splits'])}")
        n = int(self.meta["splits"][split])
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.n = n if limit is None else min(n, int(limit))
        self.dual = bool(self.meta.get("dual", False))
        self.tokens = self.meta["kind"] == "tokens"
        self.sequence_target = self.meta["target"] == "sequence"
        self.scale = float(self.meta.get("input_scale", 1.0))
        self.offset = float(self.meta.get("input_offset", 0.0))
        # step > 1: the split is sampled at a coarser rate than training (speech test_8k); models rescale by it
        self.step = int((self.meta.get("step") or {}).get(split, 1))
        names = ["inputs", "lengths", "labels"] + (["inputs2", "lengths2"] if self.dual else [])
        if self.sequence_target and _array_file(self.path, split, "label_mask").exists():
            names.append("label_mask")
        self._names = names
        self._arrays: dict[str, np.ndarray] | None = None

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {k: np.load(_array_file(self.path, self.split, k), mmap_mode="r") for k in self._names}
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} examples")
        i = i % self.n
        return {k: np.array(a[i]) for k, a in self._open().items()}

    def collate(self, examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        """Stack examples, cut to T = the longest length in the batch (for dual tasks, of either document), and
        pad with 0 beyond each example's length. Continuous inputs are decoded as stored*scale+offset."""
        lengths = np.array([int(e["lengths"]) for e in examples], dtype=np.int64)
        T = int(lengths.max())
        if self.dual:
            lengths2 = np.array([int(e["lengths2"]) for e in examples], dtype=np.int64)
            T = max(T, int(lengths2.max()))
        out: dict[str, torch.Tensor] = {"lengths": torch.from_numpy(lengths)}
        out["inputs"] = self._inputs([e["inputs"] for e in examples], lengths, T)
        if self.dual:
            out["inputs2"] = self._inputs([e["inputs2"] for e in examples], lengths2, T)
            out["lengths2"] = torch.from_numpy(lengths2)
        if self.sequence_target:
            labels = np.stack([e["labels"][:T] for e in examples])
            out["labels"] = torch.from_numpy(labels.astype(np.int64 if self.meta["loss"] == "cross_entropy"
                                                           else np.float32, copy=False))
            if "label_mask" in self._names:
                mask = np.stack([e["label_mask"][:T] for e in examples])
            else:
                mask = np.ones((len(examples), T), dtype=bool)
            out["label_mask"] = torch.from_numpy(mask.astype(bool, copy=False))
        else:
            out["labels"] = torch.from_numpy(np.array([int(e["labels"]) for e in examples], dtype=np.int64))
        return out

    def _inputs(self, rows: list[np.ndarray], lengths: np.ndarray, T: int) -> torch.Tensor:
        x = np.stack([r[:T] for r in rows])
        beyond = np.arange(T)[None, :] >= lengths[:, None]
        if self.tokens:
            x = x.astype(np.int64, copy=False)
            x[beyond] = 0
            return torch.from_numpy(x)
        x = x.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)
        x[beyond] = 0.0
        return torch.from_numpy(x)


def load_dataset(path: str | Path, split: str, limit: int | None = None) -> PreparedDataset:
    """The prepared split `split` under `path` (a directory written by PreparedWriter); `limit` keeps the first
    `limit` examples."""
    return PreparedDataset(path, split, limit)
