"""The generic skeleton format: one `.npz` per dataset (no pickles), and the SkeletonSet holding it.

    skeletons     (N, T, M, J, 3) float32  joint positions (metres, camera space), zero past each
                                           sequence's length and for an actor absent from a frame
    lengths       (N,) int64               valid frames of each sequence, 1..T
    labels        (N,) int64               0-based ids into class_names
    class_names   (K,) str
    layout        () str                   joint layout name: ntu25, msr20, utkinect20 or your own
    bones         (E, 2) int64             (joint, parent) pairs, 0-based; describe any layout
    subjects      (N,) int64     optional  performer ids
    descriptions  (K,) str       optional  one body-motion description per class
    sample_ids    (N,) str       optional  which file or clip each sequence came from
    joints        (J,) str       optional  joint names (for a layout of your own: see below)
    root          () int         optional  the body-centre joint (a spine joint)
    torso         (2,) int       optional  the lower and upper spine joints
    hips          (2,) int       optional  the left and right hip joints

Known layouts are in `skeleton_layouts`; a file with another layout name is valid as long as its
bones index its joints. Preprocessing needs to know its centre, torso and hip joints: name the
joints with the built-in names (spine_mid or spine, spine_base or hip_center, spine_shoulder or
shoulder_center, hip_left, hip_right) in `joints`, or give `root`, `torso` and `hips` as indices.
Readers of raw datasets live in `skeletons`.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError
from .io import save_npz_atomic
from .skeleton_layouts import LAYOUTS, JointLayout, layout_from_fields

REQUIRED = ("skeletons", "lengths", "labels", "class_names", "layout", "bones")
OPTIONAL = ("subjects", "descriptions", "sample_ids", "joints", "root", "torso", "hips")


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
    joints: np.ndarray | None = None  # (J,) str joint names
    root: np.ndarray | None = None  # () int body-centre joint
    torso: np.ndarray | None = None  # (2,) int lower, upper spine joints
    hips: np.ndarray | None = None  # (2,) int left, right hip joints
    dropped: dict[str, str] = field(default_factory=dict)  # sequence -> reason (not saved)

    def __len__(self) -> int:
        return len(self.labels)

    def joint_layout(self, where: str = "skeleton file") -> JointLayout:
        """The built-in layout of this set, or the one its joints/root/torso/hips fields describe."""
        return layout_from_fields(self.layout, self.skeletons.shape[3], self.bones, self.joints, self.root,
                                  self.torso, self.hips, where)

    def summary(self) -> str:
        """One line: how many sequences were kept and dropped, and why."""
        reasons: dict[str, int] = {}
        for reason in self.dropped.values():
            key = reason.split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
        why = "; ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        return (f"{self.layout}: {len(self)} sequences of up to {self.skeletons.shape[1]} frames, "
                f"{len(self.class_names)} classes; dropped {len(self.dropped)}" + (f" ({why})" if why else ""))


# ----------------------------------------------------------------------------------------------
# The generic .npz: validation, save, load

def check_skeleton_set(data: SkeletonSet, where: str) -> SkeletonSet:
    """Check every field's shape, dtype and range; return a copy with canonical dtypes.

    `where` names the file (or reader) in the one-sentence DataError raised on the first problem.
    """
    def fail(name: str, problem: str) -> None:
        raise DataError(f"{where}: field '{name}' {problem}; write it in the generic format of tdsm_core.skeleton_format.")

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
        skeletons=skeletons.astype(np.float32, copy=False), lengths=lengths, labels=labels, class_names=class_names,
        layout=layout, bones=bones.astype(np.int64),
        subjects=None if data.subjects is None else integers("subjects", data.subjects, n),
        descriptions=None if data.descriptions is None else strings("descriptions", data.descriptions, len(class_names)),
        sample_ids=None if data.sample_ids is None else strings("sample_ids", data.sample_ids, n),
        joints=None if data.joints is None else strings("joints", data.joints, j),
        root=joint_indices("root", data.root, ()), torso=joint_indices("torso", data.torso, (2,)),
        hips=joint_indices("hips", data.hips, (2,)), dropped=dict(data.dropped))


def save_skeleton_npz(path: str | Path, data: SkeletonSet) -> None:
    """Validate `data` and write it to `path` atomically in the generic format."""
    data = check_skeleton_set(data, f"skeleton set for {path}")
    arrays = {name: getattr(data, name) for name in REQUIRED + OPTIONAL if getattr(data, name) is not None}
    arrays["layout"] = np.array(data.layout)
    save_npz_atomic(path, **arrays)


def load_skeleton_npz(path: str | Path) -> SkeletonSet:
    """Load and validate a generic skeleton `.npz`; any problem is a DataError naming file and field."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"skeleton file {path} is a folder; convert a raw dataset folder with `python -m tdsm_core "
                        f"convert` (or use skeleton.kind ntu, msr or utkinect) and pass the .npz it writes.")
    if not path.is_file():
        raise DataError(f"skeleton file {path} is missing; convert raw skeletons with tdsm_core.skeletons.convert_dataset.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except PermissionError:
        raise DataError(f"skeleton file {path} cannot be read: permission denied; change its permissions.") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if "pickled data" in str(exc) or "Object arrays" in str(exc):
            raise DataError(f"skeleton file {path} holds Python objects (an object array), which are not loaded; "
                            f"save every field as a numeric or string array.") from None
        raise DataError(f"skeleton file {path} cannot be read as a NumPy .npz archive ({exc}); convert it again.") from None
    missing = [name for name in REQUIRED if name not in arrays]
    if missing:
        raise DataError(f"skeleton file {path} lacks the field(s) {missing}; the generic format needs {list(REQUIRED)}.")
    if arrays["layout"].ndim != 0 or arrays["layout"].dtype.kind != "U":
        raise DataError(f"{path}: field 'layout' must be a single string such as 'ntu25', got {arrays['layout']!r}.")
    fields = {name: arrays[name] for name in REQUIRED + OPTIONAL if name in arrays and name != "layout"}
    return check_skeleton_set(SkeletonSet(layout=str(arrays["layout"]), **fields), str(path))
