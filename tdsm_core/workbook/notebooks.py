"""Helpers the numbered notebooks call: the config of a notebook's run, its figure folder and notes, the demo
data, the experiment tables notebook 03 shows, and the sample explorer of notebook 04.

The headless runner is `workbook.runner`; the every-split sweep and its summary table `workbook.sweep`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


from ..config import ExperimentConfig, load_config, training_differences
from ..runs.pipeline import ensure_demo_data, finished_metrics, read_metrics




def notebook_config(config: str, overrides: Sequence[str] = (), run_dir: str = "",
                    device: str = "") -> ExperimentConfig:
    """The config a notebook works on: `config` with `overrides`, its run folder and device set.

    run_dir (if given) becomes output_dir/name, so every notebook and the runner agree on the folder. A config
    with a skeleton source (skeleton.source) reads the features 00_skeletons exports into the run folder.
    """
    extra = list(overrides)
    if run_dir:
        folder = Path(run_dir).resolve()
        extra += [f"output_dir={folder.parent}", f"name={folder.name}"]
    if device:
        extra.append(f"train.device={device}")
    cfg = load_config(config, extra)
    if cfg.skeleton.source:
        from ..skeletons.chain import in_run_folder

        cfg = in_run_folder(cfg)
    return cfg


def figure_dir(cfg: ExperimentConfig) -> Path:
    """<run>/figures, created."""
    folder = cfg.run_dir() / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class ExperimentResults:
    """What `protocols` and `ablate` wrote for a config, found by their folder names (None/empty if not run)."""

    seeds: dict[str, Any] | None = None  # <name>_seeds/summary.json
    ignored: list[str] = field(default_factory=list)  # tables found but made with other settings: why each was left out
    gzsl: dict[str, Any] | None = None  # GZSL of protocol (a) of this run, or else of the first seed's run
    gzsl_run: Path | None = None
    ablations: dict[str, dict[str, Any]] = field(default_factory=dict)  # study -> <name>_<study>/ablation.json


def experiment_results(cfg: ExperimentConfig) -> ExperimentResults:
    """Seed table, GZSL and ablation tables of a config's experiments, for the evaluation notebook."""
    from ..runs.experiments import STUDIES, ablation_dir, seed_config, seeds_dir

    stem, _, index = cfg.name.rpartition("_seed")
    base = dataclasses.replace(cfg, name=stem) if stem and index.isdigit() else cfg  # a seed's run -> its config
    found = ExperimentResults()
    summary = seeds_dir(base) / "summary.json"
    if summary.is_file():
        found.seeds = _if_same_settings(json.loads(summary.read_text()), base, summary, found.ignored)
    for run_cfg in (cfg, seed_config(base, 0)):
        finished = finished_metrics(run_cfg, "protocols")  # only protocol results made with these settings
        gzsl = (finished or {}).get("protocols", {}).get("final", {}).get("gzsl")
        if gzsl:
            found.gzsl, found.gzsl_run = gzsl, run_cfg.run_dir()
            break
        if finished is None and "protocols" in read_metrics(run_cfg.run_dir()):
            found.ignored.append(f"{run_cfg.run_dir()} holds protocol results made with other settings or by an "
                                 f"older version; its GZSL curve is not shown")
    for study in STUDIES:
        table = ablation_dir(base, study) / "ablation.json"
        if table.is_file():
            kept = _if_same_settings(json.loads(table.read_text()), base, table, found.ignored)
            if kept is not None:
                found.ablations[study] = kept
    return found


EXPERIMENT_FIGURES = ("seeds.png", "gzsl_curve.png", "ablation_*.png")


def remove_undrawn_figures(figures: Path, found: ExperimentResults) -> list[str]:
    """Delete experiment figures of an earlier run of notebook 03 that this run does not draw again (their
    tables are gone or were made with other settings), so the folder never shows them as this run's."""
    drawn = {"seeds.png"} if found.seeds else set()
    if found.gzsl and "skipped" not in found.gzsl:
        drawn.add("gzsl_curve.png")
    drawn |= {f"ablation_{study}.png" for study in found.ablations}
    removed = []
    for pattern in EXPERIMENT_FIGURES:
        for path in sorted(figures.glob(pattern)):
            if path.name not in drawn:
                path.unlink()
                removed.append(path.name)
    return removed


def _if_same_settings(result: dict[str, Any], cfg: ExperimentConfig, path: Path, ignored: list[str]) -> dict | None:
    """`result` when the config it records trained and scored like `cfg`; else None, with the reason in `ignored`
    (a seed table or ablation of other settings must not be shown as this run's)."""
    saved = result.get("config")
    if saved is None:
        ignored.append(f"{path} records no settings (written by an older version); rerun its command to show it")
        return None
    differences = training_differences(saved, cfg)
    if saved.get("eval") != cfg.to_dict()["eval"]:
        differences.append("eval settings")
    if differences:
        ignored.append(f"{path} was made with other settings ({'; '.join(differences[:4])}); not shown")
        return None
    return result


def loss_curve_references(cfg: ExperimentConfig) -> dict[str, float | None]:
    """Reference lines of the loss-curve figure: the error of predicting zero (1.0 under epsilon prediction,
    whose target is unit-variance noise; other targets depend on the data) and the triplet margin."""
    return {"zero_prediction_error": 1.0 if cfg.diffusion.prediction_type == "epsilon" else None,
            "margin": cfg.loss.margin if cfg.loss.triplet_weight > 0 else None}


def figure_note(cfg: ExperimentConfig, metrics: dict[str, Any] | None = None) -> str:
    """One line under every saved figure: which data, which run and seed, and (given the evaluation's
    metrics) which checkpoint and protocol, so a figure found on its own still says what it shows."""
    data = ("SYNTHETIC demo data (features generated from the class texts, not skeletons)" if is_demo_config(cfg)
            else f"features {cfg.data.features}")
    parts = [data, f"run {cfg.name}, seed {cfg.seed}"]
    if metrics:
        parts.append(f"{Path(metrics['checkpoint']).name} at step {metrics['step']}, "
                     f"{metrics['protocol'].split(':')[0]}, {metrics['num_test']} ztest samples")
    return " · ".join(parts)


def is_demo_config(cfg: ExperimentConfig) -> bool:
    """True for the built-in demo: the built-in class list, and a feature folder that is missing or holds demo data."""
    folder = Path(cfg.data.features)
    return cfg.data.class_csv.startswith("builtin:") and (not folder.exists() or (folder / "demo.json").exists())


def prepare_data(cfg: ExperimentConfig) -> str:
    """Write the synthetic demo features when the config is the demo's and they are missing; say what happened."""
    if not is_demo_config(cfg):
        return f"features: {cfg.data.features}"
    made = ensure_demo_data(cfg)
    return f"synthetic demo features {'written to' if made else 'found in'} {cfg.data.features}"



def sample_explorer(run, names: Sequence[str]):
    """An ipywidgets slider over the test samples that draws the chosen sample's denoising errors under every
    candidate class text (`plots.sample_errors`); None when ipywidgets is missing. In a headless run it draws
    sample 0 once."""
    try:
        import ipywidgets
    except ImportError:
        print("ipywidgets is not installed: pip install ipywidgets to pick test samples interactively")
        return None
    from IPython.display import display

    from ..figures import plots

    def show(sample: int = 0):
        display(plots.sample_errors(run.scores[sample], run.classes, names, int(run.labels[sample]), sample))

    return ipywidgets.interact(show, sample=ipywidgets.IntSlider(0, 0, len(run.labels) - 1, description="sample"))
