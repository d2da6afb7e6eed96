"""The GPU path against the CPU reference: scoring, a training run, checkpoints that move between devices.

Skipped where CUDA is absent (CI); run on a GPU machine with `python -m pytest tests/test_cuda.py`.
"""
import json

import numpy as np
import pytest
import torch

from tdsm_core.runs.checkpoint import load_checkpoint
from tdsm_core.diffusion import NoiseSchedule
from tdsm_core.evaluate import ZeroShotScorer, score_one_class_at_a_time
from tdsm_core.model import Denoiser, DenoiserConfig
from tdsm_core.runs.pipeline import evaluate_run, load_data, train_run

from conftest import TINY_MODEL, randomise, random_text, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CLASSES = np.array([7, 2, 5, 0, 9, 1])


def _model_and_inputs():
    model = randomise(Denoiser(DenoiserConfig(**TINY_MODEL)), std=0.15)
    features = np.random.default_rng(0).normal(size=(300, TINY_MODEL["feature_dim"])).astype(np.float32)
    return model, random_text(), features


@pytest.fixture
def tf32_on():
    """TF32 matmuls allowed globally while the test runs, as `resolve_device` leaves them on GPUs."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_gpu_fp32_scoring_matches_the_cpu_reference(tf32_on):
    """precision fp32 is exact on the GPU too: the scorer turns TF32 off for its calls and back on after."""
    model, text, features = _model_and_inputs()
    schedule = NoiseSchedule()
    plain = score_one_class_at_a_time(model, schedule, text, features, CLASSES, num_noise=3, batch_size=64)
    gpu = ZeroShotScorer(model.cuda(), schedule, text, num_noise=3, precision="fp32",
                         max_rows_per_call=1000).score(features, CLASSES)
    np.testing.assert_allclose(gpu, plain, rtol=1e-4, atol=1e-5)
    assert (gpu.argmin(1) == plain.argmin(1)).all()
    assert torch.backends.cuda.matmul.allow_tf32  # restored


@pytest.mark.parametrize("precision", ["auto", "amp", "bf16"])
def test_gpu_reduced_precision_scoring_stays_close(precision):
    """Default GPU scoring (auto: bf16 autocast) and bf16 weights: scores near, predictions mostly the same."""
    model, text, features = _model_and_inputs()
    schedule = NoiseSchedule()
    plain = score_one_class_at_a_time(model, schedule, text, features, CLASSES, num_noise=3, batch_size=64)
    fast = ZeroShotScorer(model.cuda(), schedule, text, num_noise=3, precision=precision).score(features, CLASSES)
    np.testing.assert_allclose(fast, plain, rtol=0.05, atol=0.02)
    assert (fast.argmin(1) == plain.argmin(1)).mean() >= 0.9


def test_gpu_cascade_keeping_every_class_is_the_exact_path():
    model, text, features = _model_and_inputs()
    scorer = ZeroShotScorer(model.cuda(), NoiseSchedule(), text, num_noise=3)
    exact = scorer.score(features, CLASSES)
    scorer.cascade_top_k = len(CLASSES)
    np.testing.assert_allclose(scorer.score(features, CLASSES), exact, rtol=1e-6)


def test_train_on_gpu_resume_on_cpu_and_evaluate_on_both(tiny_benchmark_dir):
    """A run trained on CUDA, stopped, resumed on the CPU, scored on both devices: the same predictions."""
    base = tiny_benchmark_dir
    gpu_cfg = tiny_config(base, train={"device": "cuda", "steps": 8})
    benchmark = load_data(gpu_cfg)
    text = random_text()
    train_run(gpu_cfg, benchmark, text, progress=False, stop_after=4)
    checkpoint = load_checkpoint(gpu_cfg.run_dir() / "last.pt")  # mapped to the CPU
    assert checkpoint["step"] == 4 and all(v.device.type == "cpu" for v in checkpoint["model"].values())
    cpu_cfg = tiny_config(base, train={"device": "cpu", "steps": 8})
    train_run(cpu_cfg, benchmark, text, progress=False)
    assert load_checkpoint(cpu_cfg.run_dir() / "last.pt")["step"] == 8
    records = [json.loads(line) for line in (cpu_cfg.run_dir() / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    on_cpu = evaluate_run(cpu_cfg, benchmark, text)
    on_gpu = evaluate_run(gpu_cfg, benchmark, text)
    assert on_gpu["num_test"] == on_cpu["num_test"]
    assert abs(on_gpu["zsl_top1"] - on_cpu["zsl_top1"]) <= 100.0 / on_cpu["num_test"] * 2  # bf16: at most 2 flips


def test_fp32_training_on_gpu_follows_the_cpu_run(tiny_benchmark_dir, tf32_on):
    """train.precision fp32 (no autocast, no TF32) on the GPU reproduces the CPU run's weights closely."""
    text = random_text()
    weights = {}
    for device in ("cpu", "cuda"):
        cfg = tiny_config(tiny_benchmark_dir, name=f"fp32_{device}", train={"device": device, "precision": "fp32"})
        train_run(cfg, load_data(cfg), text, progress=False)
        weights[device] = load_checkpoint(cfg.run_dir() / "last.pt")["model"]
    for key, value in weights["cpu"].items():
        torch.testing.assert_close(weights["cuda"][key], value, rtol=1e-3, atol=1e-4, msg=key)
    assert torch.backends.cuda.matmul.allow_tf32  # restored after every step
