"""Numbers behind the workbook's figures: data summaries, sanity checks, sensitivity sweeps, embeddings.

Everything here takes loaded data or a trained scorer and returns plain NumPy arrays or pandas
tables; the notebooks display them and `figures.plots` draws them. Subsampling always goes through a
seeded generator and is class-balanced, so a figure is the same on every run.

The "aligned view" is what TDSM's inference gives each test sample: its vector of denoising errors
over the candidate classes (one column per class text). The class whose text denoises the sample
best is the prediction; ranking the columns is text retrieval for that sample.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..config import EvalConfig, ExperimentConfig
from ..data.features import Benchmark, balanced_subsample, sanity_checks  # noqa: F401 (the notebooks call them from here)
from ..diffusion import NoiseSchedule
from ..errors import DataError
from ..evaluate import ZeroShotScorer, calibrate_scores, fixed_noises, zero_shot_metrics
from ..io import resolve_device
from ..model import Denoiser
from ..runs.pipeline import checkpoint_path, seen_unseen_table
from ..runs.metrics_log import read_records
from ..data.text import ClassTextFeatures
from ..runs.build import build_schedule, load_trained_model, select_text_features

# ----------------------------------------------------------------------------------------------
# Data summaries and sanity checks


def class_table(benchmark: Benchmark) -> pd.DataFrame:
    """One row per class: id, name, seen/unseen, samples per part and both prompts."""
    table = pd.DataFrame(seen_unseen_table(benchmark))
    table["motion prompt"] = benchmark.prompts.motion
    table["definition prompt"] = benchmark.prompts.definition
    return table.set_index("class")


def feature_statistics(benchmark: Benchmark) -> pd.DataFrame:
    """Per part: sample and class counts and summary statistics of the feature values and norms."""
    rows = []
    for part, fs in benchmark.parts().items():
        x = fs.features
        norms = np.linalg.norm(x, axis=1)
        rows.append({
            "part": part, "samples": len(fs), "classes": int(len(np.unique(fs.labels))), "dim": x.shape[1],
            "mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max()),
            "norm mean": float(norms.mean()), "norm std": float(norms.std()),
            "zero fraction": float((x == 0).mean()),
        })
    return pd.DataFrame(rows).set_index("part")




def prompt_similarity(text: ClassTextFeatures, benchmark: Benchmark, threshold: float = 0.9) -> pd.DataFrame:
    """Cosine similarity of every pair of classes' pooled text, per prompt (motion and definition, or name and
    description for idx,name,description lists) and for the
    concatenated vector the denoiser reads, most similar first; `near_duplicate` flags pairs at or above
    `threshold` in either prompt. A mean-pooling encoder gives word-order opposites ("sit down" / "stand up
    from sitting") nearly the same vector: such a pair is hard for any text-conditioned classifier, and a
    flagged unseen pair explains a class that scores 0%."""
    pooled = text.pooled.double()
    half = pooled.shape[1] // 2
    def cosine(x):
        x = x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
        return (x @ x.T).numpy()
    first, second = ("name", "description") if benchmark.prompts.named else ("motion", "definition")
    sims = {first: cosine(pooled[:, :half]), second: cosine(pooled[:, half:]), "both": cosine(pooled)}
    unseen = set(benchmark.unseen.tolist())
    names = benchmark.class_names
    rows = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            status = {True: "unseen", False: "seen"}
            rows.append({"class a": names[i], "class b": names[j],
                         "pair": f"{status[i in unseen]}-{status[j in unseen]}",
                         **{f"cosine {k}": float(v[i, j]) for k, v in sims.items()}})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["near_duplicate"] = (table[f"cosine {first}"] >= threshold) | (table[f"cosine {second}"] >= threshold)
    return table.sort_values("cosine both", ascending=False, ignore_index=True)


def training_history(run_dir: str | Path) -> pd.DataFrame:
    """The run's metrics.jsonl as a table indexed by step (loss rows and validation rows merged)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise DataError(f"{path} does not exist; train the run first (02_training or `python -m tdsm_core train`).")
    records = read_records(path)  # a line cut short by a killed run is skipped
    if not records:
        raise DataError(f"{path} holds no complete record yet; train the run for at least train.log_every steps.")
    return pd.DataFrame(records).groupby("step").first().sort_index()


# ----------------------------------------------------------------------------------------------
# Scores of a run


@dataclass
class RunScores:
    """Denoising errors of every ztest sample against every unseen class (lower = better match)."""

    scores: np.ndarray  # (N, K)
    labels: np.ndarray  # (N,) true class ids
    classes: np.ndarray  # (K,) class ids of the score columns
    predictions: np.ndarray  # (N,) predicted class ids


def load_scores(run_dir: str | Path) -> RunScores:
    """Read scores_ztest.npz written by the evaluation."""
    path = Path(run_dir) / "scores_ztest.npz"
    if not path.exists():
        raise DataError(f"{path} does not exist; evaluate the run first "
                        f"(03_evaluation or `python -m tdsm_core evaluate`).")
    with np.load(path) as data:
        return RunScores(data["scores"], data["labels"], data["classes"], data["predictions"])


def per_class_counts(metrics: dict) -> dict[str, int]:
    """Test samples of each unseen class, by name, from an evaluation's metrics (its confusion matrix rows)."""
    rows = np.asarray(metrics["confusion"]).sum(axis=1)
    return {name: int(n) for name, n in zip(metrics["unseen_names"], rows)}


def relative_errors(scores: np.ndarray) -> np.ndarray:
    """Each sample's errors standardised across the candidate classes (its own scale removed)."""
    centred = scores - scores.mean(axis=1, keepdims=True)
    return centred / (scores.std(axis=1, keepdims=True) + 1e-12)


def nearest_texts(scores: np.ndarray, classes: np.ndarray, names: Sequence[str],
                  k: int = 5) -> list[list[tuple[int, str, float]]]:
    """Per sample, the k candidate classes whose text denoises it best: (class id, name, error)."""
    order = np.argsort(scores, axis=1, kind="stable")[:, :k]
    return [[(int(classes[j]), names[int(classes[j])], float(row_scores[j])) for j in row]
            for row, row_scores in zip(order, scores)]


def class_hover(labels: np.ndarray, unseen: Sequence[int], names: Sequence[str]) -> pd.DataFrame:
    """Hover rows for points of known class: the class name and whether it is seen or unseen."""
    unseen = set(int(c) for c in unseen)
    return pd.DataFrame({"class": [names[int(c)] for c in labels],
                         "status": ["unseen" if int(c) in unseen else "seen" for c in labels]})


def hover_table(run: RunScores, rows: np.ndarray, names: Sequence[str], k: int = 3) -> pd.DataFrame:
    """For the test samples `rows`: sample index, true and predicted class, and the k nearest class texts
    with their errors (one line, for a hover label)."""
    rows = np.asarray(rows, dtype=np.int64)
    top = nearest_texts(run.scores[rows], run.classes, names, k)
    return pd.DataFrame({
        "sample": rows,
        "true": [names[int(c)] for c in run.labels[rows]],
        "predicted": [names[int(c)] for c in run.predictions[rows]],
        "correct": run.predictions[rows] == run.labels[rows],
        f"top{k}": [" | ".join(f"{name} ({error:.4f})" for _, name, error in ranking) for ranking in top],
    })


def retrieval_examples(run: RunScores, names: Sequence[str], count: int = 8, k: int = 5, seed: int = 0,
                       prompts: Sequence[str] | None = None) -> pd.DataFrame:
    """A seeded pick of test samples, half retrieved correctly and half not, with their top-k class texts.

    One row per (sample, rank); `prompts` (per class id) adds the prompt each retrieved text stands for.
    """
    rng = np.random.default_rng(seed)
    correct = np.flatnonzero(run.predictions == run.labels)
    wrong = np.flatnonzero(run.predictions != run.labels)
    take_wrong = min(len(wrong), count // 2)
    take_correct = min(len(correct), count - take_wrong)
    picked = np.concatenate([rng.choice(correct, take_correct, replace=False),
                             rng.choice(wrong, take_wrong, replace=False)]).astype(np.int64)
    top = nearest_texts(run.scores[picked], run.classes, names, k)
    rows = []
    for sample, ranking in zip(picked, top):
        true = int(run.labels[sample])
        true_column = int(np.flatnonzero(run.classes == true)[0])
        true_rank = 1 + np.argsort(run.scores[sample], kind="stable").tolist().index(true_column)
        for rank, (cls, name, error) in enumerate(ranking, start=1):
            rows.append({"sample": int(sample), "true class": names[true], "true rank": true_rank,
                         "rank": rank, "text": name, "error": error, "is true class": cls == true,
                         **({"prompt": prompts[cls]} if prompts is not None else {})})
    return pd.DataFrame(rows)


def heatmap_rows(labels: np.ndarray, classes: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Rows for a samples x classes heatmap: `per_class` seeded samples of each class, grouped in column order."""
    rng = np.random.default_rng(seed)
    groups = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return np.concatenate([np.sort(g) for g in groups]).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Sensitivity of the zero-shot accuracy to the inference settings


@dataclass
class Sensitivity:
    """Accuracy against the inference timestep and the number of noises, on a subsample of ztest."""

    table: pd.DataFrame  # rows (setting, value, top1, top5); setting is "timestep" or "noises"
    num_samples: int  # ztest samples scored
    num_total: int  # ztest samples in the split
    timestep: int  # the configured inference timestep (held fixed while the noises vary)
    num_noise: int  # the configured number of noises (held fixed while t varies)

    def as_dict(self) -> dict:
        """A JSON-ready form (for metrics.json)."""
        return {"num_samples": self.num_samples, "num_total": self.num_total, "timestep": self.timestep,
                "num_noise": self.num_noise, "rows": self.table.to_dict(orient="records")}


def sensitivity_sweep(model: Denoiser, schedule: NoiseSchedule, text: ClassTextFeatures, settings: EvalConfig,
                      features: np.ndarray, labels: np.ndarray, classes: np.ndarray,
                      timesteps: Sequence[int], max_noises: int, reference: np.ndarray | None = None) -> pd.DataFrame:
    """Top-1/top-5 against the timestep t (at the configured noises) and the number of noises (at the configured t).

    The noise counts cost one scoring pass in all: the n noises of a scorer with num_noise = n are the
    first n of the max_noises fixed noises (one generator, drawn in order), so each noise is scored
    alone once and the accuracy for n noises comes from the sum of the first n error matrices. With
    eval.calibration on, `reference` (the training features) is scored the same way and each sum is calibrated.
    """
    rows = []
    for t in timesteps:
        scorer = ZeroShotScorer(model, schedule, text, settings, reference=reference, timestep=int(t))
        result = zero_shot_metrics(scorer.score(features, classes), labels, classes)
        rows.append({"setting": "timestep", "value": int(t), "top1": result.top1, "top5": result.top5})
    scorer = ZeroShotScorer(model, schedule, text, settings, reference=reference, num_noise=1, cascade_top_k=0)
    noises = fixed_noises(max_noises, model.config.feature_dim, settings.noise_seed)
    total = np.zeros((len(features), len(classes)), dtype=np.float64)
    reference_total = 0.0
    for n in range(1, max_noises + 1):
        scorer.noises = noises[n - 1:n]
        total += scorer.raw_score(features, classes)  # raw errors; calibrated below, once per sum
        if scorer.calibration != "none":
            reference_total = reference_total + scorer.raw_score(scorer.reference, classes)
        result = zero_shot_metrics(calibrate_scores(total, reference_total, scorer.calibration), labels, classes)
        rows.append({"setting": "noises", "value": n, "top1": result.top1, "top5": result.top5})
    return pd.DataFrame(rows)


def run_sensitivity(cfg: ExperimentConfig, benchmark: Benchmark, text: ClassTextFeatures, timesteps: Sequence[int],
                    max_noises: int, max_samples: int = 240, checkpoint: str = "", seed: int = 0) -> Sensitivity:
    """Load the run's evaluated checkpoint and sweep t and the number of noises on a balanced ztest subsample."""
    device = resolve_device(cfg.train.device)
    model, _, _ = load_trained_model(checkpoint_path(cfg, checkpoint or cfg.eval.checkpoint), device)
    text = select_text_features(text, cfg.train.text_features).to(device)
    rows = balanced_subsample(benchmark.ztest.labels, max_samples, seed)
    table = sensitivity_sweep(model, build_schedule(cfg), text, cfg.eval, benchmark.ztest.features[rows],
                              benchmark.ztest.labels[rows], benchmark.unseen, timesteps, max_noises,
                              reference=benchmark.train.features)
    return Sensitivity(table, len(rows), len(benchmark.ztest), cfg.eval.timestep, cfg.eval.num_noise)


# ----------------------------------------------------------------------------------------------
# Two-dimensional embeddings


def umap_embedding(x: np.ndarray, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1,
                   metric: str = "euclidean", n_epochs: int = 200) -> np.ndarray:
    """(N, D) -> (N, 2) UMAP coordinates with a fixed random_state (the first call per process compiles numba code)."""
    import umap  # imported here: importing umap alone costs seconds

    x = np.asarray(x, dtype=np.float32)
    if metric == "cosine":  # euclidean on unit vectors ranks neighbours the same, and reuses the compiled metric
        x, metric = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), "euclidean"
    if len(x) < 4:
        raise DataError(f"UMAP needs at least 4 points, got {len(x)}; raise the number of points to embed.")
    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(x) - 1), min_dist=min_dist, metric=metric,
                        n_epochs=n_epochs, random_state=seed, init="spectral" if len(x) > 20 else "random")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")  # a fixed random_state means one thread
        warnings.filterwarnings("ignore", message=".*k >= N.*")
        return reducer.fit_transform(x)


def skeleton_points(benchmark: Benchmark, max_points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a balanced subsample of train (seen classes) and ztest (unseen classes) together."""
    features = np.concatenate([benchmark.train.features, benchmark.ztest.features])
    labels = np.concatenate([benchmark.train.labels, benchmark.ztest.labels])
    rows = balanced_subsample(labels, max_points, seed)
    return features[rows], labels[rows]
