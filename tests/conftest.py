import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` on 2 cores: one intra-op thread per worker (and per job a test starts), or OpenMP's spinning
    # threads oversubscribe the CPU and small ops slow down many times over
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _outside_slurm(monkeypatch):
    """The tests keep MLflow in SQLite files, which a Slurm job refuses (rotrnn.train.tracking.check_store): a
    suite run inside a Slurm allocation is not a Slurm job of the pipeline."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


@pytest.fixture
def float64_default():
    """Run a test with float64 as the default dtype (exact properties), restoring the previous default after."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
