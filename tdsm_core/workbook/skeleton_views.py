"""What notebook 00_skeletons shows of a skeleton set: tables of what was read and dropped, stick figures
before and after preprocessing, an animation, and the Shift-GCN training curves.

Figures are drawn from the bones of the set's layout (`SkeletonSet.bones`), so a layout of one's own is
drawn as well as the built-in ones. The picture's vertical axis is the coordinate axis along which the
spine (the layout's torso joints) points in the sequence's first frame, drawn upwards, and its horizontal axis the one along which
the hips lie, left hip to the left (as preprocessing aligns them: hips along +x, spine along +y), so
raw camera-space data (Kinect: y up; other sensors: any axis up) and the aligned output of
preprocessing are drawn the same way up.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..io import atomic_path
from ..skeletons.format import SkeletonSet
from ..skeletons.layouts import JointLayout

ACTOR_STYLES = ({"color": "#1f4e79", "linestyle": "-"}, {"color": "#b5452f", "linestyle": "--"})


# ----------------------------------------------------------------------------------------------
# Tables


def dataset_table(data: SkeletonSet) -> pd.DataFrame:
    """One row per class: its sequences, performers and frame counts (min, median, max)."""
    frame = pd.DataFrame({"label": data.labels, "frames": data.lengths,
                          "subject": data.subjects if data.subjects is not None else -1})
    table = frame.groupby("label").agg(sequences=("frames", "size"), performers=("subject", "nunique"),
                                       frames_min=("frames", "min"), frames_median=("frames", "median"),
                                       frames_max=("frames", "max"))
    table = table.reindex(range(len(data.class_names)), fill_value=0)
    table.insert(0, "class", [str(n) for n in data.class_names])
    table.index.name = "id"
    return table


def performer_table(data: SkeletonSet) -> pd.DataFrame:
    """Sequences per class (rows) and performer (columns); empty when the set records no performers."""
    if data.subjects is None:
        return pd.DataFrame()
    frame = pd.DataFrame({"class": [str(data.class_names[c]) for c in data.labels], "performer": data.subjects})
    table = pd.crosstab(frame["class"], frame["performer"])
    return table.reindex([str(n) for n in data.class_names], fill_value=0)


def dropped_table(data: SkeletonSet) -> pd.DataFrame:
    """The sequences the reader dropped and why (the converted file keeps them in dropped_ids/_reasons)."""
    return pd.DataFrame({"sequence": list(data.dropped), "reason": list(data.dropped.values())})


def example_rows(data: SkeletonSet) -> np.ndarray:
    """One sequence per class that has any: the one of median length (the first such), so no outlier is shown."""
    rows = []
    for c in range(len(data.class_names)):
        members = np.flatnonzero(data.labels == c)
        if members.size:
            order = members[np.argsort(data.lengths[members], kind="stable")]
            rows.append(int(order[(len(order) - 1) // 2]))
    return np.asarray(rows, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Stick figures


def front_view(frames: np.ndarray, layout: JointLayout) -> np.ndarray:
    """(T, M, J, 3) -> (T, M, J, 2) picture coordinates: spine up, hips across (see the module docstring), judged
    on the first frame where actor 0 is tracked, as preprocessing aligns (a deep bend then stays a bend)."""
    tracked = frames[:, 0].reshape(len(frames), -1).any(axis=-1)  # (T,) actor 0 present
    pose = frames[int(np.argmax(tracked)), 0]  # (J, 3)
    spine = pose[layout.torso[1]] - pose[layout.torso[0]]
    up = int(np.argmax(np.abs(spine)))
    hips = pose[layout.hips[1]] - pose[layout.hips[0]]  # left -> right hip
    across = max((a for a in range(3) if a != up), key=lambda a: abs(hips[a]))
    # left -> right hip points to the picture's right (the +x of preprocessing's aligned frame), spine up
    flip = np.array([1.0 if hips[across] >= 0 else -1.0, 1.0 if spine[up] >= 0 else -1.0])
    return frames[..., [across, up]] * flip


def _draw(ax, points: np.ndarray, bones: np.ndarray, offset: float, alpha: float, width: float = 1.6) -> None:
    """One frame (M, J, 2) as sticks; actors absent from the frame (all zero) are not drawn."""
    for m, actor in enumerate(points):
        if not actor.any():
            continue
        style = ACTOR_STYLES[m % len(ACTOR_STYLES)]
        for joint, parent in bones:
            ax.plot([actor[joint, 0] + offset, actor[parent, 0] + offset], [actor[joint, 1], actor[parent, 1]],
                    alpha=alpha, linewidth=width, solid_capstyle="round", **style)
        ax.scatter(actor[:, 0] + offset, actor[:, 1], s=4, color=style["color"], alpha=alpha, zorder=3)


def shown_frames(frames: np.ndarray, count: int) -> np.ndarray:
    """`count` frame indices spread evenly over the frames where someone is tracked."""
    tracked = np.flatnonzero(frames.reshape(len(frames), -1).any(axis=1))
    return tracked[np.linspace(0, len(tracked) - 1, min(count, len(tracked))).round().astype(int)]


def filmstrips(sequences: Sequence[np.ndarray], layout: JointLayout, bones: np.ndarray, titles: Sequence[str],
               frames: int = 5, title: str = "", columns: int = 4) -> Figure:
    """One panel per sequence ((T, M, J, 3) each): `frames` of its frames side by side, left to right in time,
    from pale (first) to dark (last)."""
    rows = -(-len(sequences) // columns)
    fig = Figure(figsize=(3.6 * columns, (0.7 + 5.0 / max(frames, 2)) * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax, sequence, name in zip(axes, sequences, titles):
        points = front_view(np.asarray(sequence, dtype=np.float64), layout)
        picked = shown_frames(sequence, frames)
        tracked = points[picked][np.asarray(sequence)[picked].any(axis=-1)]  # the drawn joints, for the spacing
        width = np.ptp(tracked[:, 0]) if tracked.size else 1.0
        step = 1.25 * max(width, 0.5 * np.ptp(tracked[:, 1]) if tracked.size else 1.0)
        for k, t in enumerate(picked):
            _draw(ax, points[t], bones, offset=k * step, alpha=0.35 + 0.65 * (k + 1) / len(picked), width=1.3)
        ax.set_title(f"{name}\n{len(picked)} of {len(sequence)} frames", fontsize=8)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(sequences):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig


def animation(sequence: np.ndarray, layout: JointLayout, bones: np.ndarray, title: str, fps: int = 15):
    """A matplotlib animation of one sequence (T, M, J, 3): show it with `.to_jshtml()`, save it with
    `save_animation`."""
    from matplotlib.animation import FuncAnimation

    points = front_view(np.asarray(sequence, dtype=np.float64), layout)
    present = np.asarray(sequence).any(axis=-1)  # (T, M, J)
    drawn = points[present] if present.any() else points.reshape(-1, 2)
    low, high = drawn.min(axis=0), drawn.max(axis=0)
    pad = 0.1 * (high - low).max() + 1e-6
    fig = Figure(figsize=(4, 4.6), layout="constrained")
    ax = fig.subplots()

    def frame(t: int):
        ax.clear()
        _draw(ax, points[t], bones, offset=0.0, alpha=1.0, width=2.2)
        ax.set(xlim=(low[0] - pad, high[0] + pad), ylim=(low[1] - pad, high[1] + pad), xticks=[], yticks=[])
        ax.set_aspect("equal")
        ax.set_title(f"{title}\nframe {t + 1} of {len(points)}", fontsize=9)
        return []

    return FuncAnimation(fig, frame, frames=len(points), interval=1000 / fps, blit=False)


def save_animation(anim, path: str | Path, fps: int = 15) -> Path:
    """Write the animation as a GIF (Pillow, which matplotlib already needs), atomically (`io.atomic_path`, whose
    temporary ends in the path's suffix, since Pillow picks the format by it)."""
    from matplotlib.animation import PillowWriter

    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        anim.save(tmp, writer=PillowWriter(fps=fps))
    return path


# ----------------------------------------------------------------------------------------------
# The encoder's training


def encoder_history(encoder_dir: str | Path) -> pd.DataFrame:
    """<split>/encoder/encoder_metrics.jsonl as a table (one row per epoch); the last record of a step wins
    (a resumed run rewrites the epochs after its checkpoint)."""
    path = Path(encoder_dir) / "encoder_metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    if not records:
        return pd.DataFrame(columns=["step", "epoch", "loss", "lr", "val_seen_top1"])
    return pd.DataFrame(records).drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def encoder_curves(history: pd.DataFrame, title: str = "Shift-GCN on the seen classes") -> Figure:
    """Training loss, learning rate and seen-class validation accuracy per epoch."""
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax_loss, ax_lr, ax_val = fig.subplots(1, 3)
    if len(history):
        ax_loss.plot(history["epoch"], history["loss"], color="black", linewidth=1.4)
        ax_lr.plot(history["epoch"], history["lr"], color="#8172b2", linewidth=1.4)
        ax_val.plot(history["epoch"], history["val_seen_top1"], marker="o", markersize=3, color="#55a868")
        best = history.loc[history["val_seen_top1"].idxmax()]
        ax_val.annotate(f"best {best['val_seen_top1']:.1f}% (epoch {int(best['epoch'])})",
                        (best["epoch"], best["val_seen_top1"]), xytext=(0, 8), textcoords="offset points",
                        ha="center", fontsize=8)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy (last batch)", title="Training loss")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="Learning rate (warm-up, cosine)")
    ax_val.set(xlabel="epoch", ylabel="seen-class top-1 (%)", ylim=(0, 100),
               title="Validation: seen classes, held-out samples")
    for ax in (ax_loss, ax_lr, ax_val):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig
