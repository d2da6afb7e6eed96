"""DDPM forward process used by TDSM: the noise schedule, noising, and training targets.

The schedule holds no model weights; training and scoring pass the model in.

References:
- Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models" (NeurIPS 2020), eq. 4:
  q(z_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).
- Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models" (CVPR 2022):
  the "scaled linear" beta schedule (linear in sqrt(beta)).
- Salimans & Ho, "Progressive Distillation for Fast Sampling of Diffusion Models" (ICLR 2022):
  the v-prediction target v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0.
"""
from __future__ import annotations

from typing import Literal, get_args

import torch

PredictionType = Literal["epsilon", "sample", "v_prediction"]
BetaSchedule = Literal["scaled_linear", "linear"]
PREDICTION_TYPES: tuple[str, ...] = get_args(PredictionType)
BETA_SCHEDULES: tuple[str, ...] = get_args(BetaSchedule)


class NoiseSchedule:
    """Discrete DDPM schedule with `num_timesteps` steps (0-based timesteps 0 .. num_timesteps - 1)."""

    def __init__(
        self,
        num_timesteps: int = 50,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: BetaSchedule = "scaled_linear",
        prediction_type: PredictionType = "epsilon",
    ):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}.")
        if not isinstance(num_timesteps, int) or num_timesteps < 1:
            raise ValueError(f"num_timesteps must be a positive integer, got {num_timesteps!r}.")
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start} and {beta_end}.")
        self.num_timesteps = num_timesteps
        self.prediction_type = prediction_type
        # Computed in float64 so the products do not accumulate float32 rounding.
        if beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
        else:
            betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)  # (T,)
        self.sqrt_alpha_bar = self.alpha_bar.sqrt()
        self.sqrt_one_minus_alpha_bar = (1.0 - self.alpha_bar).sqrt()

    def _coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) for timesteps t, shaped to broadcast over `like`."""
        t = torch.as_tensor(t, device=self.alpha_bar.device).long()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise ValueError(f"timesteps must lie in [0, {self.num_timesteps}), got {t.min().item()}..{t.max().item()}.")
        shape = t.shape + (1,) * (like.dim() - t.dim())
        a = self.sqrt_alpha_bar[t].to(device=like.device, dtype=like.dtype).reshape(shape)
        b = self.sqrt_one_minus_alpha_bar[t].to(device=like.device, dtype=like.dtype).reshape(shape)
        return a, b

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps. t is (B,) or a scalar; x0, noise (B, ...)."""
        a, b = self._coefficients(t, x0)
        return a * x0 + b * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser is trained to predict, by prediction type."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        a, b = self._coefficients(t, x0)
        return a * noise - b * x0  # v-prediction

    def __repr__(self) -> str:
        return f"NoiseSchedule(num_timesteps={self.num_timesteps}, prediction_type={self.prediction_type!r})"
