"""Generalized zero-shot learning (GZSL): every test sample is scored against all classes.

TDSM's scores are denoising errors (lower = better). Seen classes were trained on and so tend to
give smaller errors, which biases GZSL predictions towards them. Calibrated stacking adds a constant
gamma to the seen classes' errors; gamma is chosen on validation data (pseudo-unseen classes held
out of training, see `protocols.py`) and never on `gtest`.

Accuracies are sample averages over the seen-class and unseen-class test samples; the harmonic
mean H = 2 S U / (S + U) is the usual single figure.

References: W.-L. Chao et al., "An Empirical Study and Analysis of Generalized Zero-Shot Learning
for Object Recognition in the Wild" (ECCV 2016): calibrated stacking. Y. Xian et al., "Zero-Shot
Learning - A Comprehensive Evaluation of the Good, the Bad and the Ugly" (TPAMI 2018): the harmonic mean.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def harmonic_mean(seen_accuracy: float, unseen_accuracy: float) -> float:
    """2 S U / (S + U), and 0 when both are 0."""
    total = seen_accuracy + unseen_accuracy
    return 0.0 if total == 0 else 2.0 * seen_accuracy * unseen_accuracy / total


def calibrated_predictions(scores: np.ndarray, classes: np.ndarray, seen: np.ndarray, gamma: float) -> np.ndarray:
    """Predicted class ids after adding gamma to the seen classes' scores. scores (N, K), classes (K,)."""
    penalty = np.where(np.isin(classes, seen), gamma, 0.0)  # (K,)
    return np.asarray(classes)[np.argmin(scores + penalty[None], axis=1)]


@dataclass
class GZSLResult:
    gamma: float
    seen_accuracy: float  # % of seen-class samples predicted correctly (among all classes)
    unseen_accuracy: float  # % of unseen-class samples predicted correctly
    harmonic: float

    def as_dict(self) -> dict[str, float]:
        return {"gamma": self.gamma, "seen_top1": self.seen_accuracy, "unseen_top1": self.unseen_accuracy,
                "harmonic_mean": self.harmonic}


def gzsl_accuracy(scores: np.ndarray, labels: np.ndarray, classes: np.ndarray, seen: np.ndarray,
                  gamma: float = 0.0) -> GZSLResult:
    """Seen, unseen and harmonic-mean accuracy (%) of calibrated predictions."""
    predictions = calibrated_predictions(scores, classes, seen, gamma)
    correct = predictions == labels
    is_seen = np.isin(labels, seen)
    if is_seen.all() or not is_seen.any():
        raise ValueError("GZSL needs test samples of both seen and unseen classes.")
    s, u = 100.0 * correct[is_seen].mean(), 100.0 * correct[~is_seen].mean()
    return GZSLResult(float(gamma), float(s), float(u), harmonic_mean(float(s), float(u)))


def gamma_grid(scores: np.ndarray, classes: np.ndarray, seen: np.ndarray, size: int = 201) -> np.ndarray:
    """Candidate gammas spanning every switch point of the predictions, plus 0.

    For a sample, the prediction moves from its best seen class to its best unseen class once
    gamma exceeds (best unseen score - best seen score); quantiles of that margin cover the curve.
    """
    is_seen = np.isin(classes, seen)
    margin = scores[:, ~is_seen].min(1) - scores[:, is_seen].min(1)  # (N,)
    grid = np.quantile(margin, np.linspace(0.0, 1.0, size))
    low, high = min(grid[0], 0.0), max(grid[-1], 0.0)
    span = max(high - low, 1e-6)
    return np.unique(np.concatenate([[0.0, low - 0.01 * span, high + 0.01 * span], grid]))


def calibration_curve(scores: np.ndarray, labels: np.ndarray, classes: np.ndarray, seen: np.ndarray,
                      gammas: np.ndarray) -> list[GZSLResult]:
    """GZSL accuracy at every gamma (for the seen-unseen trade-off figure)."""
    return [gzsl_accuracy(scores, labels, classes, seen, float(g)) for g in gammas]


def choose_gamma(val_scores: np.ndarray, val_labels: np.ndarray, classes: np.ndarray, seen: np.ndarray) -> GZSLResult:
    """The gamma with the best harmonic mean on validation data (ties: the smallest |gamma|)."""
    curve = calibration_curve(val_scores, val_labels, classes, seen, gamma_grid(val_scores, classes, seen))
    return max(curve, key=lambda r: (round(r.harmonic, 9), -abs(r.gamma)))

