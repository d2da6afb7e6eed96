"""Zero-shot scoring by denoising error, and the accuracy metrics built on it.

For a test feature x0 and a candidate class k, TDSM noises x0 with a few fixed noises at one fixed
timestep t and measures how well the denoiser, given the text of k, predicts its target:

    score_k(x0) = sum_j mean((denoiser(z_t^(j), t, text_k) - target^(j))^2),
    z_t^(j) = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps_j.

The predicted class is argmin_k score_k. The batched scorer computes the text-only part of the
denoiser (timestep + text embeddings and every adaLN modulation) once per class and then runs all
(sample, class, noise) rows through the blocks in large calls, chunked to a row budget.
`score_one_class_at_a_time` is the plain loop of the original release, kept as the reference.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from .diffusion import NoiseSchedule
from .model import Denoiser
from .text import ClassTextFeatures


def fixed_noises(num_noise: int, feature_dim: int, seed: int) -> torch.Tensor:
    """The evaluation noises (num_noise, feature_dim), from their own generator (independent of training)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_noise, feature_dim, generator=generator)


def autocast_context(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU results stay exact fp32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def default_rows_per_call(device: torch.device) -> int:
    """Rows per scoring call: small on CPU (activations stay in cache), large on GPUs (fill the device)."""
    return 16384 if device.type == "cuda" else 512


class ZeroShotScorer:
    """Scores test features against candidate classes with a trained denoiser."""

    def __init__(
        self,
        model: Denoiser,
        schedule: NoiseSchedule,
        text: ClassTextFeatures,
        timestep: int = 25,
        num_noise: int = 3,
        noise_seed: int = 0,
        max_rows_per_call: int = 0,
        autocast: bool = True,
    ):
        if not 0 <= timestep < schedule.num_timesteps:
            raise ValueError(f"eval timestep must lie in [0, {schedule.num_timesteps}), got {timestep}.")
        if num_noise < 1:
            raise ValueError(f"eval num_noise must be at least 1, got {num_noise}.")
        self.model = model
        self.schedule = schedule
        self.text = text
        self.timestep = timestep
        self.noises = fixed_noises(num_noise, model.config.feature_dim, noise_seed)
        self.max_rows_per_call = max_rows_per_call or default_rows_per_call(self.device)
        self.autocast = autocast

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _noisy_and_target(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x0 (n, F) -> z_t and target, both (n, J, F)."""
        n, num_noise = x0.shape[0], len(self.noises)
        noises = self.noises.to(x0.device)[None].expand(n, num_noise, -1)  # (n, J, F)
        x0 = x0[:, None, :].expand(n, num_noise, -1)  # (n, J, F)
        t = torch.tensor(self.timestep, device=x0.device)
        return self.schedule.add_noise(x0, noises, t), self.schedule.target(x0, noises, t)

    @torch.no_grad()
    def score(self, features: np.ndarray | torch.Tensor, classes: np.ndarray | list[int]) -> np.ndarray:
        """features (N, F), candidate class ids (K,) -> scores (N, K), lower = better match."""
        device = self.device
        self.model.eval()
        classes = torch.as_tensor(np.asarray(classes), dtype=torch.long)
        features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        num_classes, num_noise = len(classes), len(self.noises)
        with autocast_context(device, self.autocast):
            t = torch.full((num_classes,), self.timestep, device=device, dtype=torch.long)
            cond = self.model.condition(t, self.text.pooled[classes].to(device), self.text.tokens[classes].to(device))
        samples_per_call = max(1, self.max_rows_per_call // (num_classes * num_noise))
        scores = np.empty((len(features), num_classes), dtype=np.float32)
        for start in range(0, len(features), samples_per_call):
            x0 = features[start:start + samples_per_call].to(device)
            n = x0.shape[0]
            z_t, target = self._noisy_and_target(x0)  # (n, J, F)
            # rows ordered (sample, class, noise)
            z_rows = z_t[:, None].expand(n, num_classes, num_noise, -1).reshape(-1, 1, z_t.shape[-1])
            class_rows = torch.arange(num_classes, device=device)[None, :, None].expand(n, num_classes, num_noise).reshape(-1)
            with autocast_context(device, self.autocast):
                pred = self.model.denoise(z_rows, cond.index(class_rows))  # (rows, 1, F)
            pred = pred.float().view(n, num_classes, num_noise, -1)
            error = (pred - target[:, None]).pow(2).mean(dim=-1).sum(dim=-1)  # (n, K)
            scores[start:start + n] = error.cpu().numpy()
        return scores


@torch.no_grad()
def score_one_class_at_a_time(
    model: Denoiser, schedule: NoiseSchedule, text: ClassTextFeatures, features: np.ndarray | torch.Tensor,
    classes: np.ndarray | list[int], timestep: int = 25, num_noise: int = 3, noise_seed: int = 0, batch_size: int = 512,
) -> np.ndarray:
    """Reference scoring as the original release does it: one full denoiser call per (batch, noise, class)."""
    model.eval()
    device = next(model.parameters()).device
    noises = fixed_noises(num_noise, model.config.feature_dim, noise_seed).to(device)
    features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    scores = np.zeros((len(features), len(classes)), dtype=np.float32)
    for start in range(0, len(features), batch_size):
        x0 = features[start:start + batch_size].to(device)[:, None, :]  # (b, 1, F)
        b = x0.shape[0]
        t = torch.full((b,), timestep, device=device, dtype=torch.long)
        for j in range(num_noise):
            noise = noises[j].expand_as(x0)
            z_t = schedule.add_noise(x0, noise, t)
            target = schedule.target(x0, noise, t)
            for col, k in enumerate(classes):
                pooled = text.pooled[k].to(device).expand(b, -1)
                tokens = text.tokens[k].to(device).expand(b, -1, -1)
                pred = model(z_t, t, pooled, tokens)
                scores[start:start + b, col] += (pred - target).pow(2).mean(dim=(1, 2)).cpu().numpy()
    return scores


@dataclass
class ZeroShotResult:
    """Accuracy of one scored split."""

    top1: float  # percent
    top5: float  # percent (top-k with k = min(5, K))
    per_class: dict[int, float]  # class id -> percent
    confusion: np.ndarray  # (K, K) rows = true class, columns = predicted, counts
    classes: np.ndarray  # (K,) class ids, in score-column order
    predictions: np.ndarray  # (N,) predicted class ids


def zero_shot_metrics(scores: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> ZeroShotResult:
    """Top-1/top-5 accuracy, per-class accuracy and confusion matrix from (N, K) scores (lower = better)."""
    classes = np.asarray(classes)
    column = {int(c): i for i, c in enumerate(classes)}
    true_cols = np.array([column[int(y)] for y in labels])
    order = np.argsort(scores, axis=1, kind="stable")  # best first
    k = min(5, len(classes))
    top1_hits = order[:, 0] == true_cols
    top5_hits = (order[:, :k] == true_cols[:, None]).any(axis=1)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (true_cols, order[:, 0]), 1)
    per_class = {}
    for i, c in enumerate(classes):
        total = confusion[i].sum()
        per_class[int(c)] = float(100.0 * confusion[i, i] / total) if total else float("nan")
    return ZeroShotResult(
        top1=float(100.0 * top1_hits.mean()), top5=float(100.0 * top5_hits.mean()), per_class=per_class,
        confusion=confusion, classes=classes, predictions=classes[order[:, 0]],
    )
