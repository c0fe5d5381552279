"""`rotrnn data ...` end to end on fixtures: fixtures → prepare → dataset, byte-identical reruns, bad input exits
with a message naming the file, download from a mirror, and the generators."""
from __future__ import annotations

import argparse
import hashlib
import json
import tarfile

import numpy as np
import pytest

from rotrnn.data import load_dataset
from rotrnn.data.cli import register

MINE = ("listops", "imdb", "aan")


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="rotrnn")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return int(args.func(args) or 0)


def tree_digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_registered_in_main_cli():
    from rotrnn.cli import COMMAND_MODULES

    assert "rotrnn.data.cli" in COMMAND_MODULES


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    out = tmp_path_factory.mktemp("fx")
    assert run("data", "fixtures", out / "raw", "--tasks", ",".join(MINE), "--seed", "0") == 0
    return out / "raw"


def test_fixture_layouts(fixtures):
    assert sorted(p.name for p in fixtures.iterdir()) == sorted(MINE)
    lo = fixtures / "listops/lra_release/lra_release/listops-1000"
    assert sorted(p.name for p in lo.iterdir()) == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]
    assert {p.name for p in (fixtures / "imdb/aclImdb/train").iterdir()} >= {"neg", "pos"}
    tsv = fixtures / "aan/lra_release/lra_release/tsv_data"
    assert sorted(p.name for p in tsv.iterdir()) == [f"new_aan_pairs.{s}.tsv" for s in ("eval", "test", "train")]


@pytest.mark.parametrize("task", MINE)
def test_prepare_is_deterministic_and_loads(fixtures, tmp_path, task, capsys):
    assert run("data", "prepare", task, "--raw-root", fixtures / task, "--out", tmp_path / "a") == 0
    assert f"{task}: splits" in capsys.readouterr().out
    assert run("data", "prepare", task, "--raw-root", fixtures / task, "--out", tmp_path / "b") == 0
    a, b = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert a == b and "meta.json" in a and len(a) >= 10  # byte-identical prepared files, meta included
    meta = json.loads((tmp_path / "a/meta.json").read_text())
    ds = load_dataset(tmp_path / "a", "train")
    batch = ds.collate([ds[i] for i in range(len(ds))])
    assert batch["inputs"].shape == (len(ds), int(batch["lengths"].max()))
    assert 0 <= batch["labels"].min() and batch["labels"].max() < meta["n_classes"]
    assert set(batch["labels"].tolist()) == set(range(meta["n_classes"]))  # every class present
    assert (batch["inputs"] < meta["vocab_size"]).all()


def test_fixtures_deterministic_by_seed(tmp_path):
    for name in ("a", "b", "c"):
        run("data", "fixtures", tmp_path / name, "--tasks", "listops,aan", "--seed", "1" if name != "c" else "2")
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b") != tree_digest(tmp_path / "c")


def test_bad_rows_exit_with_file_and_line(fixtures, tmp_path, capsys):
    raw = tmp_path / "raw"
    run("data", "fixtures", raw, "--tasks", "aan")
    p = raw / "aan/lra_release/lra_release/tsv_data/new_aan_pairs.eval.tsv"
    p.write_text(p.read_text() + "1\tonly\tthree\n")
    assert run("data", "prepare", "aan", "--raw-root", raw / "aan", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"{p}:7: expected 5 tab-separated columns, found 3" in err
    assert not (tmp_path / "out").exists() and sorted(q.name for q in tmp_path.iterdir()) == ["raw"]
    assert run("data", "fixtures", tmp_path / "x", "--tasks", "listops,mnist") == 2
    assert "unknown task 'mnist'" in capsys.readouterr().err and not (tmp_path / "x" / "listops").exists()


def test_download_from_mirror_then_prepare(fixtures, tmp_path, capsys):
    """A mirror holding lra_release.gz (built from the fixture tree): download unpacks it, prepare reads it."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "lra_release.gz", "w:gz") as tf:
        tf.add(fixtures / "listops/lra_release", arcname="lra_release")
    raw = tmp_path / "raw"
    assert run("data", "download", "listops", "--raw-root", raw, "--mirror", mirror) == 0
    sha = hashlib.sha256((mirror / "lra_release.gz").read_bytes()).hexdigest()
    assert (raw / "lra_release.gz.sha256").read_text().split()[0] == sha
    assert run("data", "prepare", "listops", "--raw-root", raw, "--out", tmp_path / "p") == 0
    assert load_dataset(tmp_path / "p", "test").meta["splits"]["train"] == 20
    # IMDB has a published sha256: a stand-in archive is rejected and nothing is kept
    (mirror / "aclImdb_v1.tar.gz").write_bytes(b"not the real archive")
    capsys.readouterr()
    assert run("data", "download", "imdb", "--raw-root", tmp_path / "r2", "--mirror", mirror) == 2
    assert "sha256 mismatch: expected c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe" in \
        capsys.readouterr().err
    assert not (tmp_path / "r2/aclImdb_v1.tar.gz").exists()


def test_generate_listops_then_prepare(tmp_path, capsys):
    assert run("data", "generate", "listops", "--out", tmp_path / "raw", "--n-train", "30", "--n-val", "5",
               "--n-test", "5", "--seed", "3", "--min-length", "5", "--max-length", "60", "--max-depth", "5") == 0
    assert run("data", "prepare", "listops", "--raw-root", tmp_path / "raw", "--out", tmp_path / "p") == 0
    ds = load_dataset(tmp_path / "p", "train")
    assert len(ds) == 30 and all(6 <= int(ds[i]["lengths"]) <= 60 for i in range(30))  # 5 < tokens < 60, + <eos>


def test_generate_synthetic(tmp_path, capsys):
    assert run("data", "generate", "synthetic", "--task", "sort", "--out", tmp_path / "s", "--length", "16",
               "--n-train", "4", "--n-val", "2", "--n-test", "2", "--seed", "1") == 0
    meta = load_dataset(tmp_path / "s", "train").meta
    assert meta["l_max"] == 32 and meta["splits"] == {"train": 4, "val": 2, "test": 2}
    y = np.load(tmp_path / "s/test.labels.npy")
    assert y.shape == (2, 32, 1)
    assert run("data", "generate", "synthetic", "--task", "copy", "--out", tmp_path / "t") == 2
    assert "unknown synthetic task 'copy'" in capsys.readouterr().err


@pytest.mark.parametrize("damage,message", [
    ("truncate", "truncated: the header declares"),
    ("empty_list", "testing_list.txt: split list is empty"),
])
def test_speech_bad_input_is_one_line_through_the_command(tmp_path, capsys, damage, message):
    """A truncated clip and an empty split list: exit 2, one line naming the file, nothing written."""
    raw = tmp_path / "raw"
    run("data", "fixtures", raw, "--tasks", "speech35")
    root = raw / "speech35"
    tree = root / "speech_commands_v0.02"  # what the archive unpacks to
    if damage == "truncate":
        clip = sorted((tree / "happy").glob("*.wav"))[0]
        clip.write_bytes(clip.read_bytes()[:44 + 600])
    else:
        (tree / "testing_list.txt").write_text("")
    assert run("data", "prepare", "speech35", "--raw-root", root, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0
    assert not (tmp_path / "out").exists() and sorted(q.name for q in tmp_path.iterdir()) == ["raw"]
