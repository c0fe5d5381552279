"""Layers: the math users read. Each maps u (batch, length, d_model) to the same shape."""
from .base import DiagonalRecurrentLayer
from .dlr import DLR
from .lru import LRU
from .rotrnn import RotRNN

LAYERS = {"rotrnn": RotRNN, "lru": LRU, "dlr": DLR}

__all__ = ["RotRNN", "LRU", "DLR", "DiagonalRecurrentLayer", "LAYERS"]
