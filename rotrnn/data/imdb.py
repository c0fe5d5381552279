"""Text (LRA): IMDB reviews at character level, from the aclImdb archive.

Raw layout under the raw root (as `aclImdb_v1.tar.gz` extracts):
    aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt   (plus README, imdb.vocab, train/unsup/, *.feat, urls_*.txt,
                                                        which are not used)
Labels: neg = 0 (rating <= 4), pos = 1 (rating >= 7), as in the HF `imdb` dataset S4 loads.

Prepare (S4 `IMDB`, `level: char`): each review (UTF-8, no cleaning, `<br />` kept) becomes its list of characters,
cut to 4095, plus <eos> (l_max 4096); vocabulary from the truncated training reviews with min_freq 15 (about 135
entries on the real data). Example order: neg then pos, by numeric id. There is no validation split upstream: S4
validates on the test set, so `val` is written as a copy of `test` (recorded in meta notes).
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rotrnn.data.prepared import PreparedWriter, sha256_file
from rotrnn.data.vocab import CharVocab, build_vocab, fill_tokens, id_dtype

L_MAX = 4096
MIN_FREQ = 15
CLASSES = ("neg", "pos")
NAME = re.compile(r"^(\d+)_(\d+)\.txt$")
PREPROCESSING_VERSION = "imdb-1"


def review_files(raw_root: Path, split: str) -> list[tuple[Path, int]]:
    """(path, label) of one split, neg then pos, sorted by numeric id; file names are checked."""
    base = Path(raw_root) / "aclImdb" / split
    if not base.is_dir():
        raise FileNotFoundError(f"no IMDB {split} split: expected {base}/{{neg,pos}}/<id>_<rating>.txt "
                                f"(what aclImdb_v1.tar.gz extracts to; `rotrnn data download imdb` fetches it)")
    out = []
    for label, cls in enumerate(CLASSES):
        d = base / cls
        if not d.is_dir():
            raise FileNotFoundError(f"missing IMDB folder {d}")
        items = []
        for p in d.iterdir():
            m = NAME.match(p.name)
            if not m:
                raise ValueError(f"{p}: unexpected file name (expected <id>_<rating>.txt)")
            rating = int(m.group(2))
            if not (1 <= rating <= 4 if cls == "neg" else 7 <= rating <= 10):
                raise ValueError(f"{p}: rating {rating} does not belong in {cls}/")
            items.append((int(m.group(1)), p))
        if not items:
            raise ValueError(f"{d}: no reviews")
        out += [(p, label) for _, p in sorted(items)]
    return out


def read_review(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None


def prepare(raw_root: Path, out_dir: Path) -> dict[str, Any]:
    raw_root = Path(raw_root)
    files = {split: review_files(raw_root, split) for split in ("train", "test")}
    counts: Counter = Counter()
    for p, _ in files["train"]:
        counts.update(read_review(p)[:L_MAX - 1])
    vocab = CharVocab(build_vocab(counts, min_freq=MIN_FREQ))
    # one digest per split folder (50,000 per-file entries would bloat meta.json): sha256 over "<path> <sha256>"
    # lines of every review used, in example order
    sources = {}
    for split, items in files.items():
        h = hashlib.sha256()
        for p, _ in items:
            h.update(f"{p.relative_to(raw_root)} {sha256_file(p)}\n".encode())
        sources[f"aclImdb/{split}"] = h.hexdigest()
    meta = {
        "task": "imdb", "kind": "tokens", "vocab_size": len(vocab), "vocab": vocab.tokens, "l_max": L_MAX,
        "target": "class", "loss": "cross_entropy", "n_classes": 2, "dual": False,
        "preprocessing_version": PREPROCESSING_VERSION, "sources": sources,
        "notes": "S4 character-level IMDB: characters (not bytes), first 4095 + <eos>, vocabulary from the "
                 "truncated training reviews with min_freq 15. No validation split upstream: as in S4 and LRA the "
                 "test set doubles as validation, so 'val' is an exact copy of 'test'. Order: neg then pos by "
                 "numeric id (the HF builder's order follows the archive).",
    }
    dtype = id_dtype(len(vocab))
    with PreparedWriter(out_dir, meta) as w:
        for split, items in files.items():
            x = w.array(split, "inputs", (len(items), L_MAX), dtype)
            lengths = fill_tokens(x, (vocab.encode(read_review(p)[:L_MAX - 1]) for p, _ in items))
            labels = np.array([lab for _, lab in items], dtype=np.int64)
            w.put(split, "lengths", lengths)
            w.put(split, "labels", labels)
            if split == "test":
                w.put("val", "inputs", x)
                w.put("val", "lengths", lengths)
                w.put("val", "labels", labels)
    return w.meta


# a few short reviews per class, with the characters real reviews have (HTML breaks, quotes, non-ASCII)
_WORDS = ("the film was a great movie I loved it and the acting plot story characters were bad awful boring "
          "wonderful funny terrible brilliant director's script <br /><br /> ... ! ? \"quoted\" café naïve").split()


def write_fixture(raw_root: Path, seed: int = 0, per_class: int = 6, words: tuple[int, int] = (20, 300)) -> None:
    """aclImdb layout with ``per_class`` reviews per class per split (plus an unsup folder and extra files, as
    upstream), each of ``words`` (low, high) words drawn uniformly. The full-size benchmark (`rotrnn bench prepare`)
    writes the real 12,500 per class per split with about the real mean length (230 words, 1,300 characters)."""
    rng = np.random.default_rng(seed)
    base = Path(raw_root) / "aclImdb"
    for split in ("train", "test"):
        for cls in CLASSES:
            d = base / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                rating = int(rng.integers(1, 5) if cls == "neg" else rng.integers(7, 11))
                n = 900 if (i == 0 and split == "train") else int(rng.integers(*words))  # one beyond l_max
                text = " ".join(rng.choice(_WORDS, n))
                if i == 1:  # a rare character (below min_freq in train; unseen in the vocabulary for test)
                    text += " 10/10 \u2605" if split == "train" else " \u2713"
                (d / f"{i * 2 + (cls == 'pos')}_{rating}.txt").write_text(text, encoding="utf-8")
    unsup = base / "train" / "unsup"
    unsup.mkdir(parents=True, exist_ok=True)
    (unsup / "0_0.txt").write_text("unlabelled review, not used", encoding="utf-8")
    (base / "README").write_text("Large Movie Review Dataset v1.0 (fixture)\n")
    (base / "imdb.vocab").write_text("\n".join(sorted(set(_WORDS))) + "\n", encoding="utf-8")
