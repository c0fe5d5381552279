"""Retrieval (LRA): AAN citation pairs, two documents per example, character level.

Raw layout under the raw root (as `lra_release.gz` extracts):
    lra_release/lra_release/tsv_data/new_aan_pairs.{train,eval,test}.tsv     ("pairs", with an s)
`tsv_data/` directly under the raw root is accepted too. Each file: no header, 5 tab-separated columns
`label, id1, id2, text1, text2`, no quote handling (LRA read them with quoting off); the label is 0/1, possibly
written as a float ("1.0").

Prepare (S4 `AAN`): each document becomes its characters cut to 3999, plus <eos> (l_max 4000); vocabulary over the
training text1 and text2 together, min_freq 1 (about 98 entries). Splits train/val/test come from
train/eval/test. The prepared task is dual: `inputs`/`lengths` hold text1, `inputs2`/`lengths2` text2.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rotrnn.data.prepared import PreparedWriter, release_pages, rows_per_chunk, sha256_file
from rotrnn.data.vocab import (CharVocab, build_vocab, fill_tokens, find_tsv_dir, id_dtype, iter_tsv,
                               parse_label)

L_MAX = 4000
SPLITS = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}
SUBDIR = Path("lra_release/lra_release/tsv_data")
PREPROCESSING_VERSION = "aan-1"


def find_dir(raw_root: Path) -> Path:
    return find_tsv_dir(raw_root, (raw_root / SUBDIR, raw_root / "tsv_data"), SPLITS["train"], "AAN")


def _rows(path: Path):
    """(label, text1 truncated, text2 truncated) per row; malformed rows raise naming file and line."""
    for no, (label, _id1, _id2, t1, t2) in iter_tsv(path, 5):
        yield parse_label(label, path, no, 2), t1[:L_MAX - 1], t2[:L_MAX - 1]


def prepare(raw_root: Path, out_dir: Path) -> dict[str, Any]:
    raw_root = Path(raw_root)
    d = find_dir(raw_root)
    # pass 1: validate every file, count rows, count training characters (the texts are not kept: train alone is
    # 147k pairs of up to 4000 characters)
    sizes, counts = {}, Counter()
    for split, name in SPLITS.items():
        n = 0
        for _, t1, t2 in _rows(d / name):
            n += 1
            if split == "train":
                counts.update(t1)
                counts.update(t2)
        if n == 0:
            raise ValueError(f"{d / name}: no examples")
        sizes[split] = n
    vocab = CharVocab(build_vocab(counts, min_freq=1))
    meta = {
        "task": "aan", "kind": "tokens", "vocab_size": len(vocab), "vocab": vocab.tokens, "l_max": L_MAX,
        "target": "class", "loss": "cross_entropy", "n_classes": 2, "dual": True,
        "preprocessing_version": PREPROCESSING_VERSION,
        "sources": {str((d / n).relative_to(raw_root)): sha256_file(d / n) for n in SPLITS.values()},
        "notes": "S4 AAN: characters, each document cut to 3999 + <eos> (l_max 4000), vocabulary over training "
                 "text1+text2 with min_freq 1; TSVs read with quoting off (as LRA; S4's pandas reader quotes); "
                 "val = new_aan_pairs.eval.tsv.",
    }
    dtype = id_dtype(len(vocab))
    with PreparedWriter(out_dir, meta) as w:
        for split, name in SPLITS.items():
            n = sizes[split]
            x1 = w.array(split, "inputs", (n, L_MAX), dtype)
            x2 = w.array(split, "inputs2", (n, L_MAX), dtype)
            labels = np.zeros(n, dtype=np.int64)
            len1 = np.zeros(n, dtype=np.int64)
            len2 = np.zeros(n, dtype=np.int64)
            step = rows_per_chunk(x1)
            for i, (label, t1, t2) in enumerate(_rows(d / name)):
                labels[i] = label
                len1[i:i + 1] = fill_tokens(x1[i:i + 1], [vocab.encode(t1)])
                len2[i:i + 1] = fill_tokens(x2[i:i + 1], [vocab.encode(t2)])
                if (i + 1) % step == 0:
                    release_pages(x1)
                    release_pages(x2)
            for k, a in (("labels", labels), ("lengths", len1), ("lengths2", len2)):
                w.put(split, k, a)
    return w.meta


_WORDS = ("we propose a model for parsing translation corpus results show that the method improves accuracy "
          "on benchmark data , . ( ) 's % 2004 ACL citation network").split()


def write_fixture(raw_root: Path, seed: int = 0, sizes: tuple[int, int, int] = (12, 6, 6),
                  words: tuple[int, int] = (5, 200)) -> None:
    """The LRA tsv_data layout with ``sizes`` (train, eval, test) pairs, both labels present, one document beyond
    l_max; each document has ``words`` (low, high) words drawn uniformly. Rows are written as they are made (the
    full-size train file, `rotrnn bench prepare`, is gigabytes)."""
    rng = np.random.default_rng(seed)
    d = Path(raw_root) / SUBDIR
    d.mkdir(parents=True, exist_ok=True)
    for (split, name), n in zip(SPLITS.items(), sizes):
        with open(d / name, "w", encoding="utf-8", newline="") as f:
            for i in range(n):
                label = i % 2
                lengths = [int(rng.integers(*words)) for _ in range(2)]
                if split == "train" and i == 0:
                    lengths[0] = 1200  # > 3999 characters: exercises truncation
                t1, t2 = (" ".join(rng.choice(_WORDS, k)) for k in lengths)
                # LRA parses the label as a float, so both spellings are valid; the fixture uses both
                lab = f"{label}.0" if i % 3 == 0 else str(label)
                f.write(f"{lab}\tW{seed:02d}-{i:04d}\tP{i:02d}-{split}\t{t1}\t{t2}\n")
