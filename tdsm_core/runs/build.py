"""Builders: what a config and a saved run turn into (the denoiser, the noise schedule, the text
conditioning, the scorer and its settings). Training, evaluation, validation and the plots all build
through here, so evaluating imports no training code.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import load_checkpoint, load_model_state
from ..config import ExperimentConfig, config_from_dict, without_retired_keys
from ..diffusion import NoiseSchedule
from ..evaluate import ZeroShotScorer
from ..model import Denoiser
from ..data.text import ClassTextFeatures


def build_model(cfg: ExperimentConfig) -> Denoiser:
    """The denoiser of a config (initialised from the config's seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return Denoiser(cfg.model)


def build_schedule(cfg: ExperimentConfig) -> NoiseSchedule:
    d = cfg.diffusion
    return NoiseSchedule(d.num_timesteps, d.beta_start, d.beta_end, d.beta_schedule, d.prediction_type)


def select_text_features(text: ClassTextFeatures, use: str) -> ClassTextFeatures:
    """Ablation of the text conditioning: keep both parts, or zero the pooled vector or the tokens."""
    if use == "both":
        return text
    if use == "pooled":
        return ClassTextFeatures(torch.zeros_like(text.tokens), text.pooled, text.encoder)
    if use == "tokens":
        return ClassTextFeatures(text.tokens, torch.zeros_like(text.pooled), text.encoder)
    raise ValueError(f"text feature use must be one of both, pooled, tokens; got {use!r}.")


def make_scorer(cfg: ExperimentConfig, model: Denoiser, text: ClassTextFeatures, reference=None,
                **eval_overrides) -> ZeroShotScorer:
    """The scorer a config describes: its eval section as the scoring settings (with optional overrides: a sweep's
    t, a count of noises) and its text-feature ablation. `reference`: the seen classes' training features
    (benchmark.train.features), which eval.calibration measures each class's error level on."""
    device = next(model.parameters()).device
    return ZeroShotScorer(model, build_schedule(cfg), select_text_features(text, cfg.train.text_features).to(device),
                          cfg.eval, reference=reference, **eval_overrides)


def load_trained_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Denoiser, ExperimentConfig, dict]:
    """Model, config and raw checkpoint of a saved run; the weight average when the run kept one (train.ema_decay)."""
    data = load_checkpoint(path, map_location=device)
    cfg = config_from_dict(without_retired_keys(data["config"]))  # checkpoints of older versions load too
    model = Denoiser(cfg.model).to(device)
    load_model_state(model, data["ema"]["model"] if "ema" in data else data["model"], path)
    model.eval()
    return model, cfg, data
