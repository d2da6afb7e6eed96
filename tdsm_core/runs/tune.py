"""Searching settings on class-fold validation with Optuna (seeded, resumable, pruned).

A search space is a small YAML file mapping config keys to choices:

    train.lr: {low: 1.0e-4, high: 1.0e-3, log: true}   # a float range (log scale)
    train.steps: {low: 300, high: 1200, step: 300}       # an int range
    data.normalize: [none, standard]                     # a categorical choice

Every trial is one config (the base config with the trial's values) scored by `folds.fold_validation`:
the mean zero-shot top-1 over class folds of the *seen* classes. ztest is never read. Trials run one
after another; after each fold the running mean is reported, and Optuna's median pruner stops a
trial that is clearly behind the ones before it at the same fold. The study lives in a journal file
next to its results, so a killed search continues where it stopped (a trial cut off mid-way is run
again). Written to `<output_dir>/<name>_tune/`: `study.journal`, `trials.csv` (one row per trial:
its values, fold scores and state), `best.yaml` (the chosen overrides, to pass as `--set` or to
copy into a config) and `best.json`.

References: T. Akiba et al., "Optuna: A Next-generation Hyperparameter Optimization Framework"
(KDD 2019); J. Bergstra et al., "Algorithms for Hyper-Parameter Optimization" (NeurIPS 2011, TPE).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .baseline import BaselineConfig
from ..config import ExperimentConfig, _merge, config_from_dict
from ..data.features import Benchmark
from ..errors import ConfigError
from .folds import fold_validation
from ..io import atomic_write_text, write_json
from ..data.text import ClassTextFeatures


def tune_dir(cfg: ExperimentConfig) -> Path:
    """Where `run_tuning` keeps its study and writes its tables."""
    return Path(cfg.output_dir) / f"{cfg.name}_tune"


def read_space(path: str | Path) -> dict[str, Any]:
    """A search space file: {dotted config key: [choices] | {low, high, log?, step?}}."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space file {path} does not exist; write a YAML file mapping config keys to "
                          f"choices (see configs/tune/small_data.yaml).")
    try:
        space = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"search space file {path} is not valid UTF-8 YAML ({type(exc).__name__}); fix its syntax.") from None
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"search space file {path} must map config keys (e.g. train.lr) to choices.")
    for key, choice in space.items():
        ok = (isinstance(choice, list) and len(choice) > 0) or (isinstance(choice, dict) and {"low", "high"} <= set(choice))
        if not ok or "." not in str(key):
            raise ConfigError(f"search space entry {key!r} in {path} must be section.key: [choices] or "
                              f"section.key: {{low: ..., high: ...}}; got {choice!r}.")
    return space


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def trial_config(cfg: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """The base config with a trial's values (checked like any config)."""
    return config_from_dict(_merge(copy.deepcopy(cfg.to_dict()), _nested(values)))


def _suggest(trial, key: str, choice: Any) -> Any:
    if isinstance(choice, list):
        return trial.suggest_categorical(key, choice)
    low, high = choice["low"], choice["high"]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) and "log" not in choice:
        return trial.suggest_int(key, low, high, step=int(choice.get("step", 1)))
    return trial.suggest_float(key, float(low), float(high), log=bool(choice.get("log", False)))


def _study(cfg: ExperimentConfig, out: Path, seed: int, startup: int):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    study = optuna.create_study(
        study_name=cfg.name, storage=storage, load_if_exists=True, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0))
    # a trial left RUNNING by a killed search is marked failed and queued again with the same values
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
    return study


def run_tuning(cfg: ExperimentConfig, benchmark: Benchmark | None, text: ClassTextFeatures, space: dict[str, Any],
               trials: int = 20, num_folds: int = 0, fold_size: int = 0, seeds: int = 1, progress: bool = True,
               startup: int = 5, baseline: BaselineConfig | None = None,
               problems: list[Benchmark] | None = None) -> dict[str, Any]:
    """Run the search until the study holds `trials` finished (complete or pruned) trials; write the tables.
    `problems`: ready-made fold problems (fold encoders) instead of class folds of `benchmark`."""
    import optuna

    out = tune_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "space.yaml", yaml.safe_dump(space, sort_keys=False))
    study = _study(cfg, out, cfg.seed, startup)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    def objective(trial) -> float:
        values = {key: _suggest(trial, key, choice) for key, choice in space.items()}
        trial_cfg = trial_config(cfg, values)

        def report(fold: int, running_mean: float) -> None:
            trial.report(running_mean, fold)
            if trial.should_prune():
                raise optuna.TrialPruned()

        result = fold_validation(trial_cfg, benchmark, text, out / "trials" / f"trial{trial.number:04d}",
                                 num_folds=num_folds, fold_size=fold_size, seeds=seeds, fold_seed=cfg.seed,
                                 after_fold=report, baseline=baseline, problems=problems)
        trial.set_user_attr("fold_top1", result["fold_top1"])
        trial.set_user_attr("seed_std", result["seed_means"]["std"])
        trial.set_user_attr("baseline_top1", result["baseline_mean_top1"])
        return result["mean_top1"]

    while sum(t.state in finished for t in study.get_trials(deepcopy=False)) < trials:
        study.optimize(objective, n_trials=1, catch=())
        if progress:
            last = study.get_trials(deepcopy=False)[-1]
            value = "pruned" if last.state == optuna.trial.TrialState.PRUNED else f"{last.value:.2f}"
            print(f"trial {last.number}: {value}  {json.dumps(last.params)}", flush=True)
    return write_tables(cfg, study, space)


def write_tables(cfg: ExperimentConfig, study, space: dict[str, Any]) -> dict[str, Any]:
    """trials.csv, best.yaml and best.json of a study."""
    import optuna

    out = tune_dir(cfg)
    rows = []
    for t in study.get_trials(deepcopy=False):
        folds = t.user_attrs.get("fold_top1", [])
        rows.append({"trial": t.number, "state": t.state.name, "value": t.value,
                     **{key: t.params.get(key) for key in space},
                     "fold_top1": " ".join(f"{v:.1f}" for v in folds),
                     "baseline_top1": t.user_attrs.get("baseline_top1")})
    header = list(rows[0]) if rows else ["trial"]
    lines = [",".join(header)] + [",".join("" if r[h] is None else str(r[h]) for h in header) for r in rows]
    atomic_write_text(out / "trials.csv", "\n".join(lines) + "\n")
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return {"trials": rows, "best": None}
    best = max(complete, key=lambda t: (t.value, -t.number))  # ties: the earlier trial
    chosen = {key: best.params[key] for key in space}
    atomic_write_text(out / "best.yaml", "# chosen on class-fold validation of the seen classes (ztest never read)\n"
                      + yaml.safe_dump(_nested(chosen), sort_keys=False))
    summary = {"best_trial": best.number, "validation_top1": best.value, "fold_top1": best.user_attrs.get("fold_top1"),
               "overrides": chosen, "set": [f"{k}={v}" for k, v in chosen.items()],
               "trials": len(rows), "complete": len(complete),
               "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.get_trials(deepcopy=False)),
               "median_complete": float(np.median([t.value for t in complete])),
               "note": "validation: mean zero-shot top-1 over class folds of the seen classes; ztest never read"}
    write_json(out / "best.json", summary)
    return {"trials": rows, "best": summary}
