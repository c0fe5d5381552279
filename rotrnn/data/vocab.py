"""Helpers for the token tasks (ListOps, IMDB, AAN): torchtext-compatible vocabularies, encoding with `<eos>`,
and a strict reader for LRA's tab-separated files.

Vocabulary rule (torchtext 0.18 `build_vocab_from_iterator`, as S4 uses it): count the training tokens after
truncation, sort by descending count then ascending token string, drop tokens below `min_freq`, and put the
specials first: `<pad>`=0, `<unk>`=1, `<eos>`=2. Unknown tokens map to `<unk>`. A sequence becomes
`tokens[:l_max-1] + [<eos>]`.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

SPECIALS = ("<pad>", "<unk>", "<eos>")
PAD, UNK, EOS = 0, 1, 2


class TsvFormatError(ValueError):
    """A malformed row in a raw TSV file (the message names the file and line)."""


def build_vocab(counts: Counter, min_freq: int = 1, specials: Sequence[str] = SPECIALS) -> list[str]:
    """Token list, specials first, then by descending count and ascending string (torchtext's order)."""
    ordered = sorted(((t, c) for t, c in counts.items() if t not in specials), key=lambda tc: (-tc[1], tc[0]))
    return list(specials) + [t for t, c in ordered if c >= min_freq]


class Vocab:
    """Token ↔ id; `encode` appends `<eos>` (callers truncate to l_max-1 first)."""

    def __init__(self, tokens: Sequence[str]):
        if tuple(tokens[:3]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {SPECIALS}, got {tuple(tokens[:3])}")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("duplicate tokens in vocabulary")

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        get = self.index.get
        return np.array([get(t, UNK) for t in tokens] + [EOS], dtype=np.int64)


class CharVocab(Vocab):
    """Character vocabulary; encodes a whole string at once through a code-point lookup table."""

    def __init__(self, tokens: Sequence[str]):
        super().__init__(tokens)
        self._table = np.full(0x110000, UNK, dtype=np.int32)
        for i, t in enumerate(self.tokens[len(SPECIALS):], start=len(SPECIALS)):
            if len(t) != 1:
                raise ValueError(f"character vocabulary entry {t!r} is not one character")
            self._table[ord(t)] = i

    def encode(self, text: str) -> np.ndarray:  # type: ignore[override]
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        return np.concatenate([self._table[cps].astype(np.int64), [EOS]])


def id_dtype(vocab_size: int) -> np.dtype:
    """Smallest integer dtype that holds every id (the reader widens to int64)."""
    for dt in (np.uint8, np.int16, np.int32):
        if vocab_size - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"vocabulary of {vocab_size} is too large")


def find_tsv_dir(raw_root: Path, candidates: Sequence[Path], first_file: str, task: str) -> Path:
    """The first of ``candidates`` holding ``first_file``; else an error naming where the archive puts it."""
    for d in candidates:
        if (d / first_file).exists():
            return d
    raise FileNotFoundError(f"no {task} TSVs under {raw_root}: expected {candidates[0] / first_file} (what "
                            f"lra_release.gz extracts to; `rotrnn data download {task.lower()}` fetches it)")


def iter_tsv(path: Path, n_cols: int, header: Sequence[str] | None = None) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) of a tab-separated file without quote handling (LRA turned it off), splitting
    lines only on '\\n' and dropping a trailing '\\r' (Python's csv module, which wrote the LRA files, ends rows
    with '\\r\\n'). A wrong column count or undecodable line raises TsvFormatError naming file and line."""
    with open(path, "rb") as f:
        for no, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\n")
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TsvFormatError(f"{path}:{no}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            fields = line.split("\t")
            if no == 1 and header is not None:
                if fields != list(header):
                    raise TsvFormatError(f"{path}:1: expected the header {'<TAB>'.join(header)!r}, got {line[:80]!r}")
                continue
            if len(fields) != n_cols:
                raise TsvFormatError(f"{path}:{no}: expected {n_cols} tab-separated columns, found {len(fields)}")
            yield no, fields


def parse_label(value: str, path: Path, line: int, n_classes: int) -> int:
    """An integer class label; '1.0' is accepted (LRA stores AAN labels as floats), '1.5' or 'x' are not."""
    try:
        f = float(value)
    except ValueError:
        f = float("nan")
    if not (f == f and f.is_integer() and 0 <= f < n_classes):
        raise TsvFormatError(f"{path}:{line}: label {value!r} is not an integer in [0, {n_classes})")
    return int(f)


def fill_tokens(array: np.ndarray, seqs: Iterable[np.ndarray]) -> np.ndarray:
    """Write encoded sequences (already ending in <eos>, at most l_max long) into the rows of `array` (zeros
    elsewhere; a memmap's written pages are unmapped chunk by chunk); returns their lengths as int64."""
    from rotrnn.data.prepared import release_pages, rows_per_chunk

    lengths = np.zeros(array.shape[0], dtype=np.int64)
    step = rows_per_chunk(array)
    i = -1
    for i, ids in enumerate(seqs):
        array[i, :len(ids)] = ids
        lengths[i] = len(ids)
        if (i + 1) % step == 0:
            release_pages(array)  # a memmap's filled rows leave the resident set chunk by chunk
    if i + 1 != array.shape[0]:
        raise ValueError(f"expected {array.shape[0]} sequences, got {i + 1}")
    return lengths
