"""Raw NTU RGB+D at scale: conversion speed and the peak memory of the raw-skeleton chain, at several sizes.

Writes K synthetic files in the NTU `.skeleton` text format (NTU's spread of lengths and body
counts, see `write_synthetic_ntu`), then for every K runs, each in a fresh process:

- reference: the chain as it was before issue 19 (`ntu_reference.py`, a verbatim copy of main at
  b479118): `read_ntu` + `save_skeleton_npz` (padded), then `load_skeleton_npz` + `preprocess`;
- chain: `convert_dataset("ntu", ...)` with `--workers` processes (ragged, sharded), then
  `preprocess_to_file` (the chain's fixed-length array, on disk), then the feature export of every
  part and a few Shift-GCN training steps (batch 64), both reading the skeletons from that file.

It prints files/s, the peak resident memory (VmHWM) of the main process after each step, that of
the largest conversion worker and the largest sum of the workers, the per-file slope of each peak
between the smallest and the largest K, and its projection to NTU-60 (56,880 files) and NTU-120
(114,480). The training steps come last because their peak is that of the network's activations
(batch 64), whatever K.

    python benchmarks/bench_ntu_scale.py --files 2000 8000 --workers 2 --work /tmp/ntu_scale
    python benchmarks/bench_ntu_scale.py --files 200 --encoder tiny --skip-reference     # a quick look

The synthetic folders are written once under --work (file i is the same whatever K: the smaller
sets are links to the first files of the largest) and removed at the end unless --keep.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

NTU60, NTU120 = 56_880, 114_480
MUTUAL = set(range(50, 61)) | set(range(106, 121))  # NTU-120's two-person actions (1-based)
TEMPLATES, TEMPLATE_FRAMES = 12, 320


# ----------------------------------------------------------------------------------------------
# Synthetic NTU files

def _joint_block(rng: np.random.Generator, base: np.ndarray, frame: int) -> str:
    """25 joint lines of 12 values for one body in one frame, formatted as the Kinect SDK writes them."""
    xyz = base + 0.05 * np.sin(0.07 * frame + np.arange(25)[:, None] * [0.3, 0.5, 0.7])
    rest = np.column_stack([rng.uniform(100, 400, (25, 2)), rng.uniform(200, 1800, (25, 2)),
                            rng.normal(0, 0.5, (25, 4))])
    return "\n".join(" ".join(f"{v:.7g}" for v in row) + " 2" for row in np.column_stack([xyz, rest]))


def synthetic_templates(seed: int = 0) -> list[list[str]]:
    """TEMPLATES moving bodies, TEMPLATE_FRAMES formatted frames each."""
    rng = np.random.default_rng(seed)
    templates = []
    for _ in range(TEMPLATES):
        base = rng.normal(0, 0.3, (25, 3)) + [rng.uniform(-1, 1), 0, rng.uniform(2.5, 4)]
        templates.append([_joint_block(rng, base, f) for f in range(TEMPLATE_FRAMES)])
    return templates


def ntu_name(i: int) -> str:
    """The i-th of distinct SsssCcccPpppRrrrAaaa names (action fastest, then performer, replication, camera, setup)."""
    action, rest = i % 120 + 1, i // 120
    return (f"S{rest // 636 + 1:03d}C{(rest // 212) % 3 + 1:03d}P{rest % 106 + 1:03d}"
            f"R{(rest // 106) % 2 + 1:03d}A{action:03d}.skeleton")


def synthetic_ntu_text(i: int, templates: list[list[str]]) -> str:
    """File i: a length drawn from a log-normal (median 75 frames, clipped to 32..300; most 60..120),
    two bodies for two-person actions, a short-lived extra body in 5% of the others, empty frames at
    the start of 10% of the files."""
    rng = np.random.default_rng([7, i])
    frames = int(np.clip(rng.lognormal(np.log(75), 0.4), 32, 300))
    action = i % 120 + 1
    bodies = 2 if action in MUTUAL else 1
    extra = rng.random() < 0.05 and bodies == 1
    empty = int(rng.integers(1, 6)) if rng.random() < 0.1 else 0
    picks = rng.choice(TEMPLATES, size=3, replace=False)
    start = int(rng.integers(0, TEMPLATE_FRAMES - frames + 1))
    ids = [f"720575940379{int(rng.integers(10**4, 10**5)):05d}" for _ in range(3)]
    lines = [str(frames)]
    for f in range(frames):
        present = [] if f < empty else list(range(bodies)) + ([2] if extra and 10 <= f < 25 else [])
        lines.append(str(len(present)))
        for b in present:
            lines.append(f"{ids[b]} 0 1 1 1 2 0 -0.2530885 0.2016649 2")
            lines.append("25")
            lines.append(templates[picks[b]][start + f])
    return "\n".join(lines) + "\n"


def write_synthetic_ntu(folder: Path, count: int, seed: int = 0) -> None:
    """Write files 0..count-1 (those already there are kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    templates = synthetic_templates(seed)
    for i in range(count):
        path = folder / ntu_name(i)
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(synthetic_ntu_text(i, templates))
            tmp.rename(path)


def linked_subset(source: Path, folder: Path, count: int) -> Path:
    """A folder of links to the first `count` files of `source` (by name)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for path in sorted(source.glob("*.skeleton"))[:count]:
        (folder / path.name).symlink_to(path)
    return folder


# ----------------------------------------------------------------------------------------------
# Stages, each run in its own process; each prints one JSON line per step

def high_water_mb(pid: int | str = "self") -> float:
    """VmHWM, the peak resident memory of a process's current program. (ru_maxrss would also count the
    memory of the parent at the fork that started it.)"""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class WorkerWatch(threading.Thread):
    """Samples the conversion workers (this process's children) every 0.1 s: the largest peak of one
    worker and the largest sum of the workers' resident memory at one moment."""

    def __init__(self):
        super().__init__(daemon=True)
        self.largest, self.largest_sum, self.running = 0.0, 0.0, True

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while self.running:
            total = 0.0
            for child in me.children(recursive=True):
                try:
                    if "resource_tracker" in " ".join(child.cmdline()):
                        continue
                    self.largest = max(self.largest, high_water_mb(child.pid))
                    total += child.memory_info().rss / 2**20
                except (psutil.Error, OSError):
                    continue
            self.largest_sum = max(self.largest_sum, total)
            time.sleep(0.1)


def report(step: str, seconds: float, **extra) -> None:
    record = {"step": step, "seconds": round(seconds, 3), "peak_mb": round(high_water_mb(), 1), **extra}
    print(json.dumps(record), flush=True)


def stage_reference(folder: Path, work: Path, length: int) -> None:
    import ntu_reference as ref

    report("imports", 0.0)
    started = time.perf_counter()
    data = ref.read_ntu(folder)
    ref.save_skeleton_npz(work / "reference.npz", data)
    report("convert", time.perf_counter() - started, sequences=len(data), bytes=(work / "reference.npz").stat().st_size)
    del data
    started = time.perf_counter()
    skeletons = ref.preprocess(ref.load_skeleton_npz(work / "reference.npz"), length=length)
    report("preprocess", time.perf_counter() - started, shape=list(skeletons.shape))


def stage_chain(folder: Path, work: Path, length: int, workers: int, encoder: str, train_steps: int) -> None:
    from tdsm_core.config import config_from_dict
    from tdsm_core.skeletons.encoder import EncoderTrainer, subject_split
    from tdsm_core.skeletons.preprocess import preprocess_to_file
    from tdsm_core.skeletons.format import load_skeleton_npz
    from tdsm_core.skeletons.readers import convert_dataset

    report("imports", 0.0)
    watch = WorkerWatch()
    watch.start()
    started = time.perf_counter()
    convert_dataset("ntu", folder, work / "chain.npz", workers=workers, progress=False)
    seconds = time.perf_counter() - started
    watch.running = False
    watch.join()
    report("convert", seconds, bytes=(work / "chain.npz").stat().st_size, worker_peak_mb=round(watch.largest, 1),
           workers_sum_peak_mb=round(watch.largest_sum, 1))
    started = time.perf_counter()
    data = load_skeleton_npz(work / "chain.npz")
    skeletons = preprocess_to_file(data, work / "chain_T.npy", length=length)
    report("preprocess", time.perf_counter() - started, shape=list(skeletons.shape),
           bytes=(work / "chain_T.npy").stat().st_size)
    channels = [64, 64, 64, 64, 128, 128, 128, 256, 256, 256] if encoder == "paper" else [16, 32]
    strides = [1, 1, 1, 1, 2, 1, 1, 2, 1, 1] if encoder == "paper" else [2, 2]
    cfg = config_from_dict({"name": "bench", "output_dir": str(work / "runs"), "model": {"feature_dim": channels[-1]},
                            "skeleton": {"channels": channels, "strides": strides, "epochs": 1, "batch_size": 64,
                                         "device": "cpu", "length": length}})
    unseen = np.arange(0, len(data.class_names), 6)  # 20 of NTU-120's classes
    seen = np.setdiff1d(np.arange(len(data.class_names)), unseen)
    odd = [int(p) for p in np.unique(data.subjects) if p % 2]  # (NTU's own list leaves small K without test performers)
    parts = subject_split(data.labels, data.subjects, unseen, train_subjects=odd)
    trainer = EncoderTrainer(cfg, skeletons, data.labels, parts, seen, work / "runs" / "encoder")
    started = time.perf_counter()
    trainer.export(work / "features", data.labels)  # before training: its peak is the export's own
    report("export", time.perf_counter() - started, rows=int(sum(len(r) for r in parts.values())))
    started = time.perf_counter()
    for _ in range(train_steps):
        trainer.training_step()
    report("train", time.perf_counter() - started, steps=train_steps, batch=64)


def run_stage(args: argparse.Namespace, stage: str, folder: Path, work: Path) -> list[dict]:
    """Run one stage in a fresh interpreter and collect its JSON lines."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    command = [sys.executable, __file__, "--stage", stage, "--folder", str(folder), "--stage-work", str(work),
               "--length", str(args.length), "--workers", str(args.workers), "--encoder", args.encoder,
               "--train-steps", str(args.train_steps)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"stage {stage} on {folder} failed:\n{result.stderr[-3000:]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


# ----------------------------------------------------------------------------------------------
# The report

def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}"


def summarise(results: dict[int, dict[str, list[dict]]], sizes: list[int], workers: int) -> None:
    def step(k: int, stage: str, name: str) -> dict:
        return next(r for r in results[k][stage] if r["step"] == name)

    stages = [s for s in ("reference", "chain") if s in results[sizes[0]]]
    print("\n| K files | path | convert s | files/s | main peak MB after convert / preprocess / export / train | "
          "workers MB (largest / sum) | file MB |")
    print("|---|---|---|---|---|---|---|")
    for k in sizes:
        for stage in stages:
            convert = step(k, stage, "convert")
            after = [str(step(k, stage, s)["peak_mb"]) for s in ("convert", "preprocess", "export", "train")
                     if any(r["step"] == s for r in results[k][stage])]
            worker = f"{convert['worker_peak_mb']} / {convert['workers_sum_peak_mb']}" if stage == "chain" else "-"
            print(f"| {k} | {stage} | {convert['seconds']:.1f} | {k / convert['seconds']:.0f} | {' / '.join(after)} | "
                  f"{worker} | {convert['bytes'] / 2**20:.0f} |")
    for k in sizes:
        if "reference" in stages:
            ratio = step(k, "reference", "convert")["seconds"] / step(k, "chain", "convert")["seconds"]
            print(f"K={k}: conversion {ratio:.2f}x the reference's files/s ({workers} workers)")
    if len(sizes) < 2:
        return
    small, large = sizes[0], sizes[-1]
    print(f"\nPeak memory: slope per file between K={small} and K={large}, and projections")
    print("| path | peak | MB at K=%d | MB at K=%d | KB per file | NTU-60 (56,880) GB | NTU-120 (114,480) GB |" % (small, large))
    print("|---|---|---|---|---|---|---|")
    for stage in stages:
        if stage == "reference":
            rows = [("convert + preprocess", lambda k: step(k, stage, "preprocess")["peak_mb"])]
        else:  # the workers run during the conversion only, beside the main process
            rows = [("convert: main + workers", lambda k: step(k, stage, "convert")["peak_mb"]
                     + step(k, stage, "convert")["workers_sum_peak_mb"]),
                    ("convert + preprocess + export", lambda k: max(step(k, stage, "export")["peak_mb"],
                                                                    step(k, stage, "convert")["peak_mb"]
                                                                    + step(k, stage, "convert")["workers_sum_peak_mb"])),
                    ("... + training steps", lambda k: step(k, stage, "train")["peak_mb"])]
        for label, peak in rows:
            slope = (peak(large) - peak(small)) / (large - small)  # MB per file
            projection = [(peak(large) + slope * (n - large)) / 1024 for n in (NTU60, NTU120)]
            print(f"| {stage} | {label} | {peak(small):.0f} | {peak(large):.0f} | {slope * 1024:.1f} | "
                  f"{projection[0]:.2f} | {projection[1]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, nargs="+", default=[2000, 8000], help="sizes K to measure")
    parser.add_argument("--workers", type=int, default=0, help="conversion processes (0: every core)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ntu_scale"), help="scratch folder (large)")
    parser.add_argument("--length", type=int, default=32, help="frames after preprocessing (skeleton.length)")
    parser.add_argument("--encoder", choices=("paper", "tiny"), default="paper", help="Shift-GCN size for the export")
    parser.add_argument("--train-steps", type=int, default=2, help="encoder training steps (batch 64) after the export")
    parser.add_argument("--skip-reference", action="store_true", help="only the new chain")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic files and outputs")
    parser.add_argument("--stage", choices=("reference", "chain"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stage-work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workers = args.workers or len(os.sched_getaffinity(0))
    if args.stage == "reference":
        return stage_reference(args.folder, args.stage_work, args.length)
    if args.stage == "chain":
        return stage_chain(args.folder, args.stage_work, args.length, args.workers, args.encoder, args.train_steps)
    sizes = sorted(args.files)
    print(f"machine: {machine()}; numpy {np.__version__}; python {platform.python_version()}")
    started = time.perf_counter()
    raw = args.work / "raw"
    write_synthetic_ntu(raw, sizes[-1])
    files = sorted(raw.glob("*.skeleton"))[:sizes[-1]]
    print(f"{sizes[-1]} synthetic files ({sum(p.stat().st_size for p in files) / 2**30:.2f} GiB) in {raw}, "
          f"{time.perf_counter() - started:.0f} s")
    results: dict[int, dict[str, list[dict]]] = {}
    for k in sizes:
        folder = linked_subset(raw, args.work / f"files_{k}", k)
        results[k] = {}
        for stage in ("reference", "chain") if not args.skip_reference else ("chain",):
            results[k][stage] = run_stage(args, stage, folder, args.work / f"{stage}_{k}")
            for record in results[k][stage]:
                print(f"K={k} {stage}: {json.dumps(record)}", flush=True)
            shutil.rmtree(args.work / f"{stage}_{k}")  # disk: the reference file alone is 180 KB a file
    summarise(results, sizes, args.workers)
    print(f"\nmachine at the end: {machine()}; {time.perf_counter() - started:.0f} s in all")
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    if not args.keep:
        shutil.rmtree(args.work)


if __name__ == "__main__":
    main()
