"""Files and folders a user names, checked where they enter: each problem is one sentence that names
the input, says what is wrong with it and how to fix it.

Every helper takes `what`, the input as the user knows it (e.g. "class prompt file (data.class_csv)"),
and `fix`, what to change (a lowercase clause without a full stop). `read_text` and `reading` turn
the operating system's errors (a missing file, a folder where a file belongs, no permission) and
text that is not UTF-8 into FileAccessError; `check_output_file` and `check_output_folder` refuse
an output path that cannot be written before any expensive work starts; `raise_os_error` is the
one place that says what an OSError means, and a disk that fills up is a DiskFullError naming the
file (io.atomic_path, and the command line for any other write).
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NoReturn

from .errors import DiskFullError, FileAccessError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _blocking_file(path: Path) -> Path | None:
    """The first part of `path` (from the top) that exists but is not a folder, if any."""
    for part in reversed([path, *path.parents]):
        if part.exists() and not part.is_dir():
            return part
    return None


def raise_os_error(exc: OSError, path: str | Path | None, what: str, fix: str, writing: bool | None = False) -> NoReturn:
    """Raise the one-sentence FileAccessError (DiskFullError for a full disk) that `exc` means for `path`.

    writing: whether `path` was being written (False: read; None: not known)."""
    verb = {True: "written", False: "read", None: "opened"}[writing]
    code = exc.errno
    if path is None:  # an error raised by a write() or a library that does not say which file
        if code in DISK_FULL:
            raise DiskFullError("the disk is full, so a file could not be written; free some space and run the same "
                                "command again.") from None
        raise FileAccessError(f"a file could not be {verb} ({exc.strerror or type(exc).__name__}); {fix}.") from None
    path = Path(path)
    if code in DISK_FULL:
        raise DiskFullError(f"the disk holding {path} is full, so the {what} could not be written; free some space "
                            f"there (or write elsewhere) and run the same command again.") from None
    if code == errno.ENOTDIR or (code == errno.EEXIST and path.exists() and not path.is_dir()):
        blocker = _blocking_file(path) or path
        raise FileAccessError(f"{what} {path} cannot be {verb} because {blocker} is a file, not a folder; {fix}.") from None
    if code == errno.ENOENT:
        raise FileAccessError(f"{what} {path} does not exist; {fix}.") from None
    if code == errno.EISDIR:
        raise FileAccessError(f"{what} {path} is a folder, where a file belongs; {fix}.") from None
    if code in (errno.EACCES, errno.EPERM):
        raise FileAccessError(f"{what} {path} cannot be {verb}: permission denied; change its permissions, "
                              f"or {fix}.") from None
    if code == errno.EROFS:
        raise FileAccessError(f"{what} {path} lies on a read-only file system; {fix}.") from None
    raise FileAccessError(f"{what} {path} cannot be {verb} ({exc.strerror or type(exc).__name__}); {fix}.") from None


@contextmanager
def reading(path: str | Path, what: str, fix: str) -> Iterator[Path]:
    """`with reading(path, what, fix):` turns an OSError of the block into FileAccessError naming `path`."""
    try:
        yield Path(path)
    except FileAccessError:
        raise
    except OSError as exc:
        raise_os_error(exc, path, what, fix)


def read_text(path: str | Path, what: str, fix: str) -> str:
    """The UTF-8 text of a file (a byte-order mark is dropped, line ends become \\n), or one sentence why not."""
    path = Path(path)
    with reading(path, what, fix):
        data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise FileAccessError(f"{what} {path} is UTF-16 text; save it as UTF-8 (most editors offer the encoding "
                              f"under 'Save as').")
    if b"\x00" in data[:4096]:
        raise FileAccessError(f"{what} {path} is a binary file, not text; {fix}.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise FileAccessError(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}, "
                              f"e.g. a Latin-1 accent); save it as UTF-8.") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def check_output_folder(folder: str | Path, what: str, fix: str) -> None:
    """Refuse a folder that cannot be made or written (a file in the way, no permission, read-only)."""
    folder = Path(folder)
    for part in [folder, *folder.parents]:
        if part.exists():
            if not part.is_dir():
                raise FileAccessError(f"{what} {folder} cannot be made because {part} is a file, not a folder; {fix}.")
            if not os.access(part, os.W_OK | os.X_OK):
                raise FileAccessError(f"{what} {folder} cannot be written: {part} is not writable (permission denied "
                                      f"or a read-only file system); {fix}.")
            return


def check_output_file(path: str | Path, what: str, fix: str) -> None:
    """Refuse an output file path that is a folder or whose folder cannot be made or written."""
    path = Path(path)
    if path.is_dir():
        raise FileAccessError(f"{what} {path} is an existing folder, where the file to write belongs; {fix}.")
    check_output_folder(path.parent, f"the folder of the {what}", fix)
