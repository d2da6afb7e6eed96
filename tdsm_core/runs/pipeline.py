"""The steps of one run, as functions the CLI and the notebooks share: data, text, train, evaluate."""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..config import EvalConfig, ExperimentConfig, training_differences, without_retired_keys
from ..data.features import Benchmark, load_benchmark, normalize_features, sanity_checks
from ..data.demo import DemoSpec, demo_is_ready, make_demo_benchmark
from .distributed import World, sharded_score
from ..errors import CheckpointError, DataError
from ..evaluate import resolve_precision, zero_shot_metrics
from ..io import resolve_device, save_npz_atomic, write_json
from .lock import RunLock
from .metrics_log import read_records
from ..data.text import ClassTextFeatures, check_text_features, encode_class_prompts
from .build import load_trained_model, make_scorer
from .train import BEST, LAST, Trainer, check_feature_norm

PROTOCOL_FINAL = "final checkpoint of a fixed schedule, evaluated once on ztest"
PROTOCOL_BEST_VAL = "checkpoint chosen on validation data (seen classes, test subjects), evaluated once on ztest"
PROTOCOL_PAPER = ("the original paper's protocol: best ztest accuracy over periodic evaluations during training "
                  "(every epoch unless train.paper_protocol_every says otherwise; optimistic: it selects on the test "
                  "set); for comparison with published numbers only")


def ensure_demo_data(cfg: ExperimentConfig, spec: DemoSpec | None = None, force: bool = False) -> bool:
    """Create the demo features in data.features if they are missing. Returns True if made.

    A folder holding files the demo did not write is refused unless `force` (see make_demo_benchmark)."""
    if not cfg.data.features:
        raise DataError("data.features is empty; set it to the folder the demo data should be written to.")
    folder = Path(cfg.data.features)
    spec = spec or DemoSpec(split=cfg.data.split or "ntu60_u12")
    if demo_is_ready(folder, spec):
        return False
    make_demo_benchmark(folder, spec, cfg.text, force=force)
    return True


def load_data(cfg: ExperimentConfig) -> Benchmark:
    """The validated benchmark of a config, through the same sanity checks as notebook 01 (a test sample
    copied into training, a seen class without training data, ...), so that no command trains on a leak."""
    benchmark = load_benchmark(cfg.data, cfg.model.feature_dim, name=cfg.name)
    sanity_checks(benchmark)
    return normalize_features(benchmark, cfg.data.normalize)


def load_text(cfg: ExperimentConfig, benchmark: Benchmark, device: str | torch.device = "cpu") -> ClassTextFeatures:
    """Cached text features of every class, checked against the model's text sizes."""
    text = encode_class_prompts(benchmark.prompts.pairs(), cfg.text, device=device)
    check_text_features(text, cfg.model.text_dim, cfg.model.text_len, cfg.text.encoder)
    return text


def train_run(cfg: ExperimentConfig, benchmark: Benchmark | None = None, text: ClassTextFeatures | None = None,
              resume: bool = True, progress: bool = True, stop_after: int | None = None,
              world: World | None = None) -> dict[str, Any]:
    """Train (or resume) the run of `cfg` into cfg.run_dir() on cfg.train.device; under torchrun (or for another
    device) pass a World."""
    benchmark = benchmark or load_data(cfg)
    text = text if text is not None else load_text(cfg, benchmark)
    trainer = Trainer(cfg, benchmark, text, world=world)
    return trainer.fit(resume=resume, progress=progress, stop_after=stop_after)


def checkpoint_path(cfg: ExperimentConfig, which: str = "last") -> Path:
    """last / best, or an explicit path."""
    if which in ("last", "best"):
        path = cfg.run_dir() / (LAST if which == "last" else BEST)
        if which == "best" and not path.exists() and (cfg.run_dir() / LAST).exists():
            if (Path(cfg.data.features) / "val.npy").exists():
                every = cfg.train.validate_every or cfg.train.steps
                raise CheckpointError(f"{path} does not exist yet: the run has not reached its first validation (every "
                                      f"{every} steps, set by train.validate_every); train further, or evaluate the "
                                      f"last checkpoint (--checkpoint last).")
            raise CheckpointError(f"{path} does not exist because this benchmark has no validation split (val.npy); "
                                  f"evaluate the last checkpoint instead (--checkpoint last).")
        return path
    path = Path(which)
    if not path.exists():
        raise CheckpointError(f"checkpoint {which} does not exist; pass --checkpoint last, best or the path of an "
                              f"existing checkpoint file.")
    return path


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """metrics.json of a run folder ({} when there is none yet)."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return {}
    try:
        metrics = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is damaged ({type(exc).__name__}); delete it and evaluate the run again, "
                        f"which rewrites it.") from None
    if not isinstance(metrics, dict):
        raise DataError(f"{path} does not hold a JSON object; delete it and evaluate the run again, which rewrites it.")
    return metrics


def scoring_settings(e: EvalConfig, device: torch.device) -> dict[str, Any]:
    """The eval settings a zero-shot score depends on, precision resolved for the device (compile and the
    row budget only change its speed)."""
    settings = {"timestep": e.timestep, "num_noise": e.num_noise, "noise_seed": e.noise_seed,
                "precision": resolve_precision(e.precision, device), "cascade_top_k": e.cascade_top_k}
    if e.calibration != "none":  # named only when on, so that runs scored before the option existed stay reusable
        settings.update(calibration=e.calibration, calibration_samples=e.calibration_samples)
    return settings


def saved_settings(run_dir: str | Path) -> dict[str, Any] | None:
    """The config a run folder was last trained with (its config.yaml, as a plain dict), or None."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return None
    try:
        saved = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None  # a damaged record is not a reason to reuse anything; training rewrites it
    return saved if isinstance(saved, dict) else None


def finished_metrics(cfg: ExperimentConfig, key: str = "zsl_top1") -> dict[str, Any] | None:
    """metrics.json of cfg's run when it holds `key` for this very config, else None (the caller then runs it).

    Reused only under the final-checkpoint protocol, when the run's config.yaml trained the same way
    (`training_differences`) and the score used the same eval settings (for "protocols", the settings
    stored with those results); a run folder trained otherwise is not reused silently: rerunning it stops
    at resume with a message that names the differences. A run restarted from step 0 has no metrics.json
    until it is scored again (`forget_previous_results`)."""
    metrics = read_metrics(cfg.run_dir())
    saved = saved_settings(cfg.run_dir())
    if key not in metrics or metrics.get("protocol") != PROTOCOL_FINAL or saved is None:
        return None
    if metrics.get("step") != cfg.train.steps:  # scored before the schedule ended (stopped, or still training)
        return None
    if training_differences(saved, cfg):
        return None
    scored_with = metrics[key].get("eval") if key == "protocols" else metrics.get("eval")
    if scored_with != scoring_settings(cfg.eval, resolve_device(cfg.train.device)):
        return None
    return metrics


def update_metrics(run_dir: str | Path, values: dict[str, Any]) -> dict[str, Any]:
    """Merge `values` into run_dir/metrics.json (written atomically) and return the result."""
    metrics = read_metrics(run_dir)
    metrics.update(values)
    write_json(Path(run_dir) / "metrics.json", metrics)
    return metrics


def _paper_protocol(run_dir: Path) -> dict[str, Any] | None:
    values = [(r["step"], r["paper_protocol_ztest_top1"]) for r in read_records(run_dir / "metrics.jsonl")
              if "paper_protocol_ztest_top1" in r]
    if not values:
        return None
    step, best = max(values, key=lambda v: v[1])
    every = min(step for step, _ in values)  # the first evaluation comes after one interval (or at the end)
    return {"zsl_top1": best, "step": step, "evaluations": len(values), "every_steps": every, "protocol": PROTOCOL_PAPER}


def protocol_of(which: str, step: int, steps: int, path: Path) -> str:
    """The label of an evaluation: protocol (a) only for the last checkpoint of a finished schedule."""
    if which == "last":
        return PROTOCOL_FINAL if step == steps else (f"unfinished run: the checkpoint at step {step} of {steps} "
                                                     f"(not protocol (a); train to the end first)")
    return PROTOCOL_BEST_VAL if which == "best" else f"checkpoint {path}"


def evaluate_run(cfg: ExperimentConfig, benchmark: Benchmark | None = None, text: ClassTextFeatures | None = None,
                 checkpoint: str = "", write: bool = True, world: World | None = None) -> dict[str, Any]:
    """Zero-shot evaluation of a trained run on ztest; writes metrics.json and scores_ztest.npz (rank 0).

    Under torchrun the test samples are scored in shards across processes and gathered in order.
    A checkpoint trained with other settings than `cfg` (another split, features, text encoder or model
    size) is refused before any scoring: its seen classes could be this split's unseen ones."""
    which = checkpoint or cfg.eval.checkpoint
    path = checkpoint_path(cfg, which)
    world = world or World(device=resolve_device(cfg.train.device))
    dev = world.device
    model, _, data = load_trained_model(path, dev)
    differences = training_differences(without_retired_keys(data["config"]), cfg)
    if differences:
        raise CheckpointError(f"{path} was trained with other settings than this evaluation uses "
                              f"({'; '.join(differences[:5])}); evaluate it with the config it was trained with "
                              f"(the run folder's config.yaml), or train a new run under another name (--set name=...).")
    run_dir = cfg.run_dir()
    if write and world.is_main:
        read_metrics(run_dir)  # a damaged metrics.json is reported now, not after the scoring
        if not os.access(run_dir, os.W_OK):
            raise CheckpointError(f"run folder {run_dir} is not writable, so the scores could not be saved; "
                                  f"fix its permissions, or evaluate a copy with --set output_dir=...")
    # one writer per run folder: training (same lock file) cannot start while this scores and writes
    with RunLock(run_dir, "train", what="evaluate") if write and world.is_main else contextlib.nullcontext():
        benchmark = benchmark or load_data(cfg)
        check_feature_norm(data, benchmark, path)  # standardised as in training, or refused
        text = text if text is not None else load_text(cfg, benchmark)
        scorer = make_scorer(cfg, model, text, benchmark.train.features)
        started = time.time()
        scores = sharded_score(scorer, benchmark.ztest.features, benchmark.unseen, world)
        seconds = time.time() - started
        result = zero_shot_metrics(scores, benchmark.ztest.labels, benchmark.unseen)
        names = benchmark.class_names
        metrics: dict[str, Any] = {
            "run": cfg.name,
            "split": cfg.data.split or cfg.data.unseen_file,
            "protocol": protocol_of(which, int(data["step"]), cfg.train.steps, path),
            "checkpoint": str(path),
            "step": int(data["step"]),
            "zsl_top1": result.top1,
            "zsl_top5": result.top5,
            "zsl_tied_percent": result.tied,
            "chance_top1": 100.0 / len(benchmark.unseen),
            "num_test": int(len(benchmark.ztest)),
            "num_seen": int(len(benchmark.seen)),
            "num_unseen": int(len(benchmark.unseen)),
            "unseen_classes": benchmark.unseen.tolist(),
            "unseen_names": [names[c] for c in benchmark.unseen],
            "per_class_top1": {names[c]: acc for c, acc in result.per_class.items()},
            "confusion": result.confusion.tolist(),
            "eval": scoring_settings(cfg.eval, dev),
            "scoring_seconds": round(seconds, 3),
            "text_encoder": cfg.text.encoder,
        }
        if data.get("best_score", float("-inf")) > float("-inf"):
            metrics["best_val_seen_top1"] = float(data["best_score"])
        paper = _paper_protocol(run_dir)
        if paper is not None:
            metrics["paper_protocol"] = paper
        if write and world.is_main:
            save_npz_atomic(run_dir / "scores_ztest.npz", scores=scores, labels=benchmark.ztest.labels,
                            classes=benchmark.unseen, predictions=result.predictions)
            update_metrics(run_dir, metrics)
    return metrics


def run_all(cfg: ExperimentConfig, resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Data -> text -> train -> evaluate for one config; returns the metrics."""
    benchmark = load_data(cfg)
    text = load_text(cfg, benchmark)
    train_run(cfg, benchmark, text, resume=resume, progress=progress)
    return evaluate_run(cfg, benchmark, text)


def seen_unseen_table(benchmark: Benchmark) -> list[dict[str, Any]]:
    """One row per class: id, name, seen/unseen and sample counts per part (for notebooks and summaries)."""
    unseen = set(benchmark.unseen.tolist())
    counts = {part: np.bincount(fs.labels, minlength=benchmark.num_classes) for part, fs in benchmark.parts().items()}
    rows = []
    for c in range(benchmark.num_classes):
        row = {"class": c, "name": benchmark.class_names[c], "status": "unseen" if c in unseen else "seen"}
        row.update({part: int(count[c]) for part, count in counts.items()})
        rows.append(row)
    return rows
