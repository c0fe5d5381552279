"""Which commit a benchmark report measured."""
from __future__ import annotations


def commit_label(explicit: str | None, repo) -> str:
    """The commit a device report measured: ``explicit`` (a script's --commit), else ``repo``'s checkout. The device
    machine's copy of the working tree has no .git, so a report made there names it only when told."""
    from rotrnn.train.tracking import git_commit

    found = explicit or git_commit(repo)
    return found if found != "unknown" else "unknown (no .git here: pass --commit)"
