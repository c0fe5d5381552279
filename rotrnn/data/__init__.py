"""Datasets: download, raw → prepared conversion, fixtures, generators, and the memory-mapped reader.

Prepared data (one directory per task, `.npy` arrays per split plus `meta.json`) is described in
`rotrnn.data.prepared`; the task registry is `rotrnn.data.tasks`. The re-exports below load lazily, so that
importing a light submodule (the CLI, the registry) does not import torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["PreparedDataset", "PreparedWriter", "load_dataset"]

if TYPE_CHECKING:
    from rotrnn.data.prepared import PreparedDataset, PreparedWriter, load_dataset


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rotrnn.data import prepared

        return getattr(prepared, name)
    raise AttributeError(f"module 'rotrnn.data' has no attribute {name!r}")
