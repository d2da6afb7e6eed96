"""The workbook's figures. Each function takes data and returns a matplotlib Figure; `save_figure` writes a PNG.

Figures are built on `matplotlib.figure.Figure` directly rather than through pyplot, so nothing is
left open in a global figure list and a notebook shows a figure only where it returns one. Unseen
classes keep one colour across every figure of a run (`unseen_colours`); seen classes are drawn
pale, so seen and unseen stay distinguishable at a glance.
"""
from __future__ import annotations

import colorsys
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import Bbox

from ..io import atomic_path

SEEN_GREY = "#8c8c8c"
PART_COLOURS = {"train": "#4c72b0", "val": "#55a868", "ztest": "#c44e52", "gtest": "#8172b2"}
# tab10 without its grey (kept for seen classes), then high-contrast extras for up to 20 unseen classes;
# no black, which the legends use for generic glyphs ("misclassified")
_DISTINCT = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
             "#e7298a", "#f3c300", "#604e97", "#008856", "#be0032", "#a1caf1", "#882d17", "#8db600", "#e68fac",
             "#0067a5", "#654522"]


def text_colour(colour) -> tuple:
    """A class colour darkened enough to read as text on white (pale yellows and blues otherwise vanish)."""
    hue, lightness, saturation = colorsys.rgb_to_hls(*to_rgb(colour))
    return colorsys.hls_to_rgb(hue, min(lightness, 0.38), saturation)


def save_figure(fig: Figure, path: str | Path, dpi: int = 150, note: str = "") -> Figure:
    """Write `fig` as a PNG at `path` (atomically, nothing clipped) and return it, so a notebook shows it.

    `note` is printed small under the figure: where the data and the weights came from
    (`workbook.notebooks.figure_note`), so a PNG found on its own still says what it shows."""
    if note and not getattr(fig, "_tdsm_note", None):
        fig._tdsm_note = fig.text(0.0, 0.0, note, fontsize=7, ha="left", va="top", wrap=True,
                                  color="#a02020" if note.startswith("SYNTHETIC") else "#555555")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return fig


def unseen_colours(unseen: Sequence[int]) -> dict[int, tuple | str]:
    """A fixed colour per unseen class id (distinct colours up to 20 classes, evenly spaced hues beyond)."""
    unseen = [int(c) for c in unseen]
    palette = _DISTINCT if len(unseen) <= len(_DISTINCT) else sns.color_palette("husl", len(unseen))
    return {c: palette[i] for i, c in enumerate(unseen)}


def _seen_colours(seen: Sequence[int]) -> dict[int, tuple]:
    palette = sns.color_palette("husl", max(1, len(seen)), desat=0.45)
    return {int(c): palette[i] for i, c in enumerate(seen)}


# (dx, dy) in points, horizontal and vertical alignment: label positions tried around a point, in order
_AROUND = [(5, 4, "left", "bottom"), (5, -4, "left", "top"), (-5, 4, "right", "bottom"), (-5, -4, "right", "top"),
           (0, 8, "center", "bottom"), (0, -8, "center", "top"), (9, 0, "left", "center"), (-9, 0, "right", "center"),
           (12, 14, "left", "bottom"), (-12, -14, "right", "top"), (12, -14, "left", "top"),
           (-12, 14, "right", "bottom")]
_CENTRED = [(0, 0, "center", "center")] + _AROUND


def _overlap(a, b) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0.0) * max(height, 0.0)


def _place_labels(ax, points: np.ndarray, texts: Sequence[str], styles: Sequence[dict], centred: bool = False) -> None:
    """Annotate each point, at the first of a few positions around it that overlaps no label placed so far
    and stays inside the axes (else at the least bad one). Labels are placed in the order given."""
    ax.figure.draw_without_rendering()  # settle limits and layout so that text extents are final
    frame = ax.get_window_extent()
    radius = 4 * ax.figure.dpi / 72  # a marker's half size, in pixels
    placed = [Bbox.from_bounds(px - radius, py - radius, 2 * radius, 2 * radius)
              for px, py in ax.transData.transform(np.asarray(points))]  # labels avoid every marker, too
    for (x, y), text, style in zip(points, texts, styles):
        best = None
        for dx, dy, ha, va in (_CENTRED if centred else _AROUND):
            label = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, **style)
            box = label.get_window_extent().padded(2)
            cost = sum(_overlap(box, other) for other in placed) + 3 * (box.width * box.height - _overlap(box, frame))
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, label, box)
            else:
                label.remove()
            if cost == 0:
                break
        placed.append(best[2])


# ----------------------------------------------------------------------------------------------
# Data


def class_counts(table: pd.DataFrame, parts: Sequence[str] = ("train", "val", "ztest", "gtest"),
                 title: str = "") -> Figure:
    """Stacked bars of samples per class and part; unseen classes shaded and named in red."""
    parts = [p for p in parts if p in table.columns]
    fig = Figure(figsize=(max(10, 0.26 * len(table) + 2), 5.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(table))
    unseen = (table["status"] == "unseen").to_numpy()
    for i in np.flatnonzero(unseen):
        ax.axvspan(i - 0.5, i + 0.5, color="#c44e52", alpha=0.10, linewidth=0)
    bottom = np.zeros(len(table))
    for part in parts:
        ax.bar(x, table[part], bottom=bottom, color=PART_COLOURS.get(part), width=0.8, label=part)
        bottom += table[part].to_numpy()
    ax.set_xticks(x, table["name"], rotation=90, fontsize=7)
    for label, is_unseen in zip(ax.get_xticklabels(), unseen):
        if is_unseen:
            label.set_color("#c44e52")
            label.set_fontweight("bold")
    ax.set_xlim(-0.7, len(table) - 0.3)
    ax.set_ylim(0, 1.15 * bottom.max())  # headroom for the legend
    ax.set_ylabel("samples")
    ax.set_xlabel("class (unseen classes in red, shaded)")
    handles = [Patch(color=PART_COLOURS.get(p), label=p) for p in parts]
    handles.append(Patch(color="#c44e52", alpha=0.25, label=f"unseen ({int(unseen.sum())} classes)"))
    ax.legend(handles=handles, loc="upper right", ncols=len(handles), fontsize=8)
    ax.set_title(title or f"Samples per class: {int((~unseen).sum())} seen, {int(unseen.sum())} unseen classes")
    return fig


def feature_statistics(parts: Mapping[str, np.ndarray], title: str = "Feature statistics") -> Figure:
    """Distribution of feature values, per-dimension mean +/- std, and per-sample L2 norms, per part."""
    fig = Figure(figsize=(15, 4.3), layout="constrained")
    ax_values, ax_dims, ax_norms = fig.subplots(1, 3)
    for part, x in parts.items():
        colour = PART_COLOURS.get(part)
        ax_values.hist(x.ravel(), bins=80, density=True, histtype="step", color=colour, label=part, linewidth=1.3)
        ax_norms.hist(np.linalg.norm(x, axis=1), bins=50, density=True, histtype="step", color=colour, label=part,
                      linewidth=1.3)
    ax_values.set(yscale="log", xlabel="feature value", ylabel="density (log scale)", title="Feature values")
    ax_norms.set(xlabel="L2 norm of a sample's feature", ylabel="density", title="Feature norms")
    reference_name, reference = next(iter(parts.items()))
    order = np.argsort(reference.mean(axis=0))
    dims = np.arange(reference.shape[1])
    mean, std = reference.mean(axis=0)[order], reference.std(axis=0)[order]
    ax_dims.fill_between(dims, mean - std, mean + std, color=PART_COLOURS.get(reference_name), alpha=0.15, linewidth=0,
                         label=f"{reference_name} ± 1 std")
    for part, x in parts.items():
        ax_dims.plot(dims, x.mean(axis=0)[order], color=PART_COLOURS.get(part), label=f"{part} mean", linewidth=1.1)
    ax_dims.set(xlabel=f"feature dimension (sorted by {reference_name} mean)", ylabel="value over samples",
                title="Per-dimension mean")
    for ax in (ax_values, ax_dims, ax_norms):
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------
# Training


def loss_curves(history: pd.DataFrame, title: str = "Training", zero_prediction_error: float | None = None,
                margin: float | None = None) -> Figure:
    """Total, diffusion and triplet loss; positive vs negative denoising error; learning rate; validation accuracy.

    `zero_prediction_error`: the error of a denoiser that always predicts 0 (1.0 for epsilon prediction
    with unit noise), drawn as a reference; `margin`: the triplet margin, drawn as the negative-minus-positive
    gap the triplet term asks for."""
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    (ax_loss, ax_err), (ax_lr, ax_val) = fig.subplots(2, 2, sharex=True)
    logged = history.dropna(subset=["loss"]) if "loss" in history else history.iloc[:0]
    steps = logged.index
    for column, label, colour in [("loss", "total", "black"), ("loss_diffusion", "diffusion", "#4c72b0"),
                                  ("loss_triplet", "triplet", "#dd8452")]:
        if column in logged:
            ax_loss.plot(steps, logged[column], label=label, color=colour, linewidth=1.4)
    ax_loss.set(ylabel="loss", title="Loss (total = diffusion + triplet)")
    for column, label, colour in [("pos_error", "own class text (positive)", "#55a868"),
                                  ("neg_error", "random seen class text (negative)", "#c44e52")]:
        if column in logged:
            ax_err.plot(steps, logged[column], label=label, color=colour, linewidth=1.4)
    if zero_prediction_error is not None:
        ax_err.axhline(zero_prediction_error, color="grey", linestyle=":", linewidth=1.2,
                       label=f"predicting zero ({zero_prediction_error:g})")
    if margin is not None and {"pos_error", "neg_error"} <= set(logged.columns):
        gap = logged["neg_error"] - logged["pos_error"]
        ax_err.plot(steps, gap, color="#8172b2", linewidth=1.0, alpha=0.8, label="negative - positive")
        ax_err.axhline(margin, color="#8172b2", linestyle="--", linewidth=1.0, label=f"triplet margin ({margin:g})")
    ax_err.set(ylabel="denoising error (MSE)", title="Denoising error by conditioning text")
    if "lr" in logged:
        ax_lr.plot(steps, logged["lr"], color="#8172b2", linewidth=1.4)
    ax_lr.set(xlabel="training step", ylabel="learning rate", title="Learning rate (warm-up, cosine decay)")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    validated = history["val_seen_top1"].dropna() if "val_seen_top1" in history else pd.Series(dtype=float)
    if len(validated):
        ax_val.plot(validated.index, validated.to_numpy(), marker="o", color="#55a868", linewidth=1.4)
        ax_val.set(ylim=(0, 100))
    else:
        ax_val.text(0.5, 0.5, "no validation split (val.npy)", ha="center", va="center", transform=ax_val.transAxes)
    ax_val.set(xlabel="training step", ylabel="seen-class top-1 (%)",
               title="Validation accuracy (seen classes, seeded subsample of val)")
    for ax in (ax_loss, ax_err):
        ax.legend(fontsize=8)
    for ax in (ax_loss, ax_err, ax_lr, ax_val):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------
# Evaluation


def wilson_interval(percent: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval (in %) of an accuracy measured on n samples.

    The bounds always contain `percent` itself (clamped to [0, 100]): at 0% or 100% the closed form
    meets the value only up to rounding, and an error bar drawn from it would be a hair negative."""
    value = min(100.0, max(0.0, float(percent)))
    if n <= 0:
        return 0.0, 100.0
    p = value / 100.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = 100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half)
    return min(low, value), max(high, value)


def interval_errors(values: Sequence[float], low: Sequence[float], high: Sequence[float]) -> np.ndarray:
    """(2, n) error-bar lengths below and above each value for matplotlib's xerr/yerr, never negative."""
    values = np.asarray(values, dtype=float).reshape(-1)
    low, high = np.asarray(low, dtype=float).reshape(-1), np.asarray(high, dtype=float).reshape(-1)
    return np.vstack([np.clip(values - low, 0.0, None), np.clip(high - values, 0.0, None)]).reshape(2, len(values))


def spread_errors(stds: Sequence[float]) -> np.ndarray:
    """Symmetric error-bar lengths from standard deviations; a missing (NaN) or negative std draws no bar."""
    stds = np.asarray(stds, dtype=float).reshape(-1)
    return np.where(np.isfinite(stds) & (stds > 0), stds, 0.0)


def per_class_accuracy(per_class: Mapping[str, float], chance: float, overall: float,
                       colours: Mapping[str, object] | None = None,
                       title: str = "Zero-shot top-1 accuracy per unseen class",
                       counts: Mapping[str, int] | None = None) -> Figure:
    """Horizontal bars of per-class top-1, sorted, with the overall accuracy and chance marked; with
    `counts` (test samples per class) each bar gets its 95% Wilson interval, so noise reads as noise."""
    items = sorted(per_class.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(8, 0.34 * len(items) + 1.6), layout="constrained")
    ax = fig.subplots()
    names = [name for name, _ in items]
    values = [value for _, value in items]
    xerr = None
    if counts:
        bounds = np.array([wilson_interval(v, int(counts.get(n, 0))) for n, v in items]).reshape(-1, 2)
        xerr = interval_errors(values, bounds[:, 0], bounds[:, 1])
    ax.barh(names, values, color=[(colours or {}).get(n, "#4c72b0") for n in names], xerr=xerr,
            error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333333"})
    for y, value in enumerate(values):
        right = value if xerr is None else value + xerr[1][y]
        ax.text(min(right + 1, 101), y, f"{value:.1f}", va="center", fontsize=8)
    ax.axvline(overall, color="black", linestyle="--", linewidth=1, label=f"overall top-1 {overall:.1f}%")
    ax.axvline(chance, color="#c44e52", linestyle=":", linewidth=1.2, label=f"chance {chance:.1f}%")
    if counts:
        low, high = min(counts.values()), max(counts.values())
        ax.plot([], [], color="#333333", linewidth=0.8,
                label=f"95% interval ({low if low == high else f'{low} to {high}'} samples a class)")
    ax.set(xlim=(0, 109), xlabel="top-1 accuracy (%)", ylabel="unseen class", title=title)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def confusion_matrix(confusion: np.ndarray, names: Sequence[str],
                     title: str = "Confusion matrix (unseen classes)") -> Figure:
    """Row-normalised confusion matrix (% of each true class) with class names, counts annotated as %."""
    confusion = np.asarray(confusion, dtype=float)
    percent = 100 * confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = min(0.55 * len(names) + 3, 22)  # wide splits get smaller cells, not a poster
    fig = Figure(figsize=(size + 1.5, size + 1.2), layout="constrained")
    ax_top, ax = fig.subplots(2, 1, height_ratios=[1, 6], sharex=False)
    share = 100 * confusion.sum(axis=0) / max(confusion.sum(), 1)  # how often each text wins
    ax_top.bar(np.arange(len(names)) + 0.5, share, width=0.8, color="#4c72b0")
    ax_top.axhline(100 / len(names), color="#c44e52", linestyle="--", linewidth=1)
    ax_top.text(0.05, 100 / len(names), f" even share ({100 / len(names):.1f}%)", color="#c44e52", fontsize=7,
                va="bottom", ha="left", bbox=dict(facecolor="white", alpha=0.8, linewidth=0, pad=1))
    ax_top.set(xlim=(0, len(names)), ylim=(0, 1.15 * max(share.max(), 100 / len(names))),
               ylabel="% of\npredictions", xticks=[],
               title="How often each class is predicted (a tall bar: its text attracts other classes' samples)")
    ax_top.title.set_fontsize(9)
    sns.heatmap(percent, ax=ax, cmap="Blues", vmin=0, vmax=100, square=False, annot=len(names) <= 20, fmt=".0f",
                annot_kws={"fontsize": 7}, xticklabels=names, yticklabels=names, linewidths=0.3, linecolor="white",
                cbar_kws={"label": "% of the true class's samples", "shrink": 0.7, "location": "bottom",
                          "pad": 0.02, "aspect": 40})
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    ax.tick_params(axis="x", labelrotation=60, labelsize=8)
    ax.tick_params(axis="y", labelrotation=0, labelsize=8)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    return fig


def sensitivity(table: pd.DataFrame, timestep: int, num_noise: int, chance: float, num_samples: int, num_total: int,
                title: str = "Sensitivity of zero-shot accuracy to the inference settings",
                num_timesteps: int | None = None) -> Figure:
    """Top-1/top-5 against the inference timestep t and against the number of noises, configured values marked."""
    fig = Figure(figsize=(12, 4.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    t_label = "inference timestep t" if num_timesteps is None else f"inference timestep t (of T = {num_timesteps})"
    for ax, setting, configured, xlabel in [(axes[0], "timestep", timestep, t_label),
                                            (axes[1], "noises", num_noise, "number of noises")]:
        rows = table[table["setting"] == setting]
        ax.plot(rows["value"], rows["top1"], marker="o", color="#4c72b0", label="top-1")
        ax.plot(rows["value"], rows["top5"], marker="s", color="#55a868", label="top-5", alpha=0.8)
        ax.axvline(configured, color="black", linestyle="--", linewidth=1, label="configured value")
        ax.axhline(chance, color="#c44e52", linestyle=":", linewidth=1.2, label=f"chance top-1 ({chance:.1f}%)")
        ax.axhline(min(100.0, 5 * chance), color="#55a868", linestyle=":", linewidth=1.0,
                   label=f"chance top-5 ({min(100.0, 5 * chance):.1f}%)")
        held = f"noises fixed at {num_noise}" if setting == "timestep" else f"t fixed at {timestep}"
        ax.set(xlabel=xlabel, ylim=(0, 102), title=f"accuracy vs {xlabel} ({held})")
        ax.grid(alpha=0.3)
        if setting == "noises":
            ax.set_xticks(rows["value"])
    axes[0].set_ylabel("zero-shot accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    sample_note = "all" if num_samples == num_total else f"a class-balanced seeded subsample of {num_samples} of"
    fig.suptitle(f"{title}\non {sample_note} {num_total} ztest samples: a diagnostic of the test split, "
                 f"never used to choose t or the noises", fontsize=11)
    return fig


# ----------------------------------------------------------------------------------------------
# Alignment


def _label_centroids(ax, xy: np.ndarray, labels: np.ndarray, classes: Sequence[int], names: Sequence[str],
                     colours: Mapping[int, object], fontsize: int = 8) -> None:
    present = [c for c in classes if (labels == c).any()]
    centres = np.array([np.median(xy[labels == c], axis=0) for c in present]).reshape(-1, 2)
    styles = [dict(fontsize=fontsize, fontweight="bold", color=text_colour(colours[c]),
                   bbox=dict(boxstyle="round,pad=0.15", facecolor="white", alpha=0.55, linewidth=0)) for c in present]
    _place_labels(ax, centres, [names[c] for c in present], styles, centred=True)


def class_scatter(xy: np.ndarray, labels: np.ndarray, seen: Sequence[int], unseen: Sequence[int], names: Sequence[str],
                  title: str, correct: np.ndarray | None = None, axis_label: str = "UMAP") -> Figure:
    """2-D points coloured by class: seen classes pale dots, unseen classes bold triangles named at their centre.

    With `correct` (bool per point) wrongly classified points are drawn as crosses.
    """
    colours, pale = unseen_colours(unseen), _seen_colours(seen)
    fig = Figure(figsize=(11, 8), layout="constrained")
    ax = fig.subplots()
    is_seen = np.isin(labels, list(seen))
    if is_seen.any():
        ax.scatter(xy[is_seen, 0], xy[is_seen, 1], s=6, c=[pale[int(c)] for c in labels[is_seen]], alpha=0.45,
                   linewidths=0, rasterized=True)
    handles = []
    for c in unseen:
        mask = labels == c
        if not mask.any():
            continue
        hit = mask if correct is None else mask & correct
        ax.scatter(xy[hit, 0], xy[hit, 1], s=22, marker="^", color=colours[c], edgecolors="black", linewidths=0.3)
        if correct is not None:
            miss = mask & ~correct
            ax.scatter(xy[miss, 0], xy[miss, 1], s=20, marker="x", color=colours[c], linewidths=1.0)
        handles.append(Line2D([], [], marker="^", linestyle="", color=colours[c], markeredgecolor="black",
                              markeredgewidth=0.3, label=names[c]))
    _label_centroids(ax, xy, labels, unseen, names, colours)
    if is_seen.any():
        handles.insert(0, Line2D([], [], marker="o", linestyle="", color=SEEN_GREY, alpha=0.6,
                                 label=f"seen classes ({len(seen)}; pale, one hue each)"))
    if correct is not None:
        handles += [Line2D([], [], marker="^", linestyle="", color="white", markeredgecolor="black", label="correct"),
                    Line2D([], [], marker="x", linestyle="", color="black", label="misclassified")]
    if len(handles) > 24:  # a legend taller than the axes helps nobody; the centroid labels name every class
        unseen_names = {names[c] for c in unseen}
        shown = sum(h.get_label() in unseen_names for h in handles[:23])
        handles = handles[:23] + [Line2D([], [], linestyle="", label=f"(+{len(unseen) - shown} more unseen classes, "
                                                                     f"named on the plot)")]
    ax.legend(handles=handles, title="unseen classes", loc="center left",
              bbox_to_anchor=(1.01, 0.5), fontsize=8, title_fontsize=9, frameon=False)
    ax.set(xlabel=f"{axis_label} 1", ylabel=f"{axis_label} 2", title=title)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def text_scatter(xy: np.ndarray, class_ids: Sequence[int], unseen: Sequence[int], names: Sequence[str],
                 title: str = "Text embeddings of the class prompts (UMAP)") -> Figure:
    """One point per class text, named; unseen classes bold in their colour, seen classes grey."""
    colours = unseen_colours(unseen)
    unseen_set = set(int(c) for c in unseen)
    fig = Figure(figsize=(12, 9), layout="constrained")
    ax = fig.subplots()
    class_ids = [int(c) for c in class_ids]
    is_unseen = np.array([c in unseen_set for c in class_ids])
    ax.scatter(xy[~is_unseen, 0], xy[~is_unseen, 1], s=25, color=SEEN_GREY, alpha=0.8, zorder=2)
    ax.scatter(xy[is_unseen, 0], xy[is_unseen, 1], s=70, marker="^", edgecolors="black", linewidths=0.5, zorder=3,
               color=[colours[c] for c, u in zip(class_ids, is_unseen) if u])
    ax.margins(0.1)
    order = np.argsort(~is_unseen, kind="stable")  # unseen names first: they get the best positions
    styles = [dict(fontsize=9, fontweight="bold", color=text_colour(colours[c]), zorder=4) if c in unseen_set
              else dict(fontsize=7, color="#555555") for c in class_ids]
    _place_labels(ax, xy[order], [names[class_ids[i]] for i in order], [styles[i] for i in order])
    handles = [Line2D([], [], marker="^", linestyle="", color="#444444", markeredgecolor="black",
                      label="unseen class (bold name)"),
               Line2D([], [], marker="o", linestyle="", color=SEEN_GREY, label="seen class")]
    ax.legend(handles=handles, loc="best", fontsize=9)
    ax.set(xlabel="UMAP 1", ylabel="UMAP 2", title=title)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def aligned_heatmap(values: np.ndarray, row_labels: np.ndarray, classes: Sequence[int], names: Sequence[str],
                    title: str = "Score space: denoising error of test samples under each class text") -> Figure:
    """Samples x candidate classes, rows grouped by true class; a black dot marks each row's best-matching text."""
    fig = Figure(figsize=(0.55 * len(classes) + 5, 9), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(values, ax=ax, cmap="viridis_r", xticklabels=[names[c] for c in classes], yticklabels=False,
                cbar_kws={"label": "denoising error, standardised per sample\n(low = the text denoises it best)"})
    best = values.argmin(axis=1)
    ax.scatter(best + 0.5, np.arange(len(values)) + 0.5, s=6, color="black", linewidths=0)
    starts = [0] + [i for i in range(1, len(row_labels)) if row_labels[i] != row_labels[i - 1]]
    for s in starts[1:]:
        ax.axhline(s, color="white", linewidth=1.2)
    ends = starts[1:] + [len(row_labels)]
    ax.set_yticks([(a + b) / 2 for a, b in zip(starts, ends)], [names[int(row_labels[a])] for a in starts], fontsize=8)
    ax.tick_params(axis="x", labelrotation=60, labelsize=8)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    ax.set(xlabel="candidate class text", ylabel=f"test samples grouped by true class ({len(values)} rows)",
           title=title)
    return fig


def retrieval(examples: pd.DataFrame, columns: int = 4, title: str = "Nearest class texts of test samples",
              error_unit: str = "summed MSE over the noises") -> Figure:
    """One panel per sample: its top-ranked class texts by how much their denoising error exceeds the best one's."""
    samples = list(dict.fromkeys(examples["sample"]))
    rows = int(np.ceil(len(samples) / columns))
    fig = Figure(figsize=(4.4 * columns, 2.5 * rows + 0.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    widest = max(1e-12, float(examples.groupby("sample")["error"].agg(np.ptp).max()))
    for ax, sample in zip(axes, samples):
        ranking = examples[examples["sample"] == sample].sort_values("rank")
        excess = ranking["error"].to_numpy() - ranking["error"].min()
        colours = ["#2d9a4a" if hit else "#7f7f7f" for hit in ranking["is true class"]]
        y = np.arange(len(ranking))[::-1]
        ax.hlines(y, 0, excess, color=colours, linewidth=2)
        ax.scatter(excess, y, color=colours, s=36, zorder=3)
        ax.set_yticks(y, ranking["text"], fontsize=8)
        for tick, colour in zip(ax.get_yticklabels(), colours):
            tick.set_color(colour)
        ax.set_xlim(-0.05 * widest, 1.15 * widest)  # one scale for every panel, so gaps compare across samples
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3), useOffset=False)
        true_rank = int(ranking["true rank"].iloc[0])
        verdict = "retrieved correctly" if true_rank == 1 else f"wrong: true text ranked {true_rank}"
        ax.set_title(f"sample {sample}, true class: {ranking['true class'].iloc[0]}\n{verdict}", fontsize=9,
                     color="#2d7a3e" if true_rank == 1 else "#b03a3a")
        ax.set_xlabel(f"error above the best text's ({error_unit})", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(samples):]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: candidate texts ranked by denoising error (best at top, true class in green)", fontsize=11)
    return fig


# ----------------------------------------------------------------------------------------------
# Seeds, GZSL and ablations


def plot_ablation(table: Mapping, path: str | Path | None = None) -> Figure:
    """Mean ± std top-1 of each ablation variant, every seed as a dot, chance marked (saved when `path`)."""
    rows = table["rows"]
    fig = Figure(figsize=(max(6.0, 1.1 * len(rows) + 2.5), 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(rows))
    means, stds = [r["mean"] for r in rows], [r["std"] for r in rows]
    ax.bar(x, means, yerr=spread_errors(stds), capsize=4, color="#4c72b0", alpha=0.85, label="mean ± std over seeds")
    seeds = min(len(r["values"]) for r in rows)
    offsets = np.linspace(-0.12, 0.12, seeds) if seeds > 1 else np.zeros(1)
    for k in range(seeds):  # seed k of every variant shares its data order and noise: draw the pairing
        ax.plot(x + offsets[k], [r["values"][k] for r in rows], color="black", alpha=0.35, linewidth=0.8,
                marker="o", markersize=3.5, zorder=3, label="one seed (lines join the same seed)" if k == 0 else None)
    for i, row in enumerate(rows):
        if row.get("tied", 0) >= 50:  # most predictions tied: the model ignores the text
            ax.bar(x[i], row["mean"], color="none", edgecolor="#c44e52", hatch="//", linewidth=0)
            ax.text(i, 1.5, f"{row['tied']:.0f}% tied", ha="center", fontsize=7, color="#c44e52")
        top = max([row["mean"] + row["std"], *row["values"]])  # above the error bar and every seed's dot
        ax.text(i, top + 2.0, f"{row['mean']:.1f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(table["chance_top1"], color="#c44e52", linestyle=":", label=f"chance {table['chance_top1']:.1f}%")
    ax.set_xticks(x, [r["variant"] for r in rows], rotation=20 if len(rows) > 5 else 0)
    highest = max(max([r["mean"] + r["std"], *r["values"]]) for r in rows)
    ax.set(ylabel="zero-shot top-1 (%)", ylim=(0, min(108, highest + 14)),
           title=f"Ablation: {table['study']} ({table['name']}, {table['num_seeds']} seeds, {table['protocol']})")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)  # below, off the bars
    if path is not None:
        save_figure(fig, path)
    return fig


def gzsl_curve(curve: Sequence[Mapping], chosen: Mapping | None = None, uncalibrated: Mapping | None = None,
               title: str = "GZSL: seen vs unseen accuracy as the calibration constant varies") -> Figure:
    """Seen/unseen trade-off over gamma on gtest (diagnostic), the validation-chosen gamma marked."""
    fig = Figure(figsize=(11, 4.3), layout="constrained")
    left, right = fig.subplots(1, 2)
    gammas = [c["gamma"] for c in curve]
    left.plot(gammas, [c["seen_top1"] for c in curve], color="#4c72b0", label="seen accuracy")
    left.plot(gammas, [c["unseen_top1"] for c in curve], color="#c44e52", label="unseen accuracy")
    left.plot(gammas, [c["harmonic_mean"] for c in curve], color="black", linestyle="--", label="harmonic mean")
    right.plot([c["unseen_top1"] for c in curve], [c["seen_top1"] for c in curve], color="#8172b2")
    for point, marker, label in [(chosen, "*", "gamma chosen on validation"), (uncalibrated, "o", "no calibration")]:
        if point:
            left.axvline(point["gamma"], color="#55a868" if marker == "*" else "grey", linestyle=":",
                         label=f"{label} (gamma {point['gamma']:.3g})")
            right.scatter([point["unseen_top1"]], [point["seen_top1"]], marker=marker, s=120, zorder=3,
                          color="#55a868" if marker == "*" else "grey",
                          label=f"{label}: S {point['seen_top1']:.1f}, U {point['unseen_top1']:.1f}, "
                                f"H {point['harmonic_mean']:.1f}")
    left.set(xlabel="calibration constant gamma added to seen-class errors", ylabel="accuracy on gtest (%)",
             ylim=(0, 102), title="accuracy vs gamma")
    right.set(xlabel="unseen accuracy (%)", ylabel="seen accuracy (%)", xlim=(0, 102), ylim=(0, 102),
              title="seen-unseen trade-off")
    left.legend(fontsize=8)
    right.legend(fontsize=8, loc="lower left")  # the trade-off curve runs along the top and the right
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}\n(curve computed on gtest for display only; gamma is chosen on the pseudo-unseen "
                 f"validation run, a separate model)", fontsize=10)
    return fig


def split_summary(summary: Mapping, title: str = "") -> Figure:
    """The raw-skeleton chain over its splits: TDSM and the projection baseline per split, chance marked."""
    rows = summary["splits"]
    fig = Figure(figsize=(9, 0.55 * len(rows) + 2.2), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(rows))
    for key, label, colour, marker in [("tdsm_top1", "TDSM", "#4c72b0", "o"),
                                       ("baseline_top1", "projection baseline", "#dd8452", "s"),
                                       ("encoder_val_seen_top1", "Shift-GCN, seen classes (val)", "#8c8c8c", "|")]:
        ax.scatter([r[key] for r in rows], y, color=colour, marker=marker, s=60, label=label, zorder=3)
        spread = [r.get(key.replace("_top1", "_seed_std"), 0.0) or 0.0 for r in rows]
        if key != "encoder_val_seen_top1" and any(spread):  # the seeds' spread (std) of each split
            ax.errorbar([r[key] for r in rows], y, xerr=spread, fmt="none", ecolor=colour, elinewidth=1.2, capsize=3,
                        zorder=2)
    for key, colour in [("tdsm_top1", "#4c72b0"), ("baseline_top1", "#dd8452")]:
        mean = summary[key]["mean"]
        ax.axvline(mean, color=colour, linestyle="--", linewidth=1, alpha=0.7)
    ax.axvline(summary["chance_top1"], color="#c44e52", linestyle=":", label=f"chance {summary['chance_top1']:.1f}%")
    labels = [f"split {r['split']}: " + textwrap.shorten(", ".join(r["unseen_names"]), 90, placeholder=" ...")
              for r in rows]
    ax.set_yticks(y, [textwrap.fill(label, 45) for label in labels], fontsize=8)
    ax.invert_yaxis()
    t, b = summary["tdsm_top1"], summary["baseline_top1"]
    ax.set(xlim=(0, 102), xlabel="zero-shot top-1 on the split's unseen classes (%); bars: std over seeds; dashed: means",
           title=title or f"{summary['name']}: TDSM {t['mean']:.1f} ± {t['std']:.1f}, baseline "
                          f"{b['mean']:.1f} ± {b['std']:.1f} over {summary['num_splits']} split(s)")
    ax.grid(axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    # above the axes: the figure's note (where the data came from) goes under it
    fig.legend(handles, labels, fontsize=8, loc="outside upper center", ncols=4, frameon=False)
    return fig


def seed_spread(rows: Sequence[Mapping], chance: float, title: str = "Spread over seeds") -> Figure:
    """One row per metric: every seed's value and the mean ± std."""
    fig = Figure(figsize=(9, 0.5 * len(rows) + 1.8), layout="constrained")
    ax = fig.subplots()
    for y, row in enumerate(rows):
        ax.errorbar(row["mean"], y, xerr=spread_errors([row["std"]]), fmt="D", color="black", capsize=4,
                    label=f"mean ± sample std (n = {len(row['values'])})" if y == 0 else None)
        ax.scatter(row["values"], np.full(len(row["values"]), y), color="#4c72b0", s=18, alpha=0.8,
                   label="one seed" if y == 0 else None)
        ax.text(row["mean"], y + 0.28, f"{row['mean']:.1f} ± {row['std']:.1f}", ha="center", fontsize=8)
    ax.axvline(chance, color="#c44e52", linestyle=":", label=f"ZSL chance {chance:.1f}%")
    ax.set_yticks(range(len(rows)), [r["metric"] for r in rows], fontsize=8)
    ax.set(xlabel="accuracy (%)", xlim=(0, 102), ylim=(-0.6, len(rows) - 0.2), title=title)
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="lower right")
    return fig


# ----------------------------------------------------------------------------------------------
# Interactive views (JupyterLab): plotly figures and an ipywidgets explorer; the PNGs stay the record


def interactive_scatter(xy: np.ndarray, table: pd.DataFrame, colour: str, title: str, symbol: str | None = None):
    """A plotly scatter of 2-D points whose hover label shows every column of `table` (one row per point),
    coloured by the column `colour`; None (with a line saying why) when plotly is not installed. Shown inline
    in JupyterLab; a headless run stores it in the notebook without needing a browser."""
    try:
        import plotly.express as px
    except ImportError:
        print("plotly is not installed: pip install plotly for the interactive view (the PNG above is the same data)")
        return None
    if len(xy) != len(table):
        raise ValueError(f"{len(xy)} points but {len(table)} hover rows; give one row per point.")
    frame = table.reset_index(drop=True).assign(x=xy[:, 0], y=xy[:, 1])
    hover = {**{column: True for column in table.columns}, "x": False, "y": False}  # UMAP coordinates mean nothing
    fig = px.scatter(frame, x="x", y="y", color=colour, symbol=symbol, hover_data=hover, title=title,
                     width=950, height=650)
    fig.update_traces(marker={"size": 7, "opacity": 0.8})
    fig.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, legend_title_text=colour)
    return fig


def show_interactive(fig) -> None:
    """Show a plotly figure inline: as plotly's own mime type (JupyterLab draws it offline) and as HTML that loads
    plotly.js from its CDN (for notebooks rendered to HTML), so an executed notebook does not carry 4 MB of
    JavaScript per figure. Does nothing for None (plotly missing)."""
    if fig is not None:
        fig.show(renderer="plotly_mimetype+notebook_connected")


def sample_errors(scores: np.ndarray, classes: np.ndarray, names: Sequence[str], true: int, sample: int) -> Figure:
    """One test sample's denoising error under every candidate class text, smallest first (the top bar is the
    prediction); the true class in black."""
    order = np.argsort(scores, kind="stable")
    labels = [names[int(classes[j])] for j in order]
    fig = Figure(figsize=(8, 0.28 * len(order) + 1.4), layout="constrained")
    ax = fig.subplots()
    ax.barh(range(len(order)), scores[order], color=["black" if classes[j] == true else "#8da0cb" for j in order])
    ax.set_yticks(range(len(order)), labels, fontsize=8)
    ax.invert_yaxis()
    low, high = float(scores.min()), float(scores.max())
    pad = 0.05 * (high - low) + 1e-12
    ax.set_xlim(low - pad, high + 3 * pad)
    ax.annotate("prediction", (float(scores[order[0]]), 0), xytext=(6, 0), textcoords="offset points", va="center",
                fontsize=8)
    ax.set(xlabel="denoising error (lower = better match)")
    ax.set_title(f"test sample {sample}: its error under each class text\ntrue class {names[true]!r} in black",
                 fontsize=10)
    return fig
