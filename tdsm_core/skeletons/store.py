"""Arrays too large for memory: read from disk on demand, written chunk by chunk.

- `DiskArray`: a C-ordered array inside a file (a `.npy`, or a member of an uncompressed `.npz`),
  read a block of rows at a time with `os.pread`. Nothing is memory-mapped, so the rows a process
  has read do not stay in its resident memory: the kernel's page cache holds the file and gives
  the memory back when others need it. The file is opened once, so a file replaced while in use
  (a new conversion renamed over it) keeps being read from the version that was opened.
- `NpzWriter`: writes a `.npz` as `np.savez` does (an uncompressed zip of `.npy` members, which
  `np.load` reads), but member by member, a large member streamed from chunks, and with fixed
  timestamps so that the same arrays always give the same bytes.
- `write_npy_chunks`: a `.npy` written from chunks of rows.

Every writer goes through `io.atomic_path`: a killed process leaves no half-written file.
"""
from __future__ import annotations

import os
import struct
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import DataError
from ..io import atomic_path

FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the zip epoch: members carry no wall-clock time


class DiskArray:
    """Rows of a C-ordered array stored in `path` from byte `offset` on, read on demand.

    Indexing with an int, a slice (step 1) or an integer array returns a new in-memory array.
    """

    def __init__(self, path: str | Path, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.offset = Path(path), int(offset)
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._file = None
        self._identity = _identity(self.path)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DiskArray({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def __getstate__(self) -> dict:  # the open file does not travel to another process
        return {**self.__dict__, "_file": None}

    def _fd(self) -> int:
        if self._file is None:
            if _identity(self.path) != self._identity:
                raise DataError(f"{self.path} was replaced while it was being read; run the command again.")
            self._file = open(self.path, "rb", buffering=0)
        return self._file.fileno()

    def _read_into(self, out: np.ndarray, first_row: int) -> None:
        view = out.reshape(-1).view(np.uint8).data
        done, fd = 0, self._fd()
        while done < len(view):
            got = os.preadv(fd, [view[done:]], self.offset + first_row * self.row_bytes + done)
            if got == 0:
                raise DataError(f"{self.path} ends before the {self.shape} array it announces; the file is "
                                f"truncated, so write it again.")
            done += got

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a new array."""
        start, stop = max(0, start), min(len(self), stop)
        out = np.empty((max(0, stop - start),) + self.shape[1:], self.dtype)
        if out.size:
            self._read_into(out, start)
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given rows, in the given order; consecutive rows are read in one call."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows {rows.min()}..{rows.max()} outside the {len(self)} rows of {self.path}")
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        out = np.empty((len(rows),) + self.shape[1:], self.dtype)
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        for begin, end in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
            if end > begin:
                self._read_into(out[begin:end], int(ordered[begin]))
        if (order == np.arange(len(order))).all():
            return out
        result = np.empty_like(out)
        result[order] = out  # out[k] holds rows[order[k]]
        return result

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            index = int(index) + (len(self) if index < 0 else 0)
            return self.read(index, index + 1)[0]
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError("DiskArray slices take step 1")
            return self.read(start, stop)
        return self.take(index)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self.read(0, len(self))
        return whole if dtype is None else whole.astype(dtype)


def _identity(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_dev, status.st_ino


def _read_npy_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return reader(handle)


def open_npy(path: str | Path) -> DiskArray:
    """A `.npy` file as a DiskArray (the header says the shape and dtype)."""
    with open(path, "rb") as handle:
        shape, fortran, dtype = _read_npy_header(handle)
        if fortran or dtype.hasobject:
            raise DataError(f"{path} is not a C-ordered numeric array; write it again.")
        return DiskArray(path, handle.tell(), shape, dtype)


def npz_member(path: str | Path, name: str) -> DiskArray | None:
    """Member `name` of an uncompressed `.npz` as a DiskArray; None if it is compressed or not C-ordered
    (read it with np.load then)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)  # the local file header; its name and extra field lengths say where data starts
        if local[:4] != b"PK\x03\x04":
            raise DataError(f"{path} is not a valid .npz (member {name} has no local header); write it again.")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        shape, fortran, dtype = _read_npy_header(handle)
        if fortran or dtype.hasobject:
            return None
        return DiskArray(path, handle.tell(), shape, dtype)


class NpzWriter:
    """`with NpzWriter(path) as npz: npz.add(name, array); with npz.stream(name, shape, dtype) as put: put(chunk)`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __enter__(self) -> NpzWriter:
        self._atomic = atomic_path(self.path)
        self._archive = zipfile.ZipFile(self._atomic.__enter__(), "w", zipfile.ZIP_STORED, allowZip64=True)
        return self

    def __exit__(self, *exc_info) -> None:
        self._archive.close()
        self._atomic.__exit__(*exc_info)  # renames into place only when the block succeeded

    def add(self, name: str, array: np.ndarray) -> None:
        """One whole (small) array."""
        array = np.asarray(array)
        with self.stream(name, array.shape, array.dtype) as put:
            put(array)

    @contextmanager
    def stream(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> Iterator:
        """Yield put(chunk): chunks of rows (shape[1:] each) that together make the array `shape`."""
        dtype = np.dtype(dtype)
        info = zipfile.ZipInfo(f"{name}.npy", date_time=FIXED_TIME)
        info.external_attr = 0o644 << 16
        with self._archive.open(info, "w", force_zip64=True) as member:
            written = _ChunkWriter(member, tuple(shape), dtype)
            yield written.put
            written.finish(f"{self.path} member {name}")


def write_npy_chunks(path: str | Path, shape: tuple[int, ...], dtype: np.dtype, chunks: Iterable[np.ndarray]) -> None:
    """Write a `.npy` of `shape` from consecutive chunks of rows, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        written = _ChunkWriter(handle, tuple(shape), np.dtype(dtype))
        for chunk in chunks:
            written.put(chunk)
        written.finish(str(path))


class _ChunkWriter:
    """The .npy header, then rows; checks that the rows add up to the announced shape."""

    def __init__(self, handle, shape: tuple[int, ...], dtype: np.dtype):
        self.handle, self.shape, self.dtype, self.rows = handle, shape, dtype, 0
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(handle, header)

    def put(self, chunk: np.ndarray) -> None:
        chunk = np.ascontiguousarray(chunk, dtype=self.dtype)
        if self.shape == ():
            self.rows += 1
        elif chunk.shape[1:] != self.shape[1:]:
            raise ValueError(f"chunk of shape {chunk.shape} does not fit an array of shape {self.shape}")
        else:
            self.rows += len(chunk)
        self.handle.write(chunk.reshape(-1).view(np.uint8).data)

    def finish(self, what: str) -> None:
        expected = 1 if self.shape == () else self.shape[0]
        if self.rows != expected:
            raise ValueError(f"{what}: {self.rows} rows written for an array of shape {self.shape}")
