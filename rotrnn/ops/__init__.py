"""Kernels and autograd Functions. The math users read lives in :mod:`rotrnn.nn`."""
