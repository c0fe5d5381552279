"""Task registry: each task's module (imported lazily, so a missing or broken module fails only when that task is
used) and the archive it is downloaded from (URLs, sizes and checksums from the upstream download scripts and pages, docs/sources.md).

Every task module exposes `write_fixture(raw_root, seed=0, **kw)` and `prepare(raw_root, out_dir, **kw) -> meta`;
`TaskSpec.kwargs` holds the keyword arguments the registry binds (Pathfinder vs Path-X resolution). The raw tree
under `--raw-root` is what the archive extracts to; each module's docstring documents it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any


GB = 10**9


@dataclass(frozen=True)
class Archive:
    """One file to fetch. `sha256`/`md5` are the published checksums (None where none is published); `urls` are
    tried in order; `extract` says whether it is a tar/zip to unpack into the raw root.

    Unpacking writes one directory of the raw root, :attr:`own_dir` (`root`, or the file name without its archive
    suffixes): every member must lie in it, or, for an archive without a top-level folder (`flat`), is unpacked
    into it. `max_members` and `max_bytes` cap what unpacking may write (a decompression bomb stops there): each
    dataset's known size with a wide margin, here and nowhere else."""

    filename: str
    urls: tuple[str, ...]
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    extract: bool = True
    note: str = ""
    root: str = ""
    flat: bool = False
    max_members: int = 10_000
    max_bytes: int = 1 * GB

    @property
    def own_dir(self) -> str:
        if self.root:
            return self.root
        name = self.filename
        for suffix in (".gz", ".tgz", ".bz2", ".xz", ".zip", ".tar"):
            name = name.removesuffix(suffix)
        return name


LRA_RELEASE = Archive(
    filename="lra_release.gz",
    urls=("https://storage.googleapis.com/long-range-arena/lra_release.gz",),
    # no checksum is published; about 8.23 GB compressed, 18.6 GB unpacked (one user's report, unconfirmed)
    note="gzip'd tar of the whole Long Range Arena release; shared by listops, aan, pathfinder and pathx, so one "
         "raw root serves all four (it is extracted once)",
    root="lra_release",
    # 18.6 GB unpacked (reported); Pathfinder 32/64/128/256 x 3 levels x 200k images plus an outer Path-X copy is
    # about 3.2M files
    max_members=6_000_000, max_bytes=40 * GB,
)

IMDB_ARCHIVE = Archive(
    filename="aclImdb_v1.tar.gz",
    urls=("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",),
    sha256="c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
    size=84_125_825,
    root="aclImdb",
    max_members=200_000, max_bytes=2 * GB,  # 100k reviews (25k train, 25k test, 50k unlabelled), about 0.5 GB
)

CIFAR_ARCHIVE = Archive(
    filename="cifar-10-python.tar.gz",
    urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    md5="c58f30108f718f92721af3b95e74349a",
    size=170_498_071,
    root="cifar-10-batches-py",
    max_members=100, max_bytes=1 * GB,  # 6 pickled batches, meta and readme: about 0.18 GB
)

SPEECH_ARCHIVE = Archive(
    filename="speech_commands_v0.02.tar.gz",
    urls=("http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
          "https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.02.tar.gz"),
    sha256="af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
    size=2_428_923_189,
    note="the tar has no top-level folder (word folders, the split lists, README.md, LICENSE): it is unpacked "
         "into its own directory, speech_commands_v0.02/",
    root="speech_commands_v0.02", flat=True,
    max_members=300_000, max_bytes=10 * GB,  # 105,829 clips plus noise and lists, about 2.4 GB of WAV
)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    module: str
    archives: tuple[Archive, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    #: examples per split of the full dataset as published (what `prepare` writes at full size): the job sizes of
    #: rotrnn.pipeline.sizing use them until the prepared data's meta.json has the real counts
    splits: dict[str, int] = field(default_factory=dict)

    def load(self) -> ModuleType:
        try:
            return importlib.import_module(self.module)
        except ImportError as e:
            raise ImportError(f"task {self.name!r}: cannot import its module {self.module} ({e})") from e

    def write_fixture(self, raw_root: Path, seed: int = 0) -> None:
        self.load().write_fixture(Path(raw_root), seed, **self.kwargs)

    def prepare(self, raw_root: Path, out_dir: Path) -> dict[str, Any]:
        return self.load().prepare(Path(raw_root), Path(out_dir), **self.kwargs)


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("listops", "rotrnn.data.listops", (LRA_RELEASE,), description="LRA ListOps, 10 classes",
                 splits={"train": 96_000, "val": 2_000, "test": 2_000}),
        TaskSpec("imdb", "rotrnn.data.imdb", (IMDB_ARCHIVE,), description="LRA Text: IMDB at character level",
                 splits={"train": 25_000, "test": 25_000}),
        TaskSpec("aan", "rotrnn.data.aan", (LRA_RELEASE,), description="LRA Retrieval: AAN document pairs",
                 splits={"train": 147_086, "val": 18_090, "test": 17_437}),
        TaskSpec("cifar", "rotrnn.data.cifar", (CIFAR_ARCHIVE,), description="LRA Image: CIFAR-10 grayscale",
                 splits={"train": 45_000, "val": 5_000, "test": 10_000}),
        TaskSpec("pathfinder", "rotrnn.data.pathfinder", (LRA_RELEASE,), {"resolution": 32},
                 description="LRA Pathfinder 32x32", splits={"train": 160_000, "val": 20_000, "test": 20_000}),
        TaskSpec("pathx", "rotrnn.data.pathfinder", (LRA_RELEASE,), {"resolution": 128},
                 description="LRA Path-X (Pathfinder 128x128)",
                 splits={"train": 160_000, "val": 20_000, "test": 20_000}),
        TaskSpec("speech35", "rotrnn.data.speech", (SPEECH_ARCHIVE,),
                 description="Speech Commands v0.02, 35 classes, raw 16 kHz (+ 8 kHz test)",
                 splits={"train": 84_843, "val": 9_981, "test": 11_005, "test_8k": 11_005,
                         "test_8k_resampled": 11_005}),
    )
}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None
