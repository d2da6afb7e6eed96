"""Deterministic preprocessing of a SkeletonSet into fixed-length arrays for a graph network.

Steps, in order, all computed from actor 0 (the main actor) and applied to every actor so that the
actors keep their relative positions:

1. centre: subtract actor 0's root joint (the layout's spine joint). "first_frame" subtracts its
   position in the first frame where actor 0 is tracked, which keeps the body's travel (walking,
   sitting down); "per_frame" subtracts it in every frame, which removes the travel.
2. align (optional): rotate so that in that first frame the left->right hip line is the +x axis
   and the spine (torso lower->upper end) lies in the x-y plane pointing to +y. A frontal subject
   in Kinect camera space (x to the subject's right, y up) is left almost unchanged.
3. scale: divide by actor 0's mean bone length ("bones", works for any layout) or torso length
   ("torso"), averaged over its tracked frames.
4. resample every sequence to `length` frames by linear interpolation over its valid frames.

Untracked joints (an actor absent from a frame) stay exactly zero through every step. Pure NumPy,
no randomness: the same input gives the same bytes.

The set is read and processed a chunk of sequences at a time (each chunk padded to the longest
sequence of the whole set, so the result does not depend on the chunking), and written either to
an array in memory (`preprocess`) or chunk by chunk to a `.npy` file that the encoder then reads
in batches (`preprocess_to_file`): memory stays at one chunk whatever the size of the dataset.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from ..errors import DataError
from .layouts import JointLayout
from .format import SkeletonSet
from .store import DiskArray, open_npy, write_npy_chunks

CENTRES = ("first_frame", "per_frame", "none")
SCALES = ("bones", "torso", "none")
CHUNK_FRAMES = 16384  # padded frames per chunk (x its longest sequence): about 20 MB of float64 for 2 NTU actors


def tracked_mask(skeletons: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, T, M) True where an actor has any non-zero joint in a frame before its sequence's length."""
    n, t = skeletons.shape[:2]
    valid = np.arange(t)[None, :] < lengths[:, None]  # (N, T)
    return valid[:, :, None] & (skeletons != 0).any(axis=(3, 4))  # (N, T, M)


def _first_tracked(tracked: np.ndarray) -> np.ndarray:
    """(N,) index of the first frame in which actor 0 is tracked (0 if never)."""
    return tracked[:, :, 0].argmax(axis=1)


def centre(x: np.ndarray, tracked: np.ndarray, root: int, mode: str) -> np.ndarray:
    """Subtract actor 0's root joint (see module docstring); x: (N, T, M, J, 3)."""
    if mode == "none":
        return x
    first = _first_tracked(tracked)
    origin = x[np.arange(len(x)), first, 0, root]  # (N, 3)
    origin = np.broadcast_to(origin[:, None, :], x.shape[:2] + (3,)).copy()  # (N, T, 3)
    if mode == "per_frame":
        own = tracked[:, :, 0]  # frames without actor 0 keep the first-frame origin
        origin[own] = x[:, :, 0, root][own]
    return (x - origin[:, :, None, None, :]) * tracked[..., None, None]


def alignment_rotation(x: np.ndarray, tracked: np.ndarray, layout: JointLayout) -> np.ndarray:
    """(N, 3, 3) rotations whose rows are the new x, y, z axes, from actor 0's first tracked frame."""
    first = _first_tracked(tracked)
    pose = x[np.arange(len(x)), first, 0]  # (N, J, 3)
    across = pose[:, layout.hips[1]] - pose[:, layout.hips[0]]  # (N, 3) left -> right hip
    up = pose[:, layout.torso[1]] - pose[:, layout.torso[0]]  # (N, 3) lower -> upper spine
    axis_x = across / np.linalg.norm(across, axis=1, keepdims=True).clip(1e-12)
    up = up - (up * axis_x).sum(axis=1, keepdims=True) * axis_x  # Gram-Schmidt against x
    axis_y = up / np.linalg.norm(up, axis=1, keepdims=True).clip(1e-12)
    rotation = np.stack([axis_x, axis_y, np.cross(axis_x, axis_y)], axis=1)  # (N, 3, 3)
    # a missing or degenerate pose (hips on top of each other, spine along the hip line) is left as is
    degenerate = (np.linalg.norm(across, axis=1) < 1e-8) | (np.linalg.norm(up, axis=1) < 1e-8)
    rotation[degenerate] = np.eye(3)
    return rotation


def body_scale(x: np.ndarray, tracked: np.ndarray, layout: JointLayout, bones: np.ndarray, mode: str) -> np.ndarray:
    """(N,) actor 0's mean bone or torso length over its tracked frames (1 where undefined)."""
    if mode == "none":
        return np.ones(len(x))
    pairs = bones if mode == "bones" else np.array([layout.torso])
    main = x[:, :, 0]  # (N, T, J, 3)
    segment = np.linalg.norm(main[:, :, pairs[:, 0]] - main[:, :, pairs[:, 1]], axis=-1).mean(axis=2)  # (N, T)
    own = tracked[:, :, 0]
    scale = (segment * own).sum(axis=1) / own.sum(axis=1).clip(1)
    return np.where(scale > 1e-8, scale, 1.0)


def resample(x: np.ndarray, lengths: np.ndarray, tracked: np.ndarray, length: int) -> np.ndarray:
    """Linearly interpolate each sequence's valid frames onto `length` evenly spaced frames.

    x: (N, T, M, J, 3) -> (N, length, M, J, 3). An output frame between a tracked and an
    untracked frame of an actor is zero for that actor (interpolating towards zeros is meaningless).
    """
    span = (lengths - 1)[:, None].astype(np.float64)  # (N, 1)
    position = np.linspace(0.0, 1.0, length)[None, :] * span  # (N, length)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, lengths[:, None] - 1)
    weight = position - lower  # (N, length)
    x_lower = np.take_along_axis(x, lower[:, :, None, None, None], axis=1)  # (N, length, M, J, 3)
    x_upper = np.take_along_axis(x, upper[:, :, None, None, None], axis=1)
    w = weight[:, :, None, None, None]
    out = (1.0 - w) * x_lower + w * x_upper
    keep_lower = np.take_along_axis(tracked, lower[:, :, None], axis=1)  # (N, length, M)
    keep_upper = np.take_along_axis(tracked, upper[:, :, None], axis=1)
    keep = keep_lower & (keep_upper | (weight[:, :, None] == 0))
    return out * keep[..., None, None]


def preprocessed_chunks(data: SkeletonSet, length: int = 64,
                        centring: Literal["first_frame", "per_frame", "none"] = "first_frame",
                        scale: Literal["bones", "torso", "none"] = "bones", align: bool = True,
                        layout: JointLayout | None = None, chunk: int = 0) -> Iterator[np.ndarray]:
    """Centre, align, scale and resample `data`, yielding float32 (B, length, M, J, 3) chunks in order.

    `layout` defaults to the known layout named by `data.layout`, or for another layout the one the
    file describes (`SkeletonSet.joint_layout`); a JointLayout passed here takes precedence. `chunk`
    sequences at a time (0: as many as fit CHUNK_FRAMES padded frames).
    """
    layout = _checked_layout(data, length, centring, scale, layout)
    padded_length = data.max_length  # the same for every chunk, so chunks do not change a single bit
    chunk = chunk or max(1, CHUNK_FRAMES // padded_length)
    for start in range(0, len(data), chunk):
        stop = min(start + chunk, len(data))
        x = data.padded(start, stop, length=padded_length).astype(np.float64)  # (B, T, M, J, 3)
        lengths = data.lengths[start:stop]
        tracked = tracked_mask(x, lengths)  # (B, T, M)
        x = centre(x, tracked, layout.root, centring)
        if align:
            rotation = alignment_rotation(x, tracked, layout)  # (B, 3, 3)
            x = np.einsum("bij,btmkj->btmki", rotation, x)
        x = x / body_scale(x, tracked, layout, data.bones, scale)[:, None, None, None, None]
        yield resample(x, lengths, tracked, length).astype(np.float32)  # (B, length, M, J, 3)


def _checked_layout(data: SkeletonSet, length: int, centring: str, scale: str, layout: JointLayout | None) -> JointLayout:
    if centring not in CENTRES:
        raise DataError(f"unknown centring {centring!r}; use one of {list(CENTRES)}.")
    if scale not in SCALES:
        raise DataError(f"unknown scale {scale!r}; use one of {list(SCALES)}.")
    if length < 1:
        raise DataError(f"length must be at least 1 frame, got {length}.")
    layout = layout or data.joint_layout()
    if len(layout.joints) != data.num_joints:
        raise DataError(f"layout {layout.name} has {len(layout.joints)} joints but the skeletons have {data.num_joints}; "
                        f"pass the layout that matches the data.")
    return layout


def output_shape(data: SkeletonSet, length: int) -> tuple[int, int, int, int, int]:
    """(N, length, M, J, 3): the shape preprocessing gives."""
    return (len(data), length, data.num_actors, data.num_joints, 3)


def preprocess(data: SkeletonSet, length: int = 64, centring: Literal["first_frame", "per_frame", "none"] = "first_frame",
               scale: Literal["bones", "torso", "none"] = "bones", align: bool = True,
               layout: JointLayout | None = None, chunk: int = 0) -> np.ndarray:
    """Centre, align, scale and resample `data` -> float32 (N, length, M, J, 3) in memory.

    Options as in `preprocessed_chunks`; `preprocess_to_file` gives the same array on disk.
    """
    out = np.zeros(output_shape(data, length), np.float32)
    start = 0
    for part in preprocessed_chunks(data, length, centring, scale, align, layout, chunk):
        out[start:start + len(part)] = part
        start += len(part)
    return out


def preprocess_to_file(data: SkeletonSet, path: str | Path, length: int = 64,
                       centring: Literal["first_frame", "per_frame", "none"] = "first_frame",
                       scale: Literal["bones", "torso", "none"] = "bones", align: bool = True,
                       layout: JointLayout | None = None, chunk: int = 0) -> DiskArray:
    """The same as `preprocess`, written chunk by chunk to the `.npy` at `path` (atomically) and returned
    as a DiskArray that reads it in batches."""
    _checked_layout(data, length, centring, scale, layout)  # a wrong option is reported before any writing
    write_npy_chunks(path, output_shape(data, length), np.float32,
                     preprocessed_chunks(data, length, centring, scale, align, layout, chunk))
    return open_npy(path)
