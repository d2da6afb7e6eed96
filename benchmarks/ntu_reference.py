"""The raw-skeleton chain as it was on main at b479118 (before issue 19), kept as the benchmark's reference.

A verbatim copy of the NTU path of that commit: `read_ntu` (the line-by-line parser, every sequence
padded to the longest by `_assemble`), the padded generic format (`SkeletonSet`, `check_skeleton_set`,
`save_skeleton_npz`, `load_skeleton_npz`, version 1) and `preprocess` (the whole padded array in
memory). Only the imports differ: the helpers it used that did not change (errors, io, joint layouts,
the class tables, the preprocessing steps) come from the package. Not used by the package or the tests.
"""
from __future__ import annotations

import logging
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from tdsm_core.data.features import builtin_class_table as class_table
from tdsm_core.errors import DataError
from tdsm_core.io import save_npz_atomic
from tdsm_core.skeletons.preprocess import CENTRES, SCALES, alignment_rotation, body_scale, centre, resample, tracked_mask
from tdsm_core.skeletons.layouts import LAYOUTS, NTU25, JointLayout, get_layout

log = logging.getLogger(__name__)
MIN_FRAMES = 5
REQUIRED = ("skeletons", "lengths", "labels", "class_names", "layout", "bones")
OPTIONAL = ("subjects", "descriptions", "sample_ids")
NTU_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


@dataclass
class SkeletonSet:
    """Skeleton sequences in the generic format (see the module docstring for shapes)."""

    skeletons: np.ndarray  # (N, T, M, J, 3) float32
    lengths: np.ndarray  # (N,) int64
    labels: np.ndarray  # (N,) int64
    class_names: np.ndarray  # (K,) str
    layout: str
    bones: np.ndarray  # (E, 2) int64
    subjects: np.ndarray | None = None  # (N,) int64
    descriptions: np.ndarray | None = None  # (K,) str
    sample_ids: np.ndarray | None = None  # (N,) str
    dropped: dict[str, str] = field(default_factory=dict)  # sequence -> reason (not saved)

    def __len__(self) -> int:
        return len(self.labels)

    def summary(self) -> str:
        """One line: how many sequences were kept and dropped, and why."""
        reasons: dict[str, int] = {}
        for reason in self.dropped.values():
            key = reason.split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
        why = "; ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        return (f"{self.layout}: {len(self)} sequences of up to {self.skeletons.shape[1]} frames, "
                f"{len(self.class_names)} classes; dropped {len(self.dropped)}" + (f" ({why})" if why else ""))


def check_skeleton_set(data: SkeletonSet, where: str) -> SkeletonSet:
    """Check every field's shape, dtype and range; return a copy with canonical dtypes.

    `where` names the file (or reader) in the one-sentence DataError raised on the first problem.
    """
    def fail(name: str, problem: str) -> None:
        raise DataError(f"{where}: field '{name}' {problem}; write it in the generic format of tdsm_core.skeletons.format.")

    def integers(name: str, values: np.ndarray, count: int) -> np.ndarray:
        values = np.asarray(values)
        if values.ndim != 1 or len(values) != count:
            fail(name, f"must have shape ({count},), got {values.shape}")
        if not np.issubdtype(values.dtype, np.integer):
            fail(name, f"must hold integers, got dtype {values.dtype}")
        return values.astype(np.int64)

    def strings(name: str, values: np.ndarray, count: int | None) -> np.ndarray:
        values = np.asarray(values)
        if values.ndim != 1 or (count is not None and len(values) != count) or values.dtype.kind != "U":
            fail(name, f"must be a 1-D string array{f' of length {count}' if count is not None else ''}, "
                       f"got shape {values.shape} dtype {values.dtype}")
        return values

    skeletons = np.asarray(data.skeletons)
    if skeletons.ndim != 5 or skeletons.shape[-1] != 3:
        fail("skeletons", f"must have shape (N, T, M, J, 3), got {skeletons.shape}")
    if not np.issubdtype(skeletons.dtype, np.floating):
        fail("skeletons", f"must hold floats, got dtype {skeletons.dtype}")
    n, t, _, j, _ = skeletons.shape
    if n == 0 or t == 0:
        fail("skeletons", f"holds no frames (shape {skeletons.shape})")
    bad = np.flatnonzero(~np.isfinite(skeletons).reshape(n, -1).all(axis=1))
    if bad.size:
        fail("skeletons", f"has NaN or infinite values in {bad.size} sequences (first: {bad[:5].tolist()})")
    lengths = integers("lengths", data.lengths, n)
    if lengths.min() < 1 or lengths.max() > t:
        fail("lengths", f"must lie in [1, {t}], got values from {lengths.min()} to {lengths.max()}")
    class_names = strings("class_names", data.class_names, None)
    if len(class_names) == 0:
        fail("class_names", "is empty")
    labels = integers("labels", data.labels, n)
    if labels.min() < 0 or labels.max() >= len(class_names):
        fail("labels", f"must lie in [0, {len(class_names)}) to index class_names, got {labels.min()}..{labels.max()}")
    bones = np.asarray(data.bones)
    if bones.ndim != 2 or bones.shape[1] != 2 or not np.issubdtype(bones.dtype, np.integer):
        fail("bones", f"must be an (E, 2) integer array, got shape {bones.shape} dtype {bones.dtype}")
    if bones.size and (bones.min() < 0 or bones.max() >= j):
        fail("bones", f"must index the {j} joints, got values from {bones.min()} to {bones.max()}")
    layout = str(data.layout)
    if not layout:
        fail("layout", "is empty")
    if layout in LAYOUTS and len(LAYOUTS[layout].joints) != j:
        fail("layout", f"says {layout} ({len(LAYOUTS[layout].joints)} joints) but skeletons have {j} joints")
    return SkeletonSet(
        skeletons=skeletons.astype(np.float32, copy=False), lengths=lengths, labels=labels, class_names=class_names,
        layout=layout, bones=bones.astype(np.int64),
        subjects=None if data.subjects is None else integers("subjects", data.subjects, n),
        descriptions=None if data.descriptions is None else strings("descriptions", data.descriptions, len(class_names)),
        sample_ids=None if data.sample_ids is None else strings("sample_ids", data.sample_ids, n),
        dropped=dict(data.dropped))


def save_skeleton_npz(path: str | Path, data: SkeletonSet) -> None:
    """Validate `data` and write it to `path` atomically in the generic format."""
    data = check_skeleton_set(data, f"skeleton set for {path}")
    arrays = {name: getattr(data, name) for name in REQUIRED + OPTIONAL if getattr(data, name) is not None}
    arrays["layout"] = np.array(data.layout)
    save_npz_atomic(path, **arrays)


def load_skeleton_npz(path: str | Path) -> SkeletonSet:
    """Load and validate a generic skeleton `.npz`; any problem is a DataError naming file and field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"skeleton file {path} is missing; convert raw skeletons with tdsm_core.skeletons.readers.convert_dataset.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"skeleton file {path} cannot be read as a NumPy .npz archive ({exc}); convert it again.") from None
    missing = [name for name in REQUIRED if name not in arrays]
    if missing:
        raise DataError(f"skeleton file {path} lacks the field(s) {missing}; the generic format needs {list(REQUIRED)}.")
    if arrays["layout"].ndim != 0 or arrays["layout"].dtype.kind != "U":
        raise DataError(f"{path}: field 'layout' must be a single string such as 'ntu25', got {arrays['layout']!r}.")
    fields = {name: arrays[name] for name in REQUIRED + OPTIONAL if name in arrays and name != "layout"}
    return check_skeleton_set(SkeletonSet(layout=str(arrays["layout"]), **fields), str(path))


def screen_sequence(frames: np.ndarray, min_frames: int) -> tuple[np.ndarray | None, str]:
    """(frames without untracked frames, '') or (None, reason) for a sequence to drop. frames: (T, M, J, 3)."""
    if not np.isfinite(frames).all():
        return None, "contains NaN"
    tracked = frames.reshape(len(frames), -1).any(axis=1)  # (T,)
    if not tracked.any():
        return None, "all joints are zero"
    if tracked.sum() < min_frames:
        return None, f"too few frames ({int(tracked.sum())} < {min_frames})"
    return frames[tracked], ""


def _assemble(sequences: list[tuple[str, np.ndarray, int, int]], dropped: dict[str, str], layout: JointLayout,
              names: list[str], descriptions: list[str] | None, actors: int, where: str) -> SkeletonSet:
    """Pad (id, frames (T, M, J, 3), label, subject) tuples into one SkeletonSet."""
    if not sequences:
        raise DataError(f"{where} gave no usable sequence ({len(dropped)} dropped: {dict(list(dropped.items())[:3])}); "
                        f"check that the folder holds the dataset's skeleton files.")
    t_max = max(len(frames) for _, frames, _, _ in sequences)
    skeletons = np.zeros((len(sequences), t_max, actors, len(layout.joints), 3), np.float32)
    for i, (_, frames, _, _) in enumerate(sequences):
        skeletons[i, :len(frames), :frames.shape[1]] = frames
    data = SkeletonSet(
        skeletons=skeletons, lengths=np.array([len(f) for _, f, _, _ in sequences], np.int64),
        labels=np.array([s[2] for s in sequences], np.int64), class_names=np.array(names, dtype=str),
        layout=layout.name, bones=np.array(layout.bones, np.int64).reshape(-1, 2),
        subjects=np.array([s[3] for s in sequences], np.int64),
        descriptions=None if descriptions is None else np.array(descriptions, dtype=str),
        sample_ids=np.array([s[0] for s in sequences], dtype=str), dropped=dropped)
    data = check_skeleton_set(data, where)
    log.info(data.summary())
    return data


def _all_numbers(values: list[str]) -> bool:
    try:
        [float(v) for v in values]
    except ValueError:
        return False
    return True


def _folder(folder: str | Path, what: str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{what} folder {folder} does not exist; point it at the unpacked dataset.")
    return folder


def read_ntu_skeleton(path: str | Path, max_actors: int = 2) -> np.ndarray:
    """One NTU `.skeleton` file -> (T, max_actors, 25, 3), all frames kept (0-body frames as zeros).

    The kept actors are the `max_actors` bodies (by body id) whose joints move most: the largest
    sum over joints and axes of the position variance over the frames where the body is tracked.
    They are ordered by that motion, largest first.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    cursor = 0

    def take(count: int, what: str) -> list[list[str]]:
        nonlocal cursor
        if cursor + count > len(lines):
            raise DataError(f"{path} ends at line {len(lines)} while reading {what} (from line {cursor + 1}); "
                            f"the file is truncated, so extract it again.")
        cursor += count
        return [line.split() for line in lines[cursor - count:cursor]]

    def number(what: str) -> int:
        values = take(1, what)[0]
        if len(values) != 1 or not values[0].isdigit():
            raise DataError(f"{path} line {cursor} should hold {what} (one integer) but reads {lines[cursor - 1][:60]!r}; "
                            f"the file is corrupt.")
        return int(values[0])

    n_frames = number("the frame count")
    bodies: dict[str, np.ndarray] = {}  # body id -> (T, 25, 3)
    for frame in range(n_frames):
        for _ in range(number(f"the body count of frame {frame + 1}")):
            info = take(1, "a body info line")[0]
            if len(info) != 10:
                raise DataError(f"{path} line {cursor} should be a body info line of 10 values but has {len(info)}; "
                                f"the file is corrupt.")
            n_joints = number("the joint count")
            if n_joints != 25:
                raise DataError(f"{path} line {cursor} gives {n_joints} joints but NTU skeletons have 25; "
                                f"the file is corrupt.")
            rows = take(25, "25 joint lines")
            try:
                if any(len(row) != 12 for row in rows):
                    raise ValueError
                joints = np.array(rows, np.float64)[:, :3]  # (25, 3): x y z of the 12 values
            except ValueError:
                bad = next(i for i, row in enumerate(rows) if len(row) != 12 or not _all_numbers(row))
                raise DataError(f"{path} line {cursor - 24 + bad} should be a joint line of 12 numbers but reads "
                                f"{lines[cursor - 25 + bad][:60]!r}; the file is corrupt.") from None
            bodies.setdefault(info[0], np.zeros((n_frames, 25, 3)))[frame] = joints
    if any(line.strip() for line in lines[cursor:]):
        raise DataError(f"{path} has text after the {n_frames} frames its first line announces (line {cursor + 1}); "
                        f"the file is corrupt.")
    out = np.zeros((n_frames, max_actors, 25, 3), np.float32)
    tracked = {body: positions[positions.reshape(n_frames, -1).any(axis=1)] for body, positions in bodies.items()}
    motion = {body: float(frames.var(axis=0).sum()) if len(frames) else -1.0 for body, frames in tracked.items()}
    for slot, body in enumerate(sorted(bodies, key=lambda b: -motion[b])[:max_actors]):
        out[:, slot] = bodies[body]
    return out


def read_ntu(folder: str | Path, class_names: list[str] | None = None, descriptions: list[str] | None = None,
             max_actors: int = 2, min_frames: int = MIN_FRAMES) -> SkeletonSet:
    """Every `SsssCcccPpppRrrrAaaa.skeleton` file in `folder`; label = A - 1, subject = P.

    class_names defaults to the built-in NTU-60 list (60 classes) when every file is an action up to A060,
    and to the built-in NTU-120 list (120 classes) when any file is A061 or above.
    """
    folder = _folder(folder, "NTU skeleton")
    paths = sorted(folder.glob("*.skeleton"))
    matches = []
    for path in paths:
        match = NTU_NAME.fullmatch(path.stem)
        if not match:
            raise DataError(f"NTU file name {path.name} does not follow SsssCcccPpppRrrrAaaa.skeleton; rename or remove it.")
        matches.append(match)
    if class_names is None:
        largest = max((int(m.group(5)) for m in matches), default=0)
        class_names, descriptions = class_table("ntu60" if largest <= 60 else "ntu120")
    sequences, dropped = [], {}
    for path, match in zip(paths, matches):
        label = int(match.group(5)) - 1
        if label >= len(class_names):
            raise DataError(f"{path.name} is action A{label + 1:03d} but only {len(class_names)} class names were given; "
                            f"give at least {label + 1} names, or leave class_names out to use the built-in NTU lists.")
        frames, reason = screen_sequence(read_ntu_skeleton(path, max_actors), min_frames)
        if frames is None:
            dropped[path.stem] = reason
        else:
            sequences.append((path.stem, frames, label, int(match.group(3))))
    return _assemble(sequences, dropped, NTU25, list(class_names), descriptions, max_actors, f"NTU folder {folder}")


def preprocess(data: SkeletonSet, length: int = 64, centring: Literal["first_frame", "per_frame", "none"] = "first_frame",
               scale: Literal["bones", "torso", "none"] = "bones", align: bool = True,
               layout: JointLayout | None = None, chunk: int = 1024) -> np.ndarray:
    """Centre, align, scale and resample `data` -> float32 (N, length, M, J, 3).

    `layout` defaults to the known layout named by `data.layout`; for another layout pass a
    JointLayout giving its root, torso and hip joints. Work is done `chunk` sequences at a time.
    """
    if centring not in CENTRES:
        raise DataError(f"unknown centring {centring!r}; use one of {list(CENTRES)}.")
    if scale not in SCALES:
        raise DataError(f"unknown scale {scale!r}; use one of {list(SCALES)}.")
    if length < 1:
        raise DataError(f"length must be at least 1 frame, got {length}.")
    layout = layout or get_layout(data.layout)
    n, _, m, j, _ = data.skeletons.shape
    if len(layout.joints) != j:
        raise DataError(f"layout {layout.name} has {len(layout.joints)} joints but the skeletons have {j}; "
                        f"pass the layout that matches the data.")
    out = np.zeros((n, length, m, j, 3), np.float32)
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        x = data.skeletons[part].astype(np.float64)  # (B, T, M, J, 3)
        lengths = data.lengths[part]
        tracked = tracked_mask(x, lengths)  # (B, T, M)
        x = centre(x, tracked, layout.root, centring)
        if align:
            rotation = alignment_rotation(x, tracked, layout)  # (B, 3, 3)
            x = np.einsum("bij,btmkj->btmki", rotation, x)
        x = x / body_scale(x, tracked, layout, data.bones, scale)[:, None, None, None, None]
        out[part] = resample(x, lengths, tracked, length)
    return out
