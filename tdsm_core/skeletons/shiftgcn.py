"""Shift-GCN skeleton encoder: the network whose pooled 256-d activations are TDSM's skeleton features.

A Shift-GCN unit replaces graph convolution by two cheap shifts around 1x1 convolutions:
- spatial (non-local) shift: channel c of joint v reads joint (v + c) mod V, so after one shift
  every joint sees every other joint through some of its channels; a learnable per-(joint, channel)
  mask weights the shifted features before a pointwise linear map; the output is shifted back;
- temporal (adaptive) shift: every channel is moved along time by its own learnable, fractional
  offset (linear interpolation between the two nearest frames) before and after a 1x1 convolution.
The sequence is pooled over time, joints and actors into one feature vector, then classified.

References:
- K. Cheng et al., "Skeleton-Based Action Recognition with Shift Graph Convolutional Network"
  (CVPR 2020): spatial and temporal shift operations, the 10-unit layout 64-64-64-64-128-128-128-256-256-256.
- B. Wu et al., "Shift: A Zero FLOP, Zero Parameter Alternative to Spatial Convolutions" (CVPR 2018).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

PAPER_CHANNELS = [64, 64, 64, 64, 128, 128, 128, 256, 256, 256]
PAPER_STRIDES = [1, 1, 1, 1, 2, 1, 1, 2, 1, 1]


@dataclass
class ShiftGCNConfig:
    """Sizes of the encoder. The last channel count is the width of the exported feature."""

    num_classes: int
    num_joints: int = 25
    num_actors: int = 2
    in_channels: int = 3
    channels: list[int] = field(default_factory=lambda: list(PAPER_CHANNELS))
    strides: list[int] = field(default_factory=lambda: list(PAPER_STRIDES))

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.strides) or not self.channels:
            raise ValueError(f"encoder channels ({self.channels}) and strides ({self.strides}) need the same, "
                             f"non-zero length.")

    @property
    def feature_dim(self) -> int:
        return self.channels[-1]


class SpatialShift(nn.Module):
    """Non-local spatial shift graph convolution on (N, C, T, V)."""

    def __init__(self, in_channels: int, out_channels: int, num_joints: int):
        super().__init__()
        self.mask = nn.Parameter(torch.zeros(num_joints, in_channels))  # tanh(0) + 1 = 1: plain shift at init
        self.linear = nn.Linear(in_channels, out_channels)
        self.bn = nn.BatchNorm2d(out_channels)
        joints = torch.arange(num_joints)[:, None]
        # joint v, channel c reads joint (v + c) mod V on the way in and (v - c) mod V on the way out
        self.register_buffer("shift_in", (joints + torch.arange(in_channels)[None]) % num_joints, persistent=False)
        self.register_buffer("shift_out", (joints - torch.arange(out_channels)[None]) % num_joints, persistent=False)
        nn.init.kaiming_normal_(self.linear.weight, mode="fan_out")
        nn.init.zeros_(self.linear.bias)

    @staticmethod
    def _shift(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """x (N, T, V, C), index (V, C) -> out[..., v, c] = x[..., index[v, c], c]."""
        return torch.gather(x, 2, index.expand(x.shape[0], x.shape[1], -1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.permute(0, 2, 3, 1)  # (N, T, V, C)
        h = self._shift(h, self.shift_in) * (torch.tanh(self.mask) + 1)
        h = self._shift(self.linear(h), self.shift_out)  # (N, T, V, C_out)
        return self.bn(h.permute(0, 3, 1, 2))  # (N, C_out, T, V)


class TemporalShift(nn.Module):
    """Moves every channel along time by a learnable fractional offset (zeros enter at the ends).

    A shift by s frames with linear interpolation is a depthwise convolution whose kernel has weight
    1 - w at offset floor(s) and w at floor(s) + 1 (w = s - floor(s)); written that way the offset
    stays differentiable (also at whole frames) and the fast convolution kernels do the work.
    Offsets are kept inside [-max_shift, max_shift].
    """

    def __init__(self, channels: int, stride: int = 1, init_range: float = 1.0, max_shift: int = 2):
        super().__init__()
        self.shift = nn.Parameter(torch.empty(channels).uniform_(-init_range, init_range))
        self.stride = stride
        self.max_shift = max_shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.max_shift
        shift = self.shift.clamp(-r, r - 1e-4)
        lower = torch.floor(shift).detach()
        w = (shift - lower)[:, None]  # (C, 1)
        index = (lower.long() + r)  # kernel position of offset floor(s), in [0, 2r)
        size = 2 * r + 1
        # out[t] = x[t + s]: a correlation with weight at offset +s
        kernel = (1 - w) * nn.functional.one_hot(index, size) + w * nn.functional.one_hot(index + 1, size)  # (C, K)
        weight = kernel.to(x.dtype)[:, None, :, None]  # (C, 1, K, 1)
        return nn.functional.conv2d(x, weight, padding=(r, 0), stride=(self.stride, 1), groups=x.shape[1])


class TemporalShiftConv(nn.Module):
    """BN, shift, 1x1 temporal linear, ReLU, shift (with stride), BN."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(channels)
        self.shift_in = TemporalShift(channels)
        self.linear = nn.Conv2d(channels, channels, 1)
        self.shift_out = TemporalShift(channels, stride)
        self.bn_out = nn.BatchNorm2d(channels)
        nn.init.kaiming_normal_(self.linear.weight, mode="fan_out")
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.linear(self.shift_in(self.bn_in(x))))
        return self.bn_out(self.shift_out(h))


class ShiftUnit(nn.Module):
    """Spatial shift GCN, temporal shift TCN, and a residual path."""

    def __init__(self, in_channels: int, out_channels: int, num_joints: int, stride: int, residual: bool = True):
        super().__init__()
        self.gcn = SpatialShift(in_channels, out_channels, num_joints)
        self.tcn = TemporalShiftConv(out_channels, stride)
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=(stride, 1)),
                                          nn.BatchNorm2d(out_channels))
        self.gcn_residual = (nn.Identity() if in_channels == out_channels
                             else nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tcn(torch.relu(self.gcn(x) + self.gcn_residual(x)))
        if self.residual is not None:
            h = h + self.residual(x)
        return torch.relu(h)


class ShiftGCN(nn.Module):
    """Skeleton sequences (N, T, M, V, 3) -> pooled features (N, F) and class logits."""

    def __init__(self, config: ShiftGCNConfig):
        super().__init__()
        self.config = config
        c = config
        self.data_bn = nn.BatchNorm1d(c.num_actors * c.num_joints * c.in_channels)
        units, previous = [], c.in_channels
        for i, (width, stride) in enumerate(zip(c.channels, c.strides)):
            units.append(ShiftUnit(previous, width, c.num_joints, stride, residual=i > 0))
            previous = width
        self.units = nn.Sequential(*units)
        self.classifier = nn.Linear(c.feature_dim, c.num_classes)
        nn.init.normal_(self.classifier.weight, 0, (2.0 / c.num_classes) ** 0.5)
        nn.init.zeros_(self.classifier.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, T, M, V, 3) -> pooled feature (N, F): the mean over time, joints and actors."""
        n, t, m, v, c = x.shape
        h = x.permute(0, 2, 3, 4, 1).reshape(n, m * v * c, t)  # (N, M*V*C, T)
        h = self.data_bn(h).view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)  # (N*M, C, T, V)
        h = self.units(h)  # (N*M, F, T', V)
        return h.mean(dim=(2, 3)).view(n, m, -1).mean(dim=1)  # (N, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (N, num_classes)
