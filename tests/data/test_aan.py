"""AAN: new_aan_pairs.* layout, two documents per example, shared char vocabulary, malformed rows."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rotrnn.data import aan, load_dataset
from rotrnn.data.vocab import TsvFormatError

TSV = "lra_release/lra_release/tsv_data"


def read_rows(path):
    return [l.split("\t") for l in path.read_text(encoding="utf-8").splitlines()]


def test_prepare_fixture_dual(tmp_path):
    aan.write_fixture(tmp_path / "raw", seed=0)
    assert sorted(p.name for p in (tmp_path / "raw" / TSV).iterdir()) == [
        "new_aan_pairs.eval.tsv", "new_aan_pairs.test.tsv", "new_aan_pairs.train.tsv"]
    meta = aan.prepare(tmp_path / "raw", tmp_path / "out")
    assert meta["dual"] is True and meta["l_max"] == 4000 and meta["splits"] == {"train": 12, "val": 6, "test": 6}
    rows = read_rows(tmp_path / "raw" / TSV / "new_aan_pairs.train.tsv")
    counts = Counter(c for r in rows for c in r[3][:3999] + r[4][:3999])
    assert meta["vocab"] == ["<pad>", "<unk>", "<eos>"] + sorted(counts, key=lambda c: (-counts[c], c))
    vocab = {t: i for i, t in enumerate(meta["vocab"])}
    ds = load_dataset(tmp_path / "out", "train")
    for i, r in enumerate(rows):
        item = ds[i]
        assert item["labels"] == int(float(r[0]))
        assert item["inputs"][:item["lengths"]].tolist() == [vocab[c] for c in r[3][:3999]] + [2]
        assert item["inputs2"][:item["lengths2"]].tolist() == [vocab[c] for c in r[4][:3999]] + [2]
    assert ds[0]["lengths"] == 4000  # the long first document is truncated
    assert set(np.load(tmp_path / "out/val.labels.npy").tolist()) == {0, 1}
    b = ds.collate([ds[1], ds[2], ds[3]])
    T = max(int(b["lengths"].max()), int(b["lengths2"].max()))
    assert b["inputs"].shape == b["inputs2"].shape == (3, T)
    assert b["labels"].dtype.is_floating_point is False and b["lengths2"].shape == (3,)


@pytest.mark.parametrize("line, message", [
    ("1\tA\tB\tonly four\n", r"new_aan_pairs.test.tsv:3: expected 5 tab-separated columns, found 4"),
    ("0.5\tA\tB\tt1\tt2\n", r"new_aan_pairs.test.tsv:3: label '0.5' is not an integer"),
    ("yes\tA\tB\tt1\tt2\n", r"new_aan_pairs.test.tsv:3: label 'yes'"),
])
def test_malformed_rows(tmp_path, line, message):
    aan.write_fixture(tmp_path / "raw")
    p = tmp_path / "raw" / TSV / "new_aan_pairs.test.tsv"
    lines = p.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(2, line)
    p.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(TsvFormatError, match=message):
        aan.prepare(tmp_path / "raw", tmp_path / "out")
    assert [q.name for q in tmp_path.iterdir()] == ["raw"]


def test_quotes_are_not_special(tmp_path):
    """LRA read with quoting off: a '"' inside a document is an ordinary character and does not merge rows."""
    d = tmp_path / TSV
    d.mkdir(parents=True)
    for name in aan.SPLITS.values():
        (d / name).write_text('1\ta\tb\t"open quote\tx\n0\tc\td\tplain\t"y"\n', encoding="utf-8")
    aan.prepare(tmp_path, tmp_path / "out")
    ds = load_dataset(tmp_path / "out", "val")
    assert len(ds) == 2 and ds[0]["lengths"] == len('"open quote') + 1 and ds[1]["lengths2"] == 4


def test_misspelt_file_name_not_found(tmp_path):
    d = tmp_path / TSV
    d.mkdir(parents=True)
    (d / "new_aan_pair.train.tsv").write_text("1\ta\tb\tx\ty\n")
    with pytest.raises(FileNotFoundError, match="new_aan_pairs.train.tsv"):
        aan.prepare(tmp_path, tmp_path / "out")
