"""The generic skeleton format: one `.npz` per dataset (no pickles), and the SkeletonSet holding it.

Version 2, written by this workbook: the sequences are stored ragged, each sequence's frames right
after the previous sequence's, so nothing is padded to the longest.

    format_version ()  int64                 2
    frames        (F, M, J, 3) float32       joint positions (metres, camera space) of every frame of every
                                             sequence, in sequence order; zero for an actor absent from a frame.
                                             Sequence i is frames[offsets[i]:offsets[i + 1]] with
                                             offsets = [0, cumsum(lengths)], so F = lengths.sum()
    lengths       (N,) int64                 frames of each sequence, at least 1
    labels        (N,) int64                 0-based ids into class_names
    class_names   (K,) str
    layout        () str                     joint layout name: ntu25, msr20, utkinect20 or your own
    bones         (E, 2) int64               (joint, parent) pairs, 0-based; describe any layout
    subjects      (N,) int64     optional    performer ids
    descriptions  (K,) str       optional    one body-motion description per class
    sample_ids    (N,) str       optional    which file or clip each sequence came from
    joints        (J,) str       optional    joint names (for a layout of your own: see below)
    root          () int         optional    the body-centre joint (a spine joint)
    torso         (2,) int       optional    the lower and upper spine joints
    hips          (2,) int       optional    the left and right hip joints
    dropped_ids   (D,) str       optional    sequences the reader dropped (file or clip names) ...
    dropped_reasons (D,) str     optional    ... and why, so a converted file still says what it left out

Version 1, the files written before (no `format_version` field), holds `skeletons` (N, T, M, J, 3)
instead of `frames`: every sequence padded with zeros to a common length T. Both versions load into
the same SkeletonSet; saving always writes version 2.

Large files are not read into memory: `load_skeleton_npz` reads the per-sequence fields and leaves
the frames on disk (a `store.DiskArray`); `SkeletonSet.padded` and `SkeletonSet.frames_of`
read a range of sequences at a time, which is how preprocessing and saving walk a dataset. For NTU
RGB+D 120 (114,480 sequences) the frames take about 6 GB on disk, where the padded layout took 20 GB.

Known layouts are in `layouts`; a file with another layout name is valid as long as its
bones index its joints. Preprocessing needs to know its centre, torso and hip joints: name the
joints with the built-in names (spine_mid or spine, spine_base or hip_center, spine_shoulder or
shoulder_center, hip_left, hip_right) in `joints`, or give `root`, `torso` and `hips` as indices.
Readers of raw datasets live in `readers` (and `ntu`, `ntu_convert`).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .layouts import LAYOUTS, JointLayout, layout_from_fields
from .store import DiskArray, NpzWriter, npz_member

FORMAT_VERSION = 2
FIELDS = ("lengths", "labels", "class_names", "layout", "bones")  # required besides the frames, in both versions
OPTIONAL = ("subjects", "descriptions", "sample_ids", "joints", "root", "torso", "hips")
REQUIRED = ("frames",) + FIELDS
REQUIRED_V1 = ("skeletons",) + FIELDS
SAVE_CHUNK = 512  # sequences per chunk when streaming frames to a file
MIN_FRAMES = 5  # the shortest real clip (UTKinect s06_e01 throw) has 5 frames


@dataclass(init=False, repr=False, eq=False)
class SkeletonSet:
    """Skeleton sequences in the generic format (see the module docstring for shapes).

    Built from `frames` (F, M, J, 3), every sequence's frames one after another (the stored layout),
    or from `skeletons` (N, T, M, J, 3), sequences padded to a common length (the version-1 layout).
    Either may be an in-memory array or a DiskArray; `padded` and `frames_of` read ranges of sequences.
    """

    store: np.ndarray | DiskArray  # (F, M, J, 3) ragged or (N, T, M, J, 3) padded
    ragged: bool
    lengths: np.ndarray  # (N,) int64
    labels: np.ndarray  # (N,) int64
    class_names: np.ndarray  # (K,) str
    layout: str
    bones: np.ndarray  # (E, 2) int64
    subjects: np.ndarray | None = None  # (N,) int64
    descriptions: np.ndarray | None = None  # (K,) str
    sample_ids: np.ndarray | None = None  # (N,) str
    joints: np.ndarray | None = None  # (J,) str joint names
    root: np.ndarray | None = None  # () int body-centre joint
    torso: np.ndarray | None = None  # (2,) int lower, upper spine joints
    hips: np.ndarray | None = None  # (2,) int left, right hip joints
    dropped: dict[str, str] = field(default_factory=dict)  # sequence -> reason it was dropped (dropped_ids/_reasons)
    source: str = ""  # the file it was read from, for messages

    def __init__(self, *, lengths, labels, class_names, layout: str, bones, frames=None, skeletons=None,
                 subjects=None, descriptions=None, sample_ids=None, joints=None, root=None, torso=None, hips=None,
                 dropped: dict[str, str] | None = None, source: str = "", store=None, ragged: bool | None = None):
        if frames is not None or skeletons is not None:  # store and ragged are what dataclasses.replace passes
            store, ragged = None, None
        if store is None and (frames is None) == (skeletons is None):
            raise TypeError("SkeletonSet takes either frames (ragged) or skeletons (padded)")
        self.ragged = (skeletons is None) if ragged is None else ragged
        self.store = store if store is not None else frames if self.ragged else skeletons
        if not isinstance(self.store, DiskArray):
            self.store = np.asarray(self.store)
        self.lengths, self.labels, self.class_names = lengths, labels, class_names
        self.layout, self.bones = layout, bones
        self.subjects, self.descriptions, self.sample_ids = subjects, descriptions, sample_ids
        self.joints, self.root, self.torso, self.hips = joints, root, torso, hips
        self.dropped, self.source = dict(dropped or {}), source

    def __repr__(self) -> str:
        where = f" from {self.source}" if self.source else ""
        return f"SkeletonSet({self.summary()}; {'ragged' if self.ragged else 'padded'} {self.store.shape}{where})"

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_actors(self) -> int:
        return self.store.shape[-3]

    @property
    def num_joints(self) -> int:
        return self.store.shape[-2]

    @property
    def max_length(self) -> int:
        return int(np.max(self.lengths))

    @property
    def offsets(self) -> np.ndarray:
        """(N + 1,) where each sequence starts in the ragged frames."""
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    def _finite(self, frames: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Frames read from disk are checked here (frames in memory by check_skeleton_set)."""
        if isinstance(self.store, DiskArray):
            bad = np.flatnonzero(~np.isfinite(frames).reshape(len(frames), -1).all(axis=1))
            if bad.size:
                i = start + int(np.searchsorted(np.cumsum(self.lengths[start:stop]), bad[0], side="right"))
                name = f" ({self.sample_ids[i]})" if self.sample_ids is not None else ""
                raise DataError(f"{self.source}: sequence {i}{name} holds NaN or infinite joint positions; convert "
                                f"the raw dataset again (the readers drop such sequences).")
        return frames

    def frames_of(self, start: int, stop: int) -> np.ndarray:
        """(sum of their lengths, M, J, 3) float32: the frames of sequences [start, stop), one after another."""
        if self.ragged:
            offsets = self.offsets
            block = self.store[offsets[start]:offsets[stop]]
        elif stop > start:
            rows = self.store[start:stop]  # (B, T, M, J, 3)
            block = np.concatenate([rows[k, :n] for k, n in enumerate(self.lengths[start:stop])])
        else:
            block = np.zeros((0,) + self.store.shape[2:], np.float32)
        return self._finite(np.asarray(block, np.float32), start, stop)

    def padded(self, start: int = 0, stop: int | None = None, length: int | None = None) -> np.ndarray:
        """(stop - start, length, M, J, 3) float32 zero-padded sequences; length defaults to the longest
        of them. Sequences longer than `length` are cut."""
        stop = len(self) if stop is None else stop
        lengths = self.lengths[start:stop]
        length = int(lengths.max()) if length is None else length
        frames = self.frames_of(start, stop)
        out = np.zeros((len(lengths), length, self.num_actors, self.num_joints, 3), np.float32)
        for k, (begin, n) in enumerate(zip(np.cumsum(lengths) - lengths, lengths)):
            out[k, :min(n, length)] = frames[begin:begin + min(n, length)]
        return out

    @property
    def skeletons(self) -> np.ndarray:
        """(N, T, M, J, 3) the whole set in memory, padded (to the longest sequence when stored ragged):
        for small sets; large ones are read with `padded` or `frames_of`, a range at a time."""
        return np.asarray(self.store) if not self.ragged else self.padded()

    @skeletons.setter
    def skeletons(self, value: np.ndarray) -> None:
        self.store, self.ragged = np.asarray(value), False
    def joint_layout(self, where: str = "skeleton file") -> JointLayout:
        """The built-in layout of this set, or the one its joints/root/torso/hips fields describe."""
        return layout_from_fields(self.layout, self.num_joints, self.bones, self.joints, self.root,
                                  self.torso, self.hips, where)

    def summary(self) -> str:
        """One line: how many sequences were kept and dropped, and why."""
        reasons: dict[str, int] = {}
        for reason in self.dropped.values():
            key = reason.split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
        why = "; ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        return (f"{self.layout}: {len(self)} sequences of up to {self.max_length} frames, "
                f"{len(self.class_names)} classes; dropped {len(self.dropped)}" + (f" ({why})" if why else ""))


def screen_sequence(frames: np.ndarray, min_frames: int) -> tuple[np.ndarray | None, str]:
    """(frames without untracked frames, '') or (None, reason) for a sequence to drop. frames: (T, M, J, 3).

    Every reader applies it: frames where no actor is tracked (all joints zero) are closed up, and a
    sequence with NaN, with no tracked frame or with fewer than `min_frames` is dropped."""
    if not np.isfinite(frames).all():
        return None, "contains NaN"
    tracked = frames.reshape(len(frames), -1).any(axis=1)  # (T,)
    if not tracked.any():
        return None, "all joints are zero"
    if tracked.sum() < min_frames:
        return None, f"too few frames ({int(tracked.sum())} < {min_frames})"
    return frames[tracked], ""


# ----------------------------------------------------------------------------------------------
# Validation, save, load

def check_skeleton_set(data: SkeletonSet, where: str) -> SkeletonSet:
    """Check every field's shape, dtype and range; return a copy with canonical dtypes.

    `where` names the file (or reader) in the one-sentence DataError raised on the first problem.
    Frames held in memory are checked for NaN here; frames on disk when they are read.
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

    store, big = data.store, "frames" if data.ragged else "skeletons"
    if data.ragged and (store.ndim != 4 or store.shape[-1] != 3):
        fail(big, f"must have shape (F, M, J, 3), got {store.shape}")
    if not data.ragged and (store.ndim != 5 or store.shape[-1] != 3):
        fail(big, f"must have shape (N, T, M, J, 3), got {store.shape}")
    if not np.issubdtype(store.dtype, np.floating):
        fail(big, f"must hold floats, got dtype {store.dtype}")
    n = np.asarray(data.lengths).size if data.ragged else store.shape[0]
    if n == 0 or store.shape[0] == 0 or (not data.ragged and store.shape[1] == 0):
        fail(big, f"holds no frames (shape {store.shape})")
    lengths = integers("lengths", data.lengths, n)
    if data.ragged and (lengths.min() < 1 or lengths.sum() != len(store)):
        fail("lengths", f"must be at least 1 and add up to the {len(store)} rows of frames, got values from "
                        f"{lengths.min()} to {lengths.max()} adding up to {lengths.sum()}")
    if not data.ragged and (lengths.min() < 1 or lengths.max() > store.shape[1]):
        fail("lengths", f"must lie in [1, {store.shape[1]}], got values from {lengths.min()} to {lengths.max()}")
    if not isinstance(store, DiskArray):
        finite = np.isfinite(store).reshape(len(store), -1).all(axis=1)  # per row: a frame, or a padded sequence
        bad = np.flatnonzero(~finite) if not data.ragged else \
            np.unique(np.searchsorted(np.cumsum(lengths), np.flatnonzero(~finite), side="right"))
        if bad.size:
            fail(big, f"has NaN or infinite values in {bad.size} sequences (first: {bad[:5].tolist()})")
        store = store.astype(np.float32, copy=False)
    class_names = strings("class_names", data.class_names, None)
    if len(class_names) == 0:
        fail("class_names", "is empty")
    labels = integers("labels", data.labels, n)
    if labels.min() < 0 or labels.max() >= len(class_names):
        fail("labels", f"must lie in [0, {len(class_names)}) to index class_names, got {labels.min()}..{labels.max()}")
    j = store.shape[-2]
    bones = np.asarray(data.bones)
    if bones.ndim != 2 or bones.shape[1] != 2 or not np.issubdtype(bones.dtype, np.integer):
        fail("bones", f"must be an (E, 2) integer array, got shape {bones.shape} dtype {bones.dtype}")
    if bones.size and (bones.min() < 0 or bones.max() >= j):
        fail("bones", f"must index the {j} joints, got values from {bones.min()} to {bones.max()}")
    def joint_indices(name: str, values, shape: tuple[int, ...]) -> np.ndarray | None:
        if values is None:
            return None
        values = np.asarray(values)
        if values.shape != shape or not np.issubdtype(values.dtype, np.integer):
            fail(name, f"must be {'one integer' if not shape else f'{shape[0]} integers'} (joint indices), "
                       f"got shape {values.shape} dtype {values.dtype}")
        if values.size and (values.min() < 0 or values.max() >= j):
            fail(name, f"must index the {j} joints, got {values.tolist()}")
        return values.astype(np.int64)

    layout = str(data.layout)
    if not layout:
        fail("layout", "is empty")
    if layout in LAYOUTS and len(LAYOUTS[layout].joints) != j:
        fail("layout", f"says {layout} ({len(LAYOUTS[layout].joints)} joints) but skeletons have {j} joints")
    return SkeletonSet(
        **{big: store}, lengths=lengths, labels=labels, class_names=class_names, layout=layout,
        bones=bones.astype(np.int64),
        subjects=None if data.subjects is None else integers("subjects", data.subjects, n),
        descriptions=None if data.descriptions is None else strings("descriptions", data.descriptions, len(class_names)),
        sample_ids=None if data.sample_ids is None else strings("sample_ids", data.sample_ids, n),
        joints=None if data.joints is None else strings("joints", data.joints, j),
        root=joint_indices("root", data.root, ()), torso=joint_indices("torso", data.torso, (2,)),
        hips=joint_indices("hips", data.hips, (2,)), dropped=data.dropped, source=data.source)


def save_skeleton_npz(path: str | Path, data: SkeletonSet) -> None:
    """Validate `data` and write it to `path` atomically in the generic format (version 2), streaming the
    frames a chunk of sequences at a time; the same set always gives the same bytes."""
    data = check_skeleton_set(data, f"skeleton set for {path}")
    with NpzWriter(path) as npz:
        npz.add("format_version", np.array(FORMAT_VERSION, np.int64))
        shape = (int(data.lengths.sum()), data.num_actors, data.num_joints, 3)
        with npz.stream("frames", shape, np.float32) as put:
            for start in range(0, len(data), SAVE_CHUNK):
                put(data.frames_of(start, min(start + SAVE_CHUNK, len(data))))
        for name in FIELDS + OPTIONAL:
            value = getattr(data, name)
            if value is not None:
                npz.add(name, np.array(value) if name == "layout" else value)
        add_dropped(npz, data.dropped)


def add_dropped(npz: NpzWriter, dropped: dict[str, str]) -> None:
    """The reader's dropped sequences as two string fields (after every other field; none when nothing was dropped)."""
    if dropped:
        npz.add("dropped_ids", np.array(list(dropped), dtype=str))
        npz.add("dropped_reasons", np.array(list(dropped.values()), dtype=str))


def load_skeleton_npz(path: str | Path) -> SkeletonSet:
    """Load and validate a generic skeleton `.npz` of either version; the frames stay on disk when the
    file stores them uncompressed. Any problem is a DataError naming file and field."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"skeleton file {path} is a folder; convert a raw dataset folder with `python -m tdsm_core "
                        f"convert` (or use skeleton.kind ntu, msr or utkinect) and pass the .npz it writes.")
    if not path.is_file():
        raise DataError(f"skeleton file {path} is missing; convert raw skeletons with tdsm_core.skeletons.readers.convert_dataset.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            version = archive["format_version"] if "format_version" in names else np.array(1)
            big = "frames" if "frames" in names or version != 1 else "skeletons"
            arrays = {name: archive[name] for name in FIELDS + OPTIONAL if name in names}
            if {"dropped_ids", "dropped_reasons"} <= names:
                arrays["dropped"] = dict(zip(archive["dropped_ids"].astype(str).tolist(),
                                             archive["dropped_reasons"].astype(str).tolist()))
            if big in names:
                arrays[big] = npz_member(path, big)
                if arrays[big] is None:  # a compressed member: read it whole
                    arrays[big] = archive[big]
    except PermissionError:
        raise DataError(f"skeleton file {path} cannot be read: permission denied; change its permissions.") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if "pickled data" in str(exc) or "Object arrays" in str(exc):
            raise DataError(f"skeleton file {path} holds Python objects (an object array), which are not loaded; "
                            f"save every field as a numeric or string array.") from None
        raise DataError(f"skeleton file {path} cannot be read as a NumPy .npz archive ({exc}); convert it again.") from None
    if version.ndim != 0 or not np.issubdtype(version.dtype, np.integer) or int(version) not in (1, FORMAT_VERSION):
        raise DataError(f"skeleton file {path} has format_version {version.tolist()!r} but this workbook reads versions 1 and "
                        f"{FORMAT_VERSION}; convert the dataset again with this workbook.")
    required = REQUIRED if big == "frames" else REQUIRED_V1
    missing = [name for name in required if name not in arrays]
    if missing:
        raise DataError(f"skeleton file {path} lacks the field(s) {missing}; the generic format needs {list(required)}.")
    if arrays["layout"].ndim != 0 or arrays["layout"].dtype.kind != "U":
        raise DataError(f"{path}: field 'layout' must be a single string such as 'ntu25', got {arrays['layout']!r}.")
    layout = str(arrays.pop("layout"))
    return check_skeleton_set(SkeletonSet(layout=layout, source=str(path), **arrays), str(path))
