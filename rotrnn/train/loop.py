"""One training job: the paper's protocol (facts §3.2) with exact resume, preemption handling and MLflow records.

Each epoch trains on a permutation of the training set drawn from (seed, epoch), evaluates on validation and test
(and Speech Commands' 8 kHz split with the layers' exact ``step=2`` rescaling), and keeps the test figures of the
best validation epoch. Checkpoints (model, optimiser, scheduler, RNG states, position in the epoch) are written
atomically every ``checkpoint_every`` steps and at each epoch end; a job that finds one resumes from it. SIGTERM
and SIGUSR1 (sent by Slurm before preemption or the time limit) make the job checkpoint and exit with
:data:`REQUEUE_EXIT`, which the pipeline treats as "run me again".
"""
from __future__ import annotations

import contextlib
import json
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from rotrnn import atomic
from rotrnn.models import RetrievalClassifier, SequenceClassifier
from rotrnn.nn.base import DiagonalRecurrentLayer
from rotrnn.train import checkpoint as ckpt
from rotrnn.train.config import data_dir as default_data_dir
from rotrnn.train.config import flatten, run_dir as default_run_dir, run_name
from rotrnn.train.optim import build_optimizer, build_scheduler

REQUEUE_EXIT = 75  # EX_TEMPFAIL: checkpointed on a signal; run the same command again to continue
NET_KEYS = ("d_model", "n_layers", "norm", "prenorm", "activation", "dropout", "bn_momentum")


class NonFiniteLoss(RuntimeError):
    pass


# -- model and objective ---------------------------------------------------------------------------------------
def build_model(config: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    net = config["net"]
    tokens = meta["kind"] == "tokens"
    d_input = int(meta["vocab_size"] if tokens else meta["in_dim"])
    n_out = int(meta["n_classes"] if meta["loss"] == "cross_entropy" else meta["out_dim"])
    kwargs = {k: net[k] for k in NET_KEYS if k in net}
    kwargs.update(tokens=tokens, layer_kwargs=dict(config["layer"]))
    if meta.get("dual"):
        return RetrievalClassifier(config["model"], d_input, n_out, **kwargs)
    pooling = "none" if meta["target"] == "sequence" else net.get("pooling", "mean")
    return SequenceClassifier(config["model"], d_input, n_out, pooling=pooling, **kwargs)


def forward(model: nn.Module, batch: dict[str, torch.Tensor], step: float = 1.0) -> torch.Tensor:
    if isinstance(model, RetrievalClassifier):
        return model(batch["inputs"], batch["lengths"], batch["inputs2"], batch["lengths2"])
    return model(batch["inputs"], batch["lengths"], step=step)


def objective(out: torch.Tensor, batch: dict[str, torch.Tensor], meta: dict[str, Any]
              ) -> tuple[torch.Tensor, float, float]:
    """(mean loss, summed correct predictions, number of scored targets); MSE tasks count no 'correct'."""
    labels = batch["labels"]
    out = out.float()
    if meta["target"] == "class":
        loss = nn.functional.cross_entropy(out, labels)
        return loss, float((out.argmax(-1) == labels).sum()), float(labels.numel())
    mask = batch["label_mask"][:, : out.shape[1]]
    labels = labels[:, : out.shape[1]]
    n = mask.sum().clamp_min(1)
    if meta["loss"] == "cross_entropy":
        per = nn.functional.cross_entropy(out.transpose(1, 2), labels.clamp_min(0), reduction="none")
        loss = (per * mask).sum() / n
        correct = ((out.argmax(-1) == labels) & mask).sum()
        return loss, float(correct), float(n)
    per = ((out - labels.float()) ** 2).mean(-1)
    return (per * mask).sum() / n, 0.0, float(n)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(device: torch.device, precision: str):
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"train.precision must be auto, fp32 or bf16, got {precision!r}")
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, dataset, meta: dict[str, Any], batch_size: int, device: torch.device,
             precision: str = "auto", step: float = 1.0) -> dict[str, float]:
    was_training = model.training
    model.eval()
    loss_sum = correct = count = 0.0
    try:
        for idx in range(0, len(dataset), batch_size):
            batch = to_device(dataset.collate([dataset[i] for i in range(idx, min(idx + batch_size, len(dataset)))]),
                              device)
            with autocast(device, precision):
                out = forward(model, batch, step)
            loss, c, n = objective(out, batch, meta)
            loss_sum += float(loss) * n
            correct += c
            count += n
    finally:
        model.train(was_training)
    result = {"loss": loss_sum / max(count, 1)}
    if meta["loss"] == "cross_entropy":
        result["accuracy"] = correct / max(count, 1)
    return result


@torch.no_grad()
def state_norms(model: nn.Module, batch: dict[str, torch.Tensor]) -> list[float]:
    """Mean over batch and time of the squared state norm Σ_c |h_t,c|² entering each recurrent layer's output."""
    inputs: list[torch.Tensor] = []
    layers = [m for m in model.modules() if isinstance(m, DiagonalRecurrentLayer)]
    hooks = [layer.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].detach())) for layer in layers]
    was_training = model.training
    model.eval()
    try:
        forward(model, batch)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    norms = []
    for layer, u in zip(layers, inputs):
        h = layer.eigen_states(u.float())
        norms.append(float(h.abs().pow(2).sum(-1).mean()))
    return norms


# -- epoch order -----------------------------------------------------------------------------------------------
def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g).tolist()


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, max_steps: int | None) -> list[list[int]]:
    order = epoch_order(n, seed, epoch)
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return batches[:max_steps] if max_steps else batches


# -- the job ---------------------------------------------------------------------------------------------------
class SignalFlag:
    """Remember SIGTERM/SIGUSR1; the loop checkpoints at the next step boundary and exits with REQUEUE_EXIT."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "SignalFlag":
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(config: dict[str, Any], *, device: str | None = None, data: str | Path | None = None,
          out: str | Path | None = None, quiet: bool = False, fresh: bool = False, track: bool = True
          ) -> tuple[int, dict[str, Any]]:
    """Run (or resume) one job; returns (exit code, summary). Exit 0: finished; REQUEUE_EXIT: checkpointed on a
    signal, run again to continue."""
    from tqdm import tqdm

    from rotrnn.data import load_dataset

    data = Path(data) if data else default_data_dir(config)
    out = Path(out) if out else default_run_dir(config)
    dev = resolve_device(device or config["train"].get("device"))
    tcfg = config["train"]
    precision = tcfg.get("precision", "auto")

    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path, metrics_path = out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt", out / "metrics.json"
    config_path = out / "config.yaml"
    if fresh:
        for p in (last_path, best_path, metrics_path, config_path):
            p.unlink(missing_ok=True)
    if config_path.exists():
        previous = yaml.safe_load(config_path.read_text())
        if previous != config:
            was, now = flatten(previous), flatten(config)
            changed = sorted(k for k in was.keys() | now.keys() if was.get(k) != now.get(k))
            raise ValueError(f"{out} holds a run with a different config (changed: {changed}); "
                             "use --fresh to start over or another --out")
    else:
        atomic.write_text(config_path, yaml.safe_dump(config, sort_keys=True))
    if metrics_path.exists():
        summary = json.loads(metrics_path.read_text())
        if summary.get("status") == "finished":
            if not quiet:
                print(f"{run_name(config)}: already finished ({metrics_path}); --fresh to run again")
            return 0, summary

    train_set = load_dataset(data, "train", limit=tcfg.get("train_limit"))
    meta = train_set.meta
    eval_limit = tcfg.get("eval_limit")
    eval_splits = [s for s in ("val", "test", "test_8k") if s in meta["splits"]]
    eval_sets = {s: load_dataset(data, s, limit=eval_limit) for s in eval_splits}
    select_split = "val" if "val" in eval_sets else "test"  # IMDB: no validation split, the test set selects (S4/S5)
    select_metric = "accuracy" if meta["loss"] == "cross_entropy" else "loss"
    steps = {s: float((meta.get("step") or {}).get(s, 1)) for s in eval_splits}

    ckpt.seed_everything(config["seed"])
    model = build_model(config, meta).to(dev)
    optimizer, groups = build_optimizer(model, tcfg)
    batch_size = int(tcfg["batch_size"])
    eval_bs = int(tcfg.get("eval_batch_size") or batch_size)
    max_steps = tcfg.get("max_steps_per_epoch")
    steps_per_epoch = -(-len(train_set) // batch_size)
    if max_steps:
        steps_per_epoch = min(steps_per_epoch, int(max_steps))
    scheduler = build_scheduler(optimizer, tcfg, steps_per_epoch)
    epochs = int(tcfg["epochs"])

    state = {"epoch": 0, "batch": 0, "global_step": 0, "best": None, "history": [], "run_id": None}
    if last_path.exists():
        saved = ckpt.load(last_path, dev)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        ckpt.set_rng_state(saved["rng"])
        state = saved["state"]
        if not quiet:
            print(f"{run_name(config)}: resuming from {last_path} at epoch {state['epoch']}, "
                  f"batch {state['batch']} (step {state['global_step']})")

    tracker = None
    if track:
        from rotrnn.train.tracking import Tracker, git_commit

        tracker = Tracker(config, state["run_id"])
        if state["run_id"] is None:
            tracker.log_params(flatten({k: v for k, v in config.items() if k not in ("paths", "tracking")}))
            tracker.set_tags({
                "git_commit": git_commit(), "data_checksum": meta.get("checksum", "unknown"), "device": str(dev),
                "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                "torch_version": torch.__version__, "task": config["task"], "model": config["model"],
                "seed": config["seed"], "suite": config["suite"], "run_dir": str(out.resolve()),
                "n_parameters": sum(p.numel() for p in model.parameters()),
                "metric": select_metric, "select_split": select_split,
            })
            state["run_id"] = tracker.run_id

    def save(path: Path) -> None:
        ckpt.atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "rng": ckpt.rng_state(), "state": state,
                          "config": config, "meta": meta}, path)

    log_every = int(tcfg.get("log_every", 50))
    ckpt_every = int(tcfg.get("checkpoint_every", 0) or 0)
    clip = float(tcfg.get("grad_clip", 0) or 0)
    model.train()
    status = "finished"
    with SignalFlag() as flag:
        while state["epoch"] < epochs:
            epoch = state["epoch"]
            batches = epoch_batches(len(train_set), batch_size, config["seed"], epoch, max_steps)
            t_epoch, tokens, run_loss, run_correct, run_count, run_n = time.time(), 0, 0.0, 0.0, 0.0, 0
            bar = tqdm(total=len(batches), initial=state["batch"], disable=quiet, leave=False,
                       desc=f"{run_name(config)} epoch {epoch + 1}/{epochs}", dynamic_ncols=True)
            t_window, tok_window = time.time(), 0
            for b in range(state["batch"], len(batches)):
                batch = to_device(train_set.collate([train_set[i] for i in batches[b]]), dev)
                with autocast(dev, precision):
                    out_ = forward(model, batch)
                loss, c, n = objective(out_, batch, meta)
                if not torch.isfinite(loss):
                    bar.close()
                    raise NonFiniteLoss(
                        f"{run_name(config)}: loss is {float(loss.detach())} at step {state['global_step'] + 1} (epoch "
                        f"{epoch + 1}, batch {b + 1}); the last good checkpoint is {last_path}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
                scheduler.step()
                state["global_step"] += 1
                state["batch"] = b + 1
                n_tok = int(batch["lengths"].sum()) + int(batch["lengths2"].sum() if "lengths2" in batch else 0)
                tokens += n_tok
                tok_window += n_tok
                run_loss += float(loss.detach()) * n
                run_correct += c
                run_count += n
                run_n += 1
                bar.update(1)
                if state["global_step"] % log_every == 0 or b + 1 == len(batches):
                    rate = tok_window / max(time.time() - t_window, 1e-9)
                    metrics = {"train/loss": run_loss / max(run_count, 1), "perf/tokens_per_s": rate,
                               "lr": optimizer.param_groups[0]["lr"]}
                    if meta["loss"] == "cross_entropy":
                        metrics["train/accuracy"] = run_correct / max(run_count, 1)
                    bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", tok_s=f"{rate:,.0f}")
                    if tracker:
                        tracker.log_metrics(metrics, state["global_step"])
                    run_loss = run_correct = run_count = 0.0
                    t_window, tok_window = time.time(), 0
                if ckpt_every and state["global_step"] % ckpt_every == 0 and b + 1 < len(batches):
                    save(last_path)
                if flag.received is not None:
                    break
            bar.close()
            if flag.received is not None and state["batch"] < len(batches):
                save(last_path)
                status = "requeue"
                break

            # epoch end: evaluate, select, checkpoint
            record: dict[str, Any] = {"epoch": epoch + 1, "step": state["global_step"],
                                      "epoch_time_s": time.time() - t_epoch,
                                      "tokens_per_s": tokens / max(time.time() - t_epoch, 1e-9)}
            for split, ds in eval_sets.items():
                for k, v in evaluate(model, ds, meta, eval_bs, dev, precision, steps[split]).items():
                    record[f"{split}/{k}"] = v
            probe = to_device(eval_sets[select_split].collate(
                [eval_sets[select_split][i] for i in range(min(eval_bs, len(eval_sets[select_split])))]), dev)
            for i, v in enumerate(state_norms(model, probe)):
                record[f"state_norm/layer_{i}"] = v
            record["perf/peak_memory_mb"] = peak_memory_mb(dev)
            score = record[f"{select_split}/{select_metric}"]
            better = state["best"] is None or (score > state["best"]["score"] if select_metric == "accuracy"
                                               else score < state["best"]["score"])
            if better:
                state["best"] = {"score": score, "epoch": epoch + 1,
                                 **{k: v for k, v in record.items() if k.split("/")[0] in eval_sets}}
            state["history"].append(record)
            state["epoch"], state["batch"] = epoch + 1, 0
            if tracker:
                tracker.log_metrics({k: v for k, v in record.items() if k not in ("epoch", "step")}
                                    | {f"best/{k}": v for k, v in state["best"].items() if "/" in k},
                                    state["global_step"])
            if better:
                save(best_path)
            save(last_path)
            if not quiet:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k.split("/")[0] in eval_sets)
                print(f"{run_name(config)} epoch {epoch + 1}/{epochs}: {shown} ({record['epoch_time_s']:.1f} s)",
                      file=sys.stderr)
            if flag.received is not None and state["epoch"] < epochs:
                status = "requeue"
                break

    if status == "requeue":
        if tracker:
            tracker.finish("KILLED")
        if True:  # also in quiet mode: batch logs must say why the job stopped
            print(f"{run_name(config)}: signal {flag.received}: checkpointed to {last_path}; exit {REQUEUE_EXIT} "
                  "(requeue)", file=sys.stderr)
        return REQUEUE_EXIT, {"status": "requeue"}

    summary = {
        "status": "finished", "run": run_name(config), "suite": config["suite"], "task": config["task"],
        "model": config["model"], "seed": config["seed"], "select_split": select_split,
        "metric": select_metric, "best": state["best"], "history": state["history"],
        "final_step": state["global_step"], "mlflow_run_id": state["run_id"],
        "best_checkpoint": str(best_path.resolve()), "parameter_groups": {k: len(v) for k, v in groups.items()},
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }
    atomic.write_json(metrics_path, summary)
    if tracker:
        tracker.log_artifact(config_path)
        tracker.log_artifact(metrics_path)
        tracker.set_tags({"best_checkpoint": str(best_path.resolve())})
        if (config.get("tracking") or {}).get("log_checkpoint"):
            tracker.log_artifact(best_path, "checkpoints")
        tracker.finish("FINISHED")
    return 0, summary
