"""Evaluation protocols, each labelled wherever its number appears.

(a) final      - the final checkpoint of the fixed schedule, evaluated once on ztest (the default);
(b) validation - some seen classes are held out as *pseudo-unseen*; a validation run trained on the
                 other seen classes chooses the number of iterations (best pseudo-unseen top-1 over
                 periodic snapshots) and the GZSL calibration gamma (best harmonic mean on a pseudo
                 GZSL set). The final run on all seen classes keeps snapshots at the same steps; the
                 chosen one is evaluated once on ztest, and on gtest with the chosen gamma;
(c) paper      - the best ztest accuracy over periodic evaluations during training, as the original
                 release reports it. It selects on the test set, so it is optimistic and shown only
                 for comparison with published numbers.
Nothing in (a) or (b) looks at ztest or gtest before the single final evaluation.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..config import ExperimentConfig
from ..data.features import Benchmark, FeatureSet, balanced_subsample
from ..errors import CheckpointError, DataError
from ..evaluate import zero_shot_metrics
from .gzsl import calibration_curve, choose_gamma, gamma_grid, gzsl_accuracy
from ..io import resolve_device, write_json
from .pipeline import (PROTOCOL_FINAL, PROTOCOL_PAPER, _paper_protocol, load_data, load_text, saved_settings,
                       scoring_settings, update_metrics)
from ..data.text import ClassTextFeatures
from .build import load_trained_model, make_scorer
from .train import LAST, Trainer, snapshot_name

PROTOCOL_VALIDATION = ("validation protocol: iterations and GZSL calibration chosen on pseudo-unseen classes held "
                       "out from the seen classes; final run on all seen classes evaluated once")


def pseudo_unseen_benchmark(benchmark: Benchmark, num_pseudo: int, seed: int, holdout_fraction: float = 0.2) -> Benchmark:
    """A validation problem built from the seen classes only.

    seen -> pseudo-seen (trained on) + pseudo-unseen (held out). ztest = every training sample of
    the pseudo-unseen classes; val = the `val` part of the pseudo-seen classes (or, without `val`,
    a held-out fraction of their training samples); gtest = val + ztest (a pseudo GZSL set).
    """
    if not 1 <= num_pseudo < len(benchmark.seen):
        raise DataError(f"the number of pseudo-unseen classes must lie between 1 and {len(benchmark.seen) - 1}, "
                        f"got {num_pseudo}.")
    rng = np.random.default_rng(seed)
    pseudo_unseen = np.sort(rng.choice(benchmark.seen, num_pseudo, replace=False))
    pseudo_seen = np.setdiff1d(benchmark.seen, pseudo_unseen)
    train = benchmark.train
    is_unseen = np.isin(train.labels, pseudo_unseen)
    train_rows = np.flatnonzero(~is_unseen)
    if benchmark.val is not None:
        keep = np.isin(benchmark.val.labels, pseudo_seen)
        val = FeatureSet(benchmark.val.features[keep], benchmark.val.labels[keep])
    else:
        held = rng.permutation(train_rows)[: int(round(holdout_fraction * len(train_rows)))]
        val = FeatureSet(train.features[held], train.labels[held])
        train_rows = np.setdiff1d(train_rows, held)
    ztest = FeatureSet(train.features[is_unseen], train.labels[is_unseen])
    gtest = FeatureSet(np.concatenate([val.features, ztest.features]), np.concatenate([val.labels, ztest.labels]))
    return dataclasses.replace(benchmark, name=f"{benchmark.name} (pseudo-unseen validation)", seen=pseudo_seen,
                               unseen=pseudo_unseen, train=FeatureSet(train.features[train_rows], train.labels[train_rows]),
                               val=val, ztest=ztest, gtest=gtest)


def candidate_interval(cfg: ExperimentConfig) -> int:
    """Snapshot spacing of the validation protocol: train.keep_every, else a tenth of the schedule."""
    return cfg.train.keep_every or max(1, cfg.train.steps // 10)


def run_validation(cfg: ExperimentConfig, benchmark: Benchmark, text: ClassTextFeatures, num_pseudo: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Train on the pseudo-seen classes, keeping a snapshot at every candidate step; pick the step with the
    best pseudo-unseen top-1, then the calibration gamma (best pseudo-GZSL harmonic mean) at that step and
    at the final one. Validation sets are seeded class-balanced subsamples of train.validation_samples rows."""
    run_dir = cfg.run_dir() / "validation"
    num_pseudo = num_pseudo or max(1, min(len(benchmark.unseen), len(benchmark.seen) // 2))
    problem = pseudo_unseen_benchmark(benchmark, num_pseudo, cfg.seed)
    interval = candidate_interval(cfg)
    vcfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, paper_protocol_every=0, keep_every=interval,
                                                               validate_every=0))
    trainer = Trainer(vcfg, problem, text, run_dir=run_dir)
    limit = cfg.train.validation_samples
    zrows = balanced_subsample(problem.ztest.labels, limit, cfg.seed)
    grows = balanced_subsample(problem.gtest.labels, limit, cfg.seed)
    previous = {c["step"]: c for c in (read_validation(cfg) or {}).get("candidates", [])}
    trainer.resume()  # a killed validation run continues; candidates it already scored are kept
    candidates = [previous[step] for step in sorted(previous) if step <= trainer.step]

    def score_candidate() -> None:
        scorer = make_scorer(cfg, trainer.model, text, problem.train.features)
        scores = scorer.score(problem.ztest.features[zrows], problem.unseen)
        zsl = zero_shot_metrics(scores, problem.ztest.labels[zrows], problem.unseen)
        candidates.append({"step": trainer.step, "pseudo_zsl_top1": zsl.top1})
        _write_validation(cfg, problem, candidates)

    if trainer.step and trainer.step % interval == 0 and trainer.step not in previous:
        score_candidate()
    while trainer.step < cfg.train.steps:
        trainer.fit(resume=False, progress=progress, stop_after=interval - trainer.step % interval)
        score_candidate()
    best = max(candidates, key=lambda c: (c["pseudo_zsl_top1"], -c["step"]))  # ties: the earlier step
    all_classes = np.sort(np.concatenate([problem.seen, problem.unseen]))
    gammas = {}
    for step in sorted({best["step"], cfg.train.steps}):
        name = LAST if step == cfg.train.steps else snapshot_name(step)
        model = load_trained_model(run_dir / name, trainer.device)[0]
        scores = make_scorer(cfg, model, text, problem.train.features).score(problem.gtest.features[grows], all_classes)
        gammas[step] = choose_gamma(scores, problem.gtest.labels[grows], all_classes, problem.seen).as_dict()
    return _write_validation(cfg, problem, candidates, best["step"], gammas)


def _write_validation(cfg: ExperimentConfig, problem: Benchmark, candidates: list[dict], best_step: int | None = None,
                      gammas: dict[int, dict] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"pseudo_seen": problem.seen.tolist(), "pseudo_unseen": problem.unseen.tolist(),
                              "candidates": candidates}
    if best_step is not None and gammas:
        result.update(best_step=best_step, gamma_at_best=gammas[best_step]["gamma"],
                      gamma_at_final=gammas[cfg.train.steps]["gamma"],
                      pseudo_gzsl={str(step): g for step, g in gammas.items()})
    write_json(cfg.run_dir() / "validation.json", result)
    return result


def read_validation(cfg: ExperimentConfig) -> dict[str, Any] | None:
    import json

    path = cfg.run_dir() / "validation.json"
    return json.loads(path.read_text()) if path.exists() else None


def evaluate_gzsl(cfg: ExperimentConfig, benchmark: Benchmark, text: ClassTextFeatures, model, gamma: float | None,
                  curve_points: int = 101) -> dict[str, Any]:
    """GZSL on gtest: uncalibrated, calibrated with the validation gamma, and the whole trade-off curve."""
    if benchmark.gtest is None:
        return {"skipped": "no gtest.npy/g_label.npy in the feature folder, so GZSL cannot be evaluated; export "
                           "features of the test subjects for all classes as gtest to enable it."}
    classes = np.arange(benchmark.num_classes)
    labels = benchmark.gtest.labels
    is_seen = np.isin(labels, benchmark.seen)
    if is_seen.all() or not is_seen.any():  # checked before the (long) scoring
        raise DataError(f"gtest holds samples of {'seen' if is_seen.any() else 'unseen'} classes only, and GZSL needs "
                        f"both; export gtest.npy/g_label.npy from the test subjects of every class, or drop them.")
    scores = make_scorer(cfg, model, text, benchmark.train.features).score(benchmark.gtest.features, classes)
    result: dict[str, Any] = {"uncalibrated": gzsl_accuracy(scores, labels, classes, benchmark.seen, 0.0).as_dict()}
    if gamma is not None:
        result["calibrated"] = gzsl_accuracy(scores, labels, classes, benchmark.seen, gamma).as_dict()
        result["calibration"] = "gamma chosen on the pseudo-unseen validation run (never on gtest)"
    grid = gamma_grid(scores, classes, benchmark.seen, size=curve_points)
    result["curve_on_gtest"] = [r.as_dict() for r in calibration_curve(scores, labels, classes, benchmark.seen, grid)]
    result["curve_note"] = "diagnostic only: the whole seen/unseen trade-off on gtest; no value is chosen from it"
    return result


def check_snapshots_can_exist(cfg: ExperimentConfig, interval: int) -> None:
    """Protocol (b) picks one of the final run's snapshots (every `interval` steps). A run already trained in
    cfg's folder by `train` or the notebooks kept none, and resuming it would not add them: refuse early."""
    saved = saved_settings(cfg.run_dir())
    if saved is None or not (cfg.run_dir() / LAST).exists():
        return
    kept = saved.get("train", {}).get("keep_every")
    if kept != interval:
        raise CheckpointError(f"{cfg.run_dir()} already holds a run trained without the snapshots every {interval} "
                              f"steps that protocol (b) chooses from; run the protocols under another name "
                              f"(--set name=...), or delete that folder to retrain it with them.")


def paper_protocol_interval(cfg: ExperimentConfig, benchmark: Benchmark) -> int:
    """Spacing of protocol (c)'s ztest evaluations: train.paper_protocol_every, else one epoch of the
    training set (ceil(train samples / batch size) steps), as the release evaluated every epoch."""
    return cfg.train.paper_protocol_every or max(1, -(-len(benchmark.train) // cfg.train.batch_size))


def run_protocols(cfg: ExperimentConfig, benchmark: Benchmark | None = None, text: ClassTextFeatures | None = None,
                  progress: bool = True, paper_protocol: bool = True, gzsl: bool = True) -> dict[str, Any]:
    """Validation run, final run with snapshots (and the paper protocol's ztest every epoch), then (a), (b), (c)."""
    interval = candidate_interval(cfg)
    check_snapshots_can_exist(cfg, interval)  # before the validation run, which takes as long as the final one
    benchmark = benchmark or load_data(cfg)
    text = text if text is not None else load_text(cfg, benchmark)
    validation = run_validation(cfg, benchmark, text, progress=progress)
    final_cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, keep_every=interval, paper_protocol_every=paper_protocol_interval(cfg, benchmark) if paper_protocol else 0))
    Trainer(final_cfg, benchmark, text).fit(progress=progress)
    results: dict[str, Any] = {}
    for key, name, protocol, gamma in [
        ("final", "last.pt", PROTOCOL_FINAL, validation["gamma_at_final"]),
        ("validation", LAST if validation["best_step"] == cfg.train.steps else snapshot_name(validation["best_step"]),
         PROTOCOL_VALIDATION, validation["gamma_at_best"]),
    ]:
        model, _, data = load_trained_model(cfg.run_dir() / name, resolve_device(cfg.train.device))
        scorer = make_scorer(cfg, model, text, benchmark.train.features)
        zsl = zero_shot_metrics(scorer.score(benchmark.ztest.features, benchmark.unseen),
                                benchmark.ztest.labels, benchmark.unseen)
        results[key] = {"protocol": protocol, "step": int(data["step"]), "zsl_top1": zsl.top1, "zsl_top5": zsl.top5}
        if gzsl:
            results[key]["gzsl"] = evaluate_gzsl(cfg, benchmark, text, model, gamma)
    paper = _paper_protocol(cfg.run_dir())
    if paper is not None:
        results["paper"] = paper
    results["validation_run"] = {k: validation[k] for k in ("best_step", "gamma_at_best", "gamma_at_final",
                                                            "pseudo_unseen")}
    results["eval"] = scoring_settings(cfg.eval, resolve_device(cfg.train.device))  # what every score above used
    update_metrics(cfg.run_dir(), {"protocols": results, "zsl_top1": results["final"]["zsl_top1"],
                                   "zsl_top5": results["final"]["zsl_top5"], "protocol": PROTOCOL_FINAL,
                                   "step": results["final"]["step"],
                                   "eval": results["eval"]})
    return results

