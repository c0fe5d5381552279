"""The paper's tables from a suite's runs: LRA (six tasks + average), Speech Commands (16 kHz and 8 kHz zero-shot),
DLR's synthetic tasks. Each table is a tidy DataFrame (one row per model × column) rendered to Markdown, LaTeX and
CSV; the header of every rendering names the suite and how many runs it covers."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from rotrnn.config import MODELS
from rotrnn.nn import LAYERS
from rotrnn.report.published import LRA_COLUMNS, LRA_NAMES, LRA_PUBLISHED, SPEECH_PUBLISHED
from rotrnn.report.runs import summarise

MODEL_ORDER = MODELS  # the registry's order
MODEL_NAMES = {m: LAYERS[m].__name__ for m in MODELS}  # RotRNN, LRU, DLR: the class names are the papers' names
SPEECH_COLUMNS = {"16kHz": "best/test/accuracy", "8kHz": "best/test_8k/accuracy",
                  "8kHz resampled": "best/test_8k_resampled/accuracy"}


def _ours(runs: pd.DataFrame, columns: dict[str, tuple[str, str]], scale: float = 100.0) -> list[dict[str, Any]]:
    """columns: column name -> (task, metric key). One row per (model, column) with mean/std/n over seeds; loss
    columns are shown as they are, accuracies times ``scale``."""
    rows = []
    for model in MODEL_ORDER:
        for col, (task, key) in columns.items():
            sel = runs[(runs["model"] == model) & (runs["task"] == task)]
            diverged = int((sel["status"] == "diverged").sum()) if "status" in sel else 0
            sel = sel[sel["status"] != "diverged"] if "status" in sel else sel
            factor = 1.0 if key.endswith("loss") else scale
            s = summarise(sel[key] * factor) if len(sel) else {"mean": math.nan, "std": math.nan, "n": 0}
            rows.append({"model": MODEL_NAMES[model], "source": "this pipeline", "column": col, **s,
                         "diverged": diverged, "note": "test MSE" if key.endswith("loss") else ""})
    return rows


def _with_average(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """Avg of the six column means, only where a model has all six."""
    out = list(rows)
    for (model, source), group in pd.DataFrame(rows).groupby(["model", "source"], sort=False):
        means = {r["column"]: r["mean"] for _, r in group.iterrows()}
        complete = all(not math.isnan(means.get(c, math.nan)) for c in columns)
        avg = sum(means[c] for c in columns) / len(columns) if complete else math.nan
        out.append({"model": model, "source": source, "column": "Avg", "mean": avg, "std": math.nan,
                    "n": int(group["n"].min()) if "n" in group else 0, "note": ""})
    return out


def lra_table(runs: pd.DataFrame) -> pd.DataFrame:
    cols = {LRA_NAMES[t]: (t, "best/test/accuracy") for t in LRA_COLUMNS}
    rows = _ours(runs, cols)
    for name, values, source, note in LRA_PUBLISHED:
        for t, v in zip(LRA_COLUMNS, values):
            rows.append({"model": name, "source": f"published: {source}", "column": LRA_NAMES[t],
                         "mean": math.nan if v is None else v, "std": math.nan, "n": 0, "note": note})
    return pd.DataFrame(_with_average(rows, [LRA_NAMES[t] for t in LRA_COLUMNS]))


def speech_table(runs: pd.DataFrame, task: str = "speech35") -> pd.DataFrame:
    rows = _ours(runs, {c: (task, k) for c, k in SPEECH_COLUMNS.items()})
    for name, values, source, status in SPEECH_PUBLISHED:
        for c, v in zip(SPEECH_COLUMNS, values):
            rows.append({"model": name, "source": f"published: {source}", "column": c, "mean": v, "std": math.nan,
                         "n": 0, "note": status})
    return pd.DataFrame(rows)


def synthetic_table(runs: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Test MSE for regression tasks (test accuracy % for classification ones), per model."""
    cols = {}
    for t in tasks:
        metric = runs.loc[runs["task"] == t, "metric"]
        loss_task = (metric == "loss").all()  # no runs yet: DLR's synthetic tasks are regressions (MSE)
        cols[t] = (t, "best/test/loss" if loss_task else "best/test/accuracy")
    rows = _ours(runs, cols)
    for r in rows:
        r["note"] = r["note"] or "test accuracy (%)"
    return pd.DataFrame(rows)


# -- rendering -------------------------------------------------------------------------------------------------
def cell(mean: float, std: float, n: int, fmt: str = "{:.2f}", diverged: int = 0) -> str:
    """'mean ± std (runs)'; diverged runs are results too: 'diverged (2/3 seeds)', or appended to the finished ones."""
    if diverged and not n:
        return f"diverged ({diverged}/{diverged} seeds)"
    if math.isnan(mean):
        return "–"
    text = fmt.format(mean)
    if not math.isnan(std):
        text += " ± " + fmt.format(std)
    text += f" ({n})" if n else ""
    return text + (f", diverged ({diverged}/{n + diverged} seeds)" if diverged else "")


def wide(table: pd.DataFrame, fmt: str = "{:.2f}") -> pd.DataFrame:
    """model rows × columns of formatted cells, in first-seen order."""
    models = list(dict.fromkeys(zip(table["model"], table["source"])))
    columns = list(dict.fromkeys(table["column"]))
    out = []
    for model, source in models:
        sel = table[(table["model"] == model) & (table["source"] == source)].set_index("column")
        row = {"model": model, "source": source}
        for c in columns:
            r = sel.loc[c] if c in sel.index else None
            diverged = int(r["diverged"]) if r is not None and "diverged" in r and r["diverged"] == r["diverged"] else 0
            row[c] = "–" if r is None else cell(r["mean"], r["std"], int(r["n"]), fmt, diverged)
        notes = "; ".join(sorted({n for n in sel["note"] if n})) if "note" in sel else ""
        row["note"] = notes
        out.append(row)
    return pd.DataFrame(out)


def to_markdown(table: pd.DataFrame, title: str, header: str, fmt: str = "{:.2f}") -> str:
    w = wide(table, fmt)
    cols = list(w.columns)
    lines = [f"# {title}", "", header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in w.iterrows():
        lines.append("| " + " | ".join(str(r[c]).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _tex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("–", "--")):
        s = s.replace(a, b)
    return s


def to_latex(table: pd.DataFrame, caption: str, label: str, fmt: str = "{:.2f}") -> str:
    w = wide(table, fmt).drop(columns=["note"])
    cols = [c for c in w.columns if c != "source"]
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "c" * (len(cols) - 1) + "}",
             r"\toprule", " & ".join(_tex_escape(c) for c in cols) + r" \\", r"\midrule"]
    ours = w[w["source"] == "this pipeline"]
    published = w[w["source"] != "this pipeline"]
    for _, r in ours.iterrows():
        lines.append(" & ".join(_tex_escape(str(r[c])) for c in cols) + r" \\")
    if len(published):
        lines.append(r"\midrule")
        for _, r in published.iterrows():
            cells = [_tex_escape(str(r[c])) for c in cols]
            cells[0] += r"$^\dagger$"
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + _tex_escape(caption) + "}", r"\label{" + label + "}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"
