"""The triplet diffusion objective of TDSM.

For every training feature the same noisy latent is denoised twice: with the text of its own class
(positive) and with the text of a random seen class (negative). The diffusion term pulls the
positive error down; the triplet term asks the positive error to be smaller than the negative one
by a margin, and is masked out where the random class happens to be the true class.

References:
- Do & Kim, "Bridging the Skeleton-Text Modality Gap" (TDSM, ICCV 2025), eqs. for L_diff and L_triplet.
- Schroff et al., "FaceNet" (CVPR 2015): the hinge-with-margin triplet loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossTerms:
    """Weighted loss terms (scalars) and per-sample errors for logging."""

    total: torch.Tensor
    diffusion: torch.Tensor
    triplet: torch.Tensor
    positive_error: torch.Tensor  # (B,)
    negative_error: torch.Tensor  # (B,)
    triplet_active: torch.Tensor  # (B,) bool: the negative class differs from the true class

    def as_floats(self) -> dict[str, float]:
        """Scalars for a metrics log."""
        return {
            "loss": float(self.total.detach()),
            "loss_diffusion": float(self.diffusion.detach()),
            "loss_triplet": float(self.triplet.detach()),
            "pos_error": float(self.positive_error.detach().mean()),
            "neg_error": float(self.negative_error.detach().mean()),
        }


def per_sample_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every axis but the first: (B, ...) -> (B,)."""
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def triplet_diffusion_loss(
    pred_positive: torch.Tensor,
    pred_negative: torch.Tensor,
    target: torch.Tensor,
    labels: torch.Tensor,
    negative_labels: torch.Tensor,
    margin: float = 1.0,
    diffusion_weight: float = 1.0,
    triplet_weight: float = 1.0,
) -> LossTerms:
    """TDSM loss.

    pred_positive, pred_negative, target: (B, 1, F); labels, negative_labels: (B,) class ids.
    diffusion = d_w * mean_i pos_i;  triplet = t_w * mean_i max(0, pos_i - neg_i + margin) [y_i != y'_i].
    The triplet mean runs over the whole batch (masked samples count as zero), as in the paper.
    """
    positive_error = per_sample_error(pred_positive, target)  # (B,)
    negative_error = per_sample_error(pred_negative, target)  # (B,)
    active = labels != negative_labels  # (B,)
    hinge = torch.clamp(positive_error - negative_error + margin, min=0.0) * active.to(positive_error.dtype)
    diffusion = diffusion_weight * positive_error.mean()
    triplet = triplet_weight * hinge.mean()
    return LossTerms(diffusion + triplet, diffusion, triplet, positive_error, negative_error, active)
