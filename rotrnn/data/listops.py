"""ListOps (LRA): the generator, the raw TSV fixture, and raw → prepared conversion.

Raw layout under the raw root (as `lra_release.gz` extracts):
    lra_release/lra_release/listops-1000/basic_{train,val,test}.tsv
each with the header `Source<TAB>Target` and one expression per row, e.g. `( ( ( [MAX 2 ) 9 ) ] )<TAB>9`.
`listops-1000/` directly under the raw root is accepted too.

Generator (after LRA `lra_benchmarks/data/listops.py`): a random tree from `generate_tree(1)`: below max_depth a
node is an operator with probability 0.25 (else a uniform digit); an operator takes randint(2, max_args) children
and one of MIN, MAX, MED, SM uniformly; the tree is kept left-nested and serialised with parentheses; it is
accepted if min_length < length < max_length (length = tokens without parentheses); duplicates are dropped.

Prepare (S4): drop '(' and ')', replace ']' by 'X', split on whitespace; keep 2047 tokens and append <eos>
(l_max 2048); vocabulary from the training split with <pad>, <unk>, <eos> first (18 entries on the real data).
"""
from __future__ import annotations

import csv
import random
from collections import Counter
from pathlib import Path
from typing import Any, Union

import numpy as np

from rotrnn.data.prepared import PreparedWriter, sha256_file
from rotrnn.data.vocab import (Vocab, build_vocab, fill_tokens, find_tsv_dir, id_dtype, iter_tsv,
                               parse_label)

MIN, MAX, MED, SUM_MOD, END = "[MIN", "[MAX", "[MED", "[SM", "]"
OPERATORS = (MIN, MAX, MED, SUM_MOD)  # LRA's FIRST and LAST are switched off there too
VALUE_P = 0.25  # LRA: a node is a leaf when r > VALUE_P
L_MAX = 2048
N_CLASSES = 10
SPLITS = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
HEADER = ("Source", "Target")
SUBDIR = Path("lra_release/lra_release/listops-1000")
PREPROCESSING_VERSION = "listops-1"

Tree = Union[int, str, tuple]


def generate_tree(rng: random.Random, depth: int = 1, max_depth: int = 10, max_args: int = 10) -> tuple[Tree, int]:
    """A random left-nested ListOps tree and its length in tokens (no parentheses), drawing from `rng` in the
    same order as LRA's generator."""
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        return rng.choice(range(10)), 1
    length = 2
    values = []
    for _ in range(rng.randint(2, max_args)):
        sub, sub_len = generate_tree(rng, depth + 1, max_depth, max_args)
        values.append(sub)
        length += sub_len
    t: Tree = (rng.choice(OPERATORS), values[0])
    for v in values[1:]:
        t = (t, v)
    return (t, END), length


def to_string(t: Tree) -> str:
    """LRA's serialisation: every pair as `( <left> <right> )`, space-separated (built as one token list, since
    recursive string concatenation is quadratic on trees of ~1000 tokens)."""
    out: list[str] = []
    stack: list = [t]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):
            stack += [")", node[1], node[0]]
            out.append("(")
        else:
            out.append(str(node))
    return " ".join(out)


def to_value(t: Tree) -> Any:
    """Evaluate a tree the way LRA does: an operator paired with arguments is an unsaturated function until END."""
    if not isinstance(t, tuple):
        return t
    left, right = to_value(t[0]), to_value(t[1])
    if isinstance(left, str) and left in OPERATORS:
        return (left, [right])
    if right == END:
        op, args = left
        if op == MIN:
            return min(args)
        if op == MAX:
            return max(args)
        if op == MED:
            return int(np.median(args))  # even counts: mean of the middle two, truncated
        return int(np.sum(args)) % 10
    return (left[0], left[1] + [right])


def generate(n: int, rng: random.Random, *, min_length: int = 500, max_length: int = 2000, max_depth: int = 10,
             max_args: int = 10) -> list[tuple[str, int]]:
    """`n` distinct (Source, Target) pairs in generation order. LRA collects them in a Python set and splits in the
    set's (arbitrary) iteration order; generation order is an equally arbitrary but reproducible order."""
    if not 0 <= min_length < max_length - 1:
        raise ValueError(f"need min_length < max_length - 1, got {min_length}, {max_length}")
    seen: dict[str, int] = {}  # keyed by the serialisation (one string per tree): cheaper than hashing the tree
    while len(seen) < n:
        tree, length = generate_tree(rng, 1, max_depth, max_args)
        if min_length < length < max_length:
            src = to_string(tree)
            if src not in seen:
                seen[src] = int(to_value(tree))
    return list(seen.items())


def write_tsv(path: Path, rows: list[tuple[str, int]]) -> None:
    """LRA's `write_to_file`: csv.writer with a tab delimiter (rows end in '\\r\\n'), header Source/Target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(HEADER)
        w.writerows(rows)
    tmp.replace(path)


def generate_raw(out_root: Path, n_train: int = 96_000, n_val: int = 2_000, n_test: int = 2_000, seed: int = 0,
                 **kw: int) -> Path:
    """Write a full LRA-layout ListOps raw tree under `out_root`; returns the TSV directory."""
    rows = generate(n_train + n_val + n_test, random.Random(seed), **kw)
    d = Path(out_root) / SUBDIR
    for split, (a, b) in zip(SPLITS, ((0, n_train), (n_train, n_train + n_val), (n_train + n_val, len(rows)))):
        write_tsv(d / SPLITS[split], rows[a:b])
    return d


def write_fixture(raw_root: Path, seed: int = 0) -> None:
    """A tiny raw tree in the LRA layout: short expressions, every class in train (and in val+test together)."""
    rng = random.Random(seed)
    pool = generate(400, rng, min_length=4, max_length=40, max_depth=5, max_args=5)
    by_class: dict[int, list[tuple[str, int]]] = {c: [] for c in range(N_CLASSES)}
    for row in pool:
        by_class[row[1]].append(row)
    while any(len(v) < 4 for v in by_class.values()):  # rare classes (e.g. 9 with MIN) need more draws
        for row in generate(200, rng, min_length=4, max_length=40, max_depth=5, max_args=5):
            if len(by_class[row[1]]) < 4 and row not in by_class[row[1]]:
                by_class[row[1]].append(row)
    train = [r for c in range(N_CLASSES) for r in by_class[c][:2]]
    held = [r for c in range(N_CLASSES) for r in by_class[c][2:4]]
    rng.shuffle(train)
    rng.shuffle(held)
    d = Path(raw_root) / SUBDIR
    write_tsv(d / SPLITS["train"], train)
    write_tsv(d / SPLITS["val"], held[:10])
    write_tsv(d / SPLITS["test"], held[10:])


def tokenize(source: str) -> list[str]:
    """S4/LRA ListOps tokenizer: parentheses dropped, ']' → 'X', split on whitespace."""
    return source.replace("(", "").replace(")", "").replace("]", "X").split()


def find_dir(raw_root: Path) -> Path:
    return find_tsv_dir(raw_root, (raw_root / SUBDIR, raw_root / "listops-1000"), SPLITS["train"], "ListOps")


def _rows(path: Path):
    """(tokens truncated to l_max-1, label) per row; malformed rows raise naming file and line."""
    for no, (src, tgt) in iter_tsv(path, 2, HEADER):
        yield tokenize(src)[:L_MAX - 1], parse_label(tgt, path, no, N_CLASSES)


def prepare(raw_root: Path, out_dir: Path) -> dict[str, Any]:
    raw_root = Path(raw_root)
    d = find_dir(raw_root)
    # pass 1: validate every file, collect labels, count training tokens; pass 2 encodes (the token lists of
    # 100k examples of ~1000 tokens are not held in memory)
    labels, counts = {}, Counter()
    for split, name in SPLITS.items():
        ys = []
        for tokens, label in _rows(d / name):
            ys.append(label)
            if split == "train":
                counts.update(tokens)
        if not ys:
            raise ValueError(f"{d / name}: no examples")
        labels[split] = np.array(ys, dtype=np.int64)
    vocab = Vocab(build_vocab(counts, min_freq=1))
    meta = {
        "task": "listops", "kind": "tokens", "vocab_size": len(vocab), "vocab": vocab.tokens, "l_max": L_MAX,
        "target": "class", "loss": "cross_entropy", "n_classes": N_CLASSES, "dual": False,
        "preprocessing_version": PREPROCESSING_VERSION,
        "sources": {str((d / n).relative_to(raw_root)): sha256_file(d / n) for n in SPLITS.values()},
        "notes": "S4 tokenisation (parentheses dropped, ']' -> 'X'); vocabulary from the training split as in S4 "
                 "(LRA built it from the validation file: same tokens, different ids); truncation to 2047 tokens "
                 "+ <eos> (l_max 2048, S4; LRA used 2000).",
    }
    dtype = id_dtype(len(vocab))
    with PreparedWriter(out_dir, meta) as w:
        for split, name in SPLITS.items():
            x = w.array(split, "inputs", (len(labels[split]), L_MAX), dtype)
            w.put(split, "lengths", fill_tokens(x, (vocab.encode(t) for t, _ in _rows(d / name))))
            w.put(split, "labels", labels[split])
    return w.meta
