"""NTU RGB+D folder -> generic skeleton `.npz`, in shards, by a pool of processes, in bounded memory.

    files (sorted by name) -> shards of `shard_size` files -> workers parse and screen each shard and
    write it to <out>.parts/shard_NNNNN.npz -> the main process streams the shards, in order, into <out>

- Deterministic: shards are cut from the sorted file list, not from the worker count, and the output
  is written by one process in shard order with fixed timestamps, so 1 or 16 workers give the same bytes.
- Restartable: a shard file records a key of its inputs (file names, sizes, modification times and
  the reader options); a second run after an interruption or an error reuses every shard whose key
  still matches and parses only the others. The parts folder is removed once the output is in place.
- Bounded memory: a worker holds one shard, the main process one shard's frames and the per-sequence
  fields (a few bytes a file); the output is ragged (skeletons.format version 2).
- Disk: the shards and the output each take about the size of the output until the parts are removed.

Workers are started with "spawn" and import NumPy and the parsers only (no torch).
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import zipfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import DataError
from .ntu import ntu_folder_table, read_ntu_skeleton
from .format import FORMAT_VERSION, MIN_FRAMES, SkeletonSet, add_dropped, load_skeleton_npz, screen_sequence
from .layouts import NTU25
from .store import NpzWriter

SHARD_SIZE = 128  # files per shard: a unit of work, of progress and of restart
PARSER_VERSION = 1  # part of every shard key: a change to parsing or screening invalidates old shards


@dataclass(frozen=True)
class Shard:
    """One unit of work: these files, parsed with these options, into this shard file."""

    index: int
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    performers: tuple[int, ...]
    max_actors: int
    min_frames: int
    out: str
    key: str


def default_workers() -> int:
    """Every core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def plan_shards(paths: list[Path], labels: np.ndarray, performers: np.ndarray, parts: Path, max_actors: int,
                min_frames: int, shard_size: int) -> list[Shard]:
    """Cut the sorted file list into shards and key each one by its inputs."""
    shards = []
    for index, begin in enumerate(range(0, len(paths), shard_size)):
        chunk = paths[begin:begin + shard_size]
        inputs = [(p.name, status.st_size, status.st_mtime_ns) for p, status in zip(chunk, map(os.stat, chunk))]
        key = hashlib.sha1(json.dumps([PARSER_VERSION, max_actors, min_frames, inputs]).encode()).hexdigest()
        shards.append(Shard(index, tuple(str(p) for p in chunk), tuple(labels[begin:begin + shard_size].tolist()),
                            tuple(performers[begin:begin + shard_size].tolist()), max_actors, min_frames,
                            str(parts / f"shard_{index:05d}.npz"), key))
    return shards


def convert_shard(shard: Shard) -> int:
    """Parse and screen the shard's files and write its shard file; returns the number of files (run in a worker)."""
    frames, lengths, kept, dropped = [], [], [], []
    for k, path in enumerate(shard.paths):
        sequence, reason = screen_sequence(read_ntu_skeleton(path, shard.max_actors), shard.min_frames)
        if sequence is None:
            dropped.append((Path(path).stem, reason))
        else:
            frames.append(sequence)
            lengths.append(len(sequence))
            kept.append(k)
    with NpzWriter(shard.out) as npz:
        npz.add("key", np.array(shard.key))
        npz.add("frames", np.concatenate(frames) if frames else np.zeros((0, shard.max_actors, 25, 3), np.float32))
        npz.add("lengths", np.array(lengths, np.int64))
        npz.add("labels", np.array(shard.labels, np.int64)[kept])
        npz.add("subjects", np.array(shard.performers, np.int64)[kept])
        npz.add("sample_ids", np.array([Path(shard.paths[k]).stem for k in kept], dtype=str))
        npz.add("dropped_ids", np.array([name for name, _ in dropped], dtype=str))
        npz.add("dropped_reasons", np.array([reason for _, reason in dropped], dtype=str))
    return len(shard.paths)


def shard_is_done(shard: Shard) -> bool:
    """Whether a shard file from an earlier run holds exactly this shard's inputs."""
    try:
        with np.load(shard.out, allow_pickle=False) as archive:
            return str(archive["key"]) == shard.key
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing, damaged or another file
        return False


def run_shards(shards: list[Shard], workers: int, bar: tqdm) -> None:
    """Convert the shards, in a pool of `workers` processes (in this process for 1); the first error stops all."""
    main = getattr(sys.modules["__main__"], "__file__", None)
    if main is not None and not Path(main).is_file():  # python - < script: a new process could not start it
        workers = 1
    if workers <= 1 or len(shards) <= 1:
        for shard in shards:
            bar.update(convert_shard(shard))
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(shards)), mp_context=context) as pool:
        pending = {pool.submit(convert_shard, shard) for shard in shards}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                error = future.exception()
                if error is None:
                    bar.update(future.result())
                    continue
                for other in pending:  # those not started yet; the running ones finish their shard
                    other.cancel()
                if isinstance(error, BrokenProcessPool):
                    kept = done_shards(shards)
                    raise DataError(f"a conversion worker process ended abruptly (out of memory?); run the conversion "
                                    f"again, with fewer workers (--workers 1) if it recurs: the {kept} of "
                                    f"{len(shards)} shards already converted are kept.") from None
                raise error


def done_shards(shards: list[Shard]) -> int:
    """How many of the shards have a finished shard file."""
    return sum(shard_is_done(shard) for shard in shards)


def assemble(shards: list[Shard], out_path: Path, class_names: list[str], descriptions: list[str] | None,
             where: str) -> dict[str, str]:
    """Stream the shard files, in order, into the generic `.npz` at `out_path`; returns the dropped sequences."""
    fields: dict[str, list[np.ndarray]] = {name: [] for name in ("lengths", "labels", "subjects", "sample_ids")}
    dropped: dict[str, str] = {}
    for shard in shards:  # first the per-sequence fields (small), to know the frame count
        with np.load(shard.out, allow_pickle=False) as archive:
            for name in fields:
                fields[name].append(archive[name])
            dropped.update(zip(archive["dropped_ids"].tolist(), archive["dropped_reasons"].tolist()))
    columns = {name: np.concatenate(parts) if parts else np.zeros(0, np.int64) for name, parts in fields.items()}
    if len(columns["lengths"]) == 0:
        raise DataError(f"{where} gave no usable sequence ({len(dropped)} dropped: {dict(list(dropped.items())[:3])}); "
                        f"check that the folder holds the dataset's skeleton files.")
    actors = shards[0].max_actors
    with NpzWriter(out_path) as npz:  # the same fields, in the same order, as save_skeleton_npz
        npz.add("format_version", np.array(FORMAT_VERSION, np.int64))
        with npz.stream("frames", (int(columns["lengths"].sum()), actors, 25, 3), np.float32) as put:
            for shard in shards:
                with np.load(shard.out, allow_pickle=False) as archive:
                    put(archive["frames"])
        npz.add("lengths", columns["lengths"])
        npz.add("labels", columns["labels"])
        npz.add("class_names", np.array(class_names, dtype=str))
        npz.add("layout", np.array(NTU25.name))
        npz.add("bones", np.array(NTU25.bones, np.int64).reshape(-1, 2))
        npz.add("subjects", columns["subjects"])
        if descriptions is not None:
            npz.add("descriptions", np.array(descriptions, dtype=str))
        npz.add("sample_ids", columns["sample_ids"])
        add_dropped(npz, dropped)
    return dropped


def convert_ntu(folder: str | Path, out_path: str | Path, class_names: list[str] | None = None,
                descriptions: list[str] | None = None, max_actors: int = 2, min_frames: int = MIN_FRAMES,
                workers: int = 0, shard_size: int = SHARD_SIZE, progress: bool = True) -> SkeletonSet:
    """Every `SsssCcccPpppRrrrAaaa.skeleton` file in `folder` -> the generic `.npz` at `out_path`.

    label = A - 1, subject = P; class names default to the built-in NTU-60 or NTU-120 list (see
    `ntu.ntu_folder_table`). `workers` processes (0: every core) parse shards of `shard_size` files;
    a progress bar shows files/s and the time left. Returns the written set, its frames left on disk.
    """
    folder, out_path = Path(folder), Path(out_path)
    if not folder.is_dir():
        raise DataError(f"NTU skeleton folder {folder} does not exist; point it at the unpacked dataset.")
    paths, labels, performers, class_names, descriptions = ntu_folder_table(folder, class_names, descriptions)
    parts = out_path.with_name(out_path.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    shards = plan_shards(paths, labels, performers, parts, max_actors, min_frames, shard_size)
    todo = [shard for shard in shards if not shard_is_done(shard)]
    reused = sum(len(shard.paths) for shard in shards if shard not in todo)
    with tqdm(total=len(paths), initial=reused, unit="files", desc=f"convert {folder.name}", disable=not progress,
              dynamic_ncols=True) as bar:
        if reused:
            bar.set_postfix_str(f"{len(shards) - len(todo)} shards from an earlier run")
        run_shards(todo, workers or default_workers(), bar)
    dropped = assemble(shards, out_path, class_names, descriptions, f"NTU folder {folder}")
    shutil.rmtree(parts)
    data = load_skeleton_npz(out_path)
    data.dropped = dropped
    return data
