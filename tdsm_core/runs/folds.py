"""Class-fold validation: choosing settings on the seen classes alone.

One random hold-out of a few seen classes is too noisy to choose anything with on a small dataset
(on MSR Action3D, 3 pseudo-unseen classes of 15 let one seed pick a step worth 17% on the test
split). Here the seen classes are cut into folds of `fold_size` classes, as many as the real split
has unseen ones. Each fold holds its classes out as *pseudo-unseen*, trains the denoiser on the
other seen classes and scores zero-shot on the held-out ones; the folds cover every seen class and
their mean (over folds and seeds) is the validation score; the projection baseline is trained and
scored on the same folds beside it. Nothing here reads ztest or gtest.

Pseudo-unseen test samples are the held-out classes' `val` samples (seen classes, test subjects)
when the benchmark has `val`, else their training samples. The skeleton encoder that made the
features was trained on every seen class, held-out ones included, so fold accuracy runs higher
than zero-shot accuracy on truly unseen classes: use it to rank settings, not to predict the test.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import ExperimentConfig
from .baseline import BaselineConfig, train_projection_baseline
from ..data.features import Benchmark, FeatureSet
from ..errors import DataError
from ..evaluate import zero_shot_metrics
from .experiments import aggregate
from ..io import write_json
from ..data.text import ClassTextFeatures
from .build import make_scorer
from .train import Trainer


def class_folds(seen: np.ndarray, fold_size: int, num_folds: int = 0, seed: int = 0) -> list[np.ndarray]:
    """`num_folds` sets of `fold_size` seen classes (default: just enough folds to hold out every class once).

    The classes are shuffled once (seeded) and cut into consecutive windows, wrapping around at the end,
    so the folds are as disjoint as the counts allow (7 classes in folds of 3: 3 folds, one class twice)."""
    seen = np.asarray(seen)
    if not 1 <= fold_size <= len(seen) - 2:
        raise DataError(f"a fold holds out {fold_size} of the {len(seen)} seen classes, which leaves fewer than 2 to "
                        f"train on; use folds of 1 to {len(seen) - 2} classes (--fold-size).")
    num_folds = num_folds or math.ceil(len(seen) / fold_size)
    order = np.random.default_rng(seed).permutation(seen)
    return [np.sort(order[(i * fold_size + np.arange(fold_size)) % len(seen)]) for i in range(num_folds)]


def fold_benchmark(benchmark: Benchmark, pseudo_unseen: np.ndarray) -> Benchmark:
    """The validation problem of one fold: train on the other seen classes, score the held-out ones."""
    pseudo_unseen = np.sort(np.asarray(pseudo_unseen))
    pseudo_seen = np.setdiff1d(benchmark.seen, pseudo_unseen)
    train = benchmark.train
    keep = np.isin(train.labels, pseudo_seen)
    source = benchmark.val if benchmark.val is not None else train
    held = np.isin(source.labels, pseudo_unseen)
    ztest = FeatureSet(source.features[held], source.labels[held])
    if not len(ztest):
        raise DataError(f"the pseudo-unseen classes {pseudo_unseen.tolist()} have no samples to score; every seen "
                        f"class needs val (or training) samples for class-fold validation.")
    # no val and no gtest: a fold run is scored once, on its pseudo-unseen classes, and never picks a checkpoint
    return dataclasses.replace(benchmark, name=f"{benchmark.name} (fold {pseudo_unseen.tolist()})", seen=pseudo_seen,
                               unseen=pseudo_unseen, train=FeatureSet(train.features[keep], train.labels[keep]),
                               val=None, ztest=ztest, gtest=None)


def _training_digest(cfg: ExperimentConfig) -> str:
    """What a fold result depends on: every setting but names, places and reporting."""
    values = cfg.to_dict()
    for key in ("name", "output_dir", "skeleton"):
        values.pop(key, None)
    for key in ("log_every", "checkpoint_every", "validate_every", "validation_samples", "paper_protocol_every",
                "keep_every", "device", "compile"):
        values["train"].pop(key, None)
    for key in ("cache_dir", "batch_size", "allow_download"):
        values["text"].pop(key, None)
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fold_source(benchmark: Benchmark | None) -> str:
    """Where the pseudo-unseen samples that a fold scores come from."""
    if benchmark is None:
        return "fold encoders: each fold's features come from an encoder trained without its pseudo-unseen classes"
    return "val (seen classes, test subjects)" if benchmark.val is not None else "train"


def eval_grid(sweeps: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    """{"timestep": [10, 25], "num_noise": [3]} -> {"timestep=10,num_noise=3": {...}, ...}: every combination of
    scoring settings (eval keys), each a variant that the same trained fold models are scored with."""
    grid: dict[str, dict[str, Any]] = {"": {}}
    for key, values in sweeps.items():
        grid = {f"{name},{key}={v}".lstrip(","): {**settings, key: v} for name, settings in grid.items() for v in values}
    return grid


def features_digest(problems: list[Benchmark]) -> str:
    """A fingerprint of what the fold problems train and score on (features, labels, class sets), so that results
    of other features (another encoder run, a re-exported folder) are never reused."""
    h = hashlib.sha256()
    for problem in problems:
        for array in (problem.seen, problem.unseen, problem.train.features, problem.train.labels,
                      problem.ztest.features, problem.ztest.labels):
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def fold_validation(cfg: ExperimentConfig, benchmark: Benchmark | None, text: ClassTextFeatures, out_dir: str | Path,
                    num_folds: int = 0, fold_size: int = 0, seeds: int = 1, fold_seed: int = 0,
                    progress: bool = False, keep_runs: bool = False,
                    after_fold: Callable[[int, float], None] | None = None,
                    eval_variants: dict[str, dict[str, Any]] | None = None,
                    baseline: BaselineConfig | None = None,
                    problems: list[Benchmark] | None = None) -> dict[str, Any]:
    """Train and score every (fold, seed); returns per-fold top-1 and their mean, and writes folds.json.

    The folds are `benchmark`'s seen classes cut by `class_folds`, or, when given, ready-made `problems`
    (one Benchmark per fold, each with its own features: `skeletons.fold_encoders`, whose encoders never saw
    their fold's classes; `benchmark` is then not read). Results already in `out_dir/folds.json` for the same
    settings and the same features are reused, so a killed validation continues with the next fold.
    `after_fold(i, running_mean)` is called after each fold (a tuner's pruning hook may raise there). Fold runs
    are deleted after scoring unless `keep_runs`. `eval_variants` (see `eval_grid`) also scores every trained
    fold model with other eval settings: scoring is cheap beside training, so a sweep of the inference timestep
    or the number of noises costs one training per fold. `baseline` sizes the projection baseline trained
    beside each fold run (default: its fixed settings)."""
    out_dir = Path(out_dir)
    if problems is None:
        fold_size = fold_size or len(benchmark.unseen)
        problems = [fold_benchmark(benchmark, held) for held in class_folds(benchmark.seen, fold_size, num_folds,
                                                                            fold_seed)]
    if not problems:
        raise DataError("class-fold validation needs at least one fold; got none.")
    folds = [problem.unseen for problem in problems]
    fold_size = max(len(fold) for fold in folds)
    digest = _training_digest(cfg) + features_digest(problems)
    record_path = out_dir / "folds.json"
    previous = json.loads(record_path.read_text()) if record_path.is_file() else {}
    done = previous.get("runs", {}) if previous.get("settings") == digest else {}
    runs: dict[str, Any] = dict(done)
    fold_means = []
    for i, (pseudo_unseen, problem) in enumerate(zip(folds, problems)):
        values = []
        for s in range(seeds):
            key = f"fold{i}_seed{s}"
            if key not in runs:
                run_cfg = dataclasses.replace(cfg, name=key, seed=cfg.seed + s, train=dataclasses.replace(
                    cfg.train, validate_every=0, paper_protocol_every=0, keep_every=0,
                    checkpoint_every=cfg.train.steps))
                run_dir = out_dir / key
                trainer = Trainer(run_cfg, problem, text, run_dir=run_dir)
                trainer.fit(resume=True, progress=progress)
                scorer = make_scorer(run_cfg, trainer.eval_model, text, problem.train.features)
                scores = scorer.score(problem.ztest.features, problem.unseen)
                result = zero_shot_metrics(scores, problem.ztest.labels, problem.unseen)
                runs[key] = {"fold": i, "seed": run_cfg.seed, "pseudo_unseen": pseudo_unseen.tolist(),
                             "top1": result.top1, "top5": result.top5, "num_test": int(len(problem.ztest))}
                variants = {}
                for name, overrides in (eval_variants or {}).items():
                    scorer = make_scorer(run_cfg, trainer.eval_model, text, problem.train.features, **overrides)
                    variants[name] = zero_shot_metrics(scorer.score(problem.ztest.features, problem.unseen),
                                                       problem.ztest.labels, problem.unseen).top1
                if variants:
                    runs[key]["eval_variants"] = variants
                # the projection baseline on the same fold and seed (seconds to train): what TDSM must beat
                runs[key]["baseline_top1"] = train_projection_baseline(problem, text, seed=run_cfg.seed,
                                                                       cfg=baseline)["baseline_zsl_top1"]
                write_json(record_path, {"settings": digest, "runs": runs})
                if not keep_runs:
                    shutil.rmtree(run_dir, ignore_errors=True)
            values.append(runs[key]["top1"])
        fold_means.append(float(np.mean(values)))
        if after_fold is not None:
            after_fold(i, float(np.mean(fold_means)))
    per_seed = [float(np.mean([runs[f"fold{i}_seed{s}"]["top1"] for i in range(len(folds))])) for s in range(seeds)]
    variant_means = {}
    for name in eval_variants or {}:
        values = [runs[f"fold{i}_seed{s}"].get("eval_variants", {}).get(name) for i in range(len(folds))
                  for s in range(seeds)]
        if all(v is not None for v in values):  # runs scored before this variant was asked for have none
            variant_means[name] = float(np.mean(values))
    baseline = [runs[f"fold{i}_seed{s}"].get("baseline_top1") for i in range(len(folds)) for s in range(seeds)]
    summary = {"settings": digest, "runs": runs,
               "baseline_mean_top1": float(np.mean(baseline)) if None not in baseline else None, "folds": [f.tolist() for f in folds], "fold_size": fold_size,
               "fold_top1": fold_means, "mean_top1": float(np.mean(fold_means)),
               "seed_means": aggregate(per_seed), "chance_top1": 100.0 / fold_size, "eval_variants": variant_means,
               "problems": [problem.name for problem in problems],
               "source": _fold_source(benchmark),
               "note": "class-fold validation on the seen classes only; ztest and gtest are never read"}
    write_json(record_path, summary)
    return summary
