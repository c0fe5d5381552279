"""Figures: learning curves per task, and the state norm across depth and training (RotRNN's normalisation against
the LRU's, the paper's comparison)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from rotrnn.report.runs import history  # noqa: E402
from rotrnn.report.tables import MODEL_NAMES, MODEL_ORDER  # noqa: E402

COLOURS = {m: f"C{i}" for i, m in enumerate(MODEL_ORDER)}  # matplotlib's cycle, one colour per registered model


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def learning_curves(uri: str, runs: pd.DataFrame, task: str, select_metric: str, out: Path) -> Path | None:
    """Validation metric against training step, mean over seeds with the min–max band, one line per model."""
    sel = runs[runs["task"] == task]
    if sel.empty:
        return None
    key = f"val/{'accuracy' if select_metric == 'accuracy' else 'loss'}"
    fig, ax = plt.subplots(figsize=(5, 3.2))
    drawn = False
    for model in MODEL_ORDER:
        curves = [history(uri, r, key) or history(uri, r, key.replace("val/", "test/")) for r in
                  sel.loc[sel["model"] == model, "run_id"]]
        curves = [c for c in curves if c]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        steps = np.array([s for s, _ in curves[0][:n]])
        values = np.array([[v for _, v in c[:n]] for c in curves])
        ax.plot(steps, values.mean(0), marker="o", ms=3, color=COLOURS[model],
                label=f"{MODEL_NAMES[model]} ({len(curves)} seeds)")
        if len(curves) > 1:
            ax.fill_between(steps, values.min(0), values.max(0), color=COLOURS[model], alpha=0.2)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("training step")
    ax.set_ylabel(key.replace("val/", "validation "))
    ax.set_title(task)
    ax.legend(frameon=False, fontsize=8)
    path = out / f"learning_curves_{task}.png"
    _save(fig, path)
    return path


def state_norms(uri: str, runs: pd.DataFrame, task: str, out: Path) -> Path | None:
    """Left: mean squared state norm per layer at the end of training. Right: each layer's norm over training.

    The value is E_t,batch Σ_c |h_t,c|² logged by the trainer each epoch on a validation batch. RotRNN's normalised
    input keeps it near its number of heads (1 per head) at every depth; the LRU's depends on its eigenvalues."""
    sel = runs[(runs["task"] == task) & runs["model"].isin(["rotrnn", "lru"])]
    if sel["model"].nunique() < 2:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for model in ("rotrnn", "lru"):
        per_layer: dict[int, list[list[tuple[int, float]]]] = defaultdict(list)
        for run_id in sel.loc[sel["model"] == model, "run_id"]:
            layer = 0
            while True:
                h = history(uri, run_id, f"state_norm/layer_{layer}")
                if not h:
                    break
                per_layer[layer].append(h)
                layer += 1
        if not per_layer:
            continue
        layers = sorted(per_layer)
        final = [np.mean([c[-1][1] for c in per_layer[i]]) for i in layers]
        left.plot(layers, final, marker="o", color=COLOURS[model], label=MODEL_NAMES[model])
        for i in layers:
            c = per_layer[i][0]
            right.plot([s for s, _ in c], [v for _, v in c], color=COLOURS[model],
                       alpha=0.35 + 0.65 * (i + 1) / len(layers), label=f"{MODEL_NAMES[model]} layer {i}")
    left.set_xlabel("layer")
    left.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    left.set_ylabel("mean ‖h_t‖² (end of training)")
    left.set_yscale("log")
    left.legend(frameon=False, fontsize=8)
    right.set_xlabel("training step")
    right.set_ylabel("mean ‖h_t‖²")
    right.set_yscale("log")
    right.legend(frameon=False, fontsize=6, ncol=2)
    fig.suptitle(f"state norm, {task}")
    path = out / f"state_norm_{task}.png"
    _save(fig, path)
    return path
