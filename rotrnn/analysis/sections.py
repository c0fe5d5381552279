"""What every experiment's report section is made of: the :class:`Section` it returns to the report
(`report.py`), and the helpers that write its tables and figures. Below both the experiments and the report, so that
imports flow one way (report -> experiments -> sections)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rotrnn import atomic
from rotrnn.analysis.stats import Verdict


# each model as its paper names it, in the reports' tables and figures
MODEL_NAMES = {"rotrnn": "RotRNN", "lru": "LRU", "dlr": "DLR"}


@dataclass
class Section:
    name: str
    setup: str
    seeds: str
    answer: str
    body: list[str] = field(default_factory=list)
    train_tasks: list[str] = field(default_factory=list)
    command_s: float = 0.0
    command_threads: int = 1
    files: list[Path] = field(default_factory=list)
    verdict: Verdict | None = None  # the paper's claim, the verdict on it, its effect size and interval


def table_md(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "/") for v in r.tolist()) + " |")
    return "\n".join(lines)


def mean_std(values, fmt: str = "{:.3g}") -> str:
    v = pd.Series(values, dtype=float).dropna()
    if v.empty:
        return "–"
    text = fmt.format(v.mean())
    if len(v) > 1:
        text += " ± " + fmt.format(v.std(ddof=1))
    return text + f" ({len(v)})"


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def write_csv(path: Path, df: pd.DataFrame) -> Path:
    atomic.write_text(path, df.to_csv(index=False, float_format="%.6g"))
    return path
