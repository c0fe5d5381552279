"""Datasets: download, raw → prepared conversion, fixtures, generators, and the memory-mapped reader.

Prepared data (one directory per task, `.npy` arrays per split plus `meta.json`) is described in
`rotrnn.data.prepared`; the task registry is `rotrnn.data.tasks`.
"""
from __future__ import annotations

from rotrnn.data.prepared import PreparedDataset, PreparedWriter, load_dataset

__all__ = ["PreparedDataset", "PreparedWriter", "load_dataset"]
