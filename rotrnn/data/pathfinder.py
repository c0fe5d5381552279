"""LRA Pathfinder (32×32, task ``pathfinder``) and Path-X (128×128, task ``pathx``): one loader, a ``resolution``
parameter (S4/S5 ``PathFinderDataset``; S4's src/dataloaders/lra.py).

Raw layout under ``raw_root`` (what ``lra_release.gz`` extracts to; S4's moved layout
``raw_root/pathfinder<res>/`` is accepted too)::

    lra_release/lra_release/pathfinder<res>/curv_contour_length_14/
        metadata/<k>.npy          plain text despite the name: one line per image, space-separated fields
        imgs/<k>/sample_<i>.png   single-channel 8-bit PNG, <res>×<res>

Metadata fields (the generator's ``accumulate_meta`` row): 0 sub-folder (``imgs/<k>``), 1 file name, 2 image index,
3 label (0/1), 4 continuity, 5 contour length, 6 distractor length, 7 paddle length, 8 paddle thickness,
9 paddle margin, 10 number of paddle contrasts. Only the hard level ``curv_contour_length_14`` is used; the outer
``lra_release/pathfinder128`` copy in the archive is ignored (S4/S5 read the inner one).

Examples are listed as S4 does: metadata files sorted by their integer name, lines in file order, the blacklist
skipped. Split: ``random_split`` into N−2⌊0.1N⌋ / ⌊0.1N⌋ / ⌊0.1N⌋ with ``torch.Generator().manual_seed(42)``.
Pixels are stored as uint8 gray levels (n, res², 1), row-major; ``input_scale``/``input_offset`` decode them to
S5's ``Normalize(0.5, 0.5)`` range [−1, 1].
"""
from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

LEVEL = "curv_contour_length_14"
TASKS = {32: "pathfinder", 128: "pathx"}
# S4 lra.py: the one empty image of the release; it lies in curv_baseline, so level 14 never hits it, but the
# check is kept as S4 has it (compared against "<pathfinderRES>/<level>/<sub-folder>/<file>").
BLACKLIST = frozenset({"pathfinder32/curv_baseline/imgs/0/sample_172.png"})
VAL_FRACTION = 0.1
TEST_FRACTION = 0.1
SPLIT_SEED = 42
N_FIELDS = 11  # the generator's row; only fields 0, 1 and 3 are needed, so shorter rows than 4 are rejected
MIN_FIELDS = 4
CHUNK = 1024  # images decoded per batch of worker jobs: bounds memory for Path-X (16 KiB per image)
PREPROCESSING_VERSION = "pathfinder-1"

NOTES = (
    "Only curv_contour_length_14 (the hard level), inner lra_release/lra_release copy. Examples in S4 order: "
    "metadata files sorted numerically, lines in order, S4's blacklist skipped. Split as S4/S5: random_split "
    "N-2*int(0.1N) / int(0.1N) / int(0.1N) with torch.Generator().manual_seed(42), each split in permutation order. "
    "Pixel range: S5's Normalize(0.5, 0.5) giving [-1, 1] (the authors' code is an S5 fork); S4's shipped config "
    "uses [0, 1] instead (center: False). Inputs stored as uint8 gray levels after PIL convert('L'); decoded = "
    "p/255*2-1. sources['<level>/imgs/*/*.png'] is the sha256 of a sha256sum-style manifest of every image used, "
    "in example order."
)


def _check_resolution(resolution: int) -> int:
    if resolution not in TASKS:
        raise ValueError(f"resolution={resolution!r}: must be one of {sorted(TASKS)} (Pathfinder 32, Path-X 128)")
    return resolution


def level_dir(raw_root: Path, resolution: int) -> Path:
    """The ``curv_contour_length_14`` folder: the archive's inner copy, or S4's moved ``pathfinder<res>/``."""
    _check_resolution(resolution)
    raw_root = Path(raw_root)
    candidates = [raw_root / "lra_release" / "lra_release" / f"pathfinder{resolution}" / LEVEL,
                  raw_root / f"pathfinder{resolution}" / LEVEL]
    for c in candidates:
        if (c / "metadata").is_dir():
            return c
    raise FileNotFoundError(f"{candidates[0] / 'metadata'}: Pathfinder metadata folder not found (also tried "
                            f"{candidates[1] / 'metadata'}); extract lra_release.gz under {raw_root}")


def read_examples(level: Path, resolution: int) -> list[tuple[str, int]]:
    """(image path relative to ``level``, label) for every example, in S4's order."""
    meta_dir = level / "metadata"
    files = []
    for p in meta_dir.glob("*.npy"):
        try:
            files.append((int(p.stem), p))
        except ValueError:
            raise ValueError(f"{p}: metadata file name is not an integer batch id") from None
    if not files:
        raise FileNotFoundError(f"{meta_dir}: no metadata/<k>.npy files")
    examples = []
    for _, path in sorted(files):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: metadata is not the plain-text format of the release ({e})") from None
        for lineno, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < MIN_FIELDS:
                raise ValueError(f"{path}:{lineno}: expected {N_FIELDS} space-separated fields (at least "
                                 f"{MIN_FIELDS}: folder, file, index, label), got {len(fields)}")
            try:
                label = int(fields[3])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: label field {fields[3]!r} is not an integer") from None
            if label not in (0, 1):
                raise ValueError(f"{path}:{lineno}: label {label} is not 0 or 1")
            rel = f"{fields[0]}/{fields[1]}"
            if rel.startswith("/") or ".." in rel.split("/"):  # a listed image must stay inside the level folder
                raise ValueError(f"{path}:{lineno}: image path {rel!r} leaves {level}")
            if f"pathfinder{resolution}/{level.name}/{rel}" in BLACKLIST:
                continue
            examples.append((rel, label))
    if not examples:
        raise ValueError(f"{meta_dir}: metadata lists no images")
    return examples


def read_png(path: Path, resolution: int) -> tuple[np.ndarray, str]:
    """(uint8 (res·res,) row-major gray levels, sha256 of the file). Truncated or corrupt files raise ValueError
    naming the file."""
    from PIL import Image

    try:
        data = path.read_bytes()
    except OSError as e:
        raise FileNotFoundError(f"{path}: image listed in the metadata cannot be read ({e.strerror})") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decode everything now: a truncated stream fails here, not later
            gray = np.asarray(im.convert("L"))
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, zlib.error depending on the damage
        raise ValueError(f"{path}: corrupt or truncated PNG ({type(e).__name__}: {e})") from None
    if gray.shape != (resolution, resolution):
        raise ValueError(f"{path}: image is {gray.shape[1]}x{gray.shape[0]}, expected {resolution}x{resolution}")
    return gray.reshape(-1), hashlib.sha256(data).hexdigest()


def split_indices(n: int, seed: int = SPLIT_SEED) -> dict[str, list[int]]:
    """S4 ``PathFinder.setup``: ``random_split`` into train/val/test with ⌊0.1n⌋ for val and test."""
    import torch
    from torch.utils.data import random_split

    n_val, n_test = int(VAL_FRACTION * n), int(TEST_FRACTION * n)
    parts = random_split(range(n), (n - n_val - n_test, n_val, n_test),
                         generator=torch.Generator().manual_seed(seed))
    return {name: list(p.indices) for name, p in zip(("train", "val", "test"), parts)}


def prepare(raw_root: Path, out_dir: Path, resolution: int = 32) -> dict:
    """Raw Pathfinder/Path-X tree → prepared splits (uint8 (n, res², 1)); returns meta. Images are decoded in
    parallel threads and streamed into the output arrays chunk by chunk."""
    from tqdm import tqdm

    from rotrnn.data.prepared import PreparedWriter, release_pages, sha256_file

    _check_resolution(resolution)
    raw_root, out_dir = Path(raw_root), Path(out_dir)
    level = level_dir(raw_root, resolution)
    examples = read_examples(level, resolution)
    splits = split_indices(len(examples))
    length = resolution * resolution
    rel_level = level.relative_to(raw_root).as_posix()
    sources = {f"{rel_level}/metadata/{p.name}": sha256_file(p)
               for p in sorted(level.glob("metadata/*.npy"), key=lambda p: int(p.stem))}
    labels = np.array([y for _, y in examples], dtype=np.int64)
    digests: list[str | None] = [None] * len(examples)

    meta = {
        "task": TASKS[resolution],
        "kind": "continuous",
        "in_dim": 1,
        "l_max": length,
        "target": "class",
        "loss": "cross_entropy",
        "n_classes": 2,
        "resolution": resolution,
        "splits": {s: len(idx) for s, idx in splits.items()},
        "input_scale": 2.0 / 255.0,  # (p/255 - 0.5)/0.5
        "input_offset": -1.0,
        "preprocessing_version": PREPROCESSING_VERSION,
        "sources": sources,
        "notes": NOTES,
    }
    workers = min(8, os.cpu_count() or 1)
    with PreparedWriter(out_dir, meta) as w, ThreadPoolExecutor(workers) as pool:
        for split, idx in splits.items():
            inputs = w.array(split, "inputs", (len(idx), length, 1), np.uint8)
            bar = tqdm(total=len(idx), desc=f"{meta['task']} {split}", unit="img", disable=len(idx) < 10_000)
            for start in range(0, len(idx), CHUNK):
                chunk = idx[start:start + CHUNK]
                decoded = pool.map(lambda i: read_png(level / examples[i][0], resolution), chunk)
                for j, (i, (pixels, digest)) in enumerate(zip(chunk, decoded)):
                    inputs[start + j, :, 0] = pixels
                    digests[i] = digest
                release_pages(inputs)
                bar.update(len(chunk))
            bar.close()
            inputs.flush()
            w.put(split, "lengths", np.full(len(idx), length, dtype=np.int64))
            w.put(split, "labels", labels[idx])
        manifest = "".join(f"{d}  {rel_level}/{rel}\n" for d, (rel, _) in zip(digests, examples))
        w.meta["sources"][f"{rel_level}/imgs/*/*.png"] = hashlib.sha256(manifest.encode()).hexdigest()
    return w.meta  # the written meta.json: splits and checksum filled in by the writer


# generator arguments LRA lists per resolution (LRA's lra_benchmarks/data/pathfinder.py), as they appear in the metadata rows
_FIXTURE_PARAMS = {
    32: {"continuity": 1.0, "paddle_length": 2, "paddle_thickness": 0.5, "paddle_margin": 1, "marker": 1.5},
    128: {"continuity": 1.8, "paddle_length": 5, "paddle_thickness": 1.5, "paddle_margin": 2, "marker": 3.0},
}


def _draw_fixture_image(rng: np.random.Generator, resolution: int, label: int, distractors: int = 3) -> "Image.Image":
    """A Pathfinder-like picture: two markers, dashed curves, ``distractors`` distractor curves. For label 1 one
    curve joins the markers; for label 0 each marker sits on its own curve."""
    from PIL import Image, ImageDraw

    p = _FIXTURE_PARAMS[resolution]
    im = Image.new("L", (resolution, resolution), 0)
    draw = ImageDraw.Draw(im)
    step = max(2.0, resolution / 10)
    width = max(1, round(p["paddle_thickness"]))

    def curve(start, n_steps):
        pts, angle = [np.asarray(start, float)], rng.uniform(0, 2 * np.pi)
        for _ in range(n_steps):
            angle += rng.normal(0, 0.5)
            nxt = np.clip(pts[-1] + step * np.array([np.cos(angle), np.sin(angle)]), 1, resolution - 2)
            pts.append(nxt)
        for a, b in zip(pts[:-1], pts[1:]):  # dashed: draw the first 60 % of each segment
            draw.line([tuple(a), tuple(a + 0.6 * (b - a))], fill=int(rng.integers(150, 256)), width=width)
        return pts

    for _ in range(distractors):
        curve(rng.uniform(2, resolution - 3, size=2), 4)
    first = curve(rng.uniform(2, resolution - 3, size=2), 7)
    ends = [first[0], first[-1] if label == 1 else curve(rng.uniform(2, resolution - 3, size=2), 7)[-1]]
    r = p["marker"]
    for x, y in ends:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    return im


def write_fixture(raw_root: Path, seed: int = 0, resolution: int = 32, n_batches: int = 12,
                  per_batch: int = 3, distractors: int = 3) -> None:
    """A tiny release tree: ``n_batches`` metadata files (numbered past 9, so a text sort would misorder them)
    with ``per_batch`` images each, both labels present. At 32 it also holds S4's blacklisted empty file in
    ``curv_baseline``, which the loader must never touch. The full-size benchmark (`rotrnn bench prepare`) writes
    200 files of 1,000 (the release's 200,000 images) with LRA's number of distractor snakes."""
    _check_resolution(resolution)
    rng = np.random.default_rng(seed)
    root = Path(raw_root) / "lra_release" / "lra_release" / f"pathfinder{resolution}"
    level = root / LEVEL
    (level / "metadata").mkdir(parents=True, exist_ok=True)
    p = _FIXTURE_PARAMS[resolution]
    labels = np.resize([0, 1], n_batches * per_batch)
    rng.shuffle(labels)
    for k in range(n_batches):
        sub = level / "imgs" / str(k)
        sub.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(per_batch):
            label = int(labels[k * per_batch + i])
            _draw_fixture_image(rng, resolution, label, distractors).save(sub / f"sample_{i}.png")
            rows.append(f"imgs/{k} sample_{i}.png {i} {label} {p['continuity']} 14 4 {p['paddle_length']} "
                        f"{p['paddle_thickness']} {p['paddle_margin']} 1\n")
        (level / "metadata" / f"{k}.npy").write_text("".join(rows))
    if resolution == 32:
        empty = root / "curv_baseline" / "imgs" / "0" / "sample_172.png"
        empty.parent.mkdir(parents=True, exist_ok=True)
        empty.write_bytes(b"")
