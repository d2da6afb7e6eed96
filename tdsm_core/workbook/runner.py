"""The numbered notebooks as a pipeline: headless runs through papermill, resumable.

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


from ..config import ExperimentConfig, load_config, parse_overrides
from ..errors import ConfigError, TDSMError
from ..inputs import read_text
from ..io import atomic_write_text, check_device, write_json
from ..runs.lock import RunLock, check_writable_folder
from ..runs.pipeline import read_metrics


PROJECT_ROOT = Path(__file__).resolve().parents[2]
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
    package = Path(__file__).resolve().parents[1]
    for source in sorted(package.rglob("*.py")):  # every subpackage too
        digest.update(source.relative_to(package).as_posix().encode() + source.read_bytes())
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



def parse_params(pairs: Sequence[str] | None) -> dict[str, Any]:
    """['sensitivity_samples=48', 'sensitivity_timesteps=[5, 25]'] -> {name: value} (values parsed as YAML)."""
    values = {}
    for pair in pairs or []:
        if "=" not in pair or "." in pair.split("=", 1)[0]:
            raise ConfigError(f"notebook parameter {pair!r} must look like name=value, e.g. sensitivity_samples=48.")
        name, raw = pair.split("=", 1)
        values[name.strip()] = parse_overrides([f"x={raw}"])["x"]
    return values


