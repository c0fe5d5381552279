"""IMDB: aclImdb layout, character tokenisation, min_freq 15 vocabulary, val = test, file-name checks."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rotrnn.data import imdb, load_dataset


def test_prepare_fixture(tmp_path):
    imdb.write_fixture(tmp_path / "raw", seed=0)
    meta = imdb.prepare(tmp_path / "raw", tmp_path / "out")
    assert meta["l_max"] == 4096 and meta["n_classes"] == 2 and meta["splits"] == {"train": 12, "test": 12, "val": 12}
    assert set(meta["sources"]) == {"aclImdb/train", "aclImdb/test"}
    vocab = meta["vocab"]
    # the vocabulary is the training characters (after truncation) seen at least 15 times, by count then string
    files = imdb.review_files(tmp_path / "raw", "train")
    counts = Counter(c for p, _ in files for c in p.read_text(encoding="utf-8")[:4095])
    expect = sorted((c for c in counts if counts[c] >= 15), key=lambda c: (-counts[c], c))
    assert vocab == ["<pad>", "<unk>", "<eos>"] + expect
    assert any(counts[c] < 15 for c in counts)  # the fixture exercises the min_freq cut
    ds = load_dataset(tmp_path / "out", "train")
    index = {t: i for i, t in enumerate(vocab)}
    for i, (p, label) in enumerate(files):
        item = ds[i]
        text = p.read_text(encoding="utf-8")[:4095]
        assert item["inputs"][:item["lengths"]].tolist() == [index.get(c, 1) for c in text] + [2]
        assert item["labels"] == label
    assert int(ds[0]["lengths"]) == int(ds[6]["lengths"]) == 4096  # the long reviews are truncated
    assert "\u2605" not in vocab  # too rare in train
    test = load_dataset(tmp_path / "out", "test")
    assert test[1]["inputs"][test[1]["lengths"] - 2] == 1  # '\u2713' never seen in train: <unk>
    assert np.load(tmp_path / "out/train.labels.npy").tolist() == [0] * 6 + [1] * 6
    for name in ("inputs", "lengths", "labels"):
        assert (tmp_path / f"out/val.{name}.npy").read_bytes() == (tmp_path / f"out/test.{name}.npy").read_bytes()
    b = ds.collate([ds[i] for i in range(4)])
    assert b["inputs"].shape[1] == int(b["lengths"].max()) and set(b["labels"].tolist()) == {0}


def test_char_tokenisation_known_string(tmp_path):
    from rotrnn.data.vocab import CharVocab

    v = CharVocab(["<pad>", "<unk>", "<eos>", "a", "<", "é", " "])
    assert v.encode("a<br />é").tolist() == [3, 4, 1, 1, 6, 1, 1, 5, 2]
    assert v.encode("").tolist() == [2]


def test_ordering_by_numeric_id(tmp_path):
    imdb.write_fixture(tmp_path)
    names = [p.name for p, _ in imdb.review_files(tmp_path, "test")]
    ids = [int(n.split("_")[0]) for n in names]
    assert ids[:6] == sorted(ids[:6]) and ids[6:] == sorted(ids[6:])


@pytest.mark.parametrize("name, message", [("notes.txt", "unexpected file name"), ("99_9.txt", "rating 9 does not belong in neg/")])
def test_bad_files_named(tmp_path, name, message):
    imdb.write_fixture(tmp_path / "raw")
    (tmp_path / "raw/aclImdb/test/neg" / name).write_text("x")
    with pytest.raises(ValueError, match=message):
        imdb.prepare(tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_split_message(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"aclImdb/train/\{neg,pos\}"):
        imdb.prepare(tmp_path, tmp_path / "out")
