"""GZSL maths, calibration chosen without gtest, the labelled protocols, seeds and ablations."""
import dataclasses
import json

import numpy as np
import pytest

from tdsm_core import evaluate as evaluate_module
from tdsm_core.data.features import load_benchmark
from tdsm_core.runs.experiments import aggregate, run_ablation, run_seeds, seeds_markdown
from tdsm_core.runs.gzsl import calibrated_predictions, choose_gamma, gamma_grid, gzsl_accuracy, harmonic_mean
from tdsm_core.runs.protocols import evaluate_gzsl, pseudo_unseen_benchmark, run_protocols, run_validation
from tdsm_core.data.text import ClassTextFeatures

from conftest import random_text, tiny_config


def test_harmonic_mean():
    assert harmonic_mean(50.0, 50.0) == 50.0
    assert harmonic_mean(80.0, 20.0) == pytest.approx(32.0)
    assert harmonic_mean(0.0, 0.0) == 0.0 and harmonic_mean(100.0, 0.0) == 0.0


def test_calibration_shifts_predictions_from_seen_to_unseen():
    classes, seen = np.array([0, 1, 2, 3]), np.array([0, 1])
    scores = np.array([[1.0, 2.0, 1.5, 3.0],   # best seen 0 (1.0), best unseen 2 (1.5)
                       [2.0, 0.5, 3.0, 0.9]])  # best seen 1 (0.5), best unseen 3 (0.9)
    assert calibrated_predictions(scores, classes, seen, 0.0).tolist() == [0, 1]
    assert calibrated_predictions(scores, classes, seen, 0.45).tolist() == [0, 3]
    assert calibrated_predictions(scores, classes, seen, 0.6).tolist() == [2, 3]
    labels = np.array([0, 3])
    assert gzsl_accuracy(scores, labels, classes, seen, 0.0).as_dict() == {
        "gamma": 0.0, "seen_top1": 100.0, "unseen_top1": 0.0, "harmonic_mean": 0.0}
    best = choose_gamma(scores, labels, classes, seen)
    assert 0.4 < best.gamma <= 0.5 and best.harmonic == 100.0
    grid = gamma_grid(scores, classes, seen)
    assert 0.0 in grid and grid.min() < 0.4 and grid.max() > 0.5


def test_gzsl_needs_both_kinds_of_samples():
    with pytest.raises(ValueError, match="both seen and unseen"):
        gzsl_accuracy(np.zeros((2, 3)), np.array([0, 0]), np.arange(3), np.array([0]))


def test_seed_aggregation():
    stats = aggregate([70.0, 72.0, 74.0])
    assert stats["mean"] == pytest.approx(72.0) and stats["std"] == pytest.approx(2.0)  # sample std
    assert aggregate([5.0]) == {"mean": 5.0, "std": 0.0, "n": 1, "values": [5.0]}
    text = seeds_markdown({"name": "x", "num_seeds": 3, "seeds": [1, 2, 3], "chance_top1": 20.0,
                           "rows": [{"metric": "m", **stats}]})
    assert "72.00 ± 2.00" in text and "70.00, 72.00, 74.00" in text


def test_pseudo_unseen_benchmark_holds_out_seen_classes_only(tiny_benchmark_dir):
    cfg = tiny_config(tiny_benchmark_dir)
    benchmark = load_benchmark(cfg.data, cfg.model.feature_dim)
    problem = pseudo_unseen_benchmark(benchmark, 2, seed=0)
    assert set(problem.unseen) <= set(benchmark.seen) and len(problem.unseen) == 2
    assert not set(problem.train.labels) & set(problem.unseen)
    assert set(problem.ztest.labels) == set(problem.unseen) and set(problem.val.labels) <= set(problem.seen)
    assert not set(problem.gtest.labels) & set(benchmark.unseen)  # the real unseen classes never appear
    no_val = pseudo_unseen_benchmark(benchmark.__class__(**{**benchmark.__dict__, "val": None}), 2, seed=0)
    assert len(no_val.val) > 0 and not set(map(tuple, no_val.val.features)) & set(map(tuple, no_val.train.features))


def rows_of(array):
    return {tuple(np.round(row, 5)) for row in np.asarray(array)}


def test_validation_never_scores_ztest_or_gtest(tiny_benchmark_dir, monkeypatch):
    cfg = tiny_config(tiny_benchmark_dir)
    benchmark = load_benchmark(cfg.data, cfg.model.feature_dim)
    scored = []
    original = evaluate_module.ZeroShotScorer.score
    monkeypatch.setattr(evaluate_module.ZeroShotScorer, "score",
                        lambda self, f, c: scored.append(np.asarray(f)) or original(self, f, c))
    result = run_validation(cfg, benchmark, random_text(), num_pseudo=2, progress=False)
    assert [c["step"] for c in result["candidates"]] == list(range(1, 9))  # steps // 10 -> every step
    forbidden = rows_of(benchmark.ztest.features) | rows_of(benchmark.gtest.features)
    assert scored and all(not (rows_of(a) & forbidden) for a in scored)
    assert result["best_step"] in range(1, 9) and "gamma_at_best" in result and "gamma_at_final" in result


def test_protocols_are_labelled_and_gzsl_is_reported(tiny_benchmark_dir):
    cfg = tiny_config(tiny_benchmark_dir, train={"keep_every": 4})
    benchmark = load_benchmark(cfg.data, cfg.model.feature_dim)
    results = run_protocols(cfg, benchmark, random_text(), progress=False)
    assert results["final"]["protocol"].startswith("final checkpoint") and results["final"]["step"] == 8
    assert results["validation"]["protocol"].startswith("validation protocol")
    assert results["validation"]["step"] in (4, 8)
    assert "optimistic" in results["paper"]["protocol"]
    epoch = -(-len(benchmark.train) // cfg.train.batch_size)  # the release evaluated ztest once per epoch
    assert results["paper"]["every_steps"] == min(epoch, 8)
    assert results["paper"]["evaluations"] == len(set(range(epoch, 9, epoch)) | {8})
    assert results["paper"]["zsl_top1"] >= min(results["final"]["zsl_top1"], 100)  # best over evaluations incl. the last
    gzsl = results["final"]["gzsl"]
    assert {"uncalibrated", "calibrated", "curve_on_gtest"} <= gzsl.keys()
    assert gzsl["calibrated"]["gamma"] == results["validation_run"]["gamma_at_final"]
    metrics = json.loads((cfg.run_dir() / "metrics.json").read_text())
    assert metrics["protocols"]["final"]["zsl_top1"] == metrics["zsl_top1"]
    from tdsm_core.workbook.notebooks import experiment_results

    from tdsm_core.runs.pipeline import finished_metrics

    assert finished_metrics(cfg, "protocols")["protocols"] == json.loads(json.dumps(results))  # reused, not rerun
    found = experiment_results(cfg)  # the evaluation notebook's view of this run
    assert found.gzsl_run == cfg.run_dir() and found.gzsl["calibrated"] == gzsl["calibrated"]


def test_gzsl_without_gtest_says_so(tiny_benchmark_dir):
    cfg = tiny_config(tiny_benchmark_dir)
    benchmark = load_benchmark(cfg.data, cfg.model.feature_dim)
    benchmark.gtest = None
    assert "no gtest.npy" in evaluate_gzsl(cfg, benchmark, random_text(), None, 0.0)["skipped"]


def test_gzsl_on_a_gtest_without_seen_samples_is_refused_before_scoring(tiny_benchmark_dir):
    from tdsm_core.data.features import FeatureSet
    from tdsm_core.errors import DataError

    cfg = tiny_config(tiny_benchmark_dir)
    benchmark = load_benchmark(cfg.data, cfg.model.feature_dim)
    unseen_only = np.isin(benchmark.gtest.labels, benchmark.unseen)
    benchmark.gtest = FeatureSet(benchmark.gtest.features[unseen_only], benchmark.gtest.labels[unseen_only])
    with pytest.raises(DataError, match="unseen classes only"):
        evaluate_gzsl(cfg, benchmark, random_text(), None, 0.0)  # no model: it must stop before scoring


def test_seeds_and_ablations_write_tables(tiny_benchmark_dir, monkeypatch):
    from tdsm_core.runs import pipeline

    monkeypatch.setattr(pipeline, "load_text", lambda cfg, benchmark, device="cpu": random_text())
    import tdsm_core.runs.experiments as experiments

    monkeypatch.setattr(experiments, "load_text", lambda cfg, benchmark, device="cpu": random_text())
    cfg = tiny_config(tiny_benchmark_dir, train={"steps": 4, "validate_every": 0})
    summary = run_seeds(cfg, num_seeds=2, protocols=False, progress=False)
    assert summary["rows"][0]["n"] == 2 and (cfg.run_dir().parent / "tiny_seeds" / "summary.md").exists()
    assert (cfg.run_dir().parent / "tiny_seeds" / "seeds.png").read_bytes()[:4] == b"\x89PNG"
    table = run_ablation(cfg, "loss", num_seeds=2, progress=False)
    assert [r["variant"] for r in table["rows"]] == ["diffusion only", "triplet only", "both"]
    assert table["rows"][2]["values"] == summary["rows"][0]["values"]  # "both" reuses the seed runs
    noises = run_ablation(cfg, "noises", num_seeds=2, progress=False)
    assert len(noises["rows"]) == 5 and (cfg.run_dir().parent / "tiny_noises" / "ablation.csv").exists()
    # what the evaluation notebook shows: found from the config, also from a seed's own run
    from tdsm_core.workbook.notebooks import experiment_results

    for view in (cfg, dataclasses.replace(cfg, name="tiny_seed1")):
        found = experiment_results(view)
        assert found.seeds["rows"][0]["values"] == summary["rows"][0]["values"]
        assert set(found.ablations) == {"loss", "noises"} and found.ablations["loss"]["rows"][2]["variant"] == "both"
        assert found.gzsl is None  # protocols=False: no GZSL was evaluated
        assert found.ignored == []
    # a run with other settings must not show these tables as its own
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=6))
    found = experiment_results(other)
    assert found.seeds is None and found.ablations == {}
    assert len(found.ignored) == 3 and all("other settings" in reason and "train.steps" in reason for reason in found.ignored)
    rescored = experiment_results(dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, timestep=3)))
    assert rescored.seeds is None and "eval settings" in rescored.ignored[0]


def test_seed_runs_are_reused_only_for_the_same_settings(tiny_benchmark_dir, monkeypatch):
    import tdsm_core.runs.experiments as experiments
    from tdsm_core.errors import CheckpointError

    monkeypatch.setattr(experiments, "load_text", lambda cfg, benchmark, device="cpu": random_text())
    from tdsm_core.runs import pipeline

    monkeypatch.setattr(pipeline, "load_text", lambda cfg, benchmark, device="cpu": random_text())
    runs = []
    real_run_all = experiments.run_all
    monkeypatch.setattr(experiments, "run_all", lambda cfg, **kw: runs.append(cfg.name) or real_run_all(cfg, **kw))
    cfg = tiny_config(tiny_benchmark_dir, train={"steps": 4, "validate_every": 0})
    first = run_seeds(cfg, num_seeds=1, protocols=False, progress=False)
    assert runs == ["tiny_seed0"]
    again = run_seeds(cfg, num_seeds=1, protocols=False, progress=False)
    assert runs == ["tiny_seed0"] and again["rows"] == first["rows"]  # finished: reused, nothing rerun
    saved = json.loads((cfg.run_dir().parent / "tiny_seed0" / "metrics.json").read_text())
    assert cfg.eval.precision == "auto" and saved["eval"]["precision"] == "fp32"  # stored as resolved here
    rescored = run_seeds(dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, num_noise=1)), num_seeds=1,
                         protocols=False, progress=False)
    assert runs == ["tiny_seed0"] * 2  # other scoring settings: scored again (training resumes at its end)
    assert rescored["rows"][0]["values"] != first["rows"][0]["values"]
    retrained = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=cfg.train.lr * 2))
    with pytest.raises(CheckpointError, match=r"train\.lr"):  # another training: never the old result
        run_seeds(retrained, num_seeds=1, protocols=False, progress=False)


def test_protocols_refuse_early_a_run_trained_without_snapshots(tiny_benchmark_dir):
    from tdsm_core.errors import CheckpointError
    from tdsm_core.runs.train import Trainer

    cfg = tiny_config(tiny_benchmark_dir)
    benchmark = load_benchmark(cfg.data, cfg.model.feature_dim)
    Trainer(cfg, benchmark, random_text(), device="cpu").fit(progress=False)  # as `train` would
    with pytest.raises(CheckpointError, match="snapshots every"):
        run_protocols(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, keep_every=4)), benchmark,
                      random_text(), progress=False)
    assert [p.name for p in cfg.run_dir().parent.iterdir() if "valid" in p.name] == []  # nothing trained first
