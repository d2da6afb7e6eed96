"""Small file helpers: atomic writes, JSON, run-wide seeding and devices.

Every result file is written to a temporary name in the same folder and renamed into place, so a
killed process leaves either the previous file or the new one, never half of one. The writer holds
an flock on its temporary, which the operating system releases when the process dies (even by
SIGKILL): the next write of the same file removes temporaries whose lock is free, so a killed
writer leaves nothing behind for long and a live one is never disturbed. A disk that fills up is
reported as DiskFullError naming the file. torch is imported only by the helpers that need it, so
the raw-skeleton conversion workers start without it.
"""
from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:
    import torch

from .errors import TDSMError
from .inputs import raise_os_error

_UMASK = os.umask(0)
os.umask(_UMASK)


def temporary_pattern(path: str | Path) -> str:
    """The glob of the temporaries `atomic_path` writes for `path` (`.<name>.<random>.tmp[<suffix>]` beside it)."""
    path = Path(path)
    return str(path.parent / f".{glob.escape(path.name)}.*.tmp*")


def remove_abandoned_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporaries of `path` left by writers that died (their flock is free); return them."""
    removed = []
    for candidate in map(Path, glob.glob(temporary_pattern(path))):
        try:
            with open(candidate, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live writer: BlockingIOError
                candidate.unlink()
            removed.append(candidate)
        except OSError:
            continue  # in use, already gone, or not ours to remove
    return removed


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success fsync and rename it onto `path`.

    `suffix` ends the temporary's name, for writers that pick the format by it (e.g. ".gif" for Pillow)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    except OSError as exc:
        raise_os_error(exc, path, "output file", "choose an output path in a folder you can write to", writing=True)
    tmp_path = Path(tmp)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the OS if this process dies: marks the temporary as live
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; results should get the usual permissions
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except TDSMError:
        raise
    except OSError as exc:
        raise_os_error(exc, path, "output file", "check the folder's permissions and free space", writing=True)
    finally:
        os.close(fd)
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON (indented, NaN-free) atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def torch_save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save to `path` atomically."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        try:
            torch.save(obj, handle)  # through a Python file, so that a full disk raises OSError (ENOSPC) ...
        except RuntimeError as exc:
            if isinstance(exc.__context__, OSError):  # ... which torch's end-of-file assertion would hide
                raise exc.__context__ from None
            raise


def save_npz_atomic(path: str | Path, **arrays: np.ndarray) -> None:
    """np.savez to `path` atomically (the file name keeps its .npz suffix)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    """np.save to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


DEVICE_NAMES = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(name: str, source: str = "train.device") -> torch.device:
    """The device `name` means here ('auto': cuda when available, else cpu), or a one-sentence ConfigError for a
    name that is not a device or a device this machine lacks; `source` says where the name came from (a config
    key or --device). Changes no global state."""
    import torch

    from .errors import ConfigError

    if not DEVICE_NAMES.fullmatch(name):
        raise ConfigError(f"{source} {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{source} 'mps' was asked for but MPS (Apple GPUs) is not available here; use device "
                          f"'auto' or 'cpu'.")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{source} {name!r} was asked for but CUDA is not available here; use device 'auto' or 'cpu'.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{source} {name!r} asks for GPU {device.index} but {torch.cuda.device_count()} GPU(s) are "
                          f"visible here; use a smaller index or 'cuda'.")
    return device


def resolve_device(name: str = "auto", source: str = "train.device") -> torch.device:
    """`check_device`, and TF32 matmuls enabled on CUDA."""
    import torch

    device = check_device(name, source)
    if device.type == "cuda":
        # fp32 matmuls that remain outside bf16 autocast use TF32 tensor cores
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device
