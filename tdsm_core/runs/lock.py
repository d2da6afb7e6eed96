"""One writer per run folder: an advisory lock held for as long as a process writes there.

The lock is an `flock` on a small file in the run folder, so the operating system releases it when
the process ends, even after SIGKILL: a crashed run never leaves a stale lock behind.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ..errors import ConfigError, TDSMError


class RunLockedError(TDSMError, RuntimeError):
    """Another process is writing to the same run folder."""


def check_writable_folder(folder: str | Path) -> None:
    """Refuse, in one sentence, a run folder that is a file or that cannot be created or written."""
    folder = Path(folder)
    for part in [folder, *folder.parents]:
        if part.exists():
            if not part.is_dir():
                raise ConfigError(f"{part} is a file, so the run folder {folder} cannot be made there; "
                                  f"set output_dir (or name) to a folder.")
            if not os.access(part, os.W_OK | os.X_OK):
                raise ConfigError(f"{part} is not writable, so the run folder {folder} cannot be written; "
                                  f"set output_dir to a folder you can write to.")
            return


class RunLock:
    """`with RunLock(run_dir, "train"):` - refuses with RunLockedError if another process holds it."""

    def __init__(self, run_dir: str | Path, purpose: str = "train", what: str = ""):
        """`purpose` names the lock file (writers that must exclude each other share it); `what` says who holds it."""
        self.path = Path(run_dir) / f".{purpose}.lock"
        self.purpose = what or purpose
        self._handle = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLockedError(f"{self.path.parent} is already in use by {holder}; wait for it "
                                 f"to finish or give this run another name or output_dir.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')} ({self.purpose})")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete `.name.xxxx.tmp` files a killed writer left behind (call only while holding the folder's lock)."""
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
