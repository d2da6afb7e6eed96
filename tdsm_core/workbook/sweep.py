"""Every split config (and seed) through the notebooks, one GPU each when there are several, and the summary
table of all of them beside the paper's figures (outputs/summary.{csv,md})."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from ..config import load_config
from ..errors import ConfigError, TDSMError
from ..inputs import check_output_folder
from ..io import atomic_write_text
from ..runs.experiments import aggregate
from ..runs.pipeline import read_metrics
from ..data.splits import PAPER_RESULTS, SPLITS

from .runner import PROJECT_ROOT, NotebookError, run_notebooks



def seed_runs(config: str | Path, seeds: int, overrides: Sequence[str] = ()) -> list[tuple[int, Path, list[str]]]:
    """(seed, run folder, overrides) for `seeds` seeds from the config's own; one seed keeps the config's folder."""
    if seeds < 1:
        raise ConfigError(f"the number of seeds must be at least 1, got {seeds}.")
    cfg = load_config(config, list(overrides))
    if seeds == 1:
        return [(cfg.seed, cfg.run_dir().resolve(), list(overrides))]
    from ..runs.experiments import seed_config  # the same folders as `python -m tdsm_core protocols`

    runs = [seed_config(cfg, i) for i in range(seeds)]
    return [(run.seed, run.run_dir().resolve(), list(overrides) + [f"seed={run.seed}"]) for run in runs]


def default_split_configs(root: Path = PROJECT_ROOT) -> list[Path]:
    """The config of every benchmark split in configs/ (files named after a built-in split)."""
    return sorted(p for p in (root / "configs").glob("*.yaml") if p.stem in SPLITS)


def visible_gpus() -> list[str]:
    """Ids of the GPUs this process may use (CUDA_VISIBLE_DEVICES order), empty without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [g.strip() for g in listed.split(",") if g.strip()] if listed else []
    return ids or [str(i) for i in range(torch.cuda.device_count())]


def _run_in_subprocess(config: str | Path, overrides: Sequence[str], run_dir: Path, params: dict[str, Any],
                       force: bool, gpu: str, log: Callable[[str], None]) -> str | None:
    """One run as `python -m tdsm_core notebooks` on one GPU; returns an error line or None."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "tdsm_core", "notebooks", str(Path(config).resolve()), "--device", "cuda",
               "--set", f"output_dir={run_dir.parent}", "--set", f"name={run_dir.name}"]
    for item in overrides:
        command += ["--set", item]
    for key, value in params.items():
        command += ["--param", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    if force:
        command.append("--force")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu)
    log(f"== {run_dir.name} on GPU {gpu}")
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=PROJECT_ROOT)
    (run_dir / "runner.log").parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "runner.log", result.stdout + result.stderr)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        return f"{run_dir.name}: {lines[-1] if lines else 'failed'} (log: {run_dir / 'runner.log'})"
    log(f"== {run_dir.name} finished on GPU {gpu}")
    return None


def run_all(configs: Sequence[str | Path], seeds: int = 1, overrides: Sequence[str] = (), device: str = "",
            params: dict[str, Any] | None = None, force: bool = False, summary_dir: str | Path | None = None,
            log: Callable[[str], None] = print, parallel: bool = False) -> pd.DataFrame:
    """Run the notebooks of every config for every seed, then write summary.csv and summary.md.

    parallel: with several visible GPUs, run one split/seed per GPU at a time (each in its own process
    and run folder); on CPU, or with one GPU, runs go one at a time.
    """
    if summary_dir is not None:  # checked now, not after every run has finished
        check_output_folder(summary_dir, "summary folder (--summary-dir)", "pass --summary-dir a folder you can write to")
    jobs = [(config, seed, run_dir, seed_overrides) for config in configs
            for seed, run_dir, seed_overrides in seed_runs(config, seeds, overrides)]
    folders = [job[2] for job in jobs]
    if len(set(folders)) != len(folders):
        raise ConfigError(f"two runs would write the same folder ({sorted({f for f in folders if folders.count(f) > 1})}); "
                          f"give the configs different names.")
    gpus = visible_gpus()
    if parallel and len(gpus) > 1:
        from concurrent.futures import ThreadPoolExecutor
        from queue import Queue

        free: Queue = Queue()
        for gpu in gpus:
            free.put(gpu)

        def work(job) -> str | None:
            gpu = free.get()
            try:
                return _run_in_subprocess(job[0], job[3], job[2], dict(params or {}), force, gpu, log)
            finally:
                free.put(gpu)

        with ThreadPoolExecutor(max_workers=len(gpus)) as pool:
            failures = {job[2]: failure for job, failure in zip(jobs, pool.map(work, jobs)) if failure}
    else:
        if parallel:
            log(f"parallel runs need several GPUs ({len(gpus)} visible): running one at a time")
        failures = {}  # run folder -> what went wrong
        for config, seed, run_dir, seed_overrides in jobs:  # a failed run does not stop the others
            log(f"== {Path(config).name}, seed {seed} -> {run_dir}")
            try:
                run_notebooks(config, seed_overrides, device, params, force, run_dir=run_dir, log=log)
            except TDSMError as exc:
                log(f"error: {exc}")
                failures[run_dir] = f"{run_dir.name}: {exc}"
    run_dirs = [job[2] for job in jobs if job[2] not in failures and "zsl_top1" in read_metrics(job[2])]
    table = pd.DataFrame()
    if run_dirs:
        table = summary_table(run_dirs)
        out = Path(summary_dir) if summary_dir is not None else run_dirs[0].parent
        write_summary(table, out, run_dirs)
        log(f"summary of {len(run_dirs)} finished run(s): {out / 'summary.csv'} and {out / 'summary.md'}")
    if failures:
        listed = "; ".join(failures.values())
        raise NotebookError(f"{len(failures)} of {len(jobs)} runs failed"
                            f"{' (the others finished and are summarised)' if run_dirs else ''}: {listed} Fix them "
                            f"and run the same command again; what finished is skipped.")
    return table


def summary_table(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """One row per split: our top-1/top-5 (mean and std over seeds) beside the paper's TDSM top-1."""
    rows = []
    for run_dir in map(Path, run_dirs):
        metrics = read_metrics(run_dir)
        if "zsl_top1" not in metrics:
            raise NotebookError(f"{run_dir / 'metrics.json'} has no zero-shot result; "
                                f"run that config's notebooks first.")
        config = run_dir / "config.yaml"
        synthetic = config.exists() and (Path(load_config(config).data.features) / "demo.json").exists()
        rows.append({"split": metrics["split"], "run": metrics["run"], "top1": metrics["zsl_top1"],
                     "top5": metrics["zsl_top5"], "chance": metrics["chance_top1"], "step": metrics["step"],
                     "paper_protocol_top1": metrics.get("paper_protocol", {}).get("zsl_top1"),
                     "data": "synthetic demo" if synthetic else "features"})
    runs = pd.DataFrame(rows)
    table = []
    for split, group in runs.groupby("split", sort=False):
        spec = SPLITS.get(split)
        table.append({
            "split": split, "benchmark": spec.label if spec else split, "data": group["data"].iloc[0],
            "seeds": len(group), "steps": int(group["step"].max()),
            "top1_mean": group["top1"].mean(), "top1_std": aggregate(group["top1"].tolist())["std"],
            "top5_mean": group["top5"].mean(), "top5_std": aggregate(group["top5"].tolist())["std"],
            "chance_top1": group["chance"].iloc[0],
            "paper_protocol_top1_mean": group["paper_protocol_top1"].dropna().mean(),  # NaN when none was logged
            "paper_tdsm_top1": PAPER_RESULTS["TDSM"].get(split),
        })
    return pd.DataFrame(table)


def write_summary(table: pd.DataFrame, out_dir: str | Path, run_dirs: Sequence[str | Path] = ()) -> None:
    """summary.csv and a Markdown table (summary.md) beside it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "summary.csv", table.to_csv(index=False, float_format="%.2f"))
    lines = ["# Zero-shot top-1 accuracy (%) per split", "",
             "Ours: final checkpoint of the fixed schedule, evaluated once on ztest (mean ± std over seeds). "
             "Paper: TDSM as published, under the paper's protocol (best ztest accuracy during training). "
             "Rows on synthetic demo data are a pipeline check, not comparable with the paper.", "",
             "| split | benchmark | data | seeds | steps | ours top-1 | ours top-5 | chance | paper TDSM top-1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        paper = "-" if pd.isna(r.paper_tdsm_top1) else f"{r.paper_tdsm_top1:.2f}"
        lines.append(f"| {r.split} | {r.benchmark} | {r.data} | {r.seeds} | {r.steps} "
                     f"| {r.top1_mean:.2f} ± {r.top1_std:.2f} | {r.top5_mean:.2f} ± {r.top5_std:.2f} "
                     f"| {r.chance_top1:.2f} | {paper} |")
    if run_dirs:
        lines += ["", "Runs: " + ", ".join(f"`{Path(d)}`" for d in run_dirs)]
    atomic_write_text(out_dir / "summary.md", "\n".join(lines) + "\n")


