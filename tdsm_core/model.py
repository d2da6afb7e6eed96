"""The TDSM denoiser: a two-stream transformer that denoises a skeleton feature conditioned on text.

The skeleton feature is one token (x), the text is a sequence of L tokens (y). Every block runs
both streams through adaLN-Zero modulated LayerNorms, lets all 1 + L tokens attend to each other
in a single joint attention, and keeps separate projections and MLPs per stream. The conditioning
vector c = timestep embedding + pooled text embedding drives every modulation.

References:
- Peebles & Xie, "Scalable Diffusion Models with Transformers" (DiT, ICCV 2023): adaLN-Zero,
  the sinusoidal timestep embedder, the zero-initialised final layer.
- Esser et al., "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"
  (SD3/MMDiT, ICML 2024): two streams with their own weights joined in one attention.
- Do & Kim, "Bridging the Skeleton-Text Modality Gap" (TDSM, ICCV 2025): the configuration used
  here (256-d skeleton feature, 35 text tokens, D 768, depth 12, 12 heads).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DenoiserConfig:
    """Sizes of the denoiser. The defaults are the paper's configuration (261,208,576 parameters)."""

    feature_dim: int = 256  # width of the skeleton feature being denoised
    hidden_dim: int = 768  # transformer width D
    depth: int = 12  # number of two-stream blocks
    num_heads: int = 12
    text_dim: int = 2048  # channels of the text features C (two prompts concatenated)
    text_len: int = 35  # number of text tokens L
    dropout: float = 0.0  # on the attention output and the MLP hidden layer while training (the paper: 0)

    def __post_init__(self) -> None:
        for name in ("feature_dim", "hidden_dim", "depth", "num_heads", "text_dim", "text_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool) or not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout must lie in [0, 1), got {self.dropout!r}.")
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"model.hidden_dim ({self.hidden_dim}) must be divisible by model.num_heads "
                f"({self.num_heads}); choose sizes such as hidden_dim 768 with 12 heads."
            )


def modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation: h * (1 + scale) + shift, with (B, D) shift/scale broadcast over tokens."""
    return h * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of the (integer) diffusion timestep followed by a two-layer MLP."""

    def __init__(self, hidden_dim: int, frequency_dim: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim)
        )

    def frequency_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) timesteps -> (B, frequency_dim) features, cosines first then sines."""
        half = self.frequency_dim // 2
        exponent = -math.log(self.max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        angles = t.float()[:, None] * torch.exp(exponent)[None]  # (B, half)
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B, frequency_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        weight = self.mlp[0].weight  # a method, not a tensor, once the linears are int8-quantised
        freq = self.frequency_embedding(t).to(weight.dtype if isinstance(weight, torch.Tensor) else torch.float32)
        return self.mlp(freq)  # (B, D)


class JointAttention(nn.Module):
    """One softmax attention over the concatenated skeleton and text tokens, with per-stream weights."""

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = nn.Dropout(dropout)
        self.qkv_x = nn.Linear(hidden_dim, 3 * hidden_dim)
        self.qkv_y = nn.Linear(hidden_dim, 3 * hidden_dim)
        self.proj_x = nn.Linear(hidden_dim, hidden_dim)
        self.proj_y = nn.Linear(hidden_dim, hidden_dim)

    def _heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, tokens, _ = qkv.shape
        qkv = qkv.view(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, H, N, hd)
        return qkv[0], qkv[1], qkv[2]

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, need_text_output: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, 1, D), y (B, L, D) -> attention outputs of the same shapes.

        With need_text_output=False only the skeleton token queries the joint sequence (the text
        output of the last block is never read, so computing it would be wasted work).
        """
        batch, x_len, dim = x.shape
        qx, kx, vx = self._heads(self.qkv_x(x))  # (B, H, 1, hd)
        qy, ky, vy = self._heads(self.qkv_y(y))  # (B, H, L, hd)
        k = torch.cat([kx, ky], dim=2)  # (B, H, 1 + L, hd)
        v = torch.cat([vx, vy], dim=2)
        q = torch.cat([qx, qy], dim=2) if need_text_output else qx
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, 1 + L or 1, hd); scale hd^-0.5
        out = self.dropout(out.transpose(1, 2).reshape(batch, -1, dim))  # (B, 1 + L or 1, D)
        out_x = self.proj_x(out[:, :x_len])  # (B, 1, D)
        out_y = self.proj_y(out[:, x_len:]) if need_text_output else None  # (B, L, D)
        return out_x, out_y


def _mlp(hidden_dim: int, dropout: float = 0.0) -> nn.Sequential:
    activation = nn.GELU(approximate="tanh")
    if dropout:  # held with the activation (no weights), so the linears keep their names with or without dropout
        activation = nn.Sequential(activation, nn.Dropout(dropout))
    return nn.Sequential(nn.Linear(hidden_dim, 4 * hidden_dim), activation, nn.Linear(4 * hidden_dim, hidden_dim))


class TwoStreamBlock(nn.Module):
    """A transformer block with a skeleton stream and a text stream joined by one attention."""

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.norm_x1 = nn.LayerNorm(hidden_dim, elementwise_affine=False, eps=1e-6)
        self.norm_x2 = nn.LayerNorm(hidden_dim, elementwise_affine=False, eps=1e-6)
        self.norm_y1 = nn.LayerNorm(hidden_dim, elementwise_affine=False, eps=1e-6)
        self.norm_y2 = nn.LayerNorm(hidden_dim, elementwise_affine=False, eps=1e-6)
        self.attn = JointAttention(hidden_dim, num_heads, dropout)
        self.mlp_x = _mlp(hidden_dim, dropout)
        self.mlp_y = _mlp(hidden_dim, dropout)
        self.ada_x = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, 6 * hidden_dim))
        self.ada_y = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, 6 * hidden_dim))

    def modulation(self, c: torch.Tensor) -> torch.Tensor:
        """(B, D) conditioning -> (B, 12, D): shift/scale/gate (attention, MLP) for x, then for y."""
        batch, dim = c.shape
        return torch.cat([self.ada_x(c), self.ada_y(c)], dim=-1).view(batch, 12, dim)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, mod: torch.Tensor, need_text_output: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 1, D), y (B, L, D), mod (B, 12, D) from `modulation` -> updated (x, y)."""
        sx_a, cx_a, gx_a, sx_m, cx_m, gx_m, sy_a, cy_a, gy_a, sy_m, cy_m, gy_m = mod.unbind(dim=1)
        attn_x, attn_y = self.attn(
            modulate(self.norm_x1(x), sx_a, cx_a), modulate(self.norm_y1(y), sy_a, cy_a), need_text_output
        )
        x = x + gx_a.unsqueeze(1) * attn_x  # (B, 1, D)
        x = x + gx_m.unsqueeze(1) * self.mlp_x(modulate(self.norm_x2(x), sx_m, cx_m))
        if need_text_output:
            y = y + gy_a.unsqueeze(1) * attn_y  # (B, L, D)
            y = y + gy_m.unsqueeze(1) * self.mlp_y(modulate(self.norm_y2(y), sy_m, cy_m))
        return x, y


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map from D back to the feature width."""

    def __init__(self, hidden_dim: int, feature_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, 2 * hidden_dim))
        self.linear = nn.Linear(hidden_dim, feature_dim)

    def modulation(self, c: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, 2, D): shift and scale."""
        return self.ada(c).view(c.shape[0], 2, -1)

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        shift, scale = mod.unbind(dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, 1, feature_dim)


@dataclass
class Conditioning:
    """Everything the denoiser derives from (t, text) alone, so it can be computed once per class.

    text_tokens: (B, L, D) embedded text tokens entering the first block;
    block_mods: (B, depth, 12, D) adaLN parameters of every block; final_mod: (B, 2, D).
    """

    text_tokens: torch.Tensor
    block_mods: torch.Tensor
    final_mod: torch.Tensor

    def index(self, rows: torch.Tensor) -> "Conditioning":
        """Pick rows (e.g. one class per scored sample) without recomputing anything."""
        return Conditioning(self.text_tokens[rows], self.block_mods[rows], self.final_mod[rows])


class Denoiser(nn.Module):
    """Predicts the noise (or x0 / v) of a noisy skeleton feature given a timestep and class text."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        dim = config.hidden_dim
        self.skeleton_embedder = nn.Linear(config.feature_dim, dim)
        self.timestep_embedder = TimestepEmbedder(dim)
        self.pooled_text_embedder = nn.Sequential(nn.Linear(config.text_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.token_text_embedder = nn.Linear(config.text_dim, dim)
        self.text_pos_embed = nn.Parameter(torch.zeros(1, config.text_len, dim))
        self.blocks = nn.ModuleList(TwoStreamBlock(dim, config.num_heads, config.dropout) for _ in range(config.depth))
        self.final_layer = FinalLayer(dim, config.feature_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DiT initialisation: xavier linears, small timestep MLP and positions, adaLN-Zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.text_pos_embed, std=0.02)
        nn.init.normal_(self.timestep_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.timestep_embedder.mlp[2].weight, std=0.02)
        zero_layers = [self.final_layer.ada[-1], self.final_layer.linear]
        for block in self.blocks:
            zero_layers += [block.ada_x[-1], block.ada_y[-1]]
        for layer in zero_layers:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def unused_parameters(self) -> list[nn.Parameter]:
        """Weights whose output is never read: the last block's text-stream projection and MLP.

        They are counted in the model (the paper's parameter count includes them) but get no gradient;
        trainers freeze them so that DistributedDataParallel does not wait for their gradients.
        """
        last = self.blocks[-1]
        return list(last.attn.proj_y.parameters()) + list(last.mlp_y.parameters())

    def condition(self, t: torch.Tensor, text_pooled: torch.Tensor, text_tokens: torch.Tensor) -> Conditioning:
        """t (B,), text_pooled (B, C), text_tokens (B, L, C) -> the sample-independent part of a call."""
        c = self.timestep_embedder(t) + self.pooled_text_embedder(text_pooled)  # (B, D)
        tokens = self.token_text_embedder(text_tokens) + self.text_pos_embed  # (B, L, D)
        block_mods = torch.stack([block.modulation(c) for block in self.blocks], dim=1)  # (B, depth, 12, D)
        return Conditioning(tokens, block_mods, self.final_layer.modulation(c))

    def denoise(self, z_t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """z_t (B, 1, feature_dim) with precomputed conditioning -> prediction (B, 1, feature_dim)."""
        x = self.skeleton_embedder(z_t)  # (B, 1, D)
        y = cond.text_tokens  # (B, L, D)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x, y = block(x, y, cond.block_mods[:, i], need_text_output=i < last)
        return self.final_layer(x, cond.final_mod)  # (B, 1, feature_dim)

    def forward(
        self, z_t: torch.Tensor, t: torch.Tensor, text_pooled: torch.Tensor, text_tokens: torch.Tensor
    ) -> torch.Tensor:
        """z_t (B, 1, feature_dim), t (B,), text_pooled (B, C), text_tokens (B, L, C) -> (B, 1, feature_dim)."""
        return self.denoise(z_t, self.condition(t, text_pooled, text_tokens))


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of a model (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
