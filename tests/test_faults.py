"""Fault injection: damaged files, killed processes, concurrent runs - nothing is lost or corrupted."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tdsm_core.runs.checkpoint import load_checkpoint, save_checkpoint
from tdsm_core.data.features import load_benchmark
from tdsm_core.errors import CheckpointError, DataError
from tdsm_core.runs.lock import RunLock, RunLockedError
from tdsm_core.runs.pipeline import evaluate_run, train_run
from tdsm_core.skeletons.format import load_skeleton_npz
from tdsm_core.runs.train import Trainer

from conftest import ROOT, random_text, tiny_config
from test_distributed import launch, tiny_run  # noqa: F401  (fixture)


def test_truncated_checkpoint_is_reported_and_the_trainer_does_not_start_from_it(tiny_benchmark_dir):
    cfg = tiny_config(tiny_benchmark_dir)
    benchmark = load_benchmark(cfg.data, cfg.model.feature_dim)
    Trainer(cfg, benchmark, random_text(), run_dir=tiny_benchmark_dir / "run").fit(progress=False, stop_after=4)
    path = tiny_benchmark_dir / "run" / "last.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Trainer(cfg, benchmark, random_text(), run_dir=tiny_benchmark_dir / "run").fit(progress=False)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)
    torch.save({"weights": 1}, path)
    with pytest.raises(CheckpointError, match="not a TDSM workbook checkpoint"):
        load_checkpoint(path)


def test_checkpoint_trained_on_other_feature_width_is_refused(tiny_benchmark_dir):
    cfg = tiny_config(tiny_benchmark_dir)
    benchmark = load_benchmark(cfg.data, cfg.model.feature_dim)
    train_run(cfg, benchmark, random_text(), progress=False)
    wider = tiny_config(tiny_benchmark_dir, model={"feature_dim": 20})
    path = cfg.run_dir() / "last.pt"
    from tdsm_core.runs.checkpoint import load_model_state
    from tdsm_core.model import Denoiser

    with pytest.raises(CheckpointError, match=r"skeleton_embedder.weight of shape \(32, 16\) but the model expects \(32, 20\)"):
        load_model_state(Denoiser(wider.model), load_checkpoint(path)["model"], path)


def test_truncated_npz_and_npy_are_reported(tmp_path, tiny_benchmark_dir):
    from tdsm_core.io import save_npz_atomic

    save_npz_atomic(tmp_path / "skeletons.npz", skeletons=np.zeros((2, 3, 1, 4, 3), np.float32))
    data = (tmp_path / "skeletons.npz").read_bytes()
    (tmp_path / "skeletons.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="skeletons.npz"):
        load_skeleton_npz(tmp_path / "skeletons.npz")
    feats = tiny_benchmark_dir / "feats" / "ztest.npy"
    feats.write_bytes(feats.read_bytes()[:100])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_benchmark(tiny_config(tiny_benchmark_dir).data, 16)


def wait_for(predicate, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sigkill_at_a_random_step_then_resume_gives_the_same_weights(tiny_run, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    settings = ["--set", "train.steps=40", "--set", "train.checkpoint_every=1", "--set", "train.log_every=1"]
    launch(tmp_path, 1, "train", str(tiny_run), "--quiet", *settings, "--set", f"output_dir={straight}")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "tdsm_core", "train", str(tiny_run), "--quiet", *settings,
                                "--set", f"output_dir={killed}"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "tiny" / "metrics.jsonl"
    target = random.Random(os.getpid()).randint(3, 30)
    assert wait_for(lambda: log.exists() and log.read_text().count('"loss"') >= target)
    process.send_signal(signal.SIGKILL)
    process.wait()
    step_at_kill = load_checkpoint(killed / "tiny" / "last.pt")["step"]
    assert step_at_kill < 40, "the run finished before it could be killed"
    launch(tmp_path, 1, "train", str(tiny_run), "--quiet", *settings, "--set", f"output_dir={killed}")
    a = load_checkpoint(straight / "tiny" / "last.pt")
    b = load_checkpoint(killed / "tiny" / "last.pt")
    assert a["step"] == b["step"] == 40
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    steps = [json.loads(line)["step"] for line in (killed / "tiny" / "metrics.jsonl").read_text().splitlines()
             if '"loss"' in line]
    assert steps == list(range(1, 41))  # no step lost or logged twice


KILL_DURING_SAVE = r"""
import os, signal, sys, torch
from tdsm_core.runs.checkpoint import save_checkpoint
path = sys.argv[1]
save_checkpoint(path, model={"w": torch.ones(3)}, step=1)
def dying_save(obj, f, *args, **kwargs):
    handle = f if hasattr(f, "write") else open(f, "wb")  # torch_save_atomic hands torch an open file
    handle.write(b"PK\x03\x04 half a checkpoint")
    handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
save_checkpoint(path, model={"w": torch.zeros(3)}, step=2)
"""


def test_process_killed_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path, tiny_benchmark_dir):
    path = tmp_path / "run" / "last.pt"
    result = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(path)], cwd=ROOT, capture_output=True)
    assert result.returncode == -signal.SIGKILL
    data = load_checkpoint(path)
    assert data["step"] == 1 and torch.equal(data["model"]["w"], torch.ones(3))
    leftovers = list((tmp_path / "run").glob(".*.tmp"))
    assert leftovers, "the killed writer should have left its temporary file"
    cfg = tiny_config(tiny_benchmark_dir)
    benchmark = load_benchmark(cfg.data, cfg.model.feature_dim)
    (tmp_path / "run" / "last.pt").unlink()
    Trainer(cfg, benchmark, random_text(), run_dir=tmp_path / "run").fit(progress=False, stop_after=1)
    assert not list((tmp_path / "run").glob(".*.tmp"))  # the next run in the folder cleans up


def test_second_run_on_the_same_folder_refuses(tiny_benchmark_dir):
    cfg = tiny_config(tiny_benchmark_dir)
    benchmark = load_benchmark(cfg.data, cfg.model.feature_dim)
    with RunLock(cfg.run_dir(), "train"):
        with pytest.raises(RunLockedError, match=r"already in use by pid \d+ .*another name or output_dir"):
            train_run(cfg, benchmark, random_text(), progress=False)
    assert not (cfg.run_dir() / "last.pt").exists()
    train_run(cfg, benchmark, random_text(), progress=False)  # free again once the holder is gone
    assert (cfg.run_dir() / "last.pt").exists()


def test_lock_of_a_killed_process_is_released(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from tdsm_core.runs.lock import RunLock\n"
                               "with RunLock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)",
                               str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunLockedError):
        RunLock(tmp_path).__enter__()
    holder.kill()
    holder.wait()
    with RunLock(tmp_path):
        pass


def test_same_seed_gives_identical_metrics_twice(tiny_benchmark_dir):
    results = []
    for name in ("first", "second"):
        cfg = tiny_config(tiny_benchmark_dir, name=name)
        benchmark = load_benchmark(cfg.data, cfg.model.feature_dim)
        train_run(cfg, benchmark, random_text(), progress=False)
        metrics = evaluate_run(cfg, benchmark, random_text())
        results.append({k: v for k, v in metrics.items() if k not in ("run", "checkpoint", "scoring_seconds")})
        results[-1]["scores"] = np.load(cfg.run_dir() / "scores_ztest.npz")["scores"].tolist()
    assert results[0] == results[1]


def test_an_unfinished_run_is_labelled_so_and_never_reused_as_finished(tiny_benchmark_dir):
    from tdsm_core.runs.pipeline import PROTOCOL_FINAL, finished_metrics

    cfg = tiny_config(tiny_benchmark_dir)
    benchmark, text = load_benchmark(cfg.data, cfg.model.feature_dim), random_text()
    train_run(cfg, benchmark, text, progress=False, stop_after=3)
    metrics = evaluate_run(cfg, benchmark, text)
    assert metrics["protocol"].startswith("unfinished run: the checkpoint at step 3 of 8")
    assert finished_metrics(cfg) is None  # protocols, ablations and the skeleton chain train it to the end
    train_run(cfg, benchmark, text, progress=False)
    assert evaluate_run(cfg, benchmark, text)["protocol"] == PROTOCOL_FINAL and finished_metrics(cfg) is not None


def test_evaluation_refuses_early_what_it_could_not_finish(tiny_benchmark_dir):
    cfg = tiny_config(tiny_benchmark_dir)
    benchmark, text = load_benchmark(cfg.data, cfg.model.feature_dim), random_text()
    train_run(cfg, benchmark, text, progress=False)
    with RunLock(cfg.run_dir(), "train"):  # a training run in the same folder
        with pytest.raises(RunLockedError, match="already in use"):
            evaluate_run(cfg, benchmark, text)
    (cfg.run_dir() / "metrics.json").write_text('{"zsl_top1": 5')  # cut short
    with pytest.raises(DataError, match="metrics.json is damaged .*delete it and evaluate the run again"):
        evaluate_run(cfg, benchmark, text)
    (cfg.run_dir() / "metrics.json").unlink()
    assert evaluate_run(cfg, benchmark, text)["step"] == 8


def test_run_folders_that_cannot_be_written_are_refused(tiny_benchmark_dir):
    from tdsm_core.errors import ConfigError

    blocker = tiny_benchmark_dir / "afile"
    blocker.write_text("")
    benchmark = load_benchmark(tiny_config(tiny_benchmark_dir).data, 16)
    with pytest.raises(ConfigError, match="afile is a file, so the run folder .* cannot be made there"):
        Trainer(tiny_config(tiny_benchmark_dir, output_dir=str(blocker)), benchmark, random_text())


def test_a_batch_larger_than_the_training_set_runs_on_into_the_next_epoch(tiny_benchmark_dir):
    from tdsm_core.runs.metrics_log import batch_indices

    cfg = tiny_config(tiny_benchmark_dir, train={"batch_size": 150, "steps": 2})
    benchmark = load_benchmark(cfg.data, 16)
    n = len(benchmark.train)
    assert n < 150
    rows = batch_indices(cfg.seed, 1, n, 150)
    counts = np.bincount(rows, minlength=n)
    assert counts.min() >= 1 and counts.max() <= -(-150 // n) + 1  # each sample at least once, at most once per epoch the batch touches
    summary = Trainer(cfg, benchmark, random_text(), run_dir=tiny_benchmark_dir / "big").fit(progress=False)
    assert summary["step"] == 2


def test_a_damaged_text_cache_is_encoded_again(tmp_path):
    from tdsm_core.config import TextConfig
    from tdsm_core.data.text import cache_key, encode_class_prompts

    pairs = [("walk forward", "walking"), ("sit down", "sitting")]
    cfg = TextConfig(cache_dir=str(tmp_path))
    good = encode_class_prompts(pairs, cfg)
    entry = tmp_path / f"{cache_key(cfg, pairs)}.npz"
    for damage in (lambda: entry.write_bytes(entry.read_bytes()[:300]),  # truncated: not a zip any more
                   lambda: np.savez(entry, tokens=np.full((2, 35, 768), np.nan, np.float32), pooled=good.pooled.numpy()),
                   lambda: np.savez(entry, tokens=good.tokens.numpy()[:1], pooled=good.pooled.numpy()[:1])):
        damage()
        again = encode_class_prompts(pairs, cfg)
        torch.testing.assert_close(again.tokens, good.tokens)


def test_a_run_scored_without_calibration_is_not_reused_for_a_calibrated_config(tiny_benchmark_dir):
    """The chain and the sweeps reuse a finished run only when it was scored with the same eval settings;
    eval.calibration changes the score, so it is one of them (it was missing, and a calibrated rerun
    silently returned the uncalibrated figure)."""
    import dataclasses

    from tdsm_core.runs.pipeline import finished_metrics

    cfg = tiny_config(tiny_benchmark_dir)
    benchmark, text = load_benchmark(cfg.data, cfg.model.feature_dim), random_text()
    train_run(cfg, benchmark, text, progress=False)
    raw = evaluate_run(cfg, benchmark, text)
    centred = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, calibration="center"))
    assert finished_metrics(cfg) is not None and finished_metrics(centred) is None
    rescored = evaluate_run(centred, benchmark, text)
    assert finished_metrics(centred) is not None and finished_metrics(cfg) is None
    scores = np.load(cfg.run_dir() / "scores_ztest.npz")["scores"]
    assert rescored["eval"]["calibration"] == "center" and "calibration" not in raw["eval"]
    assert scores.min() < 0 < scores.max()  # centred errors lie on both sides of each class's reference mean
