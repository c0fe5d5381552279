"""Atomic, complete checkpoints: a job killed at any instant leaves either the previous or the new file, never a
torn one, and resuming from it continues the run bit for bit on the same machine (CPU).

A checkpoint is a pickle, and a pickle can name any function to call; run directories and DVC remotes are shared,
so :func:`load` reads with PyTorch's weights-only unpickler and an explicit allow-list of what a checkpoint of this
project holds beyond tensors and plain containers: numpy's array reconstruction, for the numpy RNG state. A file that
needs anything else is refused in one line (:class:`CheckpointError`) and nothing in it runs."""
from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rotrnn import atomic
from rotrnn.errors import UserError


class CheckpointError(UserError):
    """A checkpoint that cannot be read, or that needs something a checkpoint never holds."""


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temp file in the same directory, fsync, rename over ``path``, fsync the directory."""
    atomic.replace(path, lambda f: torch.save(obj, f))


def allowed_globals() -> list[Any]:
    """What the unpickler may construct besides tensors, dicts, lists, tuples, strings and numbers: numpy arrays
    (``np.random.get_state()`` holds the Mersenne Twister key as a uint32 array). ``_reconstruct`` only makes an
    empty array of an allowed class; its data is set from the pickled bytes, or from a list of already allowed
    objects for an object array."""
    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)), np._core.multiarray._reconstruct]


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without running code from it; CheckpointError (one line naming the file) otherwise."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler met something outside the allow-list
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = (f"it asks to call {found.group(1)}" if found else
                next((line for line in lines[1:] if not line.startswith("Check the documentation")), "unsupported"))
        raise CheckpointError(f"{path}: refused: {what}, which no checkpoint of this project holds (a pickle can "
                              "run code); nothing in it was run") from None
    except Exception as e:  # noqa: BLE001 - name the file whatever went wrong, in one line
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from None
