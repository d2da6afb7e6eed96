"""The numbered notebooks as a pipeline: headless runs through papermill, resumable, and a summary of all splits.

One run is one config (and seed) in its run folder `cfg.run_dir()`:

    <run>/notebooks/NN_name.ipynb       executed notebooks
    <run>/notebooks/NN_name.done.json   done-marker: the notebook finished with these parameters
    <run>/notebooks/kernel.log          what the kernels print outside the cells (kept off the terminal)
    <run>/figures/*.png                 the figures the notebooks save
    <run>/metrics.json                  zero-shot metrics (03_evaluation)

A notebook whose done-marker matches its parameters and source is skipped, so running the same
command again continues where a failure stopped (training also resumes from its checkpoint); once
one notebook runs, every later one runs too, since its inputs may have changed. `force` redoes all.
A failing cell raises `NotebookError` naming the notebook and the cell; what ran before is kept.

Notebooks run with their own folder as working directory, so their default `config` parameter,
"../configs/demo.yaml", is the same file in JupyterLab and here; the runner passes absolute paths.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd

from .config import ExperimentConfig, load_config, parse_overrides, training_differences
from .errors import ConfigError, TDSMError
from .inputs import check_output_folder, read_text
from .io import atomic_write_text, check_device, write_json
from .lock import RunLock, check_writable_folder
from .experiments import aggregate
from .pipeline import ensure_demo_data, finished_metrics, read_metrics
from .splits import PAPER_RESULTS, SPLITS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
# The kernel talks to papermill over TCP on localhost, and ipykernel logs a warning about unencrypted TCP each
# time it starts: once per notebook. Only that log level is raised; kernel errors still reach kernel.log.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
KERNEL = "python3"
KERNEL_LOG = "kernel.log"  # <run>/notebooks/kernel.log: what the kernels print outside the notebooks' cells
# parameters every notebook declares; the runner fills them for each run
COMMON_PARAMETERS = ("config", "overrides", "run_dir", "device")
SKELETON_NOTEBOOKS = {"00_skeletons"}  # run only for configs with a skeleton source; they export the features


class NotebookError(TDSMError):
    """A notebook cell failed during a headless run."""


# ----------------------------------------------------------------------------------------------
# Used inside the notebooks


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
        from .skeleton_zsl import in_run_folder

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
    from .experiments import STUDIES, ablation_dir, seed_config, seeds_dir

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


# ----------------------------------------------------------------------------------------------
# Headless runs


def setup_environment(root: Path = PROJECT_ROOT) -> None:
    """Keep Jupyter, IPython, matplotlib and numba state inside the project (unless already set), offline."""
    cache = root / ".cache"
    defaults = {"IPYTHONDIR": cache / "ipython", "JUPYTER_CONFIG_DIR": cache / "jupyter" / "config",
                "JUPYTER_DATA_DIR": cache / "jupyter" / "data", "JUPYTER_RUNTIME_DIR": cache / "jupyter" / "runtime",
                "MPLCONFIGDIR": cache / "matplotlib", "NUMBA_CACHE_DIR": cache / "numba"}
    for name, value in defaults.items():
        Path(os.environ.setdefault(name, str(value))).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # kernels start in notebooks/: without this they would import whichever tdsm_core the environment has
    # installed (with several checkouts sharing one venv, another checkout's code), not this project's
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(root) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(root), *paths])


def notebook_paths(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks NN_*.ipynb, in the order they run."""
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise NotebookError(f"no numbered notebooks (NN_name.ipynb) in {folder}; run from a checkout of the project.")
    return paths


def strip_outputs(paths: Sequence[Path] | None = None) -> list[Path]:
    """Clear outputs, execution counts and run metadata of notebooks (default: the numbered ones); return those changed.

    Committed notebooks carry no outputs: run this before committing a notebook edited in JupyterLab.
    """
    import nbformat

    changed = []
    for path in paths if paths is not None else notebook_paths():
        path = Path(path)
        if path.is_dir():
            raise NotebookError(f"{path} is a folder; pass notebook files (.ipynb), or nothing for notebooks/NN_*.ipynb.")
        if not path.is_file():
            raise NotebookError(f"notebook {path} does not exist; pass existing .ipynb files, or nothing for "
                                f"notebooks/NN_*.ipynb.")
        try:
            notebook = nbformat.reads(read_text(path, "notebook", "pass a notebook file you can read"), as_version=4)
        except (ValueError, AttributeError, KeyError, TypeError, nbformat.ValidationError) as exc:
            raise NotebookError(f"{path} is not a Jupyter notebook ({type(exc).__name__}); pass .ipynb files saved by "
                                f"Jupyter.") from None
        before = nbformat.writes(notebook)
        notebook.metadata = nbformat.NotebookNode({k: v for k, v in notebook.metadata.items()
                                                   if k in ("kernelspec", "language_info")})
        for cell in notebook.cells:
            for key in ("papermill", "execution", "collapsed", "scrolled"):
                cell.metadata.pop(key, None)
            if not cell.metadata.get("tags", True):
                cell.metadata.pop("tags")
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        if nbformat.writes(notebook) != before:
            atomic_write_text(path, nbformat.writes(notebook) + "\n")
            changed.append(Path(path))
    return changed


def notebook_parameters(path: Path) -> dict[str, Any]:
    """Names and default values of the notebook's `parameters` cell."""
    import papermill

    return {name: info["default"] for name, info in papermill.inspect_notebook(str(path)).items()}


# how to give, on the command line, the parameters the runner fills in itself
RUNNER_SETS = {"config": "the config argument", "overrides": "--set key=value", "run_dir": "--set output_dir=... and "
               "--set name=...", "device": "--device (e.g. --device cpu)"}
PARAMETER_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,)}


def check_params(params: dict[str, Any], paths: Sequence[Path], cfg: ExperimentConfig) -> None:
    """Refuse, before anything runs, a parameter no notebook declares, one the runner sets, a value of another
    type than the parameter's annotation in the notebooks' parameters cells, a negative value of an int whose
    default is a non-negative number (a count or a seed) and sweep timesteps outside the config's schedule."""
    import papermill

    cells = {path: papermill.inspect_notebook(str(path)) for path in paths}
    for name in params:
        if name in RUNNER_SETS:
            raise ConfigError(f"notebook parameter {name} is set by the runner; give it as {RUNNER_SETS[name]} instead.")
    declared = set().union(*map(set, cells.values()))
    unknown = sorted(set(params) - declared)
    if unknown:
        valid = sorted(declared - set(COMMON_PARAMETERS))
        raise ConfigError(f"notebook parameter(s) {unknown} are not declared by any notebook "
                          f"(or are set by the runner); valid ones are: {', '.join(valid)}.")
    for path, cell in cells.items():
        for name, value in params.items():
            if name not in cell:
                continue
            kind, default = cell[name]["inferred_type_name"], cell[name]["default"]
            allowed = PARAMETER_TYPES.get(kind)
            if allowed and (not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)):
                raise ConfigError(f"notebook parameter {name} must be of type {kind} (its default in {path.name} is "
                                  f"{default}), got {value!r}; e.g. --param {name}={default.replace(' ', '')}.")
            if kind == "int" and not isinstance(value, bool) and value < 0 and default.lstrip("+").isdigit():
                raise ConfigError(f"notebook parameter {name} must not be negative (its default in {path.name} is "
                                  f"{default}), got {value}.")
    timesteps = params.get("sensitivity_timesteps", [])
    if isinstance(timesteps, list) and not all(type(t) is int and 0 <= t < cfg.diffusion.num_timesteps for t in timesteps):
        raise ConfigError(f"notebook parameter sensitivity_timesteps must list inference timesteps in [0, "
                          f"diffusion.num_timesteps = {cfg.diffusion.num_timesteps}), got {timesteps}.")


def _package_digest() -> str:
    """A digest of tdsm_core's source files: figures drawn by older code are redrawn after a change."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()


def _fingerprint(path: Path, parameters: dict[str, Any], cfg: ExperimentConfig) -> str:
    """Changes when the notebook's code, its parameters, the resolved config or the package's code change."""
    cells = json.loads(path.read_text())["cells"]
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells]
    blob = json.dumps({"sources": sources, "parameters": parameters, "config": cfg.to_dict(),
                       "package": _package_digest()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _failed_cell(error: Exception, executed: Path, notebook: Path) -> str:
    """Where a papermill error happened, as '<notebook> cell N (In [k]): first line'."""
    index = getattr(error, "cell_index", None)
    where = "an unknown cell"
    if index is not None and executed.exists():
        cells = json.loads(executed.read_text())["cells"]
        cells = [c for c in cells if "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])]
        before = cells[:index]
        injected = sum("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in before)
        source = "".join(cells[index]["source"]) if index < len(cells) else ""
        first = next((line.strip() for line in source.splitlines() if line.strip()), "")
        where = f"cell {index + 1 - injected} (In [{getattr(error, 'exec_count', '?')}]: {first[:70]})"
    return f"{notebook.name} {where}"


@dataclass
class RunReport:
    """What one run of a config's notebooks did."""

    run_dir: Path
    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        """The run's metrics.json (empty before the evaluation notebook has run)."""
        return read_metrics(self.run_dir)


def run_notebooks(config: str | Path, overrides: Sequence[str] = (), device: str = "",
                  params: dict[str, Any] | None = None, force: bool = False, run_dir: str | Path = "",
                  notebooks: Sequence[Path] | None = None,
                  log: Callable[[str], None] = print) -> RunReport:
    """Execute every numbered notebook on one config into its run folder; see the module docstring.

    params: notebook parameters beyond the common ones (e.g. sensitivity_samples), each given to the
    notebooks that declare it; a name no notebook declares is an error.
    """
    setup_environment()
    config = Path(config).resolve()
    cfg = load_config(config, list(overrides))  # fails early on a bad config or override
    check_device(*((device, "--device") if device else (cfg.train.device, "train.device")))  # before any notebook
    run_dir = Path(run_dir).resolve() if run_dir else cfg.run_dir().resolve()
    paths = list(notebooks) if notebooks is not None else notebook_paths()
    if not cfg.skeleton.source and any(p.stem in SKELETON_NOTEBOOKS for p in paths):
        paths = [p for p in paths if p.stem not in SKELETON_NOTEBOOKS]
        log(f"{', '.join(sorted(SKELETON_NOTEBOOKS))}: not run, the config starts from features (no skeleton.source; "
            f"set it to a raw skeleton folder or .npz to run the raw-skeleton notebook)")
    declared = {p: notebook_parameters(p) for p in paths}
    params = dict(params or {})
    check_params(params, paths, cfg)
    check_writable_folder(run_dir)
    common = {"config": str(config), "overrides": list(overrides), "run_dir": str(run_dir), "device": device}
    out_dir = run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    # a second runner on the same folder refuses instead of interleaving; Ctrl-C ends with one line
    with RunLock(run_dir, "notebooks"), quiet_after_interrupt():
        return _execute(paths, declared, common, params, cfg, run_dir, out_dir, force, log)


def kernel_manager_logging_to(log_file):
    """A kernel manager whose kernel writes its own output (log lines, and the traceback it prints when an
    interrupted run shuts it down) to `log_file` instead of the terminal; cell outputs still reach the notebook."""
    from jupyter_client import AsyncKernelManager

    class KernelLoggingToFile(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw.setdefault("stdout", log_file)
            kw.setdefault("stderr", log_file)
            return await super().start_kernel(**kw)

    return KernelLoggingToFile


@contextmanager
def quiet_after_interrupt() -> Iterator[None]:
    """Ctrl-C during a notebook: papermill then shuts the kernel down, and the cell still waiting for it (and
    asyncio, for its unfinished task) log that the kernel died, which is noise once the user interrupted;
    those loggers are switched off at the interrupt, so the command line's one-line message stands alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def interrupted(signum, frame):
        for name in ("papermill", "nbclient", "asyncio", "traitlets"):
            logging.getLogger(name).disabled = True
        if callable(previous):
            previous(signum, frame)  # Python's own handler raises KeyboardInterrupt
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _execute(paths, declared, common, params, cfg, run_dir, out_dir, force, log) -> RunReport:
    import papermill
    from nbclient.exceptions import DeadKernelError

    report = RunReport(run_dir)
    redo = force
    for number, path in enumerate(paths, start=1):
        given = {k: v for k, v in {**common, **params}.items() if k in declared[path]}
        executed, marker = out_dir / path.name, out_dir / f"{path.stem}.done.json"
        fingerprint = _fingerprint(path, given, cfg)
        try:
            done = json.loads(marker.read_text()) if marker.exists() and executed.exists() else {}
        except ValueError:
            done = {}  # a damaged marker: the notebook simply runs again
        finished = done.get("fingerprint") == fingerprint
        if finished and not redo:
            report.skipped.append(path.name)
            log(f"[{number}/{len(paths)}] {path.name}: done before, skipped (use --force to redo)")
            continue
        redo = True  # everything after a notebook that ran depends on its fresh results
        marker.unlink(missing_ok=True)
        log(f"[{number}/{len(paths)}] {path.name} ...")
        started = time.time()
        try:
            with open(out_dir / KERNEL_LOG, "a") as kernel_log:
                papermill.execute_notebook(str(path), str(executed), parameters=given, kernel_name=KERNEL,
                                           cwd=str(path.parent), progress_bar=False, log_output=False,
                                           extra_arguments=KERNEL_ARGUMENTS,
                                           kernel_manager_class=kernel_manager_logging_to(kernel_log))
        except papermill.PapermillExecutionError as exc:
            detail = (exc.evalue or "").strip().splitlines()
            message = detail[0][:300] if detail else "(no message)"
            raise NotebookError(f"{_failed_cell(exc, executed, path)} failed with {exc.ename}: {message} "
                                f"(executed notebook: {executed}); fix it and run the same command again to continue "
                                f"from this notebook.") from None
        except DeadKernelError:
            raise NotebookError(f"the kernel running {path.name} died (out of memory?); the partly executed "
                                f"notebook is {executed}; run the same command again to continue from this "
                                f"notebook.") from None
        seconds = time.time() - started
        report.executed.append(path.name)
        report.seconds[path.name] = round(seconds, 1)
        write_json(marker, {"notebook": path.name, "fingerprint": fingerprint, "parameters": given,
                            "seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        log(f"[{number}/{len(paths)}] {path.name}: done in {seconds:.0f} s")
    return report


# ----------------------------------------------------------------------------------------------
# Every split, several seeds, one summary


def seed_runs(config: str | Path, seeds: int, overrides: Sequence[str] = ()) -> list[tuple[int, Path, list[str]]]:
    """(seed, run folder, overrides) for `seeds` seeds from the config's own; one seed keeps the config's folder."""
    if seeds < 1:
        raise ConfigError(f"the number of seeds must be at least 1, got {seeds}.")
    cfg = load_config(config, list(overrides))
    if seeds == 1:
        return [(cfg.seed, cfg.run_dir().resolve(), list(overrides))]
    from .experiments import seed_config  # the same folders as `python -m tdsm_core protocols`

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


def parse_params(pairs: Sequence[str] | None) -> dict[str, Any]:
    """['sensitivity_samples=48', 'sensitivity_timesteps=[5, 25]'] -> {name: value} (values parsed as YAML)."""
    values = {}
    for pair in pairs or []:
        if "=" not in pair or "." in pair.split("=", 1)[0]:
            raise ConfigError(f"notebook parameter {pair!r} must look like name=value, e.g. sensitivity_samples=48.")
        name, raw = pair.split("=", 1)
        values[name.strip()] = parse_overrides([f"x={raw}"])["x"]
    return values


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

    from . import plots

    def show(sample: int = 0):
        display(plots.sample_errors(run.scores[sample], run.classes, names, int(run.labels[sample]), sample))

    return ipywidgets.interact(show, sample=ipywidgets.IntSlider(0, 0, len(run.labels) - 1, description="sample"))
