"""CIFAR-10 grayscale (LRA Image): fixture pickles → prepare → dataset, against a direct computation on the raw
pickles (PIL luma, S4 normalisation, S4's seeded train/val split), determinism, and bad-input errors."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from rotrnn.data import cifar, load_dataset

N_PER_BATCH = 3 * 10  # write_fixture default: 3 images per class per batch file


def raw_batch(path):
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return np.asarray(d[b"data"]), np.asarray(d[b"labels"])


def reference_gray_normalised(row):
    """One raw CIFAR row → the S4 input: PIL 'L' of the 32×32×3 image, /255, Normalize(122.6/255, 61/255)."""
    img = Image.fromarray(row.reshape(3, 32, 32).transpose(1, 2, 0))
    p = np.asarray(img.convert("L"), dtype=np.float64).reshape(-1)
    return (p / 255 - 122.6 / 255) / (61.0 / 255)


def dir_bytes(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def assert_nothing_left(parent):
    assert not parent.exists() or not any(parent.iterdir()), list(parent.iterdir())


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    cifar.write_fixture(root / "raw", seed=0)
    meta = cifar.prepare(root / "raw", root / "out")
    return root, meta


def test_fixture_is_the_real_layout_and_not_degenerate(prepared):
    root, _ = prepared
    folder = root / "raw" / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*cifar.TRAIN_FILES, "test_batch", "batches.meta"])
    with open(folder / "batches.meta", "rb") as f:
        names = pickle.load(f, encoding="bytes")[b"label_names"]
    assert [n.decode() for n in names] == list(cifar.LABEL_NAMES)
    for name in (*cifar.TRAIN_FILES, "test_batch"):
        x, y = raw_batch(folder / name)
        assert x.dtype == np.uint8 and x.shape == (N_PER_BATCH, 3072)
        assert sorted(set(y.tolist())) == list(range(10))
        r, g, b = x[:, :1024].astype(int), x[:, 1024:2048].astype(int), x[:, 2048:].astype(int)
        assert np.abs(r - g).mean() > 10 and np.abs(g - b).mean() > 10  # channels differ: weights matter


def test_meta_and_batch_shapes(prepared):
    root, meta = prepared
    n_train_total = 5 * N_PER_BATCH
    assert meta["splits"] == {"train": int(n_train_total * 0.9), "val": n_train_total - int(n_train_total * 0.9),
                              "test": N_PER_BATCH}
    assert meta["kind"] == "continuous" and meta["in_dim"] == 1 and meta["l_max"] == 1024
    assert meta["n_classes"] == 10 and meta["loss"] == "cross_entropy" and meta["target"] == "class"
    assert set(meta["sources"]) == {f"cifar-10-batches-py/{n}" for n in (*cifar.TRAIN_FILES, "test_batch",
                                                                          "batches.meta")}
    for split, n in meta["splits"].items():
        ds = load_dataset(root / "out", split)
        assert len(ds) == n
        batch = ds.collate([ds[i] for i in range(min(8, n))])
        assert batch["inputs"].shape == (min(8, n), 1024, 1) and batch["inputs"].dtype == torch.float32
        assert batch["lengths"].dtype == torch.int64 and bool((batch["lengths"] == 1024).all())
        assert batch["labels"].dtype == torch.int64
        labels = np.load(root / "out" / f"{split}.labels.npy")
        assert labels.min() >= 0 and labels.max() <= 9
    assert set(np.load(root / "out" / "train.labels.npy").tolist()) == set(range(10))
    # decoded range of (p/255 - mean)/std for p in 0..255
    x = load_dataset(root / "out", "train").collate([load_dataset(root / "out", "train")[i] for i in range(20)])
    assert x["inputs"].min() >= -122.6 / 61 - 1e-5 and x["inputs"].max() <= (255 - 122.6) / 61 + 1e-5


def test_values_and_split_match_direct_computation(prepared):
    """Split k of the prepared data holds raw image perm[k] (S4 random_split, seed 42) in grayscale, normalised."""
    root, meta = prepared
    folder = root / "raw" / "cifar-10-batches-py"
    parts = [raw_batch(folder / n) for n in cifar.TRAIN_FILES]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([y for _, y in parts])
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(42)).tolist()
    n_train = meta["splits"]["train"]
    order = {"train": perm[:n_train], "val": perm[n_train:]}
    for split, idx in order.items():
        ds = load_dataset(root / "out", split)
        picks = [0, 1, len(idx) - 1]
        batch = ds.collate([ds[k] for k in picks])
        for row, k in enumerate(picks):
            ref = reference_gray_normalised(data[idx[k]])
            np.testing.assert_allclose(batch["inputs"][row, :, 0].numpy(), ref, atol=1e-5)
            assert int(batch["labels"][row]) == labels[idx[k]]
    test_x, test_y = raw_batch(folder / "test_batch")
    ds = load_dataset(root / "out", "test")
    batch = ds.collate([ds[k] for k in range(len(ds))])
    assert batch["labels"].tolist() == test_y.tolist()  # test keeps file order
    np.testing.assert_allclose(batch["inputs"][5, :, 0].numpy(), reference_gray_normalised(test_x[5]), atol=1e-5)


def test_gray_levels_follow_itu_601_luma(prepared):
    """PIL's L conversion is R·299/1000 + G·587/1000 + B·114/1000, rounded (Pillow's Image.convert documentation)."""
    root, _ = prepared
    x, _ = raw_batch(root / "raw" / "cifar-10-batches-py" / "data_batch_2")
    gray = cifar.to_grayscale(x).astype(np.float64)
    r, g, b = (x[:, i * 1024:(i + 1) * 1024].astype(np.float64) for i in range(3))
    assert np.abs(gray - (299 * r + 587 * g + 114 * b) / 1000).max() <= 0.5 + 1e-9


def test_prepare_is_byte_identical(prepared, tmp_path):
    root, meta = prepared
    again = cifar.prepare(root / "raw", tmp_path / "again")
    assert again["checksum"] == meta["checksum"]
    assert dir_bytes(tmp_path / "again") == dir_bytes(root / "out")


def test_prepare_holds_one_batch_file_at_a_time(tmp_path):
    """Memory: prepare decodes one batch file at a time and keeps only the gray levels, so its peak (numpy and
    pickle allocations, traced) stays within a few copies of one batch's RGB (the pickle's bytes, the array, its
    transposed copy) plus two copies of the training set's gray levels (the per-batch list and its concatenation).
    Holding every batch file at once (as before) is far above: 19.5 batches here."""
    import tracemalloc

    cifar.write_fixture(tmp_path / "raw", seed=0, per_class=40)  # 400 images (1.2 MB of RGB) per batch file
    batch_rgb = 400 * 3 * cifar.PIXELS
    train_gray = 5 * 400 * cifar.PIXELS
    tracemalloc.start()
    try:
        cifar.prepare(tmp_path / "raw", tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * batch_rgb + 2 * train_gray, f"peak {peak / batch_rgb:.1f} batches of RGB"


def test_foreign_pickle_is_refused(tmp_path):
    """A pickle that would call os.system must not be executed."""
    cifar.write_fixture(tmp_path / "raw")
    bad = tmp_path / "raw" / "cifar-10-batches-py" / "data_batch_4"

    class Exploit:
        def __reduce__(self):
            import os
            return os.system, ("true",)

    bad.write_bytes(pickle.dumps({b"data": Exploit()}, protocol=2))
    with pytest.raises(ValueError, match="data_batch_4.*refusing to load"):
        cifar.prepare(tmp_path / "raw", tmp_path / "prep" / "cifar")
    assert_nothing_left(tmp_path / "prep")


@pytest.mark.parametrize("damage, error, pattern", [
    ("missing", FileNotFoundError, "data_batch_3"),
    ("truncated", ValueError, "data_batch_3: not a readable CIFAR-10 pickle"),
    ("wrong_width", ValueError, r"data_batch_3: 'data' must be uint8 of shape \(n, 3072\)"),
    ("bad_label", ValueError, "data_batch_3: label 10"),
])
def test_bad_input_names_the_file_and_leaves_nothing(tmp_path, damage, error, pattern):
    cifar.write_fixture(tmp_path / "raw")
    path = tmp_path / "raw" / "cifar-10-batches-py" / "data_batch_3"
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    else:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        if damage == "wrong_width":
            d[b"data"] = d[b"data"][:, :-1].copy()
        else:
            d[b"labels"][0] = 10
        with open(path, "wb") as f:
            pickle.dump(d, f, protocol=2)
    with pytest.raises(error, match=pattern):
        cifar.prepare(tmp_path / "raw", tmp_path / "prep" / "cifar")
    assert_nothing_left(tmp_path / "prep")
