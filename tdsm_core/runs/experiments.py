"""Repeated runs: several seeds of one config, and the paper's ablations, each as one call.

Seeds: seed k of config `name` runs as `<name>_seed<k>` with `seed = cfg.seed + k`; results are
reported as mean ± standard deviation (sample std, ddof=1) with every seed's figure.
Ablations (as in the TDSM paper): which loss terms, the number of training timesteps T, the
inference timestep t, the number of noises, and which text features condition the denoiser.
The last two need no retraining: the trained models of the base variant are rescored.
Tables go to `<output_dir>/<name>_<study>/` as CSV and Markdown, with a figure.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import ExperimentConfig, config_from_dict
from ..evaluate import zero_shot_metrics
from ..inputs import check_output_folder
from ..io import atomic_write_text, resolve_device, write_json
from .pipeline import finished_metrics, load_data, load_text, run_all
from .protocols import run_protocols
from .build import load_trained_model, make_scorer


def aggregate(values: list[float]) -> dict[str, Any]:
    """mean, sample std (0 for one value) and the values themselves."""
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "n": int(len(array)), "values": [float(v) for v in array]}


def format_mean_std(stats: dict[str, Any], digits: int = 2) -> str:
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def seed_config(cfg: ExperimentConfig, index: int) -> ExperimentConfig:
    """Seed `index` of a config: its own run folder <name>_seed<index> and seed."""
    return dataclasses.replace(cfg, name=f"{cfg.name}_seed{index}", seed=cfg.seed + index)


def seeds_dir(cfg: ExperimentConfig) -> Path:
    """Where `run_seeds` writes the seed table and figures."""
    return Path(cfg.output_dir) / f"{cfg.name}_seeds"


def ablation_dir(cfg: ExperimentConfig, study: str) -> Path:
    """Where `run_ablation` writes the table and figure of one study."""
    return Path(cfg.output_dir) / f"{cfg.name}_{study}"


def with_overrides(cfg: ExperimentConfig, overrides: dict[str, Any], name: str) -> ExperimentConfig:
    """A copy of cfg with dotted-key overrides applied (validated like a config file) and a new name."""
    values = cfg.to_dict()
    for key, value in overrides.items():
        node = values
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    values["name"] = name
    return config_from_dict(values)


# ----------------------------------------------------------------------------------------------
# Seeds

def run_seeds(cfg: ExperimentConfig, num_seeds: int = 3, protocols: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate `num_seeds` seeds; with protocols, report (a), (b), (c) and GZSL side by side."""
    check_output_folder(seeds_dir(cfg), "seed table folder", "set output_dir to a folder you can write to")
    started = time.time()
    benchmark = load_data(cfg)
    text = load_text(cfg, benchmark)
    per_seed = []
    for k in range(num_seeds):
        scfg = seed_config(cfg, k)
        if protocols:
            done = finished_metrics(scfg, "protocols")
            result = done["protocols"] if done else run_protocols(scfg, benchmark, text, progress=progress)
        else:
            result = finished_metrics(scfg) or run_all(scfg, progress=progress)
        per_seed.append(result)
    summary = {"name": cfg.name, "config": cfg.to_dict(), "num_seeds": num_seeds,
               "seeds": [cfg.seed + k for k in range(num_seeds)],
               "chance_top1": 100.0 / len(benchmark.unseen), "rows": _seed_rows(per_seed, protocols),
               "wall_seconds": round(time.time() - started, 1)}
    out = seeds_dir(cfg)
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", seeds_markdown(summary))
    write_seed_figures(summary, per_seed, out)
    return summary


def write_seed_figures(summary: dict[str, Any], per_seed: list[dict], out: Path) -> None:
    """seeds.png (spread of every metric) and, with protocols, gzsl_seed0.png (the calibration curve)."""
    from ..figures.plots import gzsl_curve, save_figure, seed_spread

    save_figure(seed_spread(summary["rows"], summary["chance_top1"],
                            title=f"{summary['name']}: {summary['num_seeds']} seeds"), out / "seeds.png")
    gzsl = per_seed[0].get("final", {}).get("gzsl", {}) if per_seed else {}
    if "curve_on_gtest" in gzsl:
        save_figure(gzsl_curve(gzsl["curve_on_gtest"], gzsl.get("calibrated"), gzsl.get("uncalibrated"),
                               title=f"{summary['name']} (seed {summary['seeds'][0]}), protocol (a)"),
                    out / "gzsl_seed0.png")


def _seed_rows(per_seed: list[dict], protocols: bool) -> list[dict[str, Any]]:
    if not protocols:
        return [{"metric": "ZSL top-1, (a) final checkpoint", **aggregate([r["zsl_top1"] for r in per_seed])}]
    rows = [{"metric": "ZSL top-1, (a) final checkpoint", **aggregate([r["final"]["zsl_top1"] for r in per_seed])},
            {"metric": "ZSL top-1, (b) validation protocol", **aggregate([r["validation"]["zsl_top1"] for r in per_seed])}]
    if all("paper" in r for r in per_seed):
        spacing = sorted({(r["paper"].get("evaluations"), r["paper"].get("every_steps")) for r in per_seed}, key=str)
        how = "; ".join(f"best of {n} evaluations, every {k} steps" for n, k in spacing if n and k)
        rows.append({"metric": f"ZSL top-1, (c) paper protocol (selects on test; optimistic{'; ' + how if how else ''})",
                     **aggregate([r["paper"]["zsl_top1"] for r in per_seed])})
    if all("calibrated" in r["final"].get("gzsl", {}) for r in per_seed):
        for key, label in (("seen_top1", "seen"), ("unseen_top1", "unseen"), ("harmonic_mean", "harmonic mean")):
            rows.append({"metric": f"GZSL {label}, (a) final, calibrated",
                         **aggregate([r["final"]["gzsl"]["calibrated"][key] for r in per_seed])})
        rows.append({"metric": "GZSL harmonic mean, (a) final, uncalibrated",
                     **aggregate([r["final"]["gzsl"]["uncalibrated"]["harmonic_mean"] for r in per_seed])})
    return rows


def seeds_markdown(summary: dict[str, Any]) -> str:
    lines = [f"{summary['name']}: {summary['num_seeds']} seeds {summary['seeds']} (chance {summary['chance_top1']:.2f}%)",
             "", "| metric | mean ± std | per seed |", "|---|---|---|"]
    for row in summary["rows"]:
        lines.append(f"| {row['metric']} | {format_mean_std(row)} | {', '.join(f'{v:.2f}' for v in row['values'])} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Ablations

TRAINING_STUDIES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "loss": [("diffusion only", {"loss.triplet_weight": 0.0}), ("triplet only", {"loss.diffusion_weight": 0.0}),
             ("both", {})],
    "timesteps": [(f"T={t}", {"diffusion.num_timesteps": t, "eval.timestep": t // 2}) for t in (1, 10, 50, 100, 500)],
    "text": [("pooled only", {"train.text_features": "pooled"}), ("tokens only", {"train.text_features": "tokens"}),
             ("both", {})],
}
RESCORING_STUDIES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "inference_t": [(f"t={t}", {"timestep": t}) for t in (0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 49)],
    "noises": [(f"{n} noise{'s' if n > 1 else ''}", {"num_noise": n}) for n in (1, 2, 3, 5, 10)],
}
STUDIES = tuple(TRAINING_STUDIES) + tuple(RESCORING_STUDIES)


def _variant_name(cfg: ExperimentConfig, study: str, index: int) -> str:
    return f"{cfg.name}_{study}{index}"


def run_ablation(cfg: ExperimentConfig, study: str, num_seeds: int = 3, progress: bool = True,
                 plot: Callable[..., Any] | None = None) -> dict[str, Any]:
    """One ablation over seeds; returns and writes the table (and a figure when `plot` is given)."""
    if study not in STUDIES:
        from ..errors import ConfigError

        raise ConfigError(f"unknown ablation {study!r}; choose one of {', '.join(STUDIES)}.")
    check_output_folder(ablation_dir(cfg, study), "ablation folder", "set output_dir to a folder you can write to")
    started = time.time()
    benchmark = load_data(cfg)
    text = load_text(cfg, benchmark)
    rows = []
    if study in TRAINING_STUDIES:
        for index, (label, overrides) in enumerate(TRAINING_STUDIES[study]):
            values, tied = [], []
            variant = with_overrides(cfg, overrides, _variant_name(cfg, study, index))
            same_as_base = dataclasses.replace(variant, name=cfg.name) == cfg  # e.g. "both", T=50: reuse the seed runs
            for k in range(num_seeds):
                vcfg = seed_config(cfg if same_as_base else variant, k)
                metrics = finished_metrics(vcfg) or run_all(vcfg, progress=progress)
                values.append(metrics["zsl_top1"])
                tied.append(metrics.get("zsl_tied_percent", 0.0))
            rows.append({"variant": label, "overrides": overrides, **aggregate(values), "tied": float(np.mean(tied))})
    else:
        device = resolve_device(cfg.train.device)
        models = []
        for k in range(num_seeds):  # the base config's seed runs, trained once and rescored
            scfg = seed_config(cfg, k)
            if finished_metrics(scfg) is None:
                run_all(scfg, progress=progress)
            models.append(load_trained_model(scfg.run_dir() / "last.pt", device)[0])
        for label, overrides in RESCORING_STUDIES[study]:
            values, tied = [], []
            for model in models:
                scorer = make_scorer(cfg, model, text, benchmark.train.features, **overrides)
                scores = scorer.score(benchmark.ztest.features, benchmark.unseen)
                result = zero_shot_metrics(scores, benchmark.ztest.labels, benchmark.unseen)
                values.append(result.top1)
                tied.append(result.tied)
            rows.append({"variant": label, "overrides": overrides, **aggregate(values), "tied": float(np.mean(tied))})
    table = {"name": cfg.name, "config": cfg.to_dict(), "study": study, "num_seeds": num_seeds,
             "protocol": "(a) final checkpoint, ztest once",
             "chance_top1": 100.0 / len(benchmark.unseen), "rows": rows, "wall_seconds": round(time.time() - started, 1)}
    out = ablation_dir(cfg, study)
    write_json(out / "ablation.json", table)
    atomic_write_text(out / "ablation.md", ablation_markdown(table))
    atomic_write_text(out / "ablation.csv", "variant,mean,std,n,values\n" + "".join(
        f"{r['variant']},{r['mean']:.4f},{r['std']:.4f},{r['n']},{' '.join(f'{v:.4f}' for v in r['values'])}\n"
        for r in rows))
    if plot is not None:
        plot(table, out / "ablation.png")
    return table


def ablation_markdown(table: dict[str, Any]) -> str:
    lines = [f"Ablation '{table['study']}' on {table['name']}: ZSL top-1 (%), {table['num_seeds']} seeds, "
             f"{table['protocol']}; chance {table['chance_top1']:.2f}%", "",
             "| variant | mean ± std | per seed | best class tied (% of samples) |", "|---|---|---|---|"]
    for row in table["rows"]:
        lines.append(f"| {row['variant']} | {format_mean_std(row)} | {', '.join(f'{v:.2f}' for v in row['values'])} "
                     f"| {row.get('tied', 0.0):.1f} |")
    if any(row.get("tied", 0.0) >= 50 for row in table["rows"]):
        lines += ["", "A variant with most samples tied predicts one class for everything: its denoiser gives every "
                      "class the same error (it ignores the text), so its accuracy is that class's share of the test set."]
    return "\n".join(lines) + "\n"
