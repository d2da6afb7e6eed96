"""The workbook: committed notebooks are clean, run headless on tiny parameters, stop and resume properly."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from tdsm_core.figures import plots
from tdsm_core.workbook import notebooks, runner, sweep
from tdsm_core.workbook.analysis import balanced_subsample, sanity_checks, sensitivity_sweep
from tdsm_core.config import EvalConfig
from tdsm_core.data.features import load_benchmark, load_class_prompts
from tdsm_core.diffusion import NoiseSchedule
from tdsm_core.errors import ConfigError, DataError
from tdsm_core.evaluate import ZeroShotScorer, fixed_noises, zero_shot_metrics
from tdsm_core.model import Denoiser, DenoiserConfig

from conftest import ROOT, TINY_MODEL, randomise, random_text, tiny_config

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# the figures each notebook must leave in <run>/figures
FIGURES = {
    "01_data": ["class_counts.png", "feature_statistics.png"],
    "02_training": ["loss_curves.png"],
    "03_evaluation": ["per_class_accuracy.png", "confusion_matrix.png", "sensitivity.png"],
    "04_alignment": ["umap_skeleton.png", "umap_text.png", "umap_aligned.png", "aligned_heatmap.png", "retrieval.png"],
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cells(path):
    return json.loads(path.read_text())["cells"]


def source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


# ----------------------------------------------------------------------------------------------
# The committed notebooks


def test_the_numbered_notebooks_are_the_workbook():
    assert [p.stem for p in NOTEBOOKS] == ["00_skeletons", *FIGURES]  # 00: test_skeleton_notebook.py
    assert runner.notebook_paths() == NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs_and_one_typed_parameters_cell(path):
    notebook = json.loads(path.read_text())
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    ids = [c.get("id") for c in notebook["cells"]]
    assert None not in ids and len(set(ids)) == len(ids), f"{path.name}: every cell needs its own id (nbformat 4.5)"
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: strip the outputs"
        statements = [line for line in source(cell).splitlines() if line.strip() and not line.lstrip().startswith("#")]
        # a few visible lines (one batch and its loss, one sample and its scores) teach more than a helper call
        assert len(statements) <= 20, f"{path.name}: a long cell belongs in tdsm_core"
    tagged = [c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0]["cell_type"] == "code"
    declared = runner.notebook_parameters(path)
    assert set(runner.COMMON_PARAMETERS) <= set(declared)
    import papermill

    untyped = [n for n, info in papermill.inspect_notebook(str(path)).items() if info["inferred_type_name"] == "None"]
    assert not untyped, f"{path.name}: give parameters {untyped} a type annotation"


# ----------------------------------------------------------------------------------------------
# Headless runs: fail, keep, continue, finish, summarise


def tiny_overrides(tmp_path):
    return [f"output_dir={tmp_path / 'outputs'}", f"data.features={tmp_path / 'demo'}",
            f"text.cache_dir={tmp_path / 'cache'}",
            "model.hidden_dim=32", "model.depth=1", "model.num_heads=2", "train.steps=12", "train.batch_size=16",
            "train.log_every=3", "train.checkpoint_every=6", "train.validate_every=0", "train.validation_samples=48"]


TINY_PARAMS = dict(sensitivity_samples=48, sensitivity_timesteps=[10, 25, 40], sensitivity_max_noises=3,
                   max_umap_points=240, heatmap_per_class=3, retrieval_count=4)


@pytest.fixture
def jupyter_env(monkeypatch):
    """Jupyter/IPython/numba state in the project's .cache (numba's cache makes later UMAP fits cheaper)."""
    for name, sub in [("IPYTHONDIR", "ipython"), ("JUPYTER_CONFIG_DIR", "jupyter/config"),
                      ("JUPYTER_DATA_DIR", "jupyter/data"), ("JUPYTER_RUNTIME_DIR", "jupyter/runtime"),
                      ("MPLCONFIGDIR", "matplotlib"), ("NUMBA_CACHE_DIR", "numba")]:
        monkeypatch.setenv(name, os.environ.get(name, str(ROOT / ".cache" / sub)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.slow
def test_notebooks_fail_loudly_keep_their_work_and_continue(tmp_path, jupyter_env):
    overrides = tiny_overrides(tmp_path)
    run_dir = tmp_path / "outputs" / "demo"
    args = [arg for o in overrides for arg in ("--set", o)]
    params = [arg for k, v in TINY_PARAMS.items() for arg in ("--param", f"{k}={v}")]
    # a folder where 03_evaluation saves its confusion matrix makes that cell fail (the parameters are all valid,
    # so nothing refuses the run before the notebooks start)
    blocker = run_dir / "figures" / "confusion_matrix.png"
    blocker.mkdir(parents=True)
    failed = subprocess.run([sys.executable, "-m", "tdsm_core", "notebooks", "configs/demo.yaml", *args, *params,
                             "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert failed.returncode == 2, failed.stderr
    error = failed.stderr.strip().splitlines()[-1]
    assert error.startswith("error: 03_evaluation.ipynb cell ") and "confusion_matrix.png" in error, error
    assert "Traceback" not in failed.stderr
    executed_dir = run_dir / "notebooks"
    assert (executed_dir / "01_data.done.json").exists() and (executed_dir / "02_training.done.json").exists()
    assert (executed_dir / "03_evaluation.ipynb").exists() and not (executed_dir / "03_evaluation.done.json").exists()
    assert not (executed_dir / "04_alignment.ipynb").exists()
    assert (run_dir / "last.pt").exists() and (run_dir / "metrics.json").exists()

    # fixed: the finished notebooks are skipped, the run continues at 03
    blocker.rmdir()
    report = runner.run_notebooks(ROOT / "configs" / "demo.yaml", overrides, "cpu", TINY_PARAMS, log=lambda _: None)
    assert report.skipped == ["01_data.ipynb", "02_training.ipynb"]
    assert report.executed == ["03_evaluation.ipynb", "04_alignment.ipynb"]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step"] == 12 and metrics["num_test"] == 720 and metrics["num_unseen"] == 12
    assert 0 <= metrics["zsl_top1"] <= metrics["zsl_top5"] <= 100
    assert len(metrics["per_class_top1"]) == 12 and sum(map(sum, metrics["confusion"])) == 720
    rows = pd.DataFrame(metrics["sensitivity"]["rows"])
    assert sorted(rows[rows.setting == "timestep"].value) == [10, 25, 40]
    assert sorted(rows[rows.setting == "noises"].value) == [1, 2, 3]
    assert rows[["top1", "top5"]].apply(lambda v: v.between(0, 100)).all().all()
    assert metrics["sensitivity"]["num_samples"] == 48
    for stem, names in FIGURES.items():
        for name in names:
            png = run_dir / "figures" / name
            assert png.exists(), f"{stem} did not write {name}"
            assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    for stem in FIGURES:
        executed = cells(executed_dir / f"{stem}.ipynb")
        errors = [o for c in executed for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"{stem}: {errors[:1]}"
        assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed)

    # nothing left to do; the summary puts the paper's figure beside ours
    again = runner.run_notebooks(ROOT / "configs" / "demo.yaml", overrides, "cpu", TINY_PARAMS, log=lambda _: None)
    assert again.executed == [] and len(again.skipped) == 4
    table = sweep.run_all([ROOT / "configs" / "demo.yaml"], 1, overrides, "cpu", TINY_PARAMS,
                             summary_dir=tmp_path / "outputs", log=lambda _: None)
    row = table.iloc[0]
    assert row["split"] == "ntu60_u12" and row["paper_tdsm_top1"] == 56.03 and row["data"] == "synthetic demo"
    assert row["top1_mean"] == pytest.approx(metrics["zsl_top1"])
    assert "56.03" in (tmp_path / "outputs" / "summary.md").read_text()
    assert pd.read_csv(tmp_path / "outputs" / "summary.csv").shape[0] == 1


def test_unknown_notebook_parameters_are_rejected_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="sensitivity_samples"):
        runner.run_notebooks(ROOT / "configs" / "demo.yaml", [f"output_dir={tmp_path}"],
                               params={"sensitivty_samples": 5})
    with pytest.raises(ConfigError, match="name=value"):
        runner.parse_params(["train.steps=5"])
    assert runner.parse_params(["sensitivity_timesteps=[5, 25]", "progress=true"]) == {
        "sensitivity_timesteps": [5, 25], "progress": True}
    assert not (tmp_path / "demo").exists()


def test_summary_averages_seeds_beside_the_paper(tmp_path):
    runs = []
    for seed, top1 in [(1, 80.0), (2, 84.0)]:
        run = tmp_path / f"ntu60_u5_seed{seed}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"split": "ntu60_u5", "run": run.name, "zsl_top1": top1,
                                                      "zsl_top5": 99.0, "chance_top1": 20.0, "step": 100}))
        runs.append(run)
    table = sweep.summary_table(runs)
    assert table.shape[0] == 1
    row = table.iloc[0]
    assert row["seeds"] == 2 and row["top1_mean"] == 82.0 and row["paper_tdsm_top1"] == 86.49
    assert row["top1_std"] == pytest.approx(8 ** 0.5)  # sample std (ddof=1), as the seed tables report
    sweep.write_summary(table, tmp_path, runs)
    markdown = (tmp_path / "summary.md").read_text()
    assert "| ntu60_u5 | NTU60 55/5 |" in markdown and "82.00 ± 2.83" in markdown and "86.49" in markdown
    assert sweep.seed_runs(ROOT / "configs" / "demo.yaml", 3, [f"output_dir={tmp_path}"])[2][0] == 2027


def test_parallel_runs_use_one_gpu_each_and_distinct_folders(tmp_path, monkeypatch):
    import threading
    import time

    running, peak, used = set(), [0], []
    guard = threading.Lock()

    def fake_run(config, overrides, run_dir, params, force, gpu, log):
        with guard:
            assert gpu not in {g for g, _ in running}, "two runs on one GPU"
            running.add((gpu, run_dir))
            peak[0] = max(peak[0], len(running))
            used.append(gpu)
        time.sleep(0.2)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text(json.dumps({"split": "ntu60_u5", "run": run_dir.name, "zsl_top1": 50.0,
                                                          "zsl_top5": 90.0, "chance_top1": 20.0, "step": 1}))
        with guard:
            running.discard((gpu, run_dir))
        return None

    monkeypatch.setattr(sweep, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(sweep, "_run_in_subprocess", fake_run)
    table = sweep.run_all([ROOT / "configs" / "ntu60_u5.yaml"], seeds=4, overrides=[f"output_dir={tmp_path}"],
                             parallel=True, log=lambda line: None)
    assert peak[0] == 2 and sorted(set(used)) == ["0", "1"] and len(used) == 4
    assert table.iloc[0]["seeds"] == 4
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [f"ntu60_u5_seed{i}" for i in range(4)]
    with pytest.raises(ConfigError, match="same folder"):
        sweep.run_all([ROOT / "configs" / "ntu60_u5.yaml"] * 2, overrides=[f"output_dir={tmp_path}"], parallel=True)


def test_a_failed_run_does_not_stop_the_others_and_the_finished_ones_are_summarised(tmp_path, monkeypatch):
    def fake_notebooks(config, overrides, device, params, force, run_dir, log):
        if "ntu120" in str(config):
            load_class_prompts(tmp_path / "ntu120.csv")  # the loader's own error for a missing prompt file
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text(json.dumps({"split": "ntu60_u5", "run": run_dir.name, "zsl_top1": 50.0,
                                                          "zsl_top5": 90.0, "chance_top1": 20.0, "step": 1}))

    monkeypatch.setattr(sweep, "run_notebooks", fake_notebooks)
    configs = [ROOT / "configs" / "ntu120_u10.yaml", ROOT / "configs" / "ntu60_u5.yaml"]  # the failing one first
    with pytest.raises(runner.NotebookError, match=r"1 of 2 runs failed \(the others finished and are summarised\): "
                                                     r"ntu120_u10: class prompt file"):
        sweep.run_all(configs, overrides=[f"output_dir={tmp_path}"], log=lambda line: None)
    assert "ntu60_u5" in (tmp_path / "summary.md").read_text() and "ntu120_u10" not in (tmp_path / "summary.md").read_text()


def test_notebook_kernels_import_this_checkout(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    runner.setup_environment()
    assert os.environ["PYTHONPATH"].split(os.pathsep)[:2] == [str(sweep.PROJECT_ROOT), "/elsewhere"]
    runner.setup_environment()  # not added twice
    assert os.environ["PYTHONPATH"].count(str(sweep.PROJECT_ROOT)) == 1


# ----------------------------------------------------------------------------------------------
# Analysis helpers


def test_noise_sweep_counts_match_a_scorer_with_that_many_noises():
    # the sweep scores each noise once and sums prefixes; that needs the first n of N fixed noises to be the n noises
    for n in (1, 2, 3, 7):
        torch.testing.assert_close(fixed_noises(n, 256, 0), fixed_noises(10, 256, 0)[:n], rtol=0, atol=0)
    model = randomise(Denoiser(DenoiserConfig(**TINY_MODEL)), std=0.15)
    schedule, text = NoiseSchedule(), random_text()
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, TINY_MODEL["feature_dim"])).astype(np.float32)
    classes = np.array([2, 5, 7])
    labels = classes[rng.integers(0, 3, 40)]
    settings = EvalConfig(timestep=25, num_noise=2, noise_seed=4)
    sweep = sensitivity_sweep(model, schedule, text, settings, features, labels, classes, [10, 25], 3)
    cases = [("timestep", 10, 10, 2), ("timestep", 25, 25, 2), ("noises", 1, 25, 1), ("noises", 3, 25, 3)]
    for setting, value, t, n in cases:
        direct = ZeroShotScorer(model, schedule, text, timestep=t, num_noise=n, noise_seed=settings.noise_seed).score(
            features, classes)
        expected = zero_shot_metrics(direct, labels, classes)
        row = sweep[(sweep.setting == setting) & (sweep.value == value)].iloc[0]
        assert row["top1"] == pytest.approx(expected.top1) and row["top5"] == pytest.approx(expected.top5)


def test_the_sensitivity_sweep_scores_with_the_configured_precision(monkeypatch):
    """The sweep builds its scorers from the run's scoring settings, eval.precision included (it used to drop it and
    score under the default precision whatever the user asked for)."""
    import tdsm_core.workbook.analysis as analysis

    seen = []
    real = analysis.ZeroShotScorer

    def recording(*args, **kwargs):
        scorer = real(*args, **kwargs)
        seen.append((scorer.precision, scorer.settings.noise_seed, scorer.settings.max_rows_per_call))
        return scorer

    monkeypatch.setattr(analysis, "ZeroShotScorer", recording)
    model = randomise(Denoiser(DenoiserConfig(**TINY_MODEL)), std=0.15)
    features = np.random.default_rng(0).normal(size=(6, TINY_MODEL["feature_dim"])).astype(np.float32)
    settings = EvalConfig(timestep=25, num_noise=1, noise_seed=4, precision="bf16", max_rows_per_call=7)
    sensitivity_sweep(model, NoiseSchedule(), random_text(), settings, features, np.array([2, 5, 2, 5, 2, 5]),
                      np.array([2, 5]), [10], 2)
    assert seen and all(entry == ("bf16", 4, 7) for entry in seen), seen


def test_balanced_subsample_is_seeded_and_even():
    labels = np.repeat(np.arange(5), [50, 10, 30, 3, 40])
    rows = balanced_subsample(labels, 20, seed=1)
    assert len(rows) == 20 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, balanced_subsample(labels, 20, seed=1))
    assert np.bincount(labels[rows], minlength=5).tolist() == [5, 4, 4, 3, 4]  # round robin; the 3 of class 3 all taken
    assert len(balanced_subsample(labels, 0)) == len(labels)


def test_sanity_checks_catch_a_test_sample_copied_into_training(tiny_benchmark_dir):
    cfg = tiny_config(tiny_benchmark_dir)
    benchmark = load_benchmark(cfg.data, TINY_MODEL["feature_dim"])
    assert any("disjoint" in line for line in sanity_checks(benchmark))
    benchmark.train.features[0] = benchmark.ztest.features[3]
    with pytest.raises(DataError, match="leak"):
        sanity_checks(benchmark)


def test_figures_carry_a_note_of_their_data_run_and_checkpoint(tmp_path):
    demo = notebooks.notebook_config(str(ROOT / "configs" / "demo.yaml"), [f"data.features={tmp_path / 'none'}"])
    note = notebooks.figure_note(demo, {"checkpoint": "/x/last.pt", "step": 1000, "num_test": 720,
                                       "protocol": "final checkpoint (protocol a): the weights at the end"})
    assert note.startswith("SYNTHETIC demo data") and "seed 2025" in note and "last.pt at step 1000" in note
    assert "final checkpoint (protocol a)" in note and "the weights at the end" not in note
    real = notebooks.notebook_config(str(ROOT / "configs" / "ntu60_u5.yaml"))
    assert notebooks.figure_note(real).startswith("features ")
    fig = plots.seed_spread([{"metric": "top-1", "mean": 50.0, "std": 2.0, "values": [48.0, 52.0]}], 20.0)
    plots.save_figure(fig, tmp_path / "a.png", note=note)
    plots.save_figure(fig, tmp_path / "b.png", note=note)  # saved twice: still one note
    assert [t.get_text() for t in fig.texts] == [note] and (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_ablation_figure_joins_each_seed_across_variants():
    rows = [{"variant": v, "mean": float(np.mean(x)), "std": float(np.std(x, ddof=1)), "values": x, "tied": t}
            for v, x, t in [("a", [40.0, 50.0, 60.0], 0.0), ("b", [45.0, 48.0, 70.0], 0.0), ("c", [8.3] * 3, 100.0)]]
    fig = plots.plot_ablation({"rows": rows, "study": "loss", "name": "x", "num_seeds": 3, "protocol": "(a)",
                               "chance_top1": 8.3})
    ax = fig.axes[0]
    paired = [line for line in ax.get_lines() if line.get_marker() == "o"]  # one per seed
    assert len(paired) == 3 and [list(line.get_ydata()) for line in paired][2] == [60.0, 70.0, 8.3]
    assert any("100% tied" in t.get_text() for t in ax.texts)


def test_notebook_fingerprint_follows_the_package_code(monkeypatch):
    cfg = notebooks.notebook_config(str(ROOT / "configs" / "demo.yaml"))
    path = ROOT / "notebooks" / "03_evaluation.ipynb"
    before = runner._fingerprint(path, {}, cfg)
    monkeypatch.setattr(runner, "_package_digest", lambda: "changed")
    assert runner._fingerprint(path, {}, cfg) != before


def test_per_class_bars_carry_wilson_intervals():
    low, high = plots.wilson_interval(50.0, 100)
    assert low == pytest.approx(40.38, abs=0.01) and high == pytest.approx(59.62, abs=0.01)
    assert plots.wilson_interval(0.0, 30)[0] == 0.0 and plots.wilson_interval(100.0, 30)[1] == 100.0
    fig = plots.per_class_accuracy({"a": 50.0, "b": 90.0}, 50.0, 70.0, counts={"a": 100, "b": 10})
    spans = sorted(np.ptp(segment[:, 0]) for c in fig.axes[0].collections for segment in c.get_segments())
    assert spans[0] == pytest.approx(59.62 - 40.38, abs=0.05) and spans[1] > 30  # 10 samples: a wide interval


def test_experiment_figures_not_drawn_again_are_removed(tmp_path):
    for name in ("seeds.png", "gzsl_curve.png", "ablation_loss.png", "ablation_noises.png", "loss_curves.png"):
        (tmp_path / name).write_bytes(b"old")
    found = notebooks.ExperimentResults(seeds={"rows": []}, ablations={"loss": {}})
    assert notebooks.remove_undrawn_figures(tmp_path, found) == ["gzsl_curve.png", "ablation_noises.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ablation_loss.png", "loss_curves.png", "seeds.png"]
