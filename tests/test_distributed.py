"""DistributedDataParallel on CPU with gloo: 2 processes match 1 process, scoring shards count every
sample once, and a 2-process run resumes (also with another number of processes)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from tdsm_core.runs.checkpoint import load_checkpoint
from tdsm_core.config import TextConfig
from tdsm_core.data.features import load_class_prompts
from tdsm_core.runs.distributed import World, gather_rows, shard
from tdsm_core.data.text import cache_key

from conftest import ROOT, TINY_MODEL, random_text, write_features, write_prompts


@pytest.fixture
def tiny_run(tmp_path):
    """A config file for the tiny benchmark, with its text features already in the cache."""
    csv_path, llm_path = write_prompts(tmp_path)
    write_features(tmp_path / "feats", per_class=7)
    np.save(tmp_path / "unseen.npy", np.array([2, 5, 7]))
    text_cfg = {"cache_dir": str(tmp_path / "cache"), "max_length": TINY_MODEL["text_len"]}
    config = {"name": "tiny", "seed": 5, "output_dir": str(tmp_path / "out"),
              "data": {"features": str(tmp_path / "feats"), "unseen_file": str(tmp_path / "unseen.npy"),
                       "class_csv": str(csv_path), "class_llm": str(llm_path)},
              "text": text_cfg, "model": TINY_MODEL,
              "train": {"steps": 6, "batch_size": 8, "warmup_steps": 2, "log_every": 2, "checkpoint_every": 2,
                        "validate_every": 3, "validation_samples": 21, "device": "cpu"},
              "eval": {"num_noise": 2, "max_rows_per_call": 16}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    prompts = load_class_prompts(csv_path, llm_path)
    text = random_text()
    key = cache_key(TextConfig(**text_cfg), prompts.pairs())
    (tmp_path / "cache").mkdir()
    np.savez(tmp_path / "cache" / f"{key}.npz", tokens=text.tokens.numpy(), pooled=text.pooled.numpy())
    return path


def launch(tmp_path, nproc, *args):
    env = dict(os.environ, TMPDIR=str(tmp_path), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    if nproc == 1:
        command = [sys.executable, "-m", "tdsm_core", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "-m", "tdsm_core", *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def final_weights(path):
    return load_checkpoint(path)["model"]


def test_two_processes_match_one_process_and_resume(tiny_run, tmp_path):
    out = tmp_path / "out"
    launch(tmp_path, 1, "train", str(tiny_run), "--quiet", "--set", f"output_dir={out / 'one'}")
    launch(tmp_path, 2, "train", str(tiny_run), "--quiet", "--set", f"output_dir={out / 'two'}")
    one, two = final_weights(out / "one" / "tiny" / "last.pt"), final_weights(out / "two" / "tiny" / "last.pt")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    # the log is written once (by rank 0) and its losses average both ranks
    records = [json.loads(line) for line in (out / "two" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    one_records = [json.loads(line) for line in (out / "one" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [r["step"] for r in one_records]
    for a, b in zip(records, one_records):
        if "loss" in a:
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    # a 2-process run stopped after 2 steps, resumed with 2 processes to step 4, then with 1 process to the end
    launch(tmp_path, 2, "train", str(tiny_run), "--quiet", "--stop-after", "2", "--set", f"output_dir={out / 'resumed'}")
    assert load_checkpoint(out / "resumed" / "tiny" / "last.pt")["step"] == 2
    launch(tmp_path, 2, "train", str(tiny_run), "--quiet", "--stop-after", "2", "--set", f"output_dir={out / 'resumed'}")
    launch(tmp_path, 1, "train", str(tiny_run), "--quiet", "--set", f"output_dir={out / 'resumed'}")
    resumed = final_weights(out / "resumed" / "tiny" / "last.pt")
    for key in one:
        torch.testing.assert_close(resumed[key], one[key], rtol=1e-4, atol=1e-5, msg=key)


def test_distributed_scoring_counts_every_sample_once(tiny_run, tmp_path):
    out = tmp_path / "out" / "one"
    launch(tmp_path, 1, "train", str(tiny_run), "--quiet", "--set", f"output_dir={out}")
    launch(tmp_path, 1, "evaluate", str(tiny_run), "--set", f"output_dir={out}")
    single = json.loads((out / "tiny" / "metrics.json").read_text())
    single_scores = np.load(out / "tiny" / "scores_ztest.npz")
    (out / "tiny" / "metrics.json").unlink()
    launch(tmp_path, 2, "evaluate", str(tiny_run), "--set", f"output_dir={out}")
    double = json.loads((out / "tiny" / "metrics.json").read_text())
    double_scores = np.load(out / "tiny" / "scores_ztest.npz")
    assert single["num_test"] == double["num_test"] == 21  # 3 unseen classes x 7: odd, so shards differ in size
    assert double["confusion"] == single["confusion"] and sum(map(sum, double["confusion"])) == 21
    np.testing.assert_array_equal(double_scores["predictions"], single_scores["predictions"])
    np.testing.assert_allclose(double_scores["scores"], single_scores["scores"], rtol=1e-5)


@pytest.mark.parametrize("items,size", [(10, 3), (2, 4), (7, 2), (0, 3)])
def test_shards_cover_every_item_once(items, size):
    covered = [i for rank in range(size) for i in range(items)[shard(items, World(rank, size))]]
    assert covered == list(range(items))
    assert gather_rows(np.arange(items), items, World(0, 1)).tolist() == list(range(items))


def test_two_process_raw_skeleton_chain(tmp_path):
    from conftest import requires_shared_data

    source = requires_shared_data() / "skeletons" / "msr_action3d"
    settings = [f"skeleton.source={source}", f"output_dir={tmp_path / 'out'}", f"text.cache_dir={tmp_path / 'cache'}",
                "skeleton.channels=[8, 32]", "skeleton.strides=[2, 2]", "skeleton.epochs=2", "skeleton.length=16",
                "skeleton.batch_size=16", "skeleton.device=cpu", "model.feature_dim=32", "model.hidden_dim=32",
                "model.depth=1", "model.num_heads=2", "train.steps=6", "train.batch_size=8",
                "train.validation_samples=16", "eval.num_noise=1"]
    args = ["skeleton-zsl", "configs/msr_action3d.yaml", "--splits", "1", "--quiet"]
    for item in settings:
        args += ["--set", item]
    result = launch(tmp_path, 2, *args)
    assert "mean ± std" in result.stdout and result.stdout.count("| 0 |") == 1  # printed once, by rank 0
    run = tmp_path / "out" / "msr_action3d_split0"
    assert load_checkpoint(run / "encoder" / "encoder_last.pt")["step"] > 0 and (run / "last.pt").exists()
    records = (run / "encoder" / "encoder_metrics.jsonl").read_text().splitlines()
    assert len(records) == 2  # one line per epoch, written once
    again = launch(tmp_path, 1, *args)  # one process continues: the finished split is reused
    assert json.loads((tmp_path / "out" / "msr_action3d" / "summary.json").read_text())["num_splits"] == 1
    assert "| 0 |" in again.stdout
