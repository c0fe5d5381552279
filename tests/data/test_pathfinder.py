"""Pathfinder 32 and Path-X 128: fixture release tree → prepare → dataset, against an independent reading of the
metadata and PNGs (S4 order and seeded split, [-1, 1] pixels), layouts, determinism, and bad-input errors."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from rotrnn.data import load_dataset, pathfinder

N_BATCHES, PER_BATCH = 12, 3  # write_fixture defaults
N = N_BATCHES * PER_BATCH


def level_of(raw, res):
    return raw / "lra_release" / "lra_release" / f"pathfinder{res}" / "curv_contour_length_14"


def reference_examples(level):
    """S4 PathFinderDataset order, written independently: metadata sorted by integer stem, lines in order."""
    out = []
    for meta_file in sorted(level.glob("metadata/*.npy"), key=lambda p: int(p.stem)):
        for line in meta_file.read_text().splitlines():
            f = line.split()
            out.append((level / f[0] / f[1], int(f[3])))
    return out


def dir_bytes(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def assert_nothing_left(parent):
    assert not parent.exists() or not any(parent.iterdir()), list(parent.iterdir())


@pytest.fixture(scope="module", params=[32, 128], ids=["pathfinder32", "pathx128"])
def prepared(request, tmp_path_factory):
    res = request.param
    root = tmp_path_factory.mktemp(f"pf{res}")
    pathfinder.write_fixture(root / "raw", seed=1, resolution=res)
    meta = pathfinder.prepare(root / "raw", root / "out", resolution=res)
    return root, res, meta


def test_fixture_is_the_release_layout(prepared):
    root, res, _ = prepared
    level = level_of(root / "raw", res)
    assert sorted(int(p.stem) for p in level.glob("metadata/*.npy")) == list(range(N_BATCHES))
    first = (level / "metadata" / "0.npy").read_text().splitlines()[0].split()
    assert len(first) == 11 and first[0] == "imgs/0" and first[1] == "sample_0.png" and first[5] == "14"
    with Image.open(level / "imgs" / "0" / "sample_0.png") as im:
        assert im.format == "PNG" and im.mode == "L" and im.size == (res, res)
    labels = [y for _, y in reference_examples(level)]
    assert set(labels) == {0, 1}


def test_meta_and_batch_shapes(prepared):
    root, res, meta = prepared
    L = res * res
    assert meta["task"] == {32: "pathfinder", 128: "pathx"}[res]
    assert meta["l_max"] == L and meta["in_dim"] == 1 and meta["n_classes"] == 2
    n_val = int(0.1 * N)
    assert meta["splits"] == {"train": N - 2 * n_val, "val": n_val, "test": n_val}
    assert f"lra_release/lra_release/pathfinder{res}/curv_contour_length_14/imgs/*/*.png" in meta["sources"]
    assert np.load(root / "out" / "train.inputs.npy", mmap_mode="r").dtype == np.uint8  # 1 byte per pixel
    for split, n in meta["splits"].items():
        ds = load_dataset(root / "out", split)
        batch = ds.collate([ds[i] for i in range(n)])
        assert batch["inputs"].shape == (n, L, 1) and batch["inputs"].dtype == torch.float32
        assert batch["lengths"].tolist() == [L] * n and batch["labels"].dtype == torch.int64
        assert set(batch["labels"].tolist()) <= {0, 1}
        assert batch["inputs"].min() >= -1.0 and batch["inputs"].max() <= 1.0
    ds = load_dataset(root / "out", "train")
    x = ds.collate([ds[i] for i in range(len(ds))])["inputs"]
    assert x.min() == -1.0 and x.max() == 1.0  # black background and white markers reach both ends


def test_values_order_and_split_match_direct_computation(prepared):
    """Prepared split k = example perm[offset + k] of S4's list (numeric metadata order, so 10.npy after 9.npy),
    pixels (p/255 - 0.5)/0.5 row-major."""
    root, res, meta = prepared
    examples = reference_examples(level_of(root / "raw", res))
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(42)).tolist()
    start = 0
    for split in ("train", "val", "test"):
        n = meta["splits"][split]
        idx = perm[start:start + n]
        start += n
        ds = load_dataset(root / "out", split)
        batch = ds.collate([ds[k] for k in range(n)])
        assert batch["labels"].tolist() == [examples[i][1] for i in idx]
        for k in (0, n - 1):
            with Image.open(examples[idx[k]][0]) as im:
                p = np.asarray(im.convert("L"), dtype=np.float64).reshape(-1)
            np.testing.assert_allclose(batch["inputs"][k, :, 0].numpy(), p / 255 * 2 - 1, atol=1e-6)


def test_prepare_is_byte_identical_and_accepts_s4_moved_layout(prepared, tmp_path):
    root, res, meta = prepared
    again = pathfinder.prepare(root / "raw", tmp_path / "again", resolution=res)
    assert dir_bytes(tmp_path / "again") == dir_bytes(root / "out")
    # S4's README moves lra_release/lra_release/pathfinder<res> to <DATA>/pathfinder/pathfinder<res>
    moved = tmp_path / "s4" / f"pathfinder{res}"
    shutil.copytree(root / "raw" / "lra_release" / "lra_release" / f"pathfinder{res}", moved)
    meta_moved = pathfinder.prepare(tmp_path / "s4", tmp_path / "moved", resolution=res)
    assert meta_moved["checksum"] == again["checksum"] == meta["checksum"]


def test_blacklisted_image_is_skipped(tmp_path, monkeypatch):
    pathfinder.write_fixture(tmp_path / "raw", resolution=32)
    level = level_of(tmp_path / "raw", 32)
    # the real blacklisted file (empty, in curv_baseline) is in the fixture and never read
    assert (level.parent / "curv_baseline" / "imgs" / "0" / "sample_172.png").stat().st_size == 0
    assert len(pathfinder.read_examples(level, 32)) == N
    monkeypatch.setattr(pathfinder, "BLACKLIST",
                        pathfinder.BLACKLIST | {"pathfinder32/curv_contour_length_14/imgs/10/sample_1.png"})
    kept = pathfinder.read_examples(level, 32)
    assert len(kept) == N - 1 and "imgs/10/sample_1.png" not in [rel for rel, _ in kept]


def _truncate(level):
    p = level / "imgs" / "10" / "sample_2.png"
    p.write_bytes(p.read_bytes()[:60])


def _metadata_line(level, new_line):
    p = level / "metadata" / "7.npy"
    lines = p.read_text().splitlines()
    lines[1] = new_line(lines[1])
    p.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("damage, error, pattern", [
    (_truncate, ValueError, r"imgs/10/sample_2\.png: corrupt or truncated PNG"),
    (lambda lv: (lv / "imgs" / "3" / "sample_0.png").unlink(), FileNotFoundError, r"imgs/3/sample_0\.png"),
    (lambda lv: Image.new("L", (31, 32)).save(lv / "imgs" / "5" / "sample_1.png"), ValueError,
     r"imgs/5/sample_1\.png: image is 31x32, expected 32x32"),
    (lambda lv: _metadata_line(lv, lambda s: " ".join(s.split()[:3])), ValueError,
     r"metadata/7\.npy:2: expected 11 space-separated fields \(at least 4: .*\), got 3"),
    (lambda lv: _metadata_line(lv, lambda s: " ".join(s.split()[:3] + ["one"] + s.split()[4:])), ValueError,
     r"metadata/7\.npy:2: label field 'one' is not an integer"),
    (lambda lv: _metadata_line(lv, lambda s: " ".join(["../../imgs/0"] + s.split()[1:])), ValueError,
     r"metadata/7\.npy:2: image path '\.\./\.\./imgs/0/sample_1\.png' leaves"),
    (lambda lv: shutil.rmtree(lv / "metadata"), FileNotFoundError, r"curv_contour_length_14/metadata"),
], ids=["truncated_png", "missing_png", "wrong_size", "short_row", "bad_label", "path_escape", "no_metadata"])
def test_bad_input_names_the_file_and_leaves_nothing(tmp_path, damage, error, pattern):
    pathfinder.write_fixture(tmp_path / "raw", resolution=32)
    damage(level_of(tmp_path / "raw", 32))
    with pytest.raises(error, match=pattern):
        pathfinder.prepare(tmp_path / "raw", tmp_path / "prep" / "pathfinder", resolution=32)
    assert_nothing_left(tmp_path / "prep")


def test_unsupported_resolution_is_refused(tmp_path):
    with pytest.raises(ValueError, match="resolution=64"):
        pathfinder.prepare(tmp_path, tmp_path / "out", resolution=64)
    assert not (tmp_path / "out").exists()
