"""Loading and validating a zero-shot benchmark: features, label split, class prompts.

Features follow the layout of the SA-DVAE release (one folder per split):

    train.npy (N, F) float, train_label.npy (N,)   seen classes, training subjects
    ztest.npy, z_label.npy                          unseen classes, test subjects
    val.npy, val_label.npy      (optional)          seen classes, test subjects
    gtest.npy, g_label.npy      (optional)          all classes, test subjects

Every check happens here, where the data enters, and fails with one sentence naming the file.
"""
from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from ..inputs import read_text, reading
from .splits import get_split, validate_class_ids

# part name -> (feature file, label file)
PARTS: dict[str, tuple[str, str]] = {
    "train": ("train.npy", "train_label.npy"),
    "ztest": ("ztest.npy", "z_label.npy"),
    "val": ("val.npy", "val_label.npy"),
    "gtest": ("gtest.npy", "g_label.npy"),
}
REQUIRED_PARTS = ("train", "ztest")
FLOAT32_SQUARE_LIMIT = 1e18  # beyond this a feature's square (variances, squared errors) overflows float32 (3.4e38)


@dataclass
class FeatureSet:
    """Features (N, F) float32 and their original class ids (N,) int64."""

    features: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ClassPrompts:
    """Per class: a display name and the two prompts the text encoder reads."""

    names: list[str]
    motion: list[str]  # short body-motion description (csv `label` column)
    definition: list[str]  # one-sentence definition (the `_llm.txt` line)
    named: bool = False  # the names are class names (built-in lists, idx,name,description files), not prompts

    def __len__(self) -> int:
        return len(self.names)

    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.motion, self.definition))


@dataclass
class Benchmark:
    """A loaded, validated zero-shot split."""

    name: str
    seen: np.ndarray  # (S,) class ids
    unseen: np.ndarray  # (U,) class ids
    prompts: ClassPrompts
    train: FeatureSet
    ztest: FeatureSet
    val: FeatureSet | None = None
    gtest: FeatureSet | None = None
    source: dict[str, str] = field(default_factory=dict)
    feature_norm: "FeatureNorm | None" = None  # set when the features were standardised (data.normalize)

    @property
    def num_classes(self) -> int:
        return len(self.prompts)

    @property
    def feature_dim(self) -> int:
        return self.train.features.shape[1]

    @property
    def class_names(self) -> list[str]:
        return self.prompts.names

    def parts(self) -> dict[str, FeatureSet]:
        """The parts present, in a fixed order."""
        return {k: v for k, v in (("train", self.train), ("val", self.val), ("ztest", self.ztest),
                                  ("gtest", self.gtest)) if v is not None}


@dataclass
class FeatureNorm:
    """Per-dimension standardisation x -> (x - mean) / std with the training set's statistics.

    TDSM noises the skeleton feature itself, so the feature's scale sets the signal-to-noise ratio at
    every timestep: with unit-variance dimensions, sqrt(1 - alpha_bar_t) compares directly with the
    signal. The statistics come from `train` alone and are saved with the run (checkpoint and
    feature_norm.json), so evaluation applies exactly what training saw."""

    mean: np.ndarray  # (F,) float64
    std: np.ndarray  # (F,) float64, at least 1e-6

    @classmethod
    def fit(cls, features: np.ndarray) -> "FeatureNorm":
        x = features.astype(np.float64)
        return cls(x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6))

    def apply(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std).astype(np.float32)

    def as_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, values: dict[str, list[float]]) -> "FeatureNorm":
        return cls(np.asarray(values["mean"], dtype=np.float64), np.asarray(values["std"], dtype=np.float64))

    def same_as(self, other: "FeatureNorm | None") -> bool:
        return (other is not None and self.mean.shape == other.mean.shape
                and np.allclose(self.mean, other.mean, rtol=0, atol=1e-9)
                and np.allclose(self.std, other.std, rtol=0, atol=1e-9))


def normalize_features(benchmark: Benchmark, mode: str) -> Benchmark:
    """The benchmark with every part standardised by the training set's statistics ("standard"), or as is ("none")."""
    if mode == "none":
        return benchmark
    if mode != "standard":
        raise DataError(f"data.normalize must be none or standard, got {mode!r}.")
    norm = FeatureNorm.fit(benchmark.train.features)
    parts = {name: FeatureSet(norm.apply(fs.features), fs.labels) for name, fs in benchmark.parts().items()}
    return replace(benchmark, feature_norm=norm, **parts)


# ----------------------------------------------------------------------------------------------
# Arrays

def load_array(path: Path, what: str) -> np.ndarray:
    """np.load with a clear message for a missing, unreadable, truncated or non-.npy file (no pickles)."""
    if path.is_dir():
        raise DataError(f"{what} file {path} is a folder, not a .npy file; check the data folder in your config "
                        f"(data.features) and put the array itself there.")
    if not path.is_file():
        raise DataError(f"{what} file {path} is missing; check the data folder in your config (data.features).")
    with reading(path, f"{what} file", "check the data folder in your config (data.features)"), open(path, "rb") as handle:
        start = handle.read(8)
    if not start:
        raise DataError(f"{what} file {path} is empty (0 bytes); export or download it again.")
    if not start.startswith((b"\x93NUMPY", b"PK\x03\x04")):
        shown = start.decode("ascii", "replace") if start else ""
        raise DataError(f"{what} file {path} is not a NumPy .npy file (it starts with {shown!r}); save the array with "
                        f"np.save, e.g. np.save(path, array).")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if "Object arrays cannot be loaded" in str(exc) or "pickled data" in str(exc):
            raise DataError(f"{what} file {path} holds Python objects (an object or pickled array), which are not "
                            f"loaded; save it as a numeric array, e.g. np.save(path, labels.astype(np.int64)).") from None
        raise DataError(f"{what} file {path} cannot be read as a NumPy .npy array ({exc}); "
                        f"it is probably truncated or corrupt, so download or export it again.") from None
    if not isinstance(array, np.ndarray):  # an .npz archive saved under a .npy name
        array.close()
        raise DataError(f"{what} file {path} is an .npz archive, not one .npy array; save the array itself with np.save.")
    return array


def check_features(features: np.ndarray, path: Path, feature_dim: int | None, width_from: Path | None = None) -> np.ndarray:
    """2-D, floating, finite, of the expected width (model.feature_dim, or that of the file `width_from`
    read before it); returned as float32."""
    if features.ndim != 2:
        raise DataError(f"{path} must hold a 2-D array (samples, feature width), got shape {features.shape}.")
    if not np.issubdtype(features.dtype, np.floating):
        raise DataError(f"{path} must hold floating-point features, got dtype {features.dtype}; "
                        f"export the features as float32.")
    if feature_dim is not None and features.shape[1] != feature_dim:
        if width_from is not None:
            raise DataError(f"{path} has features of width {features.shape[1]} but {width_from.name} has {feature_dim}; "
                            f"every part of a feature folder must come from the same encoder, so export them again "
                            f"together.")
        if features.shape[0] == feature_dim:
            raise DataError(f"{path} has shape {features.shape}: its first axis has model.feature_dim = {feature_dim} "
                            f"entries, so the array looks transposed; save it as (samples, width), e.g. features.T.")
        raise DataError(f"{path} has features of width {features.shape[1]} but model.feature_dim is {feature_dim}; "
                        f"set model.feature_dim: {features.shape[1]} or point data.features at matching features.")
    if features.shape[0] == 0:
        raise DataError(f"{path} holds no samples; the split is empty, so export it again.")
    finite = np.isfinite(features)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise DataError(f"{path} has NaN or infinite values in {rows.size} rows (first: {rows[:5].tolist()}); "
                        f"drop or re-extract those samples.")
    peak = float(np.abs(features).max())
    if peak > FLOAT32_SQUARE_LIMIT:
        raise DataError(f"{path} has values as large as {peak:.3g}, whose squares overflow float32 (training would "
                        f"give NaN); the features are badly scaled, so standardise them (e.g. zero mean, unit variance) "
                        f"or export them again.")
    return features.astype(np.float32, copy=False)


def check_labels(labels: np.ndarray, path: Path, count: int, num_classes: int) -> np.ndarray:
    """1-D integer class ids, as many as there are features, within [0, num_classes)."""
    if labels.ndim == 2 and 1 in labels.shape:
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise DataError(f"{path} must hold a 1-D array of class ids, got shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise DataError(f"{path} must hold integer class ids, got dtype {labels.dtype}.")
    if len(labels) != count:
        raise DataError(f"{path} has {len(labels)} labels but its feature file has {count} samples; "
                        f"features and labels must come from the same export.")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise DataError(f"{path} has class ids {sorted(set(bad.tolist()))[:10]} outside [0, {num_classes}); "
                        f"labels must be 0-based ids of the {num_classes} classes in the prompt files.")
    return labels.astype(np.int64)


def check_label_membership(labels: np.ndarray, allowed: np.ndarray, path: Path, kind: str) -> None:
    """Every label must be in `allowed` (kind: 'seen' or 'unseen')."""
    stray = np.setdiff1d(np.unique(labels), allowed)
    if stray.size:
        raise DataError(f"{path} contains class ids {stray.tolist()[:10]} that are not {kind} in this split; "
                        f"the features and the label split (data.split / data.unseen_file) do not belong together.")


# ----------------------------------------------------------------------------------------------
# Class prompts

BUILTIN_CLASS_LISTS = ("ntu60", "ntu120", "msr_action3d", "utkinect")


def builtin_class_table(name: str) -> tuple[list[str], list[str]]:
    """(names, motion descriptions) of a class list shipped with the package (our own descriptions)."""
    prompts = _builtin_prompts(name)
    return prompts.names, prompts.motion


def _builtin_prompts(name: str) -> ClassPrompts:
    """A list shipped with the package, an idx,name,description csv read like any other."""
    if name not in BUILTIN_CLASS_LISTS:
        raise DataError(f"unknown built-in class list {name!r}; built-in lists are "
                        f"{', '.join('builtin:' + n for n in BUILTIN_CLASS_LISTS)}.")
    with resources.as_file(resources.files("tdsm_core").joinpath(f"resources/{name}_classes.csv")) as path:
        return _read_prompt_files(path, None)


_QUOTED_NAME = re.compile(r'^\s*"([^"]+)"')


def load_class_prompts(csv_path: str | Path, llm_path: str | Path | None = None, num_classes: int = 0) -> ClassPrompts:
    """Read the class prompt files of the SA-DVAE release (or `builtin:ntu60`).

    csv: header `idx,label` with 1-based idx; llm: one line per class, `"Name" definition.`
    `builtin:<name>` uses a list shipped with the package (names as one prompt, our descriptions as the other).
    With num_classes > 0 only the first num_classes classes are used (the NTU-120 files start with
    the NTU-60 classes).
    """
    if str(csv_path).startswith("builtin:"):
        if llm_path:
            raise DataError(f"data.class_llm ({llm_path}) cannot be combined with data.class_csv {csv_path}, which "
                            f"brings its own descriptions; leave class_llm empty, or give class_csv as a file.")
        prompts = _builtin_prompts(str(csv_path).split(":", 1)[1])
    else:
        prompts = _read_prompt_files(Path(csv_path), Path(llm_path) if llm_path else None)
    if num_classes:
        if len(prompts) < num_classes:
            raise DataError(f"the class prompt files list {len(prompts)} classes but data.num_classes is {num_classes}; "
                            f"use the class list of the right dataset or set data.num_classes.")
        prompts = replace(prompts, names=prompts.names[:num_classes], motion=prompts.motion[:num_classes],
                          definition=prompts.definition[:num_classes])
    return prompts


def _read_prompt_files(csv_path: Path, llm_path: Path | None) -> ClassPrompts:
    """Either the SA-DVAE csv (`idx,label`: one prompt per class) with its optional llm file, or a csv in the
    built-in lists' format (`idx,name,description`: the name is one prompt, the description the other)."""
    if csv_path.is_dir():
        raise DataError(f"class prompt file {csv_path} is a folder; set data.class_csv to the idx,label csv file in it "
                        f"(e.g. ntu60.csv), an idx,name,description csv, or builtin:ntu60.")
    if not csv_path.is_file():
        raise DataError(f"class prompt file {csv_path} is missing; set data.class_csv to the idx,label csv "
                        f"(e.g. ntu60.csv from the SA-DVAE release), an idx,name,description csv, or builtin:ntu60.")
    content = read_text(csv_path, "class prompt file (data.class_csv)", "set data.class_csv to a csv file you can read")
    reader = csv.DictReader(io.StringIO(content, newline=""))
    fields = reader.fieldnames or []
    named = "name" in fields and "description" in fields
    if "label" not in fields and not named:
        hint = (f" (it looks separated by {';' if ';' in fields[0] else 'tabs'}; use commas)"
                if len(fields) == 1 and (";" in fields[0] or "\t" in fields[0]) else "")
        raise DataError(f"class prompt file {csv_path} must have a header idx,label or idx,name,description, "
                        f"got {fields}{hint}.")
    motion, names, order = [], [], []
    for line, row in enumerate(reader, start=2):
        if None in row:  # more fields than the header: a prompt with an unquoted comma would be cut short
            raise DataError(f"class prompt file {csv_path} line {line} has more fields than its header {fields}; "
                            f"quote a prompt that contains commas, e.g. 1,\"walk, then sit down\".")
        text = (row.get("description" if named else "label") or "").strip()
        if not text:
            raise DataError(f"class prompt file {csv_path} line {line} has an empty "
                            f"{'description' if named else 'label'}; every class needs a prompt.")
        motion.append(text)
        names.append((row.get("name") or "").strip() or text)
        if "idx" in fields:
            order.append((row.get("idx") or "").strip())
    expected = [str(i) for i in range(1, len(motion) + 1)]
    if order and order != expected:
        first = next(i for i, (got, want) in enumerate(zip(order, expected)) if got != want)
        raise DataError(f"class prompt file {csv_path} row {first + 2} has idx {order[first]!r} where {first + 1} "
                        f"belongs; rows are read in file order as classes 1..N, so sort the file by idx.")
    if not motion:
        raise DataError(f"class prompt file {csv_path} lists no classes; it needs one row per class.")
    if named:
        if llm_path is not None:
            raise DataError(f"{csv_path} brings names and descriptions (idx,name,description), so data.class_llm "
                            f"({llm_path}) has no place; leave class_llm empty.")
        return ClassPrompts(names=names, motion=motion, definition=list(names), named=True)
    if llm_path is None:
        return ClassPrompts(names=list(motion), motion=motion, definition=list(motion))
    if llm_path.is_dir():
        raise DataError(f"class definition file {llm_path} is a folder; set data.class_llm to the one-line-per-class "
                        f"text file in it (e.g. ntu60_llm.txt), or leave it empty to use the csv prompts alone.")
    if not llm_path.is_file():
        raise DataError(f"class definition file {llm_path} is missing; set data.class_llm to the one-line-per-class "
                        f"text file (e.g. ntu60_llm.txt), or leave it empty to use the csv prompts alone.")
    content = read_text(llm_path, "class definition file (data.class_llm)", "set data.class_llm to a text file you can read")
    lines = [line.strip() for line in content.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) != len(motion):
        raise DataError(f"class definition file {llm_path} has {len(lines)} lines but {csv_path} lists {len(motion)} "
                        f"classes; the two files must have one entry per class, in the same order.")
    empty = [i + 1 for i, line in enumerate(lines) if not line]
    if empty:
        raise DataError(f"class definition file {llm_path} has empty lines {empty[:5]}; every class needs a definition.")
    names = []
    for line, fallback in zip(lines, motion):
        match = _QUOTED_NAME.match(line)
        names.append(match.group(1) if match else fallback)
    return ClassPrompts(names=names, motion=motion, definition=lines)


# ----------------------------------------------------------------------------------------------
# Label split

def resolve_split(data: DataConfig, num_classes: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(seen ids, unseen ids, description) from data.unseen_file/seen_file or the built-in table."""
    if data.unseen_file:
        path = Path(data.unseen_file)
        unseen = validate_class_ids(load_array(path, "unseen class list"), num_classes, f"unseen class list {path}")
        source = str(path)
    elif data.split:
        spec = get_split(data.split)
        if spec.num_classes != num_classes:
            raise DataError(f"split {spec.name} is for {spec.num_classes} classes but the class prompt files list "
                            f"{num_classes}; use the class list of {spec.dataset} or another split.")
        unseen = np.asarray(spec.unseen, dtype=np.int64)
        source = f"built-in split {spec.name}"
    else:
        raise DataError("no label split given; set data.split (e.g. ntu60_u5) or data.unseen_file (a .npy of unseen ids).")
    if data.seen_file:
        path = Path(data.seen_file)
        seen = validate_class_ids(load_array(path, "seen class list"), num_classes, f"seen class list {path}")
        overlap = np.intersect1d(seen, unseen)
        if overlap.size:
            raise DataError(f"classes {overlap.tolist()} are listed both as seen ({path}) and as unseen; "
                            f"a class is either seen or unseen.")
    else:
        seen = np.setdiff1d(np.arange(num_classes), unseen)
    if seen.size == 0:
        raise DataError("every class is unseen in this split; at least one seen class is needed to train.")
    return np.sort(seen), np.sort(unseen), source


# ----------------------------------------------------------------------------------------------
# Whole benchmark

def load_benchmark(data: DataConfig, feature_dim: int | None = None, name: str = "") -> Benchmark:
    """Load and validate features, split and prompts described by a DataConfig."""
    prompts = load_class_prompts(data.class_csv, data.class_llm or None, data.num_classes)
    num_classes = len(prompts)
    seen, unseen, split_source = resolve_split(data, num_classes)
    if not data.features:
        raise DataError("data.features is empty; set it to a folder in the SA-DVAE layout "
                        "(or run `python -m tdsm_core demo-data` for the built-in demo).")
    folder = Path(data.features)
    if folder.is_file():
        raise DataError(f"data.features {folder} is a file; it must be the folder that holds train.npy, "
                        f"train_label.npy, ztest.npy and z_label.npy.")
    if not folder.is_dir():
        raise DataError(f"feature folder {folder} does not exist; download the SA-DVAE features (see data/README.md) "
                        f"or run `python -m tdsm_core demo-data` for the demo.")
    allowed = {"train": seen, "val": seen, "ztest": unseen, "gtest": np.arange(num_classes)}
    kinds = {"train": "seen", "val": "seen", "ztest": "unseen", "gtest": "a class"}
    parts: dict[str, FeatureSet] = {}
    first: Path | None = None  # the first part read sets the width the others must have
    for part, (feat_name, label_name) in PARTS.items():
        feat_path, label_path = folder / feat_name, folder / label_name
        if part not in REQUIRED_PARTS and not feat_path.exists() and not label_path.exists():
            continue
        features = check_features(load_array(feat_path, f"{part} feature"), feat_path, feature_dim, first)
        feature_dim, first = features.shape[1], first or feat_path
        labels = check_labels(load_array(label_path, f"{part} label"), label_path, len(features), num_classes)
        check_label_membership(labels, allowed[part], label_path, kinds[part])
        parts[part] = FeatureSet(features, labels)
    missing_seen = np.setdiff1d(seen, parts["train"].labels)
    if missing_seen.size == len(seen):
        raise DataError(f"{folder / 'train_label.npy'} has no sample of any seen class; check the split.")
    return Benchmark(
        name=name or folder.name, seen=seen, unseen=unseen, prompts=prompts,
        train=parts["train"], ztest=parts["ztest"], val=parts.get("val"), gtest=parts.get("gtest"),
        source={"features": str(folder), "split": split_source, "class_csv": str(data.class_csv)},
    )


def sanity_checks(benchmark: Benchmark) -> list[str]:
    """Check the split beyond what loading checks; raise DataError on the first failure, else list what passed."""
    seen, unseen = set(benchmark.seen.tolist()), set(benchmark.unseen.tolist())
    passed = []

    def check(condition: bool, ok: str, failure: str) -> None:
        if not condition:
            raise DataError(failure)
        passed.append(ok)

    overlap = sorted(seen & unseen)
    check(not overlap, f"seen ({len(seen)}) and unseen ({len(unseen)}) classes are disjoint",
          f"classes {overlap} are both seen and unseen; fix the split (data.split / data.unseen_file).")
    missing = sorted(seen - set(benchmark.train.labels.tolist()))
    check(not missing, "every seen class has training samples",
          f"seen classes {missing[:10]} have no training sample in train_label.npy; "
          f"the features and the split do not match.")
    missing = sorted(unseen - set(benchmark.ztest.labels.tolist()))
    check(not missing, "every unseen class has ztest samples",
          f"unseen classes {missing[:10]} have no test sample in z_label.npy; "
          f"they could never be scored, so fix the split.")
    check(not (set(benchmark.train.labels.tolist()) & unseen), "no unseen class appears in training",
          "train_label.npy contains unseen classes, which would leak them into training; fix the split.")
    widths = {part: fs.features.shape[1] for part, fs in benchmark.parts().items()}
    check(len(set(widths.values())) == 1, f"all parts have feature width {benchmark.feature_dim}",
          f"the parts have different feature widths {widths}; export them with the same encoder.")
    flat = [part for part, fs in benchmark.parts().items() if float(fs.features.std(axis=0).max()) == 0.0]
    check(not flat, "no part has constant features", f"the features of {flat} are constant; they carry no information.")
    shared = np.intersect1d(_row_hashes(benchmark.train.features), _row_hashes(benchmark.ztest.features))
    check(shared.size == 0, "no ztest sample is a copy of a training sample",
          f"{shared.size} ztest feature rows also occur in train.npy; test samples leak into training.")
    names = benchmark.class_names
    repeated = sorted({n for n in names if names.count(n) > 1})
    check(not repeated, f"the {len(names)} class names are unique",
          f"class names {repeated[:5]} occur more than once; every class needs its own prompt.")
    return passed


def _row_hashes(features: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(features).view(np.dtype((np.void, features.dtype.itemsize * features.shape[1])))
    return np.array([hash(r.tobytes()) for r in rows.ravel()], dtype=np.int64)


def balanced_subsample(labels: np.ndarray, max_count: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of at most `max_count` rows, as evenly spread over the classes as possible."""
    labels = np.asarray(labels)
    if max_count <= 0 or max_count >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    # round robin over the classes: rank r of every class comes before rank r + 1 of any class
    ranked = sorted((rank, i, index) for i, rows in enumerate(per_class) for rank, index in enumerate(rows))
    return np.sort(np.array([index for _, _, index in ranked[:max_count]], dtype=np.int64))
