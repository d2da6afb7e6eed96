"""The triplet diffusion objective of TDSM, in one function (`triplet_diffusion_objective`).

For every training feature x0 the same noisy latent z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps is
denoised twice: with the text of its own class (positive) and with the text of a random seen class
(negative). The diffusion term pulls the positive error down; the triplet term asks the positive
error to be smaller than the negative one by a margin, and is masked out where the random class
happens to be the true class:

    L = d_w * mean_i e_i+  +  t_w * mean_i max(0, e_i+ - e_i- + margin) [y_i != y_i-],
    e_i = || target_i - denoiser(z_t, t, text of the class) ||^2 / F   (target: eps, x0 or v)

References:
- Do & Kim, "Bridging the Skeleton-Text Modality Gap" (TDSM, ICCV 2025), eqs. for L_diff and L_triplet.
- Schroff et al., "FaceNet" (CVPR 2015): the hinge-with-margin triplet loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .diffusion import NoiseSchedule
    from .model import Denoiser


@dataclass
class LossTerms:
    """Weighted loss terms (scalars) and per-sample errors for logging."""

    total: torch.Tensor
    diffusion: torch.Tensor
    triplet: torch.Tensor
    positive_error: torch.Tensor  # (B,)
    negative_error: torch.Tensor  # (K * B,)
    triplet_active: torch.Tensor  # (K * B,) bool: the negative class differs from the true class

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

    pred_positive, target: (B, 1, F); labels: (B,) class ids; pred_negative: (K * B, 1, F) and
    negative_labels (K * B,): K negatives per sample, negative-major (rows k * B .. k * B + B - 1 hold
    the k-th negative of every sample). The paper has K = 1.
    diffusion = d_w * mean_i pos_i;  triplet = t_w * mean_{i,k} max(0, pos_i - neg_ik + margin) [y_i != y'_ik].
    The triplet mean runs over the whole batch (masked pairs count as zero), as in the paper.
    """
    batch = len(labels)
    if len(negative_labels) % batch or len(pred_negative) != len(negative_labels):
        raise ValueError(f"need K negatives for each of the {batch} samples, got {len(negative_labels)} labels and "
                         f"{len(pred_negative)} predictions.")
    repeats = len(negative_labels) // batch
    positive_error = per_sample_error(pred_positive, target)  # (B,)
    negative_error = per_sample_error(pred_negative, target.repeat(repeats, *([1] * (target.dim() - 1))))  # (K * B,)
    active = labels.repeat(repeats) != negative_labels  # (K * B,)
    hinge = torch.clamp(positive_error.repeat(repeats) - negative_error + margin, min=0.0) * active.to(positive_error.dtype)
    diffusion = diffusion_weight * positive_error.mean()
    triplet = triplet_weight * hinge.mean()
    return LossTerms(diffusion + triplet, diffusion, triplet, positive_error, negative_error, active)


def triplet_diffusion_objective(
    model: Denoiser | torch.nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    labels: torch.Tensor,
    negative_labels: torch.Tensor,
    pooled: torch.Tensor,
    tokens: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    margin: float = 1.0,
    diffusion_weight: float = 1.0,
    triplet_weight: float = 1.0,
    text_offsets: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> LossTerms:
    """The whole training objective of one batch: noise, one denoiser call for positives and negatives, loss.

    x0, noise: (B, 1, F) clean features and their noise; timesteps: (B,); labels: (B,) class ids;
    negative_labels: (K * B,) negative-major (see `triplet_diffusion_loss`); pooled (C, Dp) and tokens
    (C, L, D): every class's text, indexed by class id. The positive and the K negatives of a sample
    share one z_t and go through the denoiser in one call of (1 + K) * B rows. Mixed precision, if any,
    is the caller's context; the errors are computed in fp32. text_offsets, if given, are added to the
    text of each row (train.text_noise): pooled ((1 + K) * B, Dp) and tokens ((1 + K) * B, L, D), in the
    order positives, then the negatives.
    """
    batch = len(labels)
    copies = 1 + len(negative_labels) // batch  # the positive, then each negative, all on the same z_t
    z_t = schedule.add_noise(x0, noise, timesteps)  # (B, 1, F)
    target = schedule.target(x0, noise, timesteps)  # eps, x0 or v
    classes = torch.cat([labels, negative_labels])  # ((1 + K) * B,)
    row_pooled, row_tokens = pooled[classes], tokens[classes]
    if text_offsets is not None:
        row_pooled, row_tokens = row_pooled + text_offsets[0], row_tokens + text_offsets[1]
    pred = model(z_t.repeat(copies, 1, 1), timesteps.repeat(copies), row_pooled, row_tokens).float()
    return triplet_diffusion_loss(pred[:batch], pred[batch:], target, labels, negative_labels, margin,
                                  diffusion_weight, triplet_weight)
