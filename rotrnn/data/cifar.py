"""LRA Image: CIFAR-10 in grayscale as a sequence of 1024 pixels (S4/S5 conventions, S4's src/dataloaders/basic.py, CIFAR10).

Raw layout under ``raw_root`` (what ``cifar-10-python.tar.gz`` extracts to)::

    cifar-10-batches-py/data_batch_1 … data_batch_5, test_batch, batches.meta

Each batch is a Python-2 pickle holding ``data`` (uint8, n×3072: 1024 R, 1024 G, 1024 B, each 32×32 row-major) and
``labels`` (n ints in 0..9). Preprocessing: PIL ``convert("L")`` (ITU-R 601-2 luma, PIL's own integer rounding, which
is what torchvision's ``Grayscale`` runs), row-major flattening to (1024, 1), ``ToTensor`` scaling by 1/255 and
``Normalize(122.6/255, 61.0/255)``. The prepared inputs keep the uint8 gray levels; ``input_scale``/``input_offset``
carry the normalisation so that decoded values equal ``(p/255 − 122.6/255)/(61/255)``. Val is S4's random 10 % of
the 50,000 training images (``random_split`` with ``torch.Generator().manual_seed(42)``); test is ``test_batch``.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

BATCH_DIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SIDE = 32
PIXELS = SIDE * SIDE
MEAN = 122.6 / 255.0  # S4 basic.py CIFAR10 grayscale normalisation, in ToTensor units
STD = 61.0 / 255.0
VAL_FRACTION = 0.1  # S4 split_train_val(val_split=0.1)
SPLIT_SEED = 42
PREPROCESSING_VERSION = "cifar-gray-1"
ROWS = 4096  # images copied into the output arrays per slice

NOTES = (
    "Grayscale by PIL convert('L') as torchvision Grayscale does (S4/S5), not LRA's tf.image.rgb_to_grayscale. "
    "Inputs stored as uint8 gray levels; decoding with input_scale/input_offset gives (p/255-122.6/255)/(61/255). "
    "Val = S4's random_split of the 50,000 training images with torch.Generator().manual_seed(42) "
    "(train = first int(0.9 n) of the permutation, val = the rest, both in permutation order), not LRA's last 10%."
)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and plain containers but nothing else: a downloaded pickle must not
    be able to run arbitrary code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    """The pickled dict with str keys (the archive's Python-2 pickles give bytes keys under encoding='bytes')."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CIFAR-10 file missing (expected the {BATCH_DIR}/ folder of "
                                f"cifar-10-python.tar.gz)")
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # truncated file, foreign classes, not a pickle at all
        raise ValueError(f"{path}: not a readable CIFAR-10 pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → (data uint8 (n, 3072), labels int64 (n,)), checked against the documented format."""
    batch = _load_pickle(path)
    for key in ("data", "labels"):
        if key not in batch:
            raise ValueError(f"{path}: missing key {key!r} (has {sorted(batch)})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * PIXELS:
        raise ValueError(f"{path}: 'data' must be uint8 of shape (n, {3 * PIXELS}), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: 'labels' must be {data.shape[0]} integers, got {labels.dtype} {labels.shape}")
    if data.shape[0] == 0:
        raise ValueError(f"{path}: batch holds no images")
    bad = np.flatnonzero((labels < 0) | (labels >= len(LABEL_NAMES)))
    if bad.size:
        raise ValueError(f"{path}: label {int(labels[bad[0]])} of image {int(bad[0])} outside 0..9")
    return data, labels.astype(np.int64)


def to_grayscale(data: np.ndarray) -> np.ndarray:
    """(n, 3072) CIFAR rows → (n, 1024) uint8 gray levels, row-major, exactly as PIL ``convert("L")`` rounds.

    All images are converted in one PIL call on a tall (32n × 32) RGB image: L is a per-pixel map, so stacking
    images does not change any value."""
    from PIL import Image

    n = data.shape[0]
    rgb = np.ascontiguousarray(data.reshape(n, 3, SIDE, SIDE).transpose(0, 2, 3, 1).reshape(n * SIDE, SIDE, 3))
    gray = np.asarray(Image.fromarray(rgb, mode="RGB").convert("L"))
    return gray.reshape(n, PIXELS)


def train_val_indices(n: int, val_fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED) -> tuple[list, list]:
    """S4 ``split_train_val``: ``random_split`` into int(n(1−f)) train and the rest val, seeded generator."""
    import torch
    from torch.utils.data import random_split

    n_train = int(n * (1.0 - val_fraction))
    train, val = random_split(range(n), (n_train, n - n_train), generator=torch.Generator().manual_seed(seed))
    return list(train.indices), list(val.indices)


def prepare(raw_root: Path, out_dir: Path) -> dict:
    """Raw CIFAR-10 pickles → prepared grayscale splits train/val/test (uint8 (n, 1024, 1)); returns meta."""
    from rotrnn.data.prepared import PreparedWriter, sha256_file

    raw_root, out_dir = Path(raw_root), Path(out_dir)
    folder = raw_root / BATCH_DIR
    names = _load_pickle(folder / META_FILE).get("label_names")
    if names is not None:
        names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
        if tuple(names) != LABEL_NAMES:
            raise ValueError(f"{folder / META_FILE}: label_names {names} differ from CIFAR-10's {list(LABEL_NAMES)}")

    # one batch file decoded at a time: only the gray levels (1 KiB an image) of the 50,000 training images are
    # kept, since S4's split draws val from all of them
    grays, ys = [], []
    for name in TRAIN_FILES:
        data, labels = read_batch(folder / name)
        grays.append(to_grayscale(data))
        ys.append(labels)
        del data
    train_gray, train_labels = np.concatenate(grays), np.concatenate(ys)
    del grays
    test_data, test_labels = read_batch(folder / TEST_FILE)
    test_gray = to_grayscale(test_data)
    del test_data
    train_idx, val_idx = train_val_indices(len(train_labels))
    splits = {
        "train": (train_gray, np.asarray(train_idx, dtype=np.int64)),
        "val": (train_gray, np.asarray(val_idx, dtype=np.int64)),
        "test": (test_gray, np.arange(len(test_labels))),
    }
    split_labels = {"train": train_labels[train_idx], "val": train_labels[val_idx], "test": test_labels}
    meta = {
        "task": "cifar",
        "kind": "continuous",
        "in_dim": 1,
        "l_max": PIXELS,
        "target": "class",
        "loss": "cross_entropy",
        "n_classes": len(LABEL_NAMES),
        "class_names": list(LABEL_NAMES),
        "splits": {split: int(len(y)) for split, y in split_labels.items()},
        # decoded = stored*scale + offset = (p/255 - MEAN)/STD
        "input_scale": 1.0 / (255.0 * STD),
        "input_offset": -MEAN / STD,
        "preprocessing_version": PREPROCESSING_VERSION,
        "sources": {f"{BATCH_DIR}/{n}": sha256_file(folder / n) for n in (*TRAIN_FILES, TEST_FILE, META_FILE)},
        "notes": NOTES,
    }
    with PreparedWriter(out_dir, meta) as w:
        for split, (gray, idx) in splits.items():
            x = w.array(split, "inputs", (len(idx), PIXELS, 1), np.uint8)
            for a in range(0, len(idx), ROWS):  # gathered in slices: no second copy of a split
                x[a:a + ROWS, :, 0] = gray[idx[a:a + ROWS]]
            w.put(split, "lengths", np.full(len(idx), PIXELS, dtype=np.int64))
            w.put(split, "labels", split_labels[split])
    return w.meta  # the written meta.json: splits and checksum filled in by the writer


def _pickle_batch(path: Path, obj: dict) -> None:
    """Write like the archive: Python-2-compatible pickle (protocol 2) with bytes keys."""
    with open(path, "wb") as f:
        pickle.dump({k.encode(): v for k, v in obj.items()}, f, protocol=2)


def write_fixture(raw_root: Path, seed: int = 0, per_class: int = 3) -> None:
    """A tiny ``cifar-10-batches-py/`` in the real pickle format: ``per_class`` images of every class in each of
    the five training batches and the test batch. Images are smooth colour gradients plus noise, so the three
    channels differ and the grayscale weights matter."""
    rng = np.random.default_rng(seed)
    folder = Path(raw_root) / BATCH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]

    def make_batch(label: str) -> dict:
        labels = np.repeat(np.arange(len(LABEL_NAMES)), per_class)
        rng.shuffle(labels)
        images = []
        for y in labels:
            chans = []
            for _ in range(3):
                a, b, c = rng.uniform(-4, 4, size=3)
                base = 128 + a * (xx - 16) + b * (yy - 16) + 8 * y * np.sin(c * xx / 5)
                chans.append(np.clip(base + rng.normal(0, 20, base.shape), 0, 255))
            images.append(np.stack(chans).astype(np.uint8).reshape(-1))
        return {
            "batch_label": label.encode(),
            "labels": [int(y) for y in labels],
            "data": np.stack(images),
            "filenames": [f"fixture_{label.replace(' ', '_')}_{i}.png".encode() for i in range(len(labels))],
        }

    for i, name in enumerate(TRAIN_FILES, start=1):
        _pickle_batch(folder / name, make_batch(f"training batch {i} of 5"))
    _pickle_batch(folder / TEST_FILE, make_batch("testing batch 1 of 1"))
    n = per_class * len(LABEL_NAMES)
    _pickle_batch(folder / META_FILE, {"num_cases_per_batch": n, "label_names": [s.encode() for s in LABEL_NAMES],
                                       "num_vis": 3 * PIXELS})
