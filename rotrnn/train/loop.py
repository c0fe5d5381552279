"""One training job: the paper's protocol (Dolga et al. 2024; the authors' S5-based s5/train.py) with exact
resume, preemption handling, divergence recorded as a result, and MLflow records.

Each epoch trains on a permutation of the training set drawn from (seed, epoch), evaluates on validation and test
(and Speech Commands' 8 kHz split with the layers' exact ``step=2`` rescaling), and keeps the test figures of the
best validation epoch. Checkpoints (model, optimiser, scheduler, RNG states, position in the epoch) are written
atomically every ``checkpoint_every`` steps and at each epoch end; a job that finds one resumes from it. SIGTERM
and SIGUSR1 (sent by Slurm before preemption or the time limit) make the job checkpoint and exit with
:data:`REQUEUE_EXIT`, which the pipeline treats as "run me again".
"""
from __future__ import annotations

import contextlib
import resource
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rotrnn import atomic
from rotrnn.config import data_dir as default_data_dir
from rotrnn.config import flatten, run_dir as default_run_dir, run_name
from rotrnn.models import RetrievalClassifier, SequenceClassifier
from rotrnn.nn.base import DiagonalRecurrentLayer
from rotrnn.train import checkpoint as ckpt
from rotrnn.train.batches import Prefetcher, epoch_batches, to_device
from rotrnn.train.inductor import use_private_cache
from rotrnn.train.optim import build_optimizer, build_scheduler
from rotrnn.train.rundir import RunDir
from rotrnn.train.step import FiniteWatch, RunningSums, host_tokens
from rotrnn.train.step import objective as device_objective

REQUEUE_EXIT = 75  # EX_TEMPFAIL: checkpointed on a signal; run the same command again to continue
DIVERGED_EXIT = 3  # the run diverged: recorded as a result (metrics.json status diverged), not worth a retry
# evaluated each epoch when the prepared data has them (Speech Commands' 8 kHz splits: decimated and resampled)
EVAL_SPLITS = ("val", "test", "test_8k", "test_8k_resampled")


# -- model and objective ---------------------------------------------------------------------------------------
def build_model(config: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    net = config["net"]
    tokens = meta["kind"] == "tokens"
    d_input = int(meta["vocab_size"] if tokens else meta["in_dim"])
    n_out = int(meta["n_classes"] if meta["loss"] == "cross_entropy" else meta["out_dim"])
    kwargs = {k: v for k, v in net.items() if k != "pooling"}  # the schema admits only the models' arguments
    kwargs.update(tokens=tokens, layer_kwargs=dict(config["layer"]))
    if meta.get("dual"):
        return RetrievalClassifier(config["model"], d_input, n_out, **kwargs)
    pooling = "none" if meta["target"] == "sequence" else net.get("pooling", "mean")
    return SequenceClassifier(config["model"], d_input, n_out, pooling=pooling, **kwargs)


def forward(model: nn.Module, batch: dict[str, torch.Tensor], step: float = 1.0) -> torch.Tensor:
    if isinstance(getattr(model, "_orig_mod", model), RetrievalClassifier):  # a torch.compile'd model wraps it
        return model(batch["inputs"], batch["lengths"], batch["inputs2"], batch["lengths2"])
    return model(batch["inputs"], batch["lengths"], step=step)


def autocast(device: torch.device, precision: str):
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"train.precision must be auto, fp32 or bf16, got {precision!r}")
    return contextlib.nullcontext()


def compile_wanted(setting: str | bool, device: torch.device) -> bool:
    """train.compile: ``auto`` compiles on CUDA only. Measured (reports/perf/): on an H200 the paper ListOps step ran
    1.11x faster compiled after 32 s of compiling; on 2 CPU cores it won 1.07-1.23x after 13-33 s, which the short
    CPU suites (many runs of a few minutes each) would not earn back."""
    if setting == "auto":
        return device.type == "cuda"
    if not isinstance(setting, bool):
        raise ValueError(f"train.compile must be auto, true or false, got {setting!r}")
    return setting


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
            loss, c, n = device_objective(out, batch, meta)
            loss_sum += float(loss) * float(n)
            correct += float(c)
            count += float(n)
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




class Diverged(Exception):
    """The loss or the parameters became non-finite at ``step``; nothing from that step on was saved."""

    def __init__(self, step: int):
        super().__init__(f"non-finite loss or parameters at step {step}")
        self.step = step


def all_finite(tree: Any) -> bool:
    """Every floating tensor in a (nested) state dict is finite."""
    if isinstance(tree, torch.Tensor):
        return not tree.is_floating_point() or bool(torch.isfinite(tree).all())
    if isinstance(tree, dict):
        return all(all_finite(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return all(all_finite(v) for v in tree)
    return True


# -- the job, as named steps -------------------------------------------------------------------------------------
@dataclass
class Job:
    """Everything one training job holds while it runs."""

    config: dict[str, Any]
    run: RunDir
    device: torch.device
    quiet: bool
    train_set: Any
    eval_sets: dict[str, Any]
    meta: dict[str, Any]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    groups: dict[str, list[str]]
    scheduler: Any
    state: dict[str, Any]
    watch: FiniteWatch
    tracker: Any = None
    train_model: nn.Module | None = None  # what the training step calls: the model, or torch.compile of it
    attempt_start: float = 0.0  # time.time() when this attempt's setup began

    def wall_s(self) -> float:
        """Seconds this run has spent in jobs so far, summed over attempts (setup to now; the time between a requeue
        and the next attempt is not counted): what the analysis report adds up, read from metrics.json."""
        return float(self.state.get("wall_s", 0.0)) + time.time() - self.attempt_start

    @property
    def tcfg(self) -> dict[str, Any]:
        return self.config["train"]

    @property
    def name(self) -> str:
        return run_name(self.config)

    @property
    def precision(self) -> str:
        return self.tcfg["precision"]

    @property
    def batch_size(self) -> int:
        return int(self.tcfg["batch_size"])

    @property
    def eval_batch_size(self) -> int:
        return int(self.tcfg["eval_batch_size"] or self.batch_size)

    @property
    def select_split(self) -> str:
        return "val" if "val" in self.eval_sets else "test"  # IMDB: no validation split, the test set selects (S4/S5)

    @property
    def select_metric(self) -> str:
        return "accuracy" if self.meta["loss"] == "cross_entropy" else "loss"

    def step_of(self, split: str) -> float:
        return float((self.meta.get("step") or {}).get(split, 1))

    def check_finite(self) -> None:
        """Raise :class:`Diverged` if the watch saw a non-finite loss or parameter (one device read)."""
        bad = self.watch.first_bad_step()
        if bad is not None:
            raise Diverged(bad)

    def save(self, path: Path) -> None:
        """Checkpoint, never with non-finite parameters or optimiser state (a retry would resume into them)."""
        self.check_finite()
        model, optim = self.model.state_dict(), self.optimizer.state_dict()
        if not (all_finite(model) and all_finite(optim["state"])):
            raise Diverged(self.state["global_step"])
        # the attempt's time so far goes into the saved state, so that a resumed attempt adds to it
        state = self.state | {"wall_s": self.wall_s()}
        ckpt.atomic_save({"model": model, "optimizer": optim, "scheduler": self.scheduler.state_dict(),
                          "rng": ckpt.rng_state(), "state": state, "config": self.config, "meta": self.meta},
                         path)


def load_data(config: dict[str, Any], data: Path) -> tuple[Any, dict[str, Any]]:
    """The training split and every evaluation split present (val, test, and Speech Commands' 8 kHz splits)."""
    from rotrnn.data import load_dataset

    tcfg = config["train"]
    train_set = load_dataset(data, "train", limit=tcfg["train_limit"])
    splits = [s for s in EVAL_SPLITS if s in train_set.meta["splits"]]
    return train_set, {s: load_dataset(data, s, limit=tcfg["eval_limit"]) for s in splits}


def setup(config: dict[str, Any], run: RunDir, dev: torch.device, data: Path, quiet: bool, track: bool,
          resume: bool) -> Job:
    """Build data, model, optimiser and schedule from the config; resume from ``last.pt`` when asked; open (or
    reopen) the job's MLflow run."""
    attempt_start = time.time()
    train_set, eval_sets = load_data(config, data)
    run.write_config(config)  # only once the data is known to be there
    tcfg = config["train"]
    ckpt.seed_everything(config["seed"])
    model = build_model(config, train_set.meta).to(dev)
    optimizer, groups = build_optimizer(model, tcfg)
    steps_per_epoch = -(-len(train_set) // int(tcfg["batch_size"]))
    if tcfg["max_steps_per_epoch"]:
        steps_per_epoch = min(steps_per_epoch, int(tcfg["max_steps_per_epoch"]))
    scheduler = build_scheduler(optimizer, tcfg, steps_per_epoch)
    state = {"epoch": 0, "batch": 0, "global_step": 0, "best": None, "history": []}
    job = Job(config, run, dev, quiet, train_set, eval_sets, train_set.meta, model, optimizer, groups, scheduler,
              state, FiniteWatch(dev), attempt_start=attempt_start)
    if compile_wanted(tcfg.get("compile", False), dev):
        # parameters and state_dict stay the eager module's (checkpoints keep their keys); dynamic shapes because
        # the last batch of an epoch and variable-length tasks change the batch and length
        use_private_cache()  # not /tmp/torchinductor_$USER, which another user can create first
        job.train_model = torch.compile(model, dynamic=True)
    if resume:
        saved = ckpt.load(run.last, dev)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        ckpt.set_rng_state(saved["rng"])
        job.state = saved["state"]
        if not quiet:
            print(f"{job.name}: resuming from {run.last} at epoch {job.state['epoch']}, batch {job.state['batch']} "
                  f"(step {job.state['global_step']})")
    if track:
        open_tracking(job, data)
    return job


def open_tracking(job: Job, data: Path) -> None:
    """The job's one MLflow run; a new run gets the config as params, the tags and the dataset input."""
    from rotrnn.train.tracking import Tracker, git_commit

    job.tracker = Tracker(job.config, job.run.path, job.quiet)
    if job.tracker.new:
        config, dev = job.config, job.device
        job.tracker.log_params(flatten({k: v for k, v in config.items() if k not in ("paths", "tracking")}))
        job.tracker.set_tags({
            "git_commit": git_commit(), "data_checksum": job.meta.get("checksum", "unknown"), "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "torch_version": torch.__version__, "task": config["task"], "model": config["model"],
            "seed": config["seed"], "suite": config["suite"],
            "n_parameters": sum(p.numel() for p in job.model.parameters()),
            "metric": job.select_metric, "select_split": job.select_split,
        })
        job.tracker.log_dataset(f"{config['suite']}/{config['task']}", job.meta, data)


def train_epoch(job: Job, flag: SignalFlag) -> dict[str, Any]:
    """Train from the saved position to the end of the epoch (or to a signal); returns the epoch's counters.

    The step reads nothing back from the device: loss sums and the divergence watch stay there and are read at
    the log and checkpoint boundaries; batches are collated ahead on a thread."""
    from tqdm import tqdm

    state, tcfg, meta = job.state, job.tcfg, job.meta
    epoch, epochs = state["epoch"], int(tcfg["epochs"])
    batches = epoch_batches(len(job.train_set), job.batch_size, job.config["seed"], epoch, tcfg["max_steps_per_epoch"])
    log_every, ckpt_every = int(tcfg["log_every"]), int(tcfg["checkpoint_every"] or 0)
    clip = float(tcfg["grad_clip"] or 0)
    params = [p for p in job.model.parameters() if p.requires_grad]
    counters = {"t_start": time.time(), "tokens": 0, "n_batches": len(batches)}
    sums = RunningSums(job.device)
    bar = tqdm(total=len(batches), initial=state["batch"], disable=job.quiet, leave=False,
               desc=f"{job.name} epoch {epoch + 1}/{epochs}", dynamic_ncols=True)
    t_window, tok_window = time.time(), 0
    with Prefetcher(job.train_set, batches, start=state["batch"], pin_memory=job.device.type == "cuda") as loader:
        try:
            for b, host_batch in loader:
                batch = to_device(host_batch, job.device)
                with autocast(job.device, job.precision):
                    out = forward(job.model if job.train_model is None else job.train_model, batch)
                loss, correct, count = device_objective(out, batch, meta)
                step = state["global_step"] + 1
                job.watch.observe(loss, step)
                job.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip > 0:
                    nn.utils.clip_grad_norm_(params, clip)
                job.optimizer.step()
                job.scheduler.step()
                job.watch.observe_parameters(params, step)
                sums.add(loss, correct, count)
                state["global_step"] = step
                state["batch"] = b + 1
                n_tok = host_tokens(host_batch)
                counters["tokens"] += n_tok
                tok_window += n_tok
                bar.update(1)
                if step % log_every == 0 or b + 1 == len(batches):
                    job.check_finite()
                    window = sums.read()
                    rate = tok_window / max(time.time() - t_window, 1e-9)
                    metrics = {"train/loss": window["loss"], "perf/tokens_per_s": rate,
                               "lr": job.optimizer.param_groups[0]["lr"]}
                    if meta["loss"] == "cross_entropy":
                        metrics["train/accuracy"] = window["accuracy"]
                    bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", tok_s=f"{rate:,.0f}")
                    if job.tracker:
                        job.tracker.log_metrics(metrics, step)
                    t_window, tok_window = time.time(), 0
                if ckpt_every and step % ckpt_every == 0 and b + 1 < len(batches):
                    job.save(job.run.last)
                if flag.received is not None:
                    break
        finally:
            bar.close()
    return counters


def end_epoch(job: Job, counters: dict[str, Any]) -> None:
    """Evaluate every split, keep the best validation epoch, log, and checkpoint (best, then last)."""
    job.check_finite()
    state, epoch = job.state, job.state["epoch"]
    elapsed = time.time() - counters["t_start"]
    record: dict[str, Any] = {"epoch": epoch + 1, "step": state["global_step"], "epoch_time_s": elapsed,
                              "tokens_per_s": counters["tokens"] / max(elapsed, 1e-9)}
    for split, ds in job.eval_sets.items():
        for k, v in evaluate(job.model, ds, job.meta, job.eval_batch_size, job.device, job.precision,
                             job.step_of(split)).items():
            record[f"{split}/{k}"] = v
    select = job.eval_sets[job.select_split]
    probe = to_device(select.collate([select[i] for i in range(min(job.eval_batch_size, len(select)))]), job.device)
    for i, v in enumerate(state_norms(job.model, probe)):
        record[f"state_norm/layer_{i}"] = v
    record["perf/peak_memory_mb"] = peak_memory_mb(job.device)
    score = record[f"{job.select_split}/{job.select_metric}"]
    best = state["best"]
    better = best is None or (score > best["score"] if job.select_metric == "accuracy" else score < best["score"])
    if better:
        state["best"] = {"score": score, "epoch": epoch + 1,
                         **{k: v for k, v in record.items() if k.split("/")[0] in job.eval_sets}}
    state["history"].append(record)
    state["epoch"], state["batch"] = epoch + 1, 0
    if job.tracker:
        job.tracker.log_metrics({k: v for k, v in record.items() if k not in ("epoch", "step")}
                                | {f"best/{k}": v for k, v in state["best"].items() if "/" in k},
                                state["global_step"])
    if better:
        job.save(job.run.best)
    job.save(job.run.last)
    if not job.quiet:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k.split("/")[0] in job.eval_sets)
        print(f"{job.name} epoch {epoch + 1}/{job.tcfg['epochs']}: {shown} ({elapsed:.1f} s)", file=sys.stderr)


def summary_of(job: Job, status: str) -> dict[str, Any]:
    config, state = job.config, job.state
    return {
        "status": status, "run": job.name, "suite": config["suite"], "task": config["task"],
        "model": config["model"], "seed": config["seed"], "select_split": job.select_split,
        "metric": job.select_metric, "best": state["best"], "history": state["history"],
        "final_step": state["global_step"], "mlflow_run_id": job.tracker.run_id if job.tracker else None,
        "best_checkpoint": str(job.run.best.resolve()) if job.run.best.is_file() else None,
        "parameter_groups": {k: len(v) for k, v in job.groups.items()},
        "n_parameters": sum(p.numel() for p in job.model.parameters()), "wall_s": job.wall_s(),
    }


def finish(job: Job) -> dict[str, Any]:
    """Write metrics.json (last, so that its presence means the run finished) and close the MLflow run."""
    summary = summary_of(job, "finished")
    atomic.write_json(job.run.metrics, summary)
    if job.tracker:
        job.tracker.log_artifact(job.run.config)
        job.tracker.log_artifact(job.run.metrics)
        job.tracker.set_tags({"best_checkpoint": str(job.run.best.resolve())})
        if job.config["tracking"]["log_checkpoint"]:
            job.tracker.log_artifact(job.run.best, "checkpoints")
        job.tracker.finish("FINISHED")
    return summary


def finish_diverged(job: Job, step: int) -> dict[str, Any]:
    """A diverged run is a result: metrics.json says so (the step, the last finite loss), the MLflow run ends
    FAILED with a `diverged_at_step` tag, and the checkpoints on disk are the last finite ones."""
    last_step, last_loss = job.watch.last_finite()
    summary = summary_of(job, "diverged") | {"diverged_at_step": step, "last_finite_loss": last_loss,
                                            "last_finite_step": last_step}
    atomic.write_json(job.run.metrics, summary)
    print(f"{job.name}: diverged at step {step} (last finite loss {last_loss} at step {last_step}); recorded in "
          f"{job.run.metrics}; checkpoints on disk hold the last finite state", file=sys.stderr)
    if job.tracker:
        job.tracker.set_tags({"diverged_at_step": step, "last_finite_loss": last_loss})
        job.tracker.log_artifact(job.run.metrics)
        job.tracker.finish("FAILED")
    return summary


def train(config: dict[str, Any], *, device: str | None = None, data: str | Path | None = None,
          out: str | Path | None = None, quiet: bool = False, fresh: bool = False, track: bool = True,
          on_change: str = "error") -> tuple[int, dict[str, Any]]:
    """Run (or resume) one job; returns (exit code, summary). Exit 0: finished (or already finished);
    REQUEUE_EXIT: checkpointed on a signal, run again to continue; DIVERGED_EXIT: diverged, recorded.
    ``on_change``: what a run directory holding another config means (see :meth:`RunDir.decide`)."""
    from rotrnn.config.layers import check_job
    from rotrnn.data.prepared import read_meta

    # the layer arguments against the layer (the schema alone, rotrnn.config, does not import the layers)
    check_job(config, f"{config['suite']}/{config['task']}/{config['model']}")
    data = Path(data) if data else default_data_dir(config)
    read_meta(data)  # missing prepared data: fail before anything is written
    run = RunDir(out or default_run_dir(config))
    with run.lock():
        decision = run.decide(config, on_change, fresh)
        if decision == "finished":
            summary = run.summary()
            diverged = summary.get("status") == "diverged"
            if diverged or not quiet:  # a diverged run's batch log must say why the job ends at once
                print(f"{run_name(config)}: already {summary.get('status')} ({run.metrics}); --fresh to run again",
                      file=sys.stderr if diverged else sys.stdout)
            return (DIVERGED_EXIT if diverged else 0), summary
        job = setup(config, run, resolve_device(device), data, quiet, track, resume=decision == "resume")
        try:
            return drive(job)
        except BaseException as e:
            if job.tracker:  # the job's one run says how it ended; a retry reopens it
                job.tracker.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise


def drive(job: Job) -> tuple[int, dict[str, Any]]:
    """The epoch loop of a set-up job, to its end, a signal, or divergence."""
    epochs = int(job.tcfg["epochs"])
    try:
        with SignalFlag() as flag:
            while job.state["epoch"] < epochs:
                counters = train_epoch(job, flag)
                if flag.received is not None and job.state["batch"] < counters["n_batches"]:
                    job.save(job.run.last)  # mid-epoch: save the position
                    break
                end_epoch(job, counters)
                if flag.received is not None:
                    break
    except Diverged as d:
        return DIVERGED_EXIT, finish_diverged(job, d.step)
    if job.state["epoch"] < epochs:
        if job.tracker:
            job.tracker.finish("KILLED")
        # also in quiet mode: batch logs must say why the job stopped
        print(f"{job.name}: signal {flag.received}: checkpointed to {job.run.last}; exit {REQUEUE_EXIT} (requeue)",
              file=sys.stderr)
        return REQUEUE_EXIT, {"status": "requeue"}
    return 0, finish(job)
