"""Speech Commands v0.02, all 35 words, raw 16 kHz waveforms (task ``speech35``; S4/S5 ``_process_all``,
S4's src/dataloaders/datasets/sc.py).

Raw layout under ``raw_root/speech_commands_v0.02/`` (the archive has no top-level folder, so it is unpacked into a
directory of its own, :data:`TREE`; a ``raw_root`` holding the tree directly, unpacked by hand, is read too)::

    <word>/<speaker-hash>_nohash_<n>.wav     35 word folders, 16 kHz mono 16-bit PCM, at most 1 s
    _background_noise_/*.wav                 long noise recordings: never read
    validation_list.txt  testing_list.txt    relative paths ``<word>/<file>.wav``, one per line
    LICENSE  README.md

Processing, as S4/S5 do it: walk the word folders in S4's ``ALL_CLASSES`` order (label = position in that list,
not alphabetical); a clip listed in ``validation_list.txt`` is val, in ``testing_list.txt`` test, anything else
train; zero-pad at the end to 16,000 samples; scale as S4 does (float samples in [−1, 1], then a further ÷2^15);
normalise every time step t with the training set's mean_t and (unbiased) std_t:
x_t ← (x_t − mean_t)/(std_t + 1e-5), training statistics applied to val and test. The 8 kHz zero-shot split
``test_8k`` is the normalised test set decimated by 2 (``x[::2]``, no anti-alias filter, S4's resolution-2 collate
and S5's ``subsample``), length 8,000, with ``meta["step"]["test_8k"] = 2`` so models can rescale their step.
``test_8k_resampled`` is the same normalised test set taken to 8 kHz by band-limited resampling instead
(``torchaudio.functional.resample``, windowed-sinc low-pass at the new Nyquist frequency), also step 2: the decimated
split keeps what lies above 4 kHz as aliases, the resampled one removes it.

Storage: the normalised values are kept as int16 with one global ``input_scale`` (decoded = stored·scale). The scale
is the analytic bound max_t (2^-15 + |mean_t|)/(std_t + 1e-5) over 32767, so no value can overflow; its
quantisation step is no coarser than the 16-bit input's own resolution after normalisation. WAVs are read with
soundfile (torchaudio.load would need TorchCodec/FFmpeg).
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from rotrnn.data.tasks import SPEECH_ARCHIVE

TREE = SPEECH_ARCHIVE.own_dir  # the directory of the raw root the archive is unpacked into


def tree(raw_root: Path) -> Path:
    """Where the Speech Commands files are: ``raw_root/speech_commands_v0.02``, or ``raw_root`` itself when it
    holds the split lists (a tree unpacked by hand)."""
    raw_root = Path(raw_root)
    return raw_root if (raw_root / VAL_LIST).is_file() and not (raw_root / TREE).is_dir() else raw_root / TREE


# S4 sc.py ALL_CLASSES: the label id is the index here
CLASSES = (
    "bed", "cat", "down", "five", "forward", "go", "house", "left", "marvin", "no", "on", "right", "sheila",
    "tree", "up", "visual", "yes", "backward", "bird", "dog", "eight", "follow", "four", "happy", "learn", "nine",
    "off", "one", "seven", "six", "stop", "three", "two", "wow", "zero",
)
SAMPLE_RATE = 16_000
LENGTH = 16_000
STEP_8K = 2
RESAMPLED_8K = "test_8k_resampled"  # the 8 kHz test split made by band-limited resampling
NOISE_DIR = "_background_noise_"
VAL_LIST = "validation_list.txt"
TEST_LIST = "testing_list.txt"
PRE_SCALE = 2.0 ** -30  # int16 → float in [−1, 1] (÷2^15, what torchaudio.load returns), then S4's own ÷2^15
EPS = 1e-5  # S4 normalize_all_data: (x − mean)/(std + 1e-5)
INT16_MAX = 32767
ROWS = 256  # clips normalised per chunk: bounds memory on the ~2.7 GB train split
RESAMPLE_ROWS = 16  # clips per resampling call: 256 at once peaked at 580 MB (conv1d unfolds its input)
PREPROCESSING_VERSION = "speech35-2"  # 2: test_8k_resampled

NOTES = (
    "S4/S5 _process_all for SC35: word folders in S4's ALL_CLASSES order (files sorted by name within a folder; S4 "
    "uses os.listdir order), official validation/testing lists, zero-padding at the end to 16000, S4's scaling "
    "(int16/2^15, then /2^15 again) and per-time-step normalisation with training mean and unbiased std plus 1e-5 "
    "(statistics in float64 here, float32 in S4). Normalised values are stored as int16 with a global input_scale "
    "(rounding error at most input_scale/2). test_8k = the normalised test set decimated by 2 (x[::2], no "
    "anti-alias filter), length 8000, zero beyond 8000 in storage, step 2; test_8k_resampled = the same normalised "
    "test set resampled with torchaudio.functional.resample(x, 2, 1) (band-limited), stored the same way, step 2. "
    "All lengths are the full 16000 (8000): "
    "after normalisation the padded tail is not zero and S4/S5 feed it to the model. "
    "sources['*/*.wav'] is the sha256 of a sha256sum-style manifest of every clip used, in path order."
)


def read_split_list(path: Path) -> list[str]:
    """The relative clip paths of an official split list; every entry must be ``<word>/<file>.wav`` of a known
    word (errors name the file and line)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split list missing (it ships in speech_commands_v0.02.tar.gz)")
    entries = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        rel = line.strip()
        if not rel:
            continue
        parts = rel.split("/")
        if len(parts) != 2 or not parts[1].endswith(".wav"):
            raise ValueError(f"{path}:{lineno}: expected '<word>/<file>.wav', got {rel!r}")
        if parts[0] not in CLASSES:
            raise ValueError(f"{path}:{lineno}: {parts[0]!r} is not one of the 35 words")
        entries.append(rel)
    if not entries:
        raise ValueError(f"{path}: split list is empty (the official list names thousands of clips)")
    return entries


def list_clips(raw_root: Path) -> dict[str, list[tuple[str, int]]]:
    """split → [(relative path, label)], word folders in CLASSES order, files sorted within each folder."""
    raw_root = Path(raw_root)
    val = set(read_split_list(raw_root / VAL_LIST))
    test = set(read_split_list(raw_root / TEST_LIST))
    both = val & test
    if both:
        raise ValueError(f"{raw_root / TEST_LIST}: {sorted(both)[0]!r} is also in {VAL_LIST}")
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    found = set()
    for label, word in enumerate(CLASSES):
        folder = raw_root / word
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: word folder missing (35 are expected)")
        for p in sorted(folder.glob("*.wav")):
            rel = f"{word}/{p.name}"
            found.add(rel)
            splits["val" if rel in val else "test" if rel in test else "train"].append((rel, label))
    for list_name, entries in ((VAL_LIST, val), (TEST_LIST, test)):
        missing = sorted(entries - found)
        if missing:
            raise FileNotFoundError(f"{raw_root / list_name}: lists {missing[0]!r}, which is not under {raw_root}"
                                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    for split, clips in splits.items():
        if not clips:
            where = {"val": raw_root / VAL_LIST, "test": raw_root / TEST_LIST}.get(split)
            raise ValueError(f"{raw_root}: split {split!r} has no clips" + (
                f" (every clip is listed in {VAL_LIST} or {TEST_LIST})" if where is None else f" ({where})"))
    return splits


def declared_data_bytes(data: bytes, path: Path) -> int:
    """The size of the WAV file's `data` chunk as its header declares it (RIFF: 12-byte header, then chunks of
    id, little-endian size, payload padded to an even length)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if chunk == b"data":
            return size
        pos += 8 + size + (size & 1)
    raise ValueError(f"{path}: no data chunk")


def read_clip(path: Path) -> tuple[np.ndarray, str]:
    """(int16 samples, sha256 of the file); anything but 16 kHz mono 16-bit PCM WAV of 1..16000 samples raises
    ValueError naming the file."""
    import soundfile as sf

    data = path.read_bytes()
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            fmt, subtype, rate, channels = f.format, f.subtype, f.samplerate, f.channels
            if fmt not in ("WAV", "WAVEX"):
                raise ValueError(f"{path}: container {fmt}, expected WAV")
            if subtype != "PCM_16":
                raise ValueError(f"{path}: sample format {subtype}, expected 16-bit PCM (PCM_16)")
            if rate != SAMPLE_RATE:
                raise ValueError(f"{path}: sample rate {rate} Hz, expected {SAMPLE_RATE}")
            if channels != 1:
                raise ValueError(f"{path}: {channels} channels, expected mono")
            x = f.read(dtype="int16")
    except sf.LibsndfileError as e:
        raise ValueError(f"{path}: unreadable WAV ({getattr(e, 'error_string', e)})") from None
    declared = declared_data_bytes(data, path) // 2  # mono 16-bit: 2 bytes a frame
    if len(x) != declared:  # libsndfile reads what is there: a cut-off file would pass as a short clip
        raise ValueError(f"{path}: truncated: the header declares {declared} samples but the file holds {len(x)}")
    if not 1 <= len(x) <= LENGTH:
        raise ValueError(f"{path}: {len(x)} samples, expected 1..{LENGTH} (at most one second)")
    return x, hashlib.sha256(data).hexdigest()


def normalise(raw: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """S4's per-time-step normalisation of int16 clips (…, LENGTH) in float64: (x·2^-30 − mean_t)/(std_t + eps)."""
    return (raw.astype(np.float64) * PRE_SCALE - mean) / (std + EPS)


def resample_8k(stored: np.ndarray, scale: float) -> np.ndarray:
    """Normalised int16 clips (n, 16000) -> (n, 8000) int16 at 8 kHz by torchaudio's band-limited resampling, in the
    same storage scale. The low-pass filter can overshoot the 16 kHz extremes slightly: values are clipped to int16."""
    import torch
    import torchaudio.functional as AF

    out = np.empty(stored.shape[:-1] + (LENGTH // STEP_8K,), dtype=np.int16)
    for a in range(0, stored.shape[0], RESAMPLE_ROWS):  # the convolution's unfolded input is ~14x the clips
        x = torch.from_numpy(stored[a:a + RESAMPLE_ROWS].astype(np.float64) * scale)
        y = AF.resample(x, orig_freq=STEP_8K, new_freq=1)[..., : LENGTH // STEP_8K].numpy()
        out[a:a + RESAMPLE_ROWS] = np.clip(np.rint(y / scale), -INT16_MAX, INT16_MAX)
    return out


def prepare(raw_root: Path, out_dir: Path) -> dict:
    """Raw Speech Commands tree → prepared train/val/test (int16 (n, 16000, 1)) and test_8k; returns meta.

    Two passes over the output arrays, never a whole split in memory: clips are streamed into the memmaps as raw
    int16 while the training sums per time step accumulate, then each split is normalised and quantised in place
    chunk by chunk."""
    from tqdm import tqdm

    from rotrnn.data.prepared import PreparedWriter, release_pages, sha256_file

    raw_root, out_dir = tree(raw_root), Path(out_dir)
    splits = list_clips(raw_root)
    n_train = len(splits["train"])
    if n_train < 2:
        raise ValueError(f"{raw_root}: need at least 2 training clips for the per-step std, found {n_train}")
    n_test = len(splits["test"])
    half = LENGTH // STEP_8K
    meta = {
        "task": "speech35",
        "kind": "continuous",
        "in_dim": 1,
        "l_max": LENGTH,
        "target": "class",
        "loss": "cross_entropy",
        "n_classes": len(CLASSES),
        "class_names": list(CLASSES),
        "sample_rate": SAMPLE_RATE,
        "splits": {s: len(c) for s, c in splits.items()} | {"test_8k": n_test, RESAMPLED_8K: n_test},
        "step": {"test_8k": STEP_8K, RESAMPLED_8K: STEP_8K},
        "input_offset": 0.0,
        "preprocessing_version": PREPROCESSING_VERSION,
        "sources": {VAL_LIST: sha256_file(raw_root / VAL_LIST), TEST_LIST: sha256_file(raw_root / TEST_LIST)},
        "notes": NOTES,
    }
    total = np.zeros(LENGTH, np.float64)  # per-step sums of the int16 values (exact in float64)
    total_sq = np.zeros(LENGTH, np.float64)
    digests: dict[str, str] = {}
    with PreparedWriter(out_dir, meta) as w:
        arrays = {}
        for split, clips in splits.items():
            x = w.array(split, "inputs", (len(clips), LENGTH, 1), np.int16)
            for i, (rel, _) in enumerate(tqdm(clips, desc=f"speech35 {split}", unit="clip",
                                              disable=len(clips) < 10_000)):
                clip, digests[rel] = read_clip(raw_root / rel)
                x[i, :len(clip), 0] = clip
                x[i, len(clip):, 0] = 0
                if split == "train":
                    c = clip.astype(np.float64)
                    total[:len(c)] += c
                    total_sq[:len(c)] += c * c
                if (i + 1) % ROWS == 0:
                    release_pages(x)
            arrays[split] = x
            w.put(split, "lengths", np.full(len(clips), LENGTH, dtype=np.int64))
            w.put(split, "labels", np.array([y for _, y in clips], dtype=np.int64))

        mean_int = total / n_train
        var_int = np.maximum(total_sq - total * mean_int, 0.0) / (n_train - 1)  # unbiased, like torch .std()
        mean, std = mean_int * PRE_SCALE, np.sqrt(var_int) * PRE_SCALE
        bound = float(np.max((2.0 ** -15 + np.abs(mean)) / (std + EPS)))  # |normalised| can never exceed this
        scale = bound / INT16_MAX
        w.meta["input_scale"] = scale

        test_8k = w.array("test_8k", "inputs", (n_test, LENGTH, 1), np.int16)
        test_rs = w.array(RESAMPLED_8K, "inputs", (n_test, LENGTH, 1), np.int16)
        for split, x in arrays.items():
            for start in range(0, x.shape[0], ROWS):
                rows = slice(start, start + ROWS)
                q = np.rint(normalise(x[rows, :, 0], mean, std) / scale)
                x[rows, :, 0] = np.clip(q, -INT16_MAX, INT16_MAX).astype(np.int16)  # clip: float round-off only
                if split == "test":  # S5 subsample: decimate the normalised 16 kHz test set
                    test_8k[rows, :half, 0] = x[rows, ::STEP_8K, 0]
                    test_rs[rows, :half, 0] = resample_8k(x[rows, :, 0], scale)
                    release_pages(test_8k)
                    release_pages(test_rs)
                release_pages(x)
            x.flush()
        test_8k.flush()
        test_rs.flush()
        w.put("test_8k", "lengths", np.full(n_test, half, dtype=np.int64))
        w.put("test_8k", "labels", np.array([y for _, y in splits["test"]], dtype=np.int64))
        w.put(RESAMPLED_8K, "lengths", np.full(n_test, half, dtype=np.int64))
        w.put(RESAMPLED_8K, "labels", np.array([y for _, y in splits["test"]], dtype=np.int64))
        manifest = "".join(f"{digests[rel]}  {rel}\n" for rel in sorted(digests))
        w.meta["sources"]["*/*.wav"] = hashlib.sha256(manifest.encode()).hexdigest()
    return w.meta  # the written meta.json: splits and checksum filled in by the writer


def _write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> None:
    """Encoded in memory, then written: soundfile's close() of a real file fsyncs, 3 ms a clip (6 minutes for the
    105,829 clips `rotrnn bench prepare` writes)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, rate, subtype=subtype, format="WAV")
    path.write_bytes(buf.getvalue())


def write_fixture(raw_root: Path, seed: int = 0, per_class: tuple[int, int, int] = (2, 1, 1),
                  totals: tuple[int, int, int] | None = None, p_full: float = 0.15,
                  short: tuple[int, int] = (400, 2400)) -> None:
    """A tiny Speech Commands tree in the real layout: every one of the 35 word folders with ``per_class`` =
    (train, val, test) clips (16 kHz mono int16; a share ``p_full`` exactly 16000 samples, the rest ``short``
    (low, high) samples long, so that padding matters), the two split lists, and ``_background_noise_`` with a clip
    longer than one second, which the loader must never read. ``totals`` = (train, val, test) clips in all, spread
    over the words as evenly as they divide, replaces ``per_class``: the full-size benchmark (`rotrnn bench
    prepare`) writes the real 84,843 / 9,981 / 11,005 clips, most of them a full second."""
    rng = np.random.default_rng(seed)
    n_words = len(CLASSES)
    raw_root = Path(raw_root) / TREE
    raw_root.mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {"val": [], "test": []}
    for label, word in enumerate(CLASSES):
        folder = raw_root / word
        folder.mkdir(exist_ok=True)
        counts = per_class if totals is None else [t // n_words + (label < t % n_words) for t in totals]
        for split, count in zip(("train", "val", "test"), counts):
            for k in range(count):
                speaker = "".join(rng.choice(list("0123456789abcdef"), size=8))
                name = f"{speaker}_nohash_{k}.wav"
                n = LENGTH if rng.random() < p_full else int(rng.integers(*short))
                t = np.arange(n) / SAMPLE_RATE
                tone = np.sin(2 * np.pi * (200 + 40 * label) * t) * np.hanning(n)
                wave = rng.uniform(2000, 20000) * tone + rng.normal(0, 300, n)
                _write_wav(folder / name, np.clip(np.rint(wave), -32768, 32767).astype(np.int16))
                if split != "train":
                    lists[split].append(f"{word}/{name}")
    (raw_root / VAL_LIST).write_text("".join(f"{r}\n" for r in lists["val"]))
    (raw_root / TEST_LIST).write_text("".join(f"{r}\n" for r in lists["test"]))
    noise = raw_root / NOISE_DIR
    noise.mkdir(exist_ok=True)
    _write_wav(noise / "white_noise.wav", rng.normal(0, 3000, 2 * LENGTH).astype(np.int16))
    (noise / "README.md").write_text("Background noise clips (fixture).\n")
    (raw_root / "README.md").write_text("Speech Commands v0.02 (fixture tree for tests).\n")
    (raw_root / "LICENSE").write_text("CC BY 4.0 (fixture)\n")
