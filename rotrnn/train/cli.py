"""`rotrnn train`, `rotrnn evaluate`, `rotrnn tracking init` and `rotrnn tracking serve`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rotrnn.errors import UserError


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="a task defined in params.yaml (tasks:)")
    p.add_argument("--model", required=True, help="a model of the registry (rotrnn.config.MODELS: rotrnn, lru, dlr)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--suite", default=None, help="suite in params.yaml (default: params.yaml's `suite`)")
    p.add_argument("--params", default="params.yaml", help="configuration file (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a resolved config value, e.g. --set train.ssm_lr=2e-3 (repeatable)")
    p.add_argument("--data", default=None, help="prepared data directory (default: paths.prepared/SUITE/TASK)")
    p.add_argument("--out", default=None, help="run directory (default: paths.runs/SUITE/TASK/MODEL/seedS)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one task × model × seed (resumes from its checkpoint)",
                       description="Train one job. Exit status 0: finished; 75: checkpointed after SIGTERM/SIGUSR1, "
                                   "run the same command again to continue; 3: diverged (recorded in metrics.json "
                                   "and MLflow; the checkpoints hold the last finite state); 2: a configuration, "
                                   "data or argument error (one line names it).")
    _add_run_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines (batch jobs)")
    p.add_argument("--fresh", action="store_true", help="discard an existing checkpoint and start over")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="re-evaluate a run's checkpoint on its prepared data")
    p.add_argument("run_dir", help="a run directory written by `rotrnn train`")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--splits", default=None, help="comma-separated splits (default: every evaluation split)")
    p.add_argument("--data", default=None, help="prepared data directory (default: the one the run used)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("tracking", help="MLflow store management")
    tsub = p.add_subparsers(dest="tracking_command", required=True)
    t = tsub.add_parser("init", help="create the MLflow store and a suite's experiment once, before parallel jobs")
    t.add_argument("--suite", default=None)
    t.add_argument("--params", default="params.yaml")
    t.set_defaults(func=_tracking_init)
    t = tsub.add_parser("serve", help="the cluster's MLflow server, with authentication (MLflow's basic-auth app)",
                        description="Start `mlflow server --app-name basic-auth` for the cluster's jobs: every "
                        "request needs a user and password (jobs: MLFLOW_TRACKING_USERNAME / "
                        "MLFLOW_TRACKING_PASSWORD); the admin is created on first start from "
                        "$MLFLOW_AUTH_ADMIN_PASSWORD. Listens on 127.0.0.1: put TLS (a reverse proxy) in front or "
                        "use an SSH tunnel (README, MLflow).")
    t.add_argument("--backend-store-uri", required=True,
                   help="the runs' store, on a local disk of this host: sqlite:////local/disk/mlflow.db")
    t.add_argument("--artifacts-destination", required=True, help="where artifacts go (a local folder or URI)")
    t.add_argument("--state-dir", required=True, type=Path,
                   help="private folder (made 0700) for the auth app's config and user database")
    t.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    t.add_argument("--port", type=int, default=5000)
    t.add_argument("--allowed-hosts", default="",
                   help="comma-separated extra Host headers clients send (the proxy's name), besides this host's "
                   "names and loopback at --port")
    t.add_argument("--workers", type=int, default=1)
    t.set_defaults(func=_tracking_serve)


def _config(args: argparse.Namespace) -> dict:
    from rotrnn.config.layers import load_params, resolve

    params = load_params(args.params)
    return resolve(params, args.suite, args.task, args.model, args.seed, args.overrides, source=args.params)


def _train(args: argparse.Namespace) -> int:
    import yaml

    from rotrnn.train.loop import train

    config = _config(args)
    if args.print_config:
        print(yaml.safe_dump(config, sort_keys=True), end="")
        return 0
    if args.data and not Path(args.data).is_dir():
        raise UserError(f"--data {args.data}: no such directory")
    code, summary = train(config, device=args.device, data=args.data, out=args.out, quiet=args.quiet,
                          fresh=args.fresh, track=not args.no_track)
    if code == 0 and summary.get("best") and not args.quiet:
        best = summary["best"]
        shown = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if "/" in k)
        print(f"{summary['run']}: best epoch {best['epoch']}: {shown}")
    return code


def _evaluate(args: argparse.Namespace) -> int:
    from rotrnn.data import load_dataset
    from rotrnn.train import checkpoint as ckpt
    from rotrnn.config import data_dir
    from rotrnn.train.loop import EVAL_SPLITS, build_model, evaluate, resolve_device

    run = Path(args.run_dir)
    path = run / "checkpoints" / f"{args.checkpoint}.pt"
    if not path.is_file():
        raise UserError(f"no checkpoint {path}")
    dev = resolve_device(args.device)
    saved = ckpt.load(path, dev)
    config = saved["config"]
    data = Path(args.data) if args.data else data_dir(config)
    meta = saved["meta"]
    splits = args.splits.split(",") if args.splits else [s for s in EVAL_SPLITS if s in meta["splits"]]
    model = build_model(config, meta).to(dev)
    model.load_state_dict(saved["model"])
    bs = int(config["train"].get("eval_batch_size") or config["train"]["batch_size"])
    result = {"run_dir": str(run), "checkpoint": args.checkpoint, "epoch": saved["state"]["epoch"]}
    for split in splits:
        ds = load_dataset(data, split)
        if ds.meta.get("checksum") != meta.get("checksum"):
            print(f"rotrnn evaluate: warning: {data} differs from the data the run was trained on", file=sys.stderr)
        step = float((meta.get("step") or {}).get(split, 1))
        for k, v in evaluate(model, ds, meta, bs, dev, config["train"].get("precision", "auto"), step).items():
            result[f"{split}/{k}"] = v
    print(json.dumps(result, indent=2))
    return 0


def _tracking_init(args: argparse.Namespace) -> int:
    from rotrnn.config import load_params, suite_name, suite_tracking
    from rotrnn.train.tracking import experiment_description, experiment_name, init_store, tracking_uri

    params = load_params(args.params)
    suite = suite_name(params, args.suite, args.params)
    config = {"suite": suite, "tracking": suite_tracking(params, suite)}
    uri = tracking_uri(config["tracking"]["uri"])
    exp_id = init_store(uri, experiment_name(config), experiment_description(suite))
    print(f"MLflow store {uri}: experiment {experiment_name(config)!r} (id {exp_id})")
    return 0


def _tracking_serve(args: argparse.Namespace) -> int:
    from rotrnn.train.server import serve

    serve(args.backend_store_uri, args.artifacts_destination, args.state_dir, args.host, args.port,
          [h.strip() for h in args.allowed_hosts.split(",") if h.strip()], args.workers)
    return 0  # not reached: serve replaces the process
