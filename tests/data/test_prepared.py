"""The prepared-data contract: writer validation and atomicity, lazy reader, collate shapes/dtypes/padding."""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from rotrnn.data import PreparedDataset, PreparedWriter, load_dataset
from rotrnn.data.prepared import PreparedFormatError, files_checksum
from rotrnn.data.tasks import TASKS, get_task

L = 12


def token_meta(**kw):
    meta = {"task": "toy", "kind": "tokens", "vocab_size": 7, "l_max": L, "target": "class",
            "loss": "cross_entropy", "n_classes": 3, "preprocessing_version": "1", "sources": {}, "notes": ""}
    meta.update(kw)
    return meta


def token_split(rng, n):
    lengths = rng.integers(1, L + 1, n).astype(np.int64)
    x = rng.integers(1, 7, (n, L)).astype(np.int16)
    x[np.arange(L)[None] >= lengths[:, None]] = 0
    return x, lengths, rng.integers(0, 3, n).astype(np.int64)


def write_tokens(out, seed=0, sizes=(("train", 9), ("test", 4))):
    rng = np.random.default_rng(seed)
    with PreparedWriter(out, token_meta()) as w:
        for split, n in sizes:
            x, lengths, y = token_split(rng, n)
            mm = w.array(split, "inputs", x.shape, x.dtype)
            for i in range(n):  # incremental fill, as big splits do
                mm[i] = x[i]
            w.put(split, "lengths", lengths)
            w.put(split, "labels", y)
    return w.meta


def test_token_roundtrip_and_collate(tmp_path):
    out = tmp_path / "toy"
    meta = write_tokens(out)
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk == meta
    assert on_disk["splits"] == {"train": 9, "test": 4}
    assert on_disk["dual"] is False and on_disk["input_scale"] == 1.0 and on_disk["input_offset"] == 0.0
    names = [p.name for p in out.glob("*.npy")]
    assert len(names) == 6 and on_disk["checksum"] == files_checksum(out, names)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left

    ds = load_dataset(out, "train")
    assert isinstance(ds, PreparedDataset) and len(ds) == 9 and ds.meta["task"] == "toy"
    raw_x = np.load(out / "train.inputs.npy")
    item = ds[3]
    assert set(item) == {"inputs", "lengths", "labels"}
    np.testing.assert_array_equal(item["inputs"], raw_x[3])
    batch = ds.collate([ds[i] for i in range(5)])
    lengths = np.load(out / "train.lengths.npy")[:5]
    T = int(lengths.max())
    assert batch["inputs"].dtype == torch.int64 and batch["inputs"].shape == (5, T)
    assert batch["lengths"].dtype == torch.int64 and batch["lengths"].tolist() == lengths.tolist()
    assert batch["labels"].dtype == torch.int64 and batch["labels"].shape == (5,)
    np.testing.assert_array_equal(batch["inputs"].numpy(), raw_x[:5, :T])
    assert "label_mask" not in batch


def test_lazy_memmap_limit_and_pickle(tmp_path):
    out = tmp_path / "toy"
    write_tokens(out)
    ds = load_dataset(out, "train", limit=4)
    assert len(ds) == 4
    with pytest.raises(IndexError):
        ds[4]
    ds[0]
    assert all(isinstance(a, np.memmap) for a in ds._arrays.values())  # memory-mapped, not loaded
    clone = pickle.loads(pickle.dumps(ds))  # DataLoader workers pickle the dataset: memmaps must not travel
    assert clone._arrays is None
    np.testing.assert_array_equal(clone[2]["inputs"], ds[2]["inputs"])
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=ds.collate)
    assert [b["inputs"].shape[0] for b in loader] == [3, 1]
    with pytest.raises(KeyError, match="no split 'val'"):
        load_dataset(out, "val")


def test_deterministic_bytes(tmp_path):
    m1, m2 = write_tokens(tmp_path / "a", seed=5), write_tokens(tmp_path / "b", seed=5)
    assert m1["checksum"] == m2["checksum"]
    for p in (tmp_path / "a").iterdir():
        assert hashlib.sha256(p.read_bytes()).digest() == hashlib.sha256((tmp_path / "b" / p.name).read_bytes()).digest()
    assert write_tokens(tmp_path / "c", seed=6)["checksum"] != m1["checksum"]


def test_continuous_decoding_and_zero_padding(tmp_path):
    meta = {"task": "c", "kind": "continuous", "in_dim": 2, "l_max": 5, "target": "class", "loss": "cross_entropy",
            "n_classes": 2, "input_scale": 0.5, "input_offset": -1.0, "preprocessing_version": "1", "sources": {},
            "notes": ""}
    x = np.arange(3 * 5 * 2, dtype=np.uint8).reshape(3, 5, 2)
    with PreparedWriter(tmp_path / "c", meta) as w:
        w.put("train", "inputs", x)
        w.put("train", "lengths", np.array([5, 2, 3], np.int64))
        w.put("train", "labels", np.array([0, 1, 1], np.int64))
    ds = load_dataset(tmp_path / "c", "train")
    b = ds.collate([ds[1], ds[2]])
    assert b["inputs"].dtype == torch.float32 and b["inputs"].shape == (2, 3, 2)
    expect = x[1:3, :3].astype(np.float32) * 0.5 - 1.0
    expect[0, 2:] = 0.0  # example 1 has length 2: zero beyond it, not the decoded offset
    np.testing.assert_allclose(b["inputs"].numpy(), expect)


def test_dual_collate_shares_length(tmp_path):
    rng = np.random.default_rng(0)
    x1, l1, y = token_split(rng, 4)
    x2, l2, _ = token_split(rng, 4)
    l1[:] = [2, 3, 2, 1]
    l2[:] = [5, 1, 2, 2]
    x1[np.arange(L)[None] >= l1[:, None]] = 0
    x2[np.arange(L)[None] >= l2[:, None]] = 0
    with PreparedWriter(tmp_path / "d", token_meta(dual=True)) as w:
        for name, a in (("inputs", x1), ("lengths", l1), ("labels", y), ("inputs2", x2), ("lengths2", l2)):
            w.put("train", name, a)
    ds = load_dataset(tmp_path / "d", "train")
    b = ds.collate([ds[i] for i in range(4)])
    assert b["inputs"].shape == b["inputs2"].shape == (4, 5)
    assert b["lengths2"].tolist() == [5, 1, 2, 2]
    np.testing.assert_array_equal(b["inputs2"].numpy(), x2[:, :5])


def seq_meta(**kw):
    meta = {"task": "s", "kind": "continuous", "in_dim": 3, "l_max": 6, "target": "sequence", "loss": "mse",
            "out_dim": 2, "preprocessing_version": "1", "sources": {}, "notes": ""}
    meta.update(kw)
    return meta


def test_sequence_targets_and_mask(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 6, 3)).astype(np.float32)
    y = rng.normal(size=(3, 6, 2)).astype(np.float32)
    mask = np.zeros((3, 6), bool)
    mask[:, 4:] = True
    full = np.full(3, 6, np.int64)
    with PreparedWriter(tmp_path / "m", seq_meta()) as w:
        w.put("train", "inputs", x), w.put("train", "lengths", full), w.put("train", "labels", y)
        w.put("train", "label_mask", mask)
    ds = load_dataset(tmp_path / "m", "train")
    b = ds.collate([ds[0], ds[2]])
    assert b["labels"].dtype == torch.float32 and b["labels"].shape == (2, 6, 2)
    assert b["label_mask"].dtype == torch.bool and b["label_mask"].tolist() == mask[[0, 2]].tolist()
    np.testing.assert_allclose(b["inputs"].numpy(), x[[0, 2]])
    # no mask file: all positions count
    with PreparedWriter(tmp_path / "n", seq_meta()) as w:
        w.put("train", "inputs", x), w.put("train", "lengths", full), w.put("train", "labels", y)
    ds = load_dataset(tmp_path / "n", "train")
    assert ds.collate([ds[0]])["label_mask"].all()
    # variable lengths without a mask would let the loss count padding: refused
    with pytest.raises(PreparedFormatError, match="need a label_mask"):
        with PreparedWriter(tmp_path / "v", seq_meta()) as w:
            w.put("train", "inputs", x), w.put("train", "lengths", np.array([6, 3, 6])), w.put("train", "labels", y)
    # cross-entropy sequence labels are checked only where the mask counts them
    yc = np.full((3, 6), -100, np.int64)
    yc[mask] = 1
    with PreparedWriter(tmp_path / "ce", seq_meta(loss="cross_entropy", n_classes=2, out_dim=None)) as w:
        w.put("train", "inputs", x), w.put("train", "lengths", full), w.put("train", "labels", yc)
        w.put("train", "label_mask", mask)
    b = load_dataset(tmp_path / "ce", "train").collate([load_dataset(tmp_path / "ce", "train")[0]])
    assert b["labels"].dtype == torch.int64 and b["labels"].shape == (1, 6)


@pytest.mark.parametrize("breakage, message", [
    (lambda a: a["lengths"].__setitem__(0, 0), r"lengths must lie in \[1, 12\]"),
    (lambda a: a["lengths"].__setitem__(0, L + 1), r"lengths must lie in \[1, 12\]"),
    (lambda a: a["labels"].__setitem__(1, 3), r"labels outside \[0, 3\)"),
    (lambda a: a["inputs"].__setitem__((0, 0), 7), r"token ids in inputs outside \[0, 7\)"),
    (lambda a: a.__setitem__("lengths", a["lengths"].astype(np.int32)), "lengths must be int64"),
    (lambda a: a.__setitem__("inputs", a["inputs"][:, :5]), "token inputs must be integer"),
    (lambda a: a.pop("labels"), "missing train.labels.npy"),
])
def test_invalid_arrays_rejected_and_nothing_left(tmp_path, breakage, message):
    rng = np.random.default_rng(0)
    x, lengths, y = token_split(rng, 5)
    lengths[0] = 1
    x[0, 1:] = 0
    arrays = {"inputs": x, "lengths": lengths, "labels": y}
    breakage(arrays)
    with pytest.raises(PreparedFormatError, match=message):
        with PreparedWriter(tmp_path / "bad", token_meta()) as w:
            for k, a in arrays.items():
                w.put("train", k, a)
    assert list(tmp_path.iterdir()) == []


def test_padding_must_be_zero(tmp_path):
    rng = np.random.default_rng(0)
    x, lengths, y = token_split(rng, 5)
    lengths[2] = 3
    x[2, 5] = 4  # a token beyond the length
    with pytest.raises(PreparedFormatError, match="not zero"):
        with PreparedWriter(tmp_path / "bad", token_meta()) as w:
            w.put("train", "inputs", x), w.put("train", "lengths", lengths), w.put("train", "labels", y)


def test_meta_checks(tmp_path):
    meta = token_meta()
    del meta["vocab_size"]
    with pytest.raises(PreparedFormatError, match="vocab_size"):
        write_with(tmp_path / "a", meta)
    meta = token_meta()
    del meta["notes"]
    with pytest.raises(PreparedFormatError, match=r"lacks required keys \['notes'\]"):
        write_with(tmp_path / "b", meta)
    with pytest.raises(PreparedFormatError, match="disagree"):
        write_with(tmp_path / "c", token_meta(splits={"train": 99}))
    assert list(tmp_path.iterdir()) == []


def write_with(out, meta):
    x, lengths, y = token_split(np.random.default_rng(0), 3)
    with PreparedWriter(out, meta) as w:
        w.put("train", "inputs", x), w.put("train", "lengths", lengths), w.put("train", "labels", y)


def test_exception_keeps_old_output_and_success_replaces_it(tmp_path):
    out = tmp_path / "toy"
    old = write_tokens(out, seed=1)
    with pytest.raises(RuntimeError, match="boom"):
        with PreparedWriter(out, token_meta()) as w:
            w.array("train", "inputs", (3, L), np.int16)
            raise RuntimeError("boom")
    assert json.loads((out / "meta.json").read_text())["checksum"] == old["checksum"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]
    new = write_tokens(out, seed=2, sizes=(("train", 2),))
    assert new["checksum"] != old["checksum"]
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.inputs.npy", "train.labels.npy",
                                                       "train.lengths.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]


def test_registry_names_and_lazy_import():
    assert list(TASKS) == ["listops", "imdb", "aan", "cifar", "pathfinder", "pathx", "speech35"]
    assert get_task("pathx").module == get_task("pathfinder").module == "rotrnn.data.pathfinder"
    assert get_task("pathx").kwargs == {"resolution": 128} and get_task("pathfinder").kwargs == {"resolution": 32}
    assert get_task("imdb").archives[0].sha256 == "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
    assert get_task("cifar").archives[0].md5 == "c58f30108f718f92721af3b95e74349a"
    with pytest.raises(KeyError, match="unknown task 'mnist'; known tasks: listops"):
        get_task("mnist")


def _rss_file_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the resident set from Linux's /proc")
def test_filling_an_output_array_keeps_its_pages_out_of_the_resident_set(tmp_path, monkeypatch):
    """Memory: rows written into a PreparedWriter memmap leave the process's resident set chunk by chunk
    (release_pages), so a prepare's resident set does not grow to the size of the split it writes (before: AAN's
    peak RSS 1,889 MB, of which 1.2 GB were its train inputs' pages). The data still reach the file."""
    from rotrnn.data import prepared
    from rotrnn.data.vocab import fill_tokens

    monkeypatch.setattr(prepared, "_CHUNK_BYTES", 1 << 20)  # 1 MiB chunks
    n, l_max = 1024, 32 << 10  # 32 MiB of uint8 tokens
    rows = np.random.default_rng(0).integers(1, 18, size=(8, l_max - 1), dtype=np.uint8)
    meta = {"task": "t", "kind": "tokens", "vocab_size": 18, "l_max": l_max, "target": "class",
            "loss": "cross_entropy", "n_classes": 2, "preprocessing_version": "t-1", "sources": {}, "notes": ""}
    with PreparedWriter(tmp_path / "out", meta) as w:
        x = w.array("train", "inputs", (n, l_max), np.uint8)
        before = _rss_file_kb()
        lengths = fill_tokens(x, (np.append(rows[i % 8], 2) for i in range(n)))
        grown_mb = (_rss_file_kb() - before) / 1024
        w.put("train", "lengths", lengths)
        w.put("train", "labels", np.zeros(n, dtype=np.int64))
    assert grown_mb < 8, f"resident set grew by {grown_mb:.0f} MiB while writing a 32 MiB array"
    back = np.load(tmp_path / "out" / "train.inputs.npy", mmap_mode="r")
    assert np.array_equal(back[5, :l_max - 1], rows[5]) and back[5, -1] == 2 and back[1023, -1] == 2
