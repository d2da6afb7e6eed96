"""A simple zero-shot baseline on the same features and text: project skeleton features into the
text space, trained on the seen classes, and classify by cosine similarity.

It shows what TDSM's diffusion alignment adds over a direct embedding. Its settings are fixed in
advance (no tuning on test data). It uses the pooled text vector of each class (both prompts).

References: A. Frome et al., "DeViSE: A Deep Visual-Semantic Embedding Model" (NeurIPS 2013);
the learned-temperature cosine classifier of CLIP (A. Radford et al., ICML 2021).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.features import Benchmark
from ..evaluate import zero_shot_metrics
from .metrics_log import batch_indices
from ..data.text import ClassTextFeatures


@dataclass
class BaselineConfig:
    hidden_dim: int = 512
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.07
    dropout: float = 0.2


class CosineProjection(nn.Module):
    """Skeleton feature (F) -> text space (C) through a small MLP, L2-normalised."""

    def __init__(self, feature_dim: int, text_dim: int, cfg: BaselineConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(feature_dim, cfg.hidden_dim), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.hidden_dim, text_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(x), dim=-1)


def cosine_scores(model: CosineProjection, features: np.ndarray, class_text: torch.Tensor) -> np.ndarray:
    """(N, K) cosine similarities between projected features and normalised class text vectors."""
    model.eval()
    with torch.no_grad():
        projected = model(torch.from_numpy(features))
        return (projected @ nn.functional.normalize(class_text, dim=-1).T).numpy()


def _fit(model: CosineProjection, x: torch.Tensor, y: torch.Tensor, seen_text: torch.Tensor, seed: int,
         cfg: BaselineConfig) -> float:
    """Cross-entropy over the seen classes with cosine logits; returns the last loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    for step in range(cfg.steps):
        rows = torch.from_numpy(batch_indices(seed, step, len(x), cfg.batch_size))
        logits = model(x[rows]) @ seen_text.T / cfg.temperature
        loss = nn.functional.cross_entropy(logits, y[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def train_projection_baseline(benchmark: Benchmark, text: ClassTextFeatures, seed: int = 0,
                              cfg: BaselineConfig | None = None) -> dict:
    """Train on the seen classes of `train`, evaluate on `ztest` against the unseen classes."""
    cfg = cfg or BaselineConfig()
    mean = benchmark.train.features.mean(0, keepdims=True)
    std = benchmark.train.features.std(0, keepdims=True) + 1e-6
    normalise = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    x = torch.from_numpy(normalise(benchmark.train.features))
    seen = torch.from_numpy(benchmark.seen)
    lookup = {int(c): i for i, c in enumerate(benchmark.seen)}
    y = torch.tensor([lookup[int(c)] for c in benchmark.train.labels])
    seen_text = nn.functional.normalize(text.pooled[seen].float(), dim=-1)
    with torch.random.fork_rng(devices=[]):  # initialisation and dropout from the seed alone
        torch.manual_seed(seed)
        model = CosineProjection(x.shape[1], text.pooled.shape[1], cfg)
        loss = _fit(model, x, y, seen_text, seed, cfg)
    unseen_text = text.pooled[torch.from_numpy(benchmark.unseen)].float()
    similarity = cosine_scores(model, normalise(benchmark.ztest.features), unseen_text)
    result = zero_shot_metrics(-similarity, benchmark.ztest.labels, benchmark.unseen)  # lower score = better
    return {"baseline_zsl_top1": result.top1, "baseline_zsl_top5": result.top5, "baseline_final_loss": float(loss)}
