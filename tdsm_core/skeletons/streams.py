"""What the skeleton encoder reads: input streams and the training-time augmentation.

Streams (`skeleton.streams`), stacked on the channel axis of the encoder's input (early fusion:
one network, 3 channels per stream):
- joint:        joint positions as preprocessed;
- bone:         each joint minus its parent (the layout's bones; a root joint stays zero);
- joint_motion: each joint's displacement to the next frame (zero in the last frame and wherever an
                actor is not tracked in both frames);
- bone_motion:  the same for the bone vectors.
Several streams give the encoder the bone lengths, directions and velocities that multi-stream
Shift-GCN and 2s-AGCN train separate networks on, at the cost of one network.

Augmentation (`skeleton.augment`), drawn per sequence from the step's seeded generator and applied
to the joints before the streams are computed: "scale" multiplies by 1 + U(-0.1, 0.1) (the original
recipe of this workbook), "rotate" rotates about the three axes by U(-r, r) degrees each
(r = `skeleton.rotate_degrees`), "shear" multiplies by I + S with off-diagonal S ~ U(-s, s)
(s = `skeleton.shear`). All three are linear maps, so untracked (all-zero) joints stay zero.

References: K. Cheng et al., Shift-GCN (CVPR 2020) and L. Shi et al., 2s-AGCN (CVPR 2019) for the
joint/bone/motion streams; the rotation and shear augmentation of the 2s-AGCN/MS-G3D/CTR-GCN training
code (Y. Chen et al., ICCV 2021).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..runs.metrics_log import step_generator

STREAMS = ("joint", "bone", "joint_motion", "bone_motion")
AUGMENTATIONS = ("scale", "rotate", "shear")


def bone_vectors(x: torch.Tensor, bones: np.ndarray) -> torch.Tensor:
    """x (N, T, M, V, 3) -> bone vectors of the same shape: joint minus parent, zero for joints without a parent
    and for an actor not tracked in that frame. (Tracking is per actor: after centring the root joint itself
    sits exactly at the origin.)"""
    out = torch.zeros_like(x)
    if len(bones):
        child, parent = torch.as_tensor(bones[:, 0]), torch.as_tensor(bones[:, 1])
        tracked = (x != 0).any(dim=-1).any(dim=-1)[..., None, None]  # (N, T, M, 1, 1)
        out[..., child, :] = (x[..., child, :] - x[..., parent, :]) * tracked
    return out


def motion(x: torch.Tensor) -> torch.Tensor:
    """x (N, T, M, V, 3) -> displacement to the next frame, zero in the last frame and across untracked frames."""
    out = torch.zeros_like(x)
    tracked = (x != 0).any(dim=-1).any(dim=-1)  # (N, T, M)
    both = (tracked[:, 1:] & tracked[:, :-1])[..., None, None]
    out[:, :-1] = (x[:, 1:] - x[:, :-1]) * both
    return out


def stream_input(x: torch.Tensor, bones: np.ndarray, streams: list[str] | tuple[str, ...]) -> torch.Tensor:
    """Joint positions (N, T, M, V, 3) -> the encoder's input (N, T, M, V, 3 * len(streams))."""
    if list(streams) == ["joint"]:
        return x
    bone = bone_vectors(x, bones) if any(s.startswith("bone") for s in streams) else None
    parts = {"joint": lambda: x, "bone": lambda: bone, "joint_motion": lambda: motion(x),
             "bone_motion": lambda: motion(bone)}
    return torch.cat([parts[s]() for s in streams], dim=-1)


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """(N, 3) angles in radians about x, y, z -> (N, 3, 3) rotation matrices R_z R_y R_x."""
    cx, cy, cz = angles.cos().unbind(-1)
    sx, sy, sz = angles.sin().unbind(-1)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


def draw_augmentation(seed: int, step: int, batch: int, augmentations: list[str] | tuple[str, ...],
                      rotate_degrees: float = 15.0, shear: float = 0.2) -> torch.Tensor | None:
    """(batch, 3, 3) random linear maps for the global batch of `step` (every process draws the same), or None."""
    matrix = None
    if "scale" in augmentations:  # stream 3: the draw the workbook has always used, so [scale] alone is unchanged
        factor = 1.0 + 0.1 * (2 * torch.rand(batch, generator=step_generator(seed, step, 3)) - 1)
        matrix = factor.view(-1, 1, 1) * torch.eye(3)
    if "rotate" in augmentations:
        limit = math.radians(rotate_degrees)
        angles = limit * (2 * torch.rand(batch, 3, generator=step_generator(seed, step, 4)) - 1)
        rotation = _rotation(angles)
        matrix = rotation if matrix is None else rotation @ matrix
    if "shear" in augmentations:
        offsets = shear * (2 * torch.rand(batch, 3, 3, generator=step_generator(seed, step, 5)) - 1)
        sheared = torch.eye(3) + offsets * (1 - torch.eye(3))
        matrix = sheared if matrix is None else sheared @ matrix
    return matrix


def apply_augmentation(x: torch.Tensor, matrix: torch.Tensor | None) -> torch.Tensor:
    """x (B, T, M, V, 3) mapped by each sequence's (3, 3) matrix; the scale alone is a plain product."""
    if matrix is None:
        return x
    matrix = matrix.to(x.device, x.dtype)
    if torch.equal(matrix, torch.diag_embed(torch.diagonal(matrix, dim1=1, dim2=2))) and bool(
            (matrix[:, 0, 0, None] == torch.diagonal(matrix, dim1=1, dim2=2)).all()):
        return x * matrix[:, 0, 0].view(-1, 1, 1, 1, 1)  # a uniform scale: bit-identical to the original recipe
    return torch.einsum("bij,btmvj->btmvi", matrix, x)
