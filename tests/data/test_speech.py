"""Speech Commands 35: fixture WAV tree → prepare → dataset, against a direct float64 computation of S4's
processing (official lists, S4 label ids, end padding to 16000, ÷2^15 twice, per-step train normalisation, ::2
for test_8k), determinism, and bad-input errors."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from rotrnn.data import load_dataset, speech

PER_CLASS = (2, 1, 1)  # write_fixture default (train, val, test) clips per word


def dir_bytes(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def assert_nothing_left(parent):
    assert not parent.exists() or not any(parent.iterdir()), list(parent.iterdir())


def reference_splits(raw):
    """Independent split assignment and order: words in S4's order, names sorted, official lists."""
    val = set((raw / "validation_list.txt").read_text().split())
    test = set((raw / "testing_list.txt").read_text().split())
    out = {"train": [], "val": [], "test": []}
    for word in speech.CLASSES:
        for p in sorted((raw / word).glob("*.wav")):
            rel = f"{word}/{p.name}"
            out["val" if rel in val else "test" if rel in test else "train"].append(rel)
    return out


def reference_waves(raw, rels):
    """S4: float samples in [-1, 1] (what torchaudio.load gives), ÷2^15, zero-padded at the end to 16000."""
    x = np.zeros((len(rels), 16000))
    for i, rel in enumerate(rels):
        w, rate = sf.read(raw / rel, dtype="float64")
        assert rate == 16000
        x[i, :len(w)] = w / 2 ** 15
    return x


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    speech.write_fixture(root / "raw", seed=0)
    meta = speech.prepare(root / "raw", root / "out")
    return root, meta


def test_fixture_is_the_real_layout(prepared):
    root, _ = prepared
    assert sorted(p.name for p in (root / "raw").iterdir()) == [speech.TREE]  # the archive's own directory
    raw = root / "raw" / speech.TREE
    words = sorted(p.name for p in raw.iterdir() if p.is_dir())
    assert words == sorted([*speech.CLASSES, "_background_noise_"])
    assert (raw / "validation_list.txt").is_file() and (raw / "testing_list.txt").is_file()
    clip = next((raw / "marvin").glob("*_nohash_*.wav"))
    info = sf.info(clip)
    assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
    lengths = [sf.info(p).frames for w in speech.CLASSES for p in (raw / w).glob("*.wav")]
    assert min(lengths) < 16000 and max(lengths) == 16000  # padding is exercised, and a full-length clip too
    assert sf.info(raw / "_background_noise_" / "white_noise.wav").frames > 16000  # would be refused if read


def test_meta_label_ids_and_batch_shapes(prepared):
    root, meta = prepared
    n = len(speech.CLASSES)
    assert meta["splits"] == {"train": PER_CLASS[0] * n, "val": PER_CLASS[1] * n, "test": PER_CLASS[2] * n,
                              "test_8k": PER_CLASS[2] * n, "test_8k_resampled": PER_CLASS[2] * n}
    assert meta["step"] == {"test_8k": 2, "test_8k_resampled": 2} and meta["l_max"] == 16000 and meta["in_dim"] == 1
    assert meta["n_classes"] == 35 and meta["loss"] == "cross_entropy"
    # S4's ALL_CLASSES order, not alphabetical
    ids = {w: i for i, w in enumerate(meta["class_names"])}
    assert (ids["bed"], ids["yes"], ids["backward"], ids["zero"]) == (0, 16, 17, 34)
    assert np.load(root / "out" / "train.inputs.npy", mmap_mode="r").dtype == np.int16
    ref = reference_splits(root / "raw" / speech.TREE)
    for split in ("train", "val", "test", "test_8k", "test_8k_resampled"):
        ds = load_dataset(root / "out", split)
        batch = ds.collate([ds[i] for i in range(len(ds))])
        T = 8000 if split.startswith("test_8k") else 16000
        assert batch["inputs"].shape == (len(ds), T, 1) and batch["inputs"].dtype == torch.float32
        assert batch["lengths"].tolist() == [T] * len(ds)
        rels = ref["test" if split.startswith("test_8k") else split]
        assert batch["labels"].tolist() == [speech.CLASSES.index(r.split("/")[0]) for r in rels]
        assert set(batch["labels"].tolist()) == set(range(35))  # every word in every split
    assert ds.step == 2


def test_values_match_direct_s4_normalisation(prepared):
    """Decoded inputs equal (x/2^15/2^15 − mean_t)/(std_t + 1e-5) with per-step train statistics (unbiased std),
    up to the int16 rounding (input_scale/2)."""
    root, meta = prepared
    raw = root / "raw" / speech.TREE
    ref = reference_splits(raw)
    train = torch.from_numpy(reference_waves(raw, ref["train"]))
    mean, std = train.mean(dim=0), train.std(dim=0)  # what S4's normalize_all_data computes per time index
    tol = meta["input_scale"] / 2 + 1e-6
    for split in ("train", "val", "test"):
        picks = [0, 3, len(ref[split]) - 1]
        x = torch.from_numpy(reference_waves(raw, [ref[split][k] for k in picks]))
        expected = ((x - mean) / (std + 1e-5)).numpy()
        ds = load_dataset(root / "out", split)
        got = ds.collate([ds[k] for k in picks])["inputs"][:, :, 0].numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol)
    # normalised train data: per-step mean ≈ 0; the ÷2^15 quirk keeps the overall std well below 1 (S4's src/dataloaders/datasets/sc.py)
    ds = load_dataset(root / "out", "train")
    all_train = ds.collate([ds[k] for k in range(len(ds))])["inputs"][:, :, 0]
    assert all_train.mean(dim=0).abs().max() < 1e-3
    assert 0.01 < float(all_train.std()) < 0.9


def test_test_8k_is_the_normalised_test_set_decimated(prepared):
    root, _ = prepared
    t16, t8 = load_dataset(root / "out", "test"), load_dataset(root / "out", "test_8k")
    a = t16.collate([t16[i] for i in range(len(t16))])
    b = t8.collate([t8[i] for i in range(len(t8))])
    assert torch.equal(b["inputs"], a["inputs"][:, ::2])
    assert torch.equal(b["labels"], a["labels"])
    stored = np.load(root / "out" / "test_8k.inputs.npy")
    assert not stored[:, 8000:].any()  # nothing beyond the 8000 samples of the half-rate clips


def test_test_8k_resampled_is_the_band_limited_resampling(prepared):
    """Same clips and labels as test_8k, length 8000, float32 decoded, equal to torchaudio's resampling of the
    normalised 16 kHz test set up to the int16 rounding, and different from plain decimation."""
    import torchaudio.functional as AF

    root, meta = prepared
    t16, rs, dec = (load_dataset(root / "out", s) for s in ("test", "test_8k_resampled", "test_8k"))
    a, b, c = (d.collate([d[i] for i in range(len(d))]) for d in (t16, rs, dec))
    assert b["inputs"].shape == c["inputs"].shape == (len(t16), 8000, 1) and b["inputs"].dtype == torch.float32
    assert b["lengths"].tolist() == [8000] * len(t16) and rs.step == 2
    assert torch.equal(b["labels"], a["labels"])
    want = AF.resample(a["inputs"][..., 0].double(), 2, 1).float()
    torch.testing.assert_close(b["inputs"][..., 0], want.clamp(-meta["input_scale"] * 32767, meta["input_scale"] * 32767),
                               rtol=0, atol=meta["input_scale"] / 2 + 1e-6)
    assert not torch.allclose(b["inputs"], c["inputs"])
    assert not np.load(root / "out" / "test_8k_resampled.inputs.npy")[:, 8000:].any()


def test_prepare_is_byte_identical(prepared, tmp_path):
    root, meta = prepared
    again = speech.prepare(root / "raw", tmp_path / "again")
    assert again["checksum"] == meta["checksum"]
    assert dir_bytes(tmp_path / "again") == dir_bytes(root / "out")


def _replace_clip(raw, samples, **kw):
    path = sorted((raw / "happy").glob("*.wav"))[0]
    sf.write(path, samples, kw.pop("rate", 16000), format="WAV", **kw)
    return f"happy/{path.name}"


TONE = (np.sin(np.arange(4000) / 7) * 8000).astype(np.int16)


@pytest.mark.parametrize("damage, error, pattern", [
    (lambda raw: _replace_clip(raw, TONE, rate=8000, subtype="PCM_16"), ValueError,
     r"sample rate 8000 Hz, expected 16000"),
    (lambda raw: _replace_clip(raw, np.stack([TONE, TONE], 1), subtype="PCM_16"), ValueError,
     r"2 channels, expected mono"),
    (lambda raw: _replace_clip(raw, TONE, subtype="PCM_24"), ValueError, r"sample format PCM_24, expected 16-bit"),
    (lambda raw: _replace_clip(raw, np.resize(TONE, 16001), subtype="PCM_16"), ValueError,
     r"16001 samples, expected 1\.\.16000"),
], ids=["rate", "channels", "width", "too_long"])
def test_bad_wav_names_the_file_and_leaves_nothing(tmp_path, damage, error, pattern):
    raw = tmp_path / "raw"
    speech.write_fixture(raw)
    rel = damage(raw / speech.TREE)
    with pytest.raises(error, match=rf"happy/{rel.split('/')[1]}: {pattern}"):
        speech.prepare(raw, tmp_path / "prep" / "speech35")
    assert_nothing_left(tmp_path / "prep")


def _corrupt_clip(raw):
    path = sorted((raw / "happy").glob("*.wav"))[0]
    path.write_bytes(b"RIFF" + b"\x00" * 20)
    return path


def _truncate_clip(raw):
    """Cut a clip's data short while its header still declares the full length (an interrupted copy)."""
    path = sorted((raw / "happy").glob("*.wav"))[0]
    data = path.read_bytes()
    declared = int.from_bytes(data[40:44], "little")  # a plain 44-byte header: the data chunk's size at 40
    assert data[36:40] == b"data" and declared > 1000
    path.write_bytes(data[:44 + 600])
    return path


def _append_to_list(raw, name, line):
    with open(raw / name, "a") as f:
        f.write(line + "\n")


@pytest.mark.parametrize("damage, error, pattern", [
    (lambda raw: (raw / "validation_list.txt").unlink(), FileNotFoundError,
     r"validation_list\.txt: split list missing"),
    (lambda raw: (raw / "testing_list.txt").unlink(), FileNotFoundError, r"testing_list\.txt: split list missing"),
    (lambda raw: _append_to_list(raw, "testing_list.txt", "wow/0000beef_nohash_0.wav"), FileNotFoundError,
     r"testing_list\.txt: lists 'wow/0000beef_nohash_0\.wav', which is not under"),
    (lambda raw: _append_to_list(raw, "validation_list.txt", "_background_noise_/white_noise.wav"), ValueError,
     r"validation_list\.txt:36: '_background_noise_' is not one of the 35 words"),
    (lambda raw: _corrupt_clip(raw), ValueError,
     r"happy/[0-9a-f]{8}_nohash_\d\.wav: unreadable WAV \(Format not recognised"),
    (lambda raw: __import__("shutil").rmtree(raw / "sheila"), FileNotFoundError, r"sheila: word folder missing"),
    (lambda raw: _truncate_clip(raw), ValueError,
     r"happy/[0-9a-f]{8}_nohash_\d\.wav: truncated: the header declares \d+ samples but the file holds 300"),
    (lambda raw: (raw / "testing_list.txt").write_text(""), ValueError, r"testing_list\.txt: split list is empty"),
], ids=["no_val_list", "no_test_list", "listed_clip_missing", "list_outside_words", "corrupt_wav", "no_word_dir",
        "truncated_wav", "empty_test_list"])
def test_bad_tree_names_the_file_and_leaves_nothing(tmp_path, damage, error, pattern):
    raw = tmp_path / "raw"
    speech.write_fixture(raw)
    damage(raw / speech.TREE)
    with pytest.raises(error, match=pattern):
        speech.prepare(raw, tmp_path / "prep" / "speech35")
    assert_nothing_left(tmp_path / "prep")
