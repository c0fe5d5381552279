"""Layers: the math users read. Each maps u (batch, length, d_model) to the same shape."""
from rotrnn.choices import MODELS

from .base import DiagonalRecurrentLayer
from .dlr import DLR
from .lru import LRU
from .rotrnn import RotRNN

LAYERS = {"rotrnn": RotRNN, "lru": LRU, "dlr": DLR}
if tuple(LAYERS) != MODELS:  # the configuration validates model names against rotrnn.choices without importing this
    raise ImportError(f"rotrnn.nn.LAYERS {tuple(LAYERS)} and rotrnn.choices.MODELS {MODELS} disagree")

__all__ = ["RotRNN", "LRU", "DLR", "DiagonalRecurrentLayer", "LAYERS"]
