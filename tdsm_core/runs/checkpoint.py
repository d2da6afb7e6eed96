"""Checkpoints: written atomically, loaded with a clear message when missing, corrupt or mismatched.

A checkpoint holds the model, optimiser and scheduler states, the step, the resolved config and any
extra fields a trainer wants to keep (best validation score, ...). It holds no global random-number
state: the trainers derive every step's randomness from (seed, step).
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..inputs import reading
from ..io import torch_save_atomic

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, **fields: Any) -> None:
    """Save a dict of fields (tensors, state dicts, plain values) atomically."""
    torch_save_atomic({"format": CHECKPOINT_FORMAT, **fields}, path)


# the names the trainers give their checkpoints: only a damaged file of these is ever called ours to delete
OWN_CHECKPOINT = re.compile(r"(last|best|step_\d+)\.pt")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`, or raise CheckpointError in one sentence."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass a checkpoint file such as <run folder>/last.pt, "
                              f"or --checkpoint last or best.")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train first (python -m tdsm_core train) "
                              f"or pass the path of an existing checkpoint.")
    with reading(path, "checkpoint", "pass a checkpoint file you can read"), open(path, "rb") as handle:
        start = handle.read(4)
    # only a file of the trainers' own names is ever called disposable; any other file may be the user's
    advice = ("delete it and resume from another checkpoint or retrain" if OWN_CHECKPOINT.fullmatch(path.name)
              else "pass an intact checkpoint written by this project's trainer")
    if not start:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes), so it was never written completely; {advice}.")
    if not start.startswith((b"PK\x03\x04", b"\x80")):  # torch.save writes a zip archive (legacy files: a pickle)
        raise CheckpointError(f"checkpoint {path} cannot be read: it is not a PyTorch checkpoint (it starts with "
                              f"{start!r}); pass a last.pt or best.pt written by this project's trainer.")
    try:
        # weights_only=False: the checkpoint holds RNG states and the config (our own files).
        data = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc)[:80]}); it is "
                              f"truncated or corrupt, so {advice}.") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT or "model" not in data:
        raise CheckpointError(f"{path} is not a TDSM workbook checkpoint (format {CHECKPOINT_FORMAT}); "
                              f"pass a file written by this project's trainer.")
    return data


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """load_state_dict with a message that names the first mismatching tensor."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit this model (missing {missing[:3]}, unexpected "
                              f"{unexpected[:3]}); use the config the checkpoint was trained with.")
    for key, tensor in own.items():
        if tensor.shape != state[key].shape:
            raise CheckpointError(f"checkpoint {path} has {key} of shape {tuple(state[key].shape)} but the model "
                                  f"expects {tuple(tensor.shape)}; the model or feature sizes in the config differ "
                                  f"from the ones it was trained with.")
    model.load_state_dict(state)
