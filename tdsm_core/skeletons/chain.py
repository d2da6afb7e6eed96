"""From raw skeletons to zero-shot results, in one chain:

    raw dataset -> generic .npz -> preprocessing -> Shift-GCN on the seen classes -> features
    (SA-DVAE layout) -> TDSM -> zero-shot metrics, with the projection baseline on the same features.

`run_skeleton_benchmark` repeats the chain over several unseen-class splits (each trained without
its unseen classes) and reports the mean and spread of top-1 accuracy beside chance level.

Memory stays bounded at any dataset size: the converted skeletons stay on disk (ragged), are
preprocessed a chunk at a time into a fixed-length `.npy` cached next to them, and the encoder reads
that file one batch of rows at a time.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..runs.baseline import train_projection_baseline
from ..config import ExperimentConfig
from .encoder import EncoderTrainer, all_samples_split, subject_split
from ..runs.distributed import World, barrier
from ..data.features import load_class_prompts
from ..errors import DataError
from ..runs.experiments import aggregate
from ..io import atomic_write_text, check_device, save_npy_atomic, write_json
from ..runs.lock import check_writable_folder
from ..runs.pipeline import evaluate_run, finished_metrics, load_data, load_text, train_run
from .preprocess import output_shape, preprocess_to_file
from .format import SkeletonSet, load_skeleton_npz
from .store import DiskArray, open_npy
from .readers import convert_dataset, raw_kind
from ..data.splits import get_split


def default_conversion_cache(cfg: ExperimentConfig) -> Path:
    """<output_dir>/skeletons/<kind>_<folder name>_<hash of the full source path>.npz: two datasets whose
    folders share a name never share a cache."""
    source = Path(cfg.skeleton.source).resolve()
    digest = hashlib.sha1(str(source).encode()).hexdigest()[:8]
    return Path(cfg.output_dir) / "skeletons" / f"{cfg.skeleton.kind}_{source.name}_{digest}.npz"


def load_skeleton_data(cfg: ExperimentConfig, progress: bool = True) -> SkeletonSet:
    """The generic skeleton set of a config: read the .npz, or convert the raw dataset once and cache it.
    The frames stay on disk."""
    s = cfg.skeleton
    if not s.source:
        raise DataError("skeleton.source is empty; set it to a raw dataset folder (with skeleton.kind ntu, msr or "
                        "utkinect) or to a generic skeleton .npz (skeleton.kind npz).")
    source = Path(s.source)
    if s.kind == "npz":
        if source.is_dir():
            kind = raw_kind(source)
            fix = (f"it holds raw {kind} files, so set skeleton.kind={kind}" if kind else "point skeleton.source at a "
                   "generic skeleton .npz, or at a raw dataset folder with skeleton.kind ntu, msr or utkinect")
            raise DataError(f"skeleton.source {source} is a folder but skeleton.kind is npz (one generic skeleton "
                            f"file); {fix}.")
        return load_skeleton_npz(source)
    if source.is_file():
        fix = "set skeleton.kind=npz" if source.suffix == ".npz" else "point skeleton.source at the dataset folder"
        raise DataError(f"skeleton.source {source} is a file but skeleton.kind {s.kind} reads a raw dataset folder; "
                        f"{fix}.")
    cached = Path(s.converted) if s.converted else default_conversion_cache(cfg)
    if cached.is_file():
        return load_skeleton_npz(cached)
    return convert_dataset(s.kind, s.source, cached, progress=progress)  # prints its one-line summary


PREPROCESS_VERSION = 1  # part of the cache key: a change to preprocessing invalidates cached arrays


def preprocessed_skeletons(cfg: ExperimentConfig, data: SkeletonSet) -> DiskArray:
    """The chain's fixed-length skeletons (N, skeleton.length, M, J, 3) float32 on disk, computed once per
    skeleton file and settings into <output_dir>/skeletons/<file>_T<length>_<hash>.npy and read in batches."""
    s = cfg.skeleton
    source = Path(data.source).resolve()
    status = source.stat()
    key = json.dumps([str(source), status.st_size, status.st_mtime_ns, s.length, s.align, PREPROCESS_VERSION])
    path = (Path(cfg.output_dir) / "skeletons" /
            f"{source.stem}_T{s.length}{'' if s.align else '_unaligned'}_{hashlib.sha1(key.encode()).hexdigest()[:8]}.npy")
    try:
        cached = open_npy(path)
        if cached.shape == output_shape(data, s.length):
            return cached
    except (OSError, ValueError):  # not there yet (or not readable): write it
        pass
    layout = data.joint_layout(f"skeleton file {cfg.skeleton.source}")  # a layout of one's own, from the file's fields
    return preprocess_to_file(data, path, length=s.length, align=s.align, layout=layout)


def check_class_prompts(cfg: ExperimentConfig, data: SkeletonSet, write: bool = True) -> None:
    """The chain's class texts (data.class_csv) must describe this dataset's classes, in its order.

    Writes <output_dir>/<name>/classes_from_skeletons.csv (idx,name,description from the skeleton file)
    so that a mismatch has a ready fix. Names are compared where the prompts carry names (built-in lists,
    idx,name,description files); SA-DVAE prompt files are checked by their class count."""
    own = [str(n) for n in data.class_names]
    descriptions = [str(d) for d in data.descriptions] if data.descriptions is not None else own
    table = Path(cfg.output_dir) / cfg.name / "classes_from_skeletons.csv"
    if write:
        rows = io.StringIO()
        writer = csv.writer(rows, lineterminator="\n")
        writer.writerow(["idx", "name", "description"])
        writer.writerows([i + 1, name, text] for i, (name, text) in enumerate(zip(own, descriptions)))
        atomic_write_text(table, rows.getvalue())
    fix = f"set data.class_csv to this dataset's prompts, e.g. {table} (its own names and descriptions) and data.class_llm="
    prompts = load_class_prompts(cfg.data.class_csv, cfg.data.class_llm or None)
    if len(prompts) != len(own):
        raise DataError(f"data.class_csv ({cfg.data.class_csv}) lists {len(prompts)} classes but the skeleton data has "
                        f"{len(own)} ({', '.join(own[:3])}, ...); {fix}.")
    wrong = [(i, a, b) for i, (a, b) in enumerate(zip(prompts.names, own)) if a.strip().lower() != b.strip().lower()]
    if prompts.named and wrong:
        i, a, b = wrong[0]
        raise DataError(f"data.class_csv ({cfg.data.class_csv}) calls class {i} {a!r} where the skeleton data has {b!r} "
                        f"({len(wrong)} of {len(own)} classes differ), so the model would read another dataset's "
                        f"texts; {fix}.")


def draw_unseen_splits(num_classes: int, num_unseen: int, num_splits: int, seed: int) -> list[np.ndarray]:
    """`num_splits` different sets of `num_unseen` classes, drawn from a seeded generator."""
    if not 0 < num_unseen < num_classes:
        raise DataError(f"the number of unseen classes must lie between 1 and {num_classes - 1}, got {num_unseen}.")
    if num_splits < 1:
        raise DataError(f"the number of splits must be at least 1, got {num_splits}.")
    rng = np.random.default_rng(seed)
    splits: list[np.ndarray] = []
    while len(splits) < num_splits:
        unseen = np.sort(rng.choice(num_classes, num_unseen, replace=False))
        if not any(np.array_equal(unseen, other) for other in splits):
            splits.append(unseen)
    return splits


def named_split_unseen(name: str, num_classes: int) -> np.ndarray:
    """The unseen classes of a built-in split (e.g. ntu60_u20), checked against the dataset's class count."""
    spec = get_split(name)
    if spec.num_classes != num_classes:
        raise DataError(f"split {name} is defined over the {spec.num_classes} classes of {spec.dataset} but the skeleton "
                        f"data has {num_classes} classes; use {spec.dataset} skeletons or a split of this dataset.")
    return np.asarray(spec.unseen, dtype=np.int64)


def split_config(cfg: ExperimentConfig, index: int, split: str = "") -> ExperimentConfig:
    """The config of split `index` (or of the built-in split `split`): its own run folder, features and
    unseen-class file inside it."""
    name = f"{cfg.name}_from_skeletons_{split}" if split else f"{cfg.name}_split{index}"
    return in_run_folder(dataclasses.replace(cfg, name=name))


def in_run_folder(cfg: ExperimentConfig) -> ExperimentConfig:
    """The notebooks' view of a skeleton config: the features 00_skeletons exports, and its unseen classes, live
    in the run folder (<run>/features, <run>/unseen.npy), where notebooks 01-04 read them."""
    run_dir = cfg.run_dir()
    data = dataclasses.replace(cfg.data, features=str(run_dir / "features"), unseen_file=str(run_dir / "unseen.npy"),
                               split="", seen_file="")
    return dataclasses.replace(cfg, data=data)


def seed_run_config(cfg: ExperimentConfig, k: int) -> ExperimentConfig:
    """Seed k of a split's TDSM run: seed k = 0 in the split's own folder, k > 0 in <split>_seed<k>/, all reading
    the features the split's encoder exported (the encoder is trained once per split)."""
    if k == 0:
        return cfg
    return dataclasses.replace(cfg, name=f"{cfg.name}_seed{k}", seed=cfg.seed + k)


def sample_parts(cfg: ExperimentConfig, data: SkeletonSet, unseen: np.ndarray) -> dict[str, np.ndarray]:
    """train / val / ztest / gtest rows under the config's protocol (skeleton.protocol)."""
    if cfg.skeleton.protocol == "all_samples":
        return all_samples_split(data.labels, unseen, cfg.skeleton.val_fraction, cfg.seed)
    return subject_split(data.labels, data.subjects, unseen, cfg.skeleton.train_subjects, data.layout)


PROTOCOL_NAMES = {"cross_subject": "cross-subject (training performers train, the others test)",
                  "all_samples": "all samples (every seen-class sample trains but a held-out val share; every "
                                 "unseen-class sample is tested)"}


def encode_split(cfg: ExperimentConfig, skeletons: np.ndarray | DiskArray, data: SkeletonSet, unseen: np.ndarray,
                 progress: bool = True, resume: bool = True, world: World | None = None) -> dict[str, Any]:
    """Shift-GCN on the seen classes of one split (resumed from its checkpoint), its features exported into
    cfg.data.features and the unseen classes into cfg.data.unseen_file; returns what the chain records of it."""
    world = world or World()
    run_dir = cfg.run_dir()
    seen = np.setdiff1d(np.arange(len(data.class_names)), unseen)
    parts = sample_parts(cfg, data, unseen)
    train_subjects = (np.unique(data.subjects[parts["train"]]).tolist() if data.subjects is not None else [])
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_npy_atomic(Path(cfg.data.unseen_file), unseen.astype(np.int64))
    encoder = EncoderTrainer(cfg, skeletons, data.labels, parts, seen, run_dir / "encoder", world=world,
                             bones=data.bones)
    encoder_summary = encoder.fit(resume=resume, progress=progress)
    if world.is_main and (not (Path(cfg.data.features) / "export.json").exists() or not resume):
        encoder.export(cfg.data.features, data.labels)
    barrier(world)  # every rank reads the exported features
    return {"encoder": encoder_summary, "unseen_names": [str(data.class_names[c]) for c in unseen],
            "train_subjects": train_subjects, "sample_protocol": cfg.skeleton.protocol,
            "counts": {part: int(rows.size) for part, rows in parts.items()}}


def run_split(cfg: ExperimentConfig, skeletons: np.ndarray | DiskArray, data: SkeletonSet, unseen: np.ndarray,
              progress: bool = True, resume: bool = True, world: World | None = None,
              seeds: int = 1) -> dict[str, Any]:
    """Encoder -> features -> TDSM (and the baseline) for each of `seeds` seeds -> metrics, for one unseen-class
    split; `cfg` from split_config. The encoder is trained once; the seeds vary the denoiser and the baseline.

    Under torchrun both trainings use every process (DDP); rank 0 alone writes files."""
    world = world or World()
    extra = encode_split(cfg, skeletons, data, unseen, progress=progress, resume=resume, world=world)
    benchmark = load_data(cfg)
    text = load_text(cfg, benchmark)
    per_seed = []
    for k in range(seeds):
        seed_cfg = seed_run_config(cfg, k)
        done = finished_metrics(seed_cfg) or {}
        if resume and "baseline_zsl_top1" in done and done.get("unseen_classes") == unseen.tolist():
            per_seed.append(done)
            continue
        train_run(seed_cfg, benchmark, text, resume=resume, progress=progress, world=world)
        barrier(world)  # rank 0 has written the final checkpoint that every rank scores with
        metrics = evaluate_run(seed_cfg, benchmark, text, world=world)
        baseline = train_projection_baseline(benchmark, text, seed=seed_cfg.seed)
        if world.is_main:
            write_json(seed_cfg.run_dir() / "metrics.json", {**metrics, **baseline, **extra})
        barrier(world)
        per_seed.append({**metrics, **baseline, **extra})
    result = {**per_seed[0], **extra,
              "seeds": [m["zsl_top1"] for m in per_seed], "baseline_seeds": [m["baseline_zsl_top1"] for m in per_seed],
              "seed_values": [cfg.seed + k for k in range(seeds)]}
    return result


def summary_dir(cfg: ExperimentConfig, split: str = "") -> Path:
    """Where the chain writes summary.{json,md,png}: <output_dir>/<name>/ for random splits, the split's run
    folder for a built-in split."""
    return split_config(cfg, 0, split).run_dir() if split else Path(cfg.output_dir) / cfg.name


def run_skeleton_benchmark(cfg: ExperimentConfig, num_unseen: int = 5, num_splits: int = 3, split_seed: int = 0,
                           progress: bool = True, resume: bool = True, world: World | None = None,
                           split: str = "", unseen_classes: list[int] | None = None, seeds: int = 1) -> dict[str, Any]:
    """The whole chain over several random unseen-class splits, over the one built-in split `split` (e.g.
    ntu60_u20, to extract the features the PURLS splits need), or over one split of your own
    (`unseen_classes`, e.g. a published split of a new dataset); `seeds` TDSM and baseline runs per split on
    one encoder. Writes summary.{json,md,png} to <output_dir>/<name>/ (random splits) or to the split's run
    folder (a named or given split)."""
    started = time.time()
    if split:
        get_split(split)  # an unknown name is refused before the skeletons are read
    check_writable_folder(summary_dir(cfg, split))  # and an output folder that cannot be written
    check_device(cfg.train.device)  # the denoiser's device too, not only the encoder's
    world = world or World()
    if not world.is_main:
        barrier(world)  # rank 0 converts and preprocesses once; the others then read its files
    data = load_skeleton_data(cfg, progress=progress and world.is_main)
    skeletons = preprocessed_skeletons(cfg, data)  # (N, T, M, J, 3) on disk, the same for every split
    if world.is_main:
        barrier(world)  # (barriers are no-ops in a single process)
    check_class_prompts(cfg, data, write=world.is_main)  # before any training
    unseen_sets, split = choose_unseen_sets(data, num_unseen, num_splits, split_seed, split, unseen_classes)
    if split:
        num_unseen, num_splits = len(unseen_sets[0]), 1
    rows = []
    for index, unseen in enumerate(unseen_sets):
        split_cfg = split_config(cfg, index, split)
        metrics = run_split(split_cfg, skeletons, data, unseen, progress=progress, resume=resume, world=world,
                            seeds=seeds)
        rows.append({"split": index, "unseen": unseen.tolist(), "unseen_names": metrics["unseen_names"],
                     "tdsm_top1": float(np.mean(metrics["seeds"])), "tdsm_top5": metrics["zsl_top5"],
                     "tdsm_seeds": metrics["seeds"], "tdsm_seed_std": aggregate(metrics["seeds"])["std"],
                     "baseline_top1": float(np.mean(metrics["baseline_seeds"])),
                     "baseline_seeds": metrics["baseline_seeds"],
                     "baseline_seed_std": aggregate(metrics["baseline_seeds"])["std"],
                     "encoder_val_seen_top1": metrics["encoder"]["final_val_seen_top1"],
                     "counts": metrics["counts"]})
    summary = {
        "name": cfg.name, "dataset": str(cfg.skeleton.source), "num_classes": len(data.class_names),
        "split": split or f"{num_splits} random (seed {split_seed})",
        "num_unseen": num_unseen, "num_splits": num_splits, "chance_top1": 100.0 / num_unseen,
        "sample_protocol": PROTOCOL_NAMES[cfg.skeleton.protocol],
        "protocol": "final checkpoints of fixed schedules (encoder and TDSM), each split evaluated once on ztest",
        "seeds": [cfg.seed + k for k in range(seeds)],
        "tdsm_top1": aggregate([r["tdsm_top1"] for r in rows]),
        "baseline_top1": aggregate([r["baseline_top1"] for r in rows]),
        "splits": rows, "wall_seconds": round(time.time() - started, 1),
    }
    if world.is_main:
        out = summary_dir(cfg, split)
        write_json(out / "summary.json", summary)
        atomic_write_text(out / "summary.md", summary_markdown(summary))
        from ..figures.plots import save_figure, split_summary

        save_figure(split_summary(summary), out / "summary.png", note=f"skeletons {cfg.skeleton.source}")
    return summary


def choose_unseen_sets(data: SkeletonSet, num_unseen: int, num_splits: int, split_seed: int, split: str = "",
                       unseen_classes: list[int] | None = None) -> tuple[list[np.ndarray], str]:
    """The unseen classes of each split the chain runs, and the split's name ("" for random splits): one split of
    one's own (`unseen_classes`, named own_<ids>), one built-in split (`split`), or `num_splits` random ones."""
    if unseen_classes is not None:
        unseen = given_split_unseen(unseen_classes, data.class_names)
        return [unseen], split or "own_" + "_".join(str(c) for c in unseen)
    if split:
        return [named_split_unseen(split, len(data.class_names))], split
    return draw_unseen_splits(len(data.class_names), num_unseen, num_splits, split_seed), ""


def given_split_unseen(unseen_classes: list[int], class_names: np.ndarray) -> np.ndarray:
    """A split of one's own: unseen class ids (0-based, e.g. a published split), checked against the dataset."""
    unseen = np.unique(np.asarray(unseen_classes, dtype=np.int64))
    if len(unseen) != len(unseen_classes):
        raise DataError(f"the unseen classes {list(unseen_classes)} name a class twice; list each once.")
    bad = unseen[(unseen < 0) | (unseen >= len(class_names))]
    if bad.size:
        raise DataError(f"unseen classes {bad.tolist()} are not class ids of this dataset (0 to {len(class_names) - 1}, "
                        f"0-based: {', '.join(map(str, class_names[:3]))}, ...).")
    if not 0 < len(unseen) < len(class_names) - 1:
        raise DataError(f"{len(unseen)} unseen classes of {len(class_names)} leave fewer than 2 seen classes to "
                        f"train on; give between 1 and {len(class_names) - 2}.")
    return unseen


def read_unseen_classes(text: str) -> list[int]:
    """--unseen-classes: a comma list ("1,4,7") or a file (.npy of ids, or text with ids separated by commas,
    spaces or lines)."""
    path = Path(text)
    if path.suffix == ".npy" and path.is_file():
        values = np.load(path, allow_pickle=False)
        if values.dtype.kind not in "iu":
            raise DataError(f"{path} must hold integer class ids, got dtype {values.dtype}.")
        return [int(v) for v in values.ravel()]
    if path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace")
    tokens = [t for t in text.replace(",", " ").split() if t]
    try:
        return [int(t) for t in tokens]
    except ValueError:
        raise DataError(f"--unseen-classes must be 0-based integer class ids (e.g. 1,4,7) or a file of them; "
                        f"got {text[:60]!r}.") from None


def summary_markdown(summary: dict[str, Any]) -> str:
    """A Markdown table of a skeleton benchmark summary (per split: mean ± std over the seeds)."""
    what = (f"{summary['num_splits']} splits of {summary['num_unseen']} unseen classes" if summary["num_splits"] > 1
            else f"split {summary.get('split', 0)}: {summary['num_unseen']} unseen classes")
    seeds = summary.get("seeds", [None])
    lines = [f"{summary['name']}: {what} out of {summary['num_classes']} (chance {summary['chance_top1']:.1f}%); "
             f"{summary.get('sample_protocol', 'cross-subject')}; {len(seeds)} seed(s) per split on one encoder", "",
             "| split | unseen classes | TDSM top-1 | baseline top-1 | encoder seen top-1 (val) |", "|---|---|---|---|---|"]
    for r in summary["splits"]:
        spread = lambda key: f" ± {r[key + '_seed_std']:.1f}" if len(r.get(key + "_seeds", [])) > 1 else ""  # noqa: E731
        lines.append(f"| {r['split']} | {', '.join(r['unseen_names'])} | {r['tdsm_top1']:.1f}{spread('tdsm')} | "
                     f"{r['baseline_top1']:.1f}{spread('baseline')} | {r['encoder_val_seen_top1']:.1f} |")
    t, b = summary["tdsm_top1"], summary["baseline_top1"]
    lines.append(f"| mean ± std over splits | | {t['mean']:.1f} ± {t['std']:.1f} | {b['mean']:.1f} ± {b['std']:.1f} | |")
    return "\n".join(lines) + "\n"
