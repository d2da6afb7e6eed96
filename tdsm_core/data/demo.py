"""Built-in demo data: a synthetic NTU-60-shaped benchmark in exactly the SA-DVAE layout.

Real NTU features cannot be shipped, so the demo makes its own. Each class gets a centroid in a
256-d "skeleton feature" space computed from the text embedding of its real prompts by a fixed,
random, non-linear map; samples scatter around the centroid along a few class-specific directions,
plus isotropic noise, and pass through a softplus so that they are non-negative like pooled
Shift-GCN activations. Because the centroid is a smooth function of the text, a model that learns
text -> feature on the seen classes can transfer to unseen ones, but the map is non-linear and the
classes overlap, so it is not trivial. Everything is deterministic from the seed.

The folder's `demo.json` marks it as demo data and lists the files the demo wrote; it is written
first (so even an interrupted write is known to be ours) and completed last. The demo never
overwrites a folder that holds anything else (a user's real features, say) unless told to.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import TextConfig
from .features import PARTS, load_class_prompts
from ..errors import DataError
from ..inputs import check_output_folder
from ..io import save_npy_atomic, write_json
from .splits import get_split
from .text import encode_class_prompts


@dataclass
class DemoSpec:
    """Sizes and difficulty of the synthetic benchmark."""

    split: str = "ntu60_u12"
    feature_dim: int = 256
    train_per_class: int = 200
    val_per_class: int = 40
    test_per_class: int = 60
    within_class_rank: int = 6
    within_class_scale: float = 0.55
    noise_scale: float = 0.35
    nonlinearity: float = 1.5
    seed: int = 0


def _centroid_map(text: np.ndarray, spec: DemoSpec, rng: np.random.Generator) -> np.ndarray:
    """(K, H) text embeddings -> (K, F) class centroids through a fixed random two-layer map."""
    text = (text - text.mean(0)) / (text.std(0) + 1e-6)
    hidden = 512
    w1 = rng.normal(0, 1.0 / np.sqrt(text.shape[1]), (text.shape[1], hidden))
    w2 = rng.normal(0, 1.0 / np.sqrt(hidden), (hidden, spec.feature_dim))
    linear = rng.normal(0, 1.0 / np.sqrt(text.shape[1]), (text.shape[1], spec.feature_dim))
    h = np.tanh(spec.nonlinearity * text @ w1)  # (K, hidden)
    return 0.6 * (h @ w2) + 0.4 * (text @ linear)  # (K, F)


def _samples(centroids: np.ndarray, bases: np.ndarray, classes: np.ndarray, per_class: int,
             spec: DemoSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(classes, per_class)
    coefficients = rng.normal(0, spec.within_class_scale, (len(labels), spec.within_class_rank))
    variation = np.einsum("nr,nrf->nf", coefficients, bases[labels])
    noise = rng.normal(0, spec.noise_scale, (len(labels), spec.feature_dim))
    features = np.logaddexp(0.0, centroids[labels] + variation + noise)  # softplus
    order = rng.permutation(len(labels))
    return features[order].astype(np.float32), labels[order].astype(np.int64)


MARKER = "demo.json"
DEMO_FILES = tuple(name for pair in PARTS.values() for name in pair) + (MARKER,)


def foreign_files(out_dir: str | Path) -> list[Path]:
    """Entries of `out_dir` the demo did not write (all of them when it holds no demo marker)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    ours: set[str] = set()
    try:
        ours = set(json.loads((out_dir / MARKER).read_text()).get("files", DEMO_FILES)) | {MARKER}
    except (OSError, ValueError, AttributeError):
        pass  # no marker (or a damaged one): nothing here is known to be the demo's
    own_temporary = lambda name: any(name.startswith(f".{f}.") and name.endswith(".tmp") for f in ours)
    return sorted(p for p in out_dir.iterdir() if p.name not in ours and not own_temporary(p.name))


def make_demo_benchmark(out_dir: str | Path, spec: DemoSpec | None = None, text_cfg: TextConfig | None = None,
                        force: bool = False) -> Path:
    """Write train/val/ztest/gtest features and labels for the demo split into `out_dir`.

    A folder holding files the demo did not write is refused (force=True replaces them)."""
    spec = spec or DemoSpec()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"demo data folder {out_dir} is a file; set data.features to a folder for the demo's .npy files.")
    foreign = foreign_files(out_dir)
    if foreign and not force:
        names = ", ".join(p.name for p in foreign[:4]) + (", ..." if len(foreign) > 4 else "")
        raise DataError(f"{out_dir} holds {len(foreign)} file(s) the demo did not write ({names}), so demo-data "
                        f"refuses to write there; set data.features to a new or empty folder, or pass --force to "
                        f"replace them.")
    check_output_folder(out_dir, "demo data folder (data.features)", "set data.features to a folder you can write to")
    split = get_split(spec.split)
    prompts = load_class_prompts("builtin:ntu60")
    # the generator's text is always the masked encoding, so the demo's data stay the same whichever
    # text.attention_mask the model is conditioned with (that setting is compared on this data)
    generator_text = dataclasses.replace(text_cfg or TextConfig(), attention_mask=True)
    text = encode_class_prompts(prompts.pairs(), generator_text, use_cache=False)
    rng = np.random.default_rng(spec.seed)
    centroids = _centroid_map(text.pooled.numpy().astype(np.float64), spec, rng)  # (K, F)
    bases = rng.normal(0, 1.0 / np.sqrt(spec.within_class_rank), (len(prompts), spec.within_class_rank, spec.feature_dim))
    seen, unseen = np.array(split.seen), np.array(split.unseen)
    train = _samples(centroids, bases, seen, spec.train_per_class, spec, rng)
    val = _samples(centroids, bases, seen, spec.val_per_class, spec, rng)
    ztest = _samples(centroids, bases, unseen, spec.test_per_class, spec, rng)
    seen_test = _samples(centroids, bases, seen, spec.val_per_class, spec, rng)
    gtest = (np.concatenate([seen_test[0], ztest[0]]), np.concatenate([seen_test[1], ztest[1]]))
    description = "synthetic NTU-60-shaped demo benchmark (not real skeleton data)"
    write_json(out_dir / MARKER, {"description": description, "files": list(DEMO_FILES), "complete": False})
    for stem, label_name, (features, labels) in [("train", "train_label", train), ("val", "val_label", val),
                                                  ("ztest", "z_label", ztest), ("gtest", "g_label", gtest)]:
        save_npy_atomic(out_dir / f"{stem}.npy", features)
        save_npy_atomic(out_dir / f"{label_name}.npy", labels)
    write_json(out_dir / MARKER, {"description": description, "files": list(DEMO_FILES), "complete": True,
                                  "spec": spec.__dict__, "seen": seen.tolist(), "unseen": unseen.tolist()})
    return out_dir


def demo_is_ready(out_dir: str | Path, spec: DemoSpec | None = None) -> bool:
    """True when `out_dir` holds a complete demo made with the same spec."""
    meta = Path(out_dir) / "demo.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text())["spec"] == (spec or DemoSpec()).__dict__
    except (ValueError, KeyError):
        return False
