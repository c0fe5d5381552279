"""The record each suite's report folder holds: which command made it, at which commit, from which runs, and the
files it wrote. Written by `rotrnn report` (build.py) and `rotrnn analysis report`; read by the index (index.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rotrnn.atomic import write_text

PROVENANCE = "provenance.json"


def write_provenance(out: Path, record: dict[str, Any], written: list[Path]) -> Path:
    """Write ``record`` plus the sorted list of ``written`` files under ``out`` to out/provenance.json."""
    files = sorted(p.relative_to(out).as_posix() for p in written if p.is_relative_to(out))
    path = out / PROVENANCE
    write_text(path, json.dumps({**record, "files": files}, indent=2) + "\n")
    return path
