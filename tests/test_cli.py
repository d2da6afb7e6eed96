"""The command line end to end: demo data, training, evaluation, and errors without tracebacks."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tdsm_core.data.features import load_benchmark
from tdsm_core.config import load_config
from tdsm_core.data.demo import DemoSpec, make_demo_benchmark

from conftest import ROOT


def run_cli(*args, cwd=ROOT):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "tdsm_core", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=1200)  # a fresh clone on loaded cores: first numba compile, kernels


def tiny_demo_overrides(tmp_path):
    return ["--set", f"output_dir={tmp_path / 'outputs'}", "--set", f"data.features={tmp_path / 'demo'}",
            "--set", f"text.cache_dir={tmp_path / 'cache'}", "--set", "model.hidden_dim=32", "--set", "model.depth=1",
            "--set", "model.num_heads=2", "--set", "train.steps=300", "--set", "train.batch_size=32",
            "--set", "train.validate_every=0", "--set", "train.validation_samples=64", "--set", "train.checkpoint_every=100"]


# the demo runs every notebook; these keep its sensitivity sweep and UMAPs small (they do not change the metrics)
TINY_NOTEBOOK_PARAMS = ["--param", "sensitivity_samples=48", "--param", "sensitivity_timesteps=[10, 25]",
                        "--param", "sensitivity_max_noises=2", "--param", "max_umap_points=240"]


def test_demo_command_trains_and_beats_chance(tmp_path):
    result = run_cli("demo", "--quiet", *tiny_demo_overrides(tmp_path), *TINY_NOTEBOOK_PARAMS)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "outputs" / "demo" / "metrics.json").read_text())
    assert metrics["chance_top1"] == pytest.approx(100 / 12)
    assert metrics["zsl_top1"] > 2 * metrics["chance_top1"], metrics["zsl_top1"]
    assert metrics["zsl_top5"] >= metrics["zsl_top1"]
    assert len(metrics["confusion"]) == 12 and sum(map(sum, metrics["confusion"])) == metrics["num_test"]
    assert metrics["protocol"].startswith("final checkpoint") and metrics["step"] == 300
    assert "zero-shot top-1" in result.stdout
    scores = np.load(tmp_path / "outputs" / "demo" / "scores_ztest.npz")
    assert scores["scores"].shape == (metrics["num_test"], 12)
    # evaluate again from the saved checkpoint: same figure
    again = run_cli("evaluate", "configs/demo.yaml", *tiny_demo_overrides(tmp_path))
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "outputs" / "demo" / "metrics.json").read_text())["zsl_top1"] == metrics["zsl_top1"]


def test_demo_data_is_deterministic_and_in_the_sa_dvae_layout(tmp_path):
    spec = DemoSpec(train_per_class=5, val_per_class=2, test_per_class=3)
    make_demo_benchmark(tmp_path / "a", spec)
    make_demo_benchmark(tmp_path / "b", spec)
    for name in ("train.npy", "train_label.npy", "val.npy", "val_label.npy", "ztest.npy", "z_label.npy",
                 "gtest.npy", "g_label.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "a" / name), np.load(tmp_path / "b" / name))
    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"data.features={tmp_path / 'a'}"])
    benchmark = load_benchmark(cfg.data, 256)
    assert len(benchmark.train) == 48 * 5 and len(benchmark.val) == 48 * 2 and len(benchmark.ztest) == 12 * 3
    assert len(benchmark.gtest) == 48 * 2 + 12 * 3
    assert set(benchmark.gtest.labels) == set(range(60))
    other = DemoSpec(train_per_class=5, val_per_class=2, test_per_class=3, seed=1)
    make_demo_benchmark(tmp_path / "c", other)
    assert not np.array_equal(np.load(tmp_path / "a" / "train.npy"), np.load(tmp_path / "c" / "train.npy"))


@pytest.mark.parametrize("args,pattern", [
    (["train", "configs/ntu60_u5.yaml"], "class prompt file"),
    (["summary", "configs/demo.yaml", "--set", "train.stepz=3"], "unknown config key"),
    (["summary", "no/such/config.yaml"], "does not exist"),
    (["evaluate", "configs/demo.yaml", "--checkpoint", "/no/such.pt", "--set", "data.features=/nowhere"], "does not exist"),
    (["skeleton-zsl", "configs/ntu60_u20.yaml", "--unseen", "5"], "--unseen and --splits draw random splits"),
    (["skeleton-zsl", "configs/msr_action3d.yaml", "--split", "ntu60_u99"], "unknown split 'ntu60_u99'"),
])
def test_user_errors_print_one_line_without_traceback(args, pattern):
    result = run_cli(*args)
    assert result.returncode == 2
    assert pattern in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: ") and result.stderr.strip().count("\n") == 0


def test_summary_prints_the_parameter_count():
    result = run_cli("summary", "configs/ntu60_u5.yaml")
    assert result.returncode == 0 and "261,208,576" in result.stdout


def documented_commands():
    """Every `python -m tdsm_core ...` / `torchrun ... -m tdsm_core ...` line of the README, and the Makefile's
    DEMO_ARGS example, as argument lists (placeholders such as <MSR folder> become a dummy word)."""
    import re
    import shlex

    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        for match in re.finditer(r"-m tdsm_core ([^`#\n]*)", line):
            rest = re.sub(r"<[^>]+>", "PLACEHOLDER", match.group(1)).replace("...", "").strip()
            commands.append(shlex.split(rest))
    example = re.search(r'DEMO_ARGS="([^"]*)"', (ROOT / "Makefile").read_text())
    commands.append(["demo", *shlex.split(example.group(1))])
    return commands


def test_every_documented_command_parses_and_names_existing_configs():
    from tdsm_core.cli.main import build_parser

    commands = documented_commands()
    assert len(commands) >= 20
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as exit_:  # argparse printed what was wrong (or the help, with status 0)
            assert exit_.code == 0, f"documented command does not parse: tdsm_core {' '.join(argv)}"
        for arg in argv:
            if arg.startswith("configs/"):
                assert (ROOT / arg).is_file(), f"documented config {arg} does not exist"
