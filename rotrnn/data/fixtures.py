"""`rotrnn data fixtures`: tiny raw trees, in each task's exact upstream layout, written by the task modules'
`write_fixture` so that `rotrnn data prepare` runs on them unchanged."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

from rotrnn import atomic
from rotrnn.data.tasks import get_task


def write_fixtures(out: str | Path, tasks: Iterable[str], seed: int = 0) -> dict[str, Path]:
    """Write `out/<task>/` for each task (replacing an existing one, via a temp dir and a rename)."""
    out = Path(out)
    specs = [get_task(t) for t in tasks]  # unknown names fail before anything is written
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for spec in specs:
        tmp = atomic.mkdtemp(f".{spec.name}.tmp-", out)
        try:
            spec.write_fixture(tmp, seed)
            dst = out / spec.name
            if dst.exists():
                shutil.rmtree(dst)
            tmp.rename(dst)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        written[spec.name] = dst
    return written
