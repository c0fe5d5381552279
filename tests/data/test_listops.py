"""ListOps: generator semantics against an independent evaluator, LRA TSV format, tokenisation, vocabulary, prepare
on the fixture, and malformed rows."""
from __future__ import annotations

import random
import statistics

import numpy as np
import pytest

from rotrnn.data import listops, load_dataset
from rotrnn.data.vocab import TsvFormatError


def evaluate_tokens(tokens: list[str]) -> int:
    """Independent evaluator on the paren-free token sequence (stack machine, not the tree)."""
    stack: list = []
    for t in tokens:
        if t.startswith("["):
            stack.append(t)
        elif t == "X":
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            op = stack.pop()
            args.reverse()
            if op == "[MIN":
                v = min(args)
            elif op == "[MAX":
                v = max(args)
            elif op == "[SM":
                v = sum(args) % 10
            else:
                s = sorted(args)
                m = len(s) // 2
                v = s[m] if len(s) % 2 else (s[m - 1] + s[m]) // 2  # median, mean of the middle two, floored
            stack.append(v)
        else:
            stack.append(int(t))
    assert len(stack) == 1
    return stack[0]


def test_tokenize_known_string():
    assert listops.tokenize("( ( ( ( [MAX 2 ) 9 ) 4 ) ] )") == ["[MAX", "2", "9", "4", "X"]
    src = "( ( ( [SM ( ( ( [MIN 3 ) 1 ) ] ) ) 8 ) ] )"
    assert listops.tokenize(src) == ["[SM", "[MIN", "3", "1", "X", "8", "X"]
    assert evaluate_tokens(listops.tokenize(src)) == 9


def test_generator_values_match_independent_evaluator():
    rows = listops.generate(300, random.Random(1), min_length=3, max_length=120, max_depth=6, max_args=6)
    assert len({s for s, _ in rows}) == 300  # duplicates dropped
    for src, target in rows:
        toks = listops.tokenize(src)
        assert 3 < len(toks) < 120
        assert target == evaluate_tokens(toks)
        # the serialisation is LRA's: every pair in parentheses, so one '(' per ')' and balanced
        assert src.count("(") == src.count(")") and src.startswith("( ")
    assert {t for _, t in rows} == set(range(10))


def test_generator_structure_and_defaults():
    """LRA defaults: operators only at depths 1-9 (depth 10 is a leaf), 2..10 arguments, operator uniform among 4."""
    rng = random.Random(3)
    ops, nargs = [], []
    for _ in range(200):
        tree, length = listops.generate_tree(rng)
        toks = listops.tokenize(listops.to_string(tree))
        assert len(toks) == length
        depth = max_depth = 0
        for t in toks:
            if t.startswith("["):
                ops.append(t)
                depth += 1
                max_depth = max(max_depth, depth)
            elif t == "X":
                depth -= 1
        assert max_depth <= 9
    stack = []
    for t in toks:
        if t.startswith("["):
            stack.append(0)
        elif t == "X":
            nargs.append(stack.pop())
            if stack:
                stack[-1] += 1
        elif stack:
            stack[-1] += 1
    assert set(ops) == {"[MIN", "[MAX", "[MED", "[SM"}
    assert all(2 <= k <= 10 for k in nargs)
    counts = [ops.count(o) / len(ops) for o in ("[MIN", "[MAX", "[MED", "[SM")]
    assert max(counts) - min(counts) < 0.05  # uniform choice over thousands of operator nodes


def test_generate_raw_files_and_length_limits(tmp_path):
    d = listops.generate_raw(tmp_path, n_train=20, n_val=5, n_test=5, seed=0, min_length=10, max_length=60)
    assert d == tmp_path / "lra_release/lra_release/listops-1000"
    raw = (d / "basic_train.tsv").read_bytes()
    assert raw.startswith(b"Source\tTarget\r\n")  # csv.writer rows, as LRA wrote them
    lines = raw.decode().split("\r\n")
    assert len(lines) == 22 and lines[-1] == ""
    all_src = []
    for name, n in (("basic_train.tsv", 20), ("basic_val.tsv", 5), ("basic_test.tsv", 5)):
        rows = [l.split("\t") for l in (d / name).read_text().splitlines()[1:]]
        assert len(rows) == n
        for src, tgt in rows:
            assert 10 < len(listops.tokenize(src)) < 60 and evaluate_tokens(listops.tokenize(src)) == int(tgt)
        all_src += [s for s, _ in rows]
    assert len(set(all_src)) == 30  # splits are disjoint
    again = listops.generate_raw(tmp_path / "b", n_train=20, n_val=5, n_test=5, seed=0, min_length=10, max_length=60)
    assert (again / "basic_test.tsv").read_bytes() == (d / "basic_test.tsv").read_bytes()


def test_full_size_lengths_follow_lra_limits():
    rows = listops.generate(5, random.Random(0))
    lens = [len(listops.tokenize(s)) for s, _ in rows]
    assert all(500 < n < 2000 for n in lens) and statistics.mean(lens) > 500


def test_prepare_fixture(tmp_path):
    listops.write_fixture(tmp_path / "raw", seed=0)
    meta = listops.prepare(tmp_path / "raw", tmp_path / "out")
    assert meta["l_max"] == 2048 and meta["n_classes"] == 10 and meta["vocab"][:3] == ["<pad>", "<unk>", "<eos>"]
    assert set(meta["vocab"][3:]) <= {*"0123456789", "[MIN", "[MAX", "[MED", "[SM", "X"}
    assert meta["vocab_size"] == len(meta["vocab"]) and meta["splits"] == {"train": 20, "val": 10, "test": 10}
    assert set(meta["sources"]) == {f"lra_release/lra_release/listops-1000/basic_{s}.tsv" for s in ("train", "val", "test")}
    vocab = meta["vocab"]
    rows = [l.split("\t") for l in (tmp_path / "raw/lra_release/lra_release/listops-1000/basic_train.tsv")
            .read_text().splitlines()[1:]]
    ds = load_dataset(tmp_path / "out", "train")
    assert sorted(np.load(tmp_path / "out/train.labels.npy").tolist()) == sorted(list(range(10)) * 2)
    for i in range(3):
        item = ds[i]
        ids = item["inputs"][:item["lengths"]]
        assert [vocab[j] for j in ids] == listops.tokenize(rows[i][0]) + ["<eos>"]
        assert int(item["labels"]) == int(rows[i][1])
    b = ds.collate([ds[i] for i in range(8)])
    assert b["inputs"].shape == (8, int(b["lengths"].max())) and b["labels"].max() < 10
    assert all((row[n:] == 0).all() and row[n - 1] == 2 for row, n in zip(b["inputs"], b["lengths"]))


def test_vocabulary_order_and_truncation(tmp_path):
    """Counts after truncation to 2047, descending count then ascending string; a long row is cut to 2048 with eos."""
    d = tmp_path / "lra_release/lra_release/listops-1000"
    long_src = "( [SM " + " ".join(["7"] * 3000) + " ] )"
    listops.write_tsv(d / "basic_train.tsv", [("( ( [MAX 1 ) 2 ) ] )", 2), (long_src, 1), ("( ( [MIN 2 ) 1 ) ] )", 1)])
    listops.write_tsv(d / "basic_val.tsv", [("( ( [MED 5 ) 3 ) ] )", 4)])
    listops.write_tsv(d / "basic_test.tsv", [("( ( [MIN 2 ) 1 ) ] )", 1)])
    meta = listops.prepare(tmp_path, tmp_path / "out")
    # 7 appears 2046 times (after truncation), X twice, 1 and 2 twice, [MAX/[MIN/[SM once
    assert meta["vocab"] == ["<pad>", "<unk>", "<eos>", "7", "1", "2", "X", "[MAX", "[MIN", "[SM"]
    ds = load_dataset(tmp_path / "out", "train")
    assert ds[1]["lengths"] == 2048 and ds[1]["inputs"][-1] == 2
    val = load_dataset(tmp_path / "out", "val")[0]
    assert val["inputs"][:val["lengths"]].tolist() == [1, 1, 1, 6, 2]  # [MED, 5, 3 unseen in train: <unk>


@pytest.mark.parametrize("content, message", [
    ("Source\tTarget\r\n( ( [MAX 1 ) 2 ) ] )\t2\r\n( [MIN 1 ] )\r\n", r"basic_val.tsv:3: expected 2 tab-separated columns, found 1"),
    ("Source\tTarget\r\n( ( [MAX 1 ) 2 ) ] )\ttwo\r\n", r"basic_val.tsv:2: label 'two' is not an integer in \[0, 10\)"),
    ("Source\tTarget\r\n( ( [MAX 1 ) 2 ) ] )\t12\r\n", r"basic_val.tsv:2: label '12'"),
    ("Src\tTgt\r\n", r"basic_val.tsv:1: expected the header"),
])
def test_malformed_rows_name_file_and_line(tmp_path, content, message):
    listops.write_fixture(tmp_path / "raw")
    (tmp_path / "raw/lra_release/lra_release/listops-1000/basic_val.tsv").write_text(content, newline="")
    with pytest.raises(TsvFormatError, match=message):
        listops.prepare(tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_missing_raw_tree_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="lra_release/lra_release/listops-1000/basic_train.tsv"):
        listops.prepare(tmp_path, tmp_path / "out")
