"""Readers of raw skeleton datasets (NTU RGB+D, MSR Action3D, UTKinect-Action3D) that produce the
generic `.npz` format of `skeletons.format` (re-exported here), and `convert_dataset` to write it.

Every reader removes frames in which no actor is tracked (all joints zero), so time gaps are
closed up rather than kept as zeros, and drops whole sequences that contain NaN, are all zeros or
keep fewer than `min_frames` frames (`screen_sequence`); `SkeletonSet.dropped` says which and why,
and `SkeletonSet.summary()` says it in one line. The readers here build the set in memory;
`convert_dataset` converts NTU RGB+D with `ntu_convert` instead (shards, a process pool, bounded
memory), which gives the same file as `save_skeleton_npz(read_ntu(...))`.
"""
from __future__ import annotations

import inspect
import logging
import re
import zipfile
from pathlib import Path

import numpy as np

from ..data.features import builtin_class_table as class_table
from ..errors import DataError
from ..inputs import check_output_file, read_text
from .ntu import NTU_NAME, ntu_folder_table, read_ntu_skeleton, read_ntu_skeleton_by_line
from .ntu_convert import convert_ntu
from .format import (MIN_FRAMES, SkeletonSet, check_skeleton_set, load_skeleton_npz, save_skeleton_npz,
                              screen_sequence)
from .layouts import MSR20, NTU25, UTKINECT20, JointLayout

__all__ = ["SkeletonSet", "load_skeleton_npz", "save_skeleton_npz", "read_ntu_skeleton", "read_ntu_skeleton_by_line",
           "read_ntu", "read_msr_file", "read_msr", "read_utkinect_labels", "read_utkinect", "convert_dataset",
           "screen_sequence", "class_table", "NTU_NAME", "MIN_FRAMES"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Shared reader steps

def _assemble(sequences: list[tuple[str, np.ndarray, int, int]], dropped: dict[str, str], layout: JointLayout,
              names: list[str], descriptions: list[str] | None, actors: int, where: str) -> SkeletonSet:
    """(id, frames (T, M, J, 3), label, subject) tuples -> one ragged SkeletonSet (frames one after another)."""
    if not sequences:
        raise DataError(f"{where} gave no usable sequence ({len(dropped)} dropped: {dict(list(dropped.items())[:3])}); "
                        f"check that the folder holds the dataset's skeleton files.")
    lengths = np.array([len(frames) for _, frames, _, _ in sequences], np.int64)
    frames = np.zeros((lengths.sum(), actors, len(layout.joints), 3), np.float32)  # (F, M, J, 3)
    for begin, (_, sequence, _, _) in zip(np.cumsum(lengths) - lengths, sequences):
        frames[begin:begin + len(sequence), :sequence.shape[1]] = sequence
    data = SkeletonSet(
        frames=frames, lengths=lengths, labels=np.array([s[2] for s in sequences], np.int64),
        class_names=np.array(names, dtype=str), layout=layout.name,
        bones=np.array(layout.bones, np.int64).reshape(-1, 2), subjects=np.array([s[3] for s in sequences], np.int64),
        descriptions=None if descriptions is None else np.array(descriptions, dtype=str),
        sample_ids=np.array([s[0] for s in sequences], dtype=str), dropped=dropped)
    data = check_skeleton_set(data, where)
    log.info(data.summary())
    return data


def _numeric_rows(path: Path, width: int) -> np.ndarray:
    """A whitespace table with `width` numbers per non-blank line -> (rows, width) float64."""
    rows = []
    for number, line in enumerate(_raw_text(path).splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        try:
            if len(values) != width:
                raise ValueError
            rows.append([float(v) for v in values])
        except ValueError:
            raise DataError(f"{path} line {number} should hold {width} numbers but reads {line.strip()[:60]!r}; "
                            f"the file is corrupt or not in the dataset's format.") from None
    return np.array(rows, np.float64).reshape(-1, width)


def _raw_text(path: Path) -> str:
    """A raw dataset file's text, or one sentence naming the file that cannot be read."""
    return read_text(path, "raw skeleton file", "restore the dataset file (extract the archive again)")


def _folder(folder: str | Path, what: str) -> Path:
    folder = Path(folder)
    if folder.is_file():
        hint = " (a generic skeleton file: read it with skeleton.kind npz)" if folder.suffix == ".npz" else ""
        raise DataError(f"{what} folder {folder} is a file{hint}; point it at the unpacked dataset folder.")
    if not folder.is_dir():
        raise DataError(f"{what} folder {folder} does not exist; point it at the unpacked dataset.")
    return folder


# ----------------------------------------------------------------------------------------------
# NTU RGB+D (the parsers are in `ntu`)

def read_ntu(folder: str | Path, class_names: list[str] | None = None, descriptions: list[str] | None = None,
             max_actors: int = 2, min_frames: int = MIN_FRAMES) -> SkeletonSet:
    """Every `SsssCcccPpppRrrrAaaa.skeleton` file in `folder`, in memory; label = A - 1, subject = P.

    class_names defaults to the built-in NTU-60 list (60 classes) when every file is an action up to A060,
    and to the built-in NTU-120 list (120 classes) when any file is A061 or above. For a whole dataset use
    `convert_dataset("ntu", ...)`, which writes the same file without holding the set in memory.
    """
    folder = _folder(folder, "NTU skeleton")
    paths, labels, performers, class_names, descriptions = ntu_folder_table(folder, class_names, descriptions)
    sequences, dropped = [], {}
    for path, label, performer in zip(paths, labels.tolist(), performers.tolist()):
        frames, reason = screen_sequence(read_ntu_skeleton(path, max_actors), min_frames)
        if frames is None:
            dropped[path.stem] = reason
        else:
            sequences.append((path.stem, frames, label, performer))
    return _assemble(sequences, dropped, NTU25, class_names, descriptions, max_actors, f"NTU folder {folder}")


# ----------------------------------------------------------------------------------------------
# MSR Action3D and UTKinect-Action3D (one actor, 20 Kinect v1 joints in two different orders)

MSR_NAME = re.compile(r"a(\d+)_s(\d+)_e(\d+)_skeleton3D")


def read_msr_file(path: str | Path) -> np.ndarray:
    """One MSR Action3D `aAA_sSS_eEE_skeleton3D.txt` (rows `x y z c`) -> (T, 1, 20, 3); c is dropped."""
    path = Path(path)
    rows = _numeric_rows(path, 4)
    if len(rows) == 0 or len(rows) % 20:
        raise DataError(f"{path} has {len(rows)} joint rows, not a positive multiple of 20 (one row per joint per "
                        f"frame); the file is truncated or corrupt.")
    return rows[:, :3].reshape(-1, 1, 20, 3)


def read_msr(folder: str | Path, min_frames: int = MIN_FRAMES) -> SkeletonSet:
    """Every MSR Action3D sequence in `folder`; label = AA - 1, subject = SS."""
    folder = _folder(folder, "MSR Action3D")
    names, descriptions = class_table("msr_action3d")
    sequences, dropped = [], {}
    for path in sorted(folder.glob("a*_s*_e*_skeleton3D.txt")):
        match = MSR_NAME.fullmatch(path.stem)
        if not match or not 1 <= int(match.group(1)) <= len(names):
            raise DataError(f"{path.name} is not an MSR Action3D file aAA_sSS_eEE_skeleton3D.txt with AA in 01..20; "
                            f"remove or rename it.")
        action, subject = int(match.group(1)), int(match.group(2))
        frames, reason = screen_sequence(read_msr_file(path), min_frames)
        sample = path.stem.removesuffix("_skeleton3D")
        if frames is None:
            dropped[sample] = reason
        else:
            sequences.append((sample, frames, action - 1, subject))
    return _assemble(sequences, dropped, MSR20, names, descriptions, 1, f"MSR Action3D folder {folder}")


UTKINECT_ACTIONS = ("walk", "sitDown", "standUp", "pickUp", "carry", "throw", "push", "pull", "waveHands", "clapHands")


def read_utkinect_labels(path: str | Path) -> dict[str, list[tuple[str, float, float]]]:
    """`actionLabel.txt` -> {'s01_e01': [(action, start id, end id), ...]}; NaN bounds are kept as NaN."""
    path = Path(path)
    clips: dict[str, list[tuple[str, float, float]]] = {}
    recording = None
    for number, line in enumerate(_raw_text(path).splitlines(), start=1):
        line = line.strip()
        if re.fullmatch(r"s\d+_e\d+", line):
            recording = clips.setdefault(line, [])
        elif line:
            match = re.fullmatch(r"(\w+):\s*(\S+)\s+(\S+)", line)
            if recording is None or not match or match.group(1) not in UTKINECT_ACTIONS:
                raise DataError(f"{path} line {number} should be 'sSS_eEE' or '<action>: <start> <end>' with an action "
                                f"in {list(UTKINECT_ACTIONS)}, got {line[:60]!r}.")
            try:
                recording.append((match.group(1), float(match.group(2)), float(match.group(3))))
            except ValueError:
                raise DataError(f"{path} line {number} has frame ids that are not numbers: {line[:60]!r}.") from None
    return clips


def read_utkinect(folder: str | Path, min_frames: int = MIN_FRAMES) -> SkeletonSet:
    """Every clip of `actionLabel.txt` cut from `joints_sSS_eEE.txt`; subject = SS.

    A clip is every row whose frame id lies in [start, end], in file order. Frame ids skip values
    and sometimes repeat; a repeated id holds a new pose (it differs from the previous row as much
    as consecutive frames do), so it is kept as its own frame. Exact duplicate rows are removed.
    """
    folder = _folder(folder, "UTKinect")
    if not (folder / "actionLabel.txt").is_file():
        raise DataError(f"{folder} has no actionLabel.txt (the clip bounds); point at the unpacked UTKinect folder.")
    names, descriptions = class_table("utkinect")
    sequences, dropped = [], {}
    for recording, clips in read_utkinect_labels(folder / "actionLabel.txt").items():
        path = folder / f"joints_{recording}.txt"
        if not path.is_file():
            raise DataError(f"{path} is missing but {folder / 'actionLabel.txt'} lists {recording}; restore the file.")
        rows = _numeric_rows(path, 61)  # frame id + 20 joints x (x y z)
        repeat = np.r_[False, (rows[1:] == rows[:-1]).all(axis=1)]
        rows = rows[~repeat]
        for action, start, end in clips:
            sample = f"{recording}_{action}"
            frames = rows[(rows[:, 0] >= start) & (rows[:, 0] <= end), 1:].reshape(-1, 1, 20, 3)
            if np.isnan([start, end]).any():
                frames, reason = None, "contains NaN (clip bounds in actionLabel.txt)"
            elif len(frames) == 0:
                frames, reason = None, f"too few frames (no frame id in [{start:g}, {end:g}])"
            else:
                frames, reason = screen_sequence(frames, min_frames)
            if frames is None:
                dropped[sample] = reason
            else:
                sequences.append((sample, frames, UTKINECT_ACTIONS.index(action), int(recording.split("_")[0][1:])))
    return _assemble(sequences, dropped, UTKINECT20, names, descriptions, 1, f"UTKinect folder {folder}")


READERS = {"ntu": read_ntu, "msr": read_msr, "utkinect": read_utkinect}
# what each reader's folder holds, to recognise a raw folder given as another kind
RAW_MARKERS = {"ntu": "*.skeleton", "msr": "a*_s*_e*_skeleton3D.txt", "utkinect": "actionLabel.txt"}


def is_skeleton_npz(path: str | Path) -> bool:
    """Whether `path` is an archive in the generic format (a conversion that may be replaced), judged by its members."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())  # version 2 stores frames.npy, version 1 skeletons.npy
            return {"layout.npy", "bones.npy"} <= members and bool({"frames.npy", "skeletons.npy"} & members)
    except (OSError, zipfile.BadZipFile):
        return False


def raw_kind(folder: str | Path) -> str | None:
    """The kind (ntu, msr, utkinect) of a raw dataset folder, judged by its files; None if none fits."""
    folder = Path(folder)
    return next((kind for kind, pattern in RAW_MARKERS.items() if folder.is_dir() and any(folder.glob(pattern))), None)


def convert_dataset(kind: str, folder: str | Path, out_path: str | Path, workers: int = 0, progress: bool = True,
                    **options) -> SkeletonSet:
    """Read a raw dataset (`kind` in ntu, msr, utkinect), save it as a generic `.npz`, print a summary.

    `options` go to the reader (min_frames; for ntu also class_names, descriptions, max_actors and
    shard_size). NTU RGB+D goes through `ntu_convert.convert_ntu`: `workers` processes (0: every core),
    a progress bar unless `progress` is False, memory that does not grow with the number of files, and
    a rerun after an interruption reuses the shards already converted, and the returned set reads its
    frames from the written file. The output path is checked before the (long) reading; a temporary
    left by a killed earlier conversion is removed when the file is written (io.atomic_path).
    """
    if kind not in READERS:
        raise DataError(f"unknown skeleton dataset kind {kind!r}; use one of {sorted(READERS)}.")
    accepted = set(inspect.signature(READERS[kind]).parameters) - {"folder"} | ({"shard_size"} if kind == "ntu" else set())
    if set(options) - accepted:
        raise DataError(f"option(s) {sorted(set(options) - accepted)} do not apply to {kind}; it takes {sorted(accepted)}.")
    other = raw_kind(folder) if Path(folder).is_dir() and not any(Path(folder).glob(RAW_MARKERS[kind])) else None
    if other:
        raise DataError(f"{folder} holds raw {other} files, not {kind} ones; convert it as {other}.")
    check_output_file(out_path, "converted skeleton file", "give an .npz path in a folder you can write to, "
                      "e.g. outputs/skeletons/msr.npz")
    if Path(out_path).is_file() and not is_skeleton_npz(out_path):
        raise DataError(f"{out_path} exists and is not a converted skeleton file, so convert will not overwrite it; "
                        f"give another output path.")
    if kind == "ntu":
        data = convert_ntu(_folder(folder, "NTU skeleton"), out_path, workers=workers, progress=progress, **options)
    else:
        data = READERS[kind](folder, **options)  # small datasets: in memory
        save_skeleton_npz(out_path, data)
        # the chain keys its preprocessed-array cache on the source file: an empty source resolved to the working
        # folder, so two datasets converted from the same folder shared (and overwrote) one cache file
        data.source = str(out_path)
    print(f"{data.summary()} -> {out_path}")
    return data
