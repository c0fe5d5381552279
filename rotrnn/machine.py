"""The machine in words, for reports of timings (`rotrnn bench`, `rotrnn analysis`): a report names the machine a
reader could buy or rent, never a path of the one that made it. Below both users (bench and analysis), which may
not import each other both ways."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cores() -> int:
    """The cores this process may use: a container, Slurm or taskset gives it fewer than the host has."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine(device=None) -> str:
    """CPU model, cores, torch version and intra-op threads; the GPU's name too when ``device`` is a CUDA one."""
    import torch

    gpu = ""
    if device is not None and torch.device(device).type == "cuda":
        gpu = f", {torch.cuda.get_device_name(device)}"
    return f"{cpu_model()}, {cores()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread(s){gpu}"
