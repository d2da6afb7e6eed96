"""Command line: `python -m tdsm_core <command> ...` (also installed as `tdsm`).

Errors caused by input (paths, data, configs, checkpoints, encoders) are printed as one sentence
without a traceback and exit with status 2; `--debug` shows the traceback.
"""
from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from ..errors import TDSMError

DEFAULT_DEMO_CONFIG = "configs/demo.yaml"


def _config(args: argparse.Namespace):
    from ..config import load_config

    return load_config(args.config, args.set)


def _device(args: argparse.Namespace, cfg) -> tuple[str, str]:
    """(device, where it came from): --device when given, else the config's train.device."""
    return (args.device, "--device") if args.device else (cfg.train.device, "train.device")


def cmd_demo_data(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..data.demo import foreign_files
    from ..runs.pipeline import ensure_demo_data

    cfg = load_config(args.config, args.set)
    if args.force and foreign_files(cfg.data.features):
        replaced = [p.name for p in foreign_files(cfg.data.features)]
        print(f"--force: writing the demo into {cfg.data.features} although it holds {len(replaced)} file(s) the demo "
              f"did not write ({', '.join(replaced[:8])}{', ...' if len(replaced) > 8 else ''}); those of the same "
              f"name are replaced")
    made = ensure_demo_data(cfg, force=args.force)
    print(f"demo data {'written to' if made else 'already present in'} {cfg.data.features}")
    return 0


def cmd_embed_text(args: argparse.Namespace) -> int:
    from ..runs.pipeline import load_data, load_text

    cfg = _config(args)
    benchmark = load_data(cfg)
    text = load_text(cfg, benchmark)
    print(f"text features of {len(benchmark.prompts)} classes: tokens {tuple(text.tokens.shape)}, "
          f"pooled {tuple(text.pooled.shape)} (cached in {cfg.text.cache_dir})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train one config; under torchrun, one process per GPU (or CPU process) with DDP."""
    from ..runs.distributed import finish, init_world
    from ..runs.pipeline import train_run

    cfg = _config(args)
    world = init_world(*_device(args, cfg))
    summary = train_run(cfg, resume=not args.no_resume, progress=not args.quiet, world=world,
                        stop_after=args.stop_after)
    if world.is_main:
        print(json.dumps(summary, indent=2))
        print(f"checkpoints in {cfg.run_dir()}")
    finish(world)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..runs.pipeline import evaluate_run

    from ..runs.distributed import finish, init_world

    cfg = _config(args)
    world = init_world(*_device(args, cfg))
    metrics = evaluate_run(cfg, checkpoint=args.checkpoint, world=world)
    if world.is_main:
        _print_result(metrics, cfg.run_dir())
    finish(world)
    return 0


def _print_result(metrics: dict, run_dir: Path) -> None:
    print(f"zero-shot top-1 {metrics['zsl_top1']:.2f}%  top-5 {metrics['zsl_top5']:.2f}%  "
          f"(chance {metrics['chance_top1']:.2f}%, {metrics['num_test']} test samples, {metrics['num_unseen']} unseen classes)")
    print(f"protocol: {metrics['protocol']}")
    if metrics.get("zsl_tied_percent", 0.0) > 0:
        print(f"warning: on {metrics['zsl_tied_percent']:.1f}% of the test samples the best class is tied with another "
              "(the denoiser gives them the same error); ties go to the first class in the split's order")
    if "paper_protocol" in metrics:
        print(f"paper protocol (labelled, optimistic): {metrics['paper_protocol']['zsl_top1']:.2f}%")
    print(f"metrics: {run_dir / 'metrics.json'}")


def cmd_demo(args: argparse.Namespace) -> int:
    """The workbook on the built-in demo: every notebook, headless (training resumes, finished notebooks are kept)."""
    import time

    from ..workbook.runner import parse_params, run_notebooks

    started = time.time()
    params = parse_params(args.param)
    if args.no_resume:
        params["resume"] = False
    report = run_notebooks(args.config, args.set or [], args.device or "", params, force=args.no_resume,
                           log=(lambda line: None) if args.quiet else print)
    _print_workbook(report)
    print(f"wall time {time.time() - started:.0f} s")
    return 0


def _print_workbook(report) -> None:
    metrics = report.metrics
    if "zsl_top1" in metrics:
        _print_result(metrics, report.run_dir)
    print(f"executed notebooks: {report.run_dir / 'notebooks'}")
    print(f"figures: {report.run_dir / 'figures'}")


def cmd_notebooks(args: argparse.Namespace) -> int:
    from ..workbook.runner import parse_params, run_notebooks

    report = run_notebooks(args.config, args.set or [], args.device or "", parse_params(args.param), force=args.force)
    _print_workbook(report)
    return 0


def cmd_strip_notebooks(args: argparse.Namespace) -> int:
    from ..workbook.runner import strip_outputs

    changed = strip_outputs([Path(p) for p in args.paths] if args.paths else None)
    print(f"stripped {len(changed)} notebook(s)" + "".join(f"\n  {p}" for p in changed))
    return 0


def cmd_run_all(args: argparse.Namespace) -> int:
    from ..workbook.runner import parse_params
    from ..workbook.sweep import default_split_configs, run_all

    configs = args.configs or default_split_configs()
    table = run_all(configs, args.seeds, args.set or [], args.device or "", parse_params(args.param), force=args.force,
                    summary_dir=args.summary_dir, parallel=args.parallel)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return 0


def _at_least_one(text: str) -> int:
    """argparse type of --seeds: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_convert(args: argparse.Namespace) -> int:
    """A raw skeleton dataset folder -> the generic .npz."""
    from ..skeletons.readers import convert_dataset

    # prints its one-line summary and the file written; NTU: a progress bar, `--workers` processes
    convert_dataset(args.kind, args.folder, args.out, workers=args.workers or 0, progress=not args.quiet)
    return 0


def _skeleton_splits(args: argparse.Namespace, cfg) -> dict:
    """The splits the skeleton commands run (--unseen/--splits random ones, --split a built-in one, --unseen-classes
    one's own), checked for contradictions, as keyword arguments of the chain."""
    from ..errors import ConfigError
    from ..skeletons.chain import read_unseen_classes

    split = cfg.data.split if args.split is None else args.split
    own = read_unseen_classes(args.unseen_classes) if args.unseen_classes else None
    if own is not None and (args.unseen is not None or args.splits is not None or args.split):
        raise ConfigError("--unseen-classes gives the split itself; drop --unseen, --splits and --split.")
    if own is not None:
        split = ""
    if split and (args.unseen is not None or args.splits is not None):
        raise ConfigError(f"--unseen and --splits draw random splits, but the built-in split {split} is chosen "
                          f"(by --split or the config's data.split); drop them, or pass --split '' for random splits.")
    return {"num_unseen": 5 if args.unseen is None else args.unseen,
            "num_splits": 3 if args.splits is None else args.splits, "split_seed": args.split_seed, "split": split,
            "unseen_classes": own}


def _refuse_split_arguments(args: argparse.Namespace) -> None:
    """The split arguments of validate/tune choose the splits of --fold-encoders and mean nothing without it."""
    from ..errors import ConfigError

    given = [flag for flag, value in (("--unseen", args.unseen), ("--splits", args.splits), ("--split", args.split),
                                      ("--unseen-classes", args.unseen_classes)) if value is not None]
    if given and not args.fold_encoders:
        raise ConfigError(f"{', '.join(given)} choose the splits of --fold-encoders; add --fold-encoders (with "
                          f"skeleton.source), or drop them to validate on data.features.")


def _fold_problems(args: argparse.Namespace, cfg) -> list:
    """--fold-encoders: one fold problem per (split, class fold), each from an encoder that never saw its classes."""
    from ..errors import ConfigError
    from ..skeletons.fold_encoders import fold_encoder_problems

    if not cfg.skeleton.source:
        raise ConfigError("--fold-encoders trains a skeleton encoder per class fold and needs the raw skeletons; set "
                          "skeleton.source (a dataset folder or a generic .npz), or drop --fold-encoders to validate "
                          "on data.features.")
    splits = _skeleton_splits(args, cfg)
    return fold_encoder_problems(cfg, **splits, fold_size=args.fold_size, num_folds=args.folds,
                                 fold_seed=args.split_seed, progress=not args.quiet)


def cmd_skeleton_zsl(args: argparse.Namespace) -> int:
    """Raw skeletons -> Shift-GCN on seen classes -> features -> TDSM and baseline, over several unseen splits."""
    from ..runs.distributed import finish, init_world
    from ..skeletons.chain import run_skeleton_benchmark, summary_dir, summary_markdown

    cfg = _config(args)
    splits = _skeleton_splits(args, cfg)
    world = init_world(cfg.skeleton.device, "skeleton.device")
    summary = run_skeleton_benchmark(cfg, **splits, progress=not args.quiet, resume=not args.no_resume, world=world,
                                     seeds=args.seeds)
    if world.is_main:
        print(summary_markdown(summary))
        named = splits["split"] or splits["unseen_classes"] is not None  # a named split's summary is in its run folder
        print(f"wall time {summary['wall_seconds']:.0f} s; summary in {summary_dir(cfg, summary['split'] if named else '')}")
    finish(world)
    return 0


def cmd_protocols(args: argparse.Namespace) -> int:
    """Seeds x protocols (final, validation, paper) with GZSL, as one table."""
    from ..runs.experiments import run_seeds, seeds_dir, seeds_markdown
    from ..io import check_device

    cfg = _config(args)
    check_device(cfg.train.device)
    summary = run_seeds(cfg, num_seeds=args.seeds, protocols=not args.final_only, progress=not args.quiet)
    print(seeds_markdown(summary))
    print(f"wall time {summary['wall_seconds']:.0f} s; table in {seeds_dir(cfg)}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    """One of the paper's ablations over seeds: table and figure."""
    from ..runs.experiments import ablation_dir, ablation_markdown, run_ablation
    from ..io import check_device
    from ..figures.plots import plot_ablation

    cfg = _config(args)
    check_device(cfg.train.device)
    table = run_ablation(cfg, args.study, num_seeds=args.seeds, progress=not args.quiet, plot=plot_ablation)
    print(ablation_markdown(table))
    print(f"wall time {table['wall_seconds']:.0f} s; table and figure in {ablation_dir(cfg, args.study)}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Class-fold validation of one config on its seen classes (never ztest)."""
    from ..runs.folds import eval_grid, fold_validation
    from ..runs.pipeline import load_data, load_text

    cfg = _config(args)
    _refuse_split_arguments(args)
    sweeps = _sweeps(args, cfg)
    if args.fold_encoders:
        problems, benchmark = _fold_problems(args, cfg), None
        text = load_text(cfg, problems[0])
        out = Path(cfg.output_dir) / f"{cfg.name}_fold_encoders"
    else:
        problems, benchmark = None, load_data(cfg)
        text = load_text(cfg, benchmark)
        out = Path(cfg.output_dir) / f"{cfg.name}_folds"
    result = fold_validation(cfg, benchmark, text, out, num_folds=args.folds, fold_size=args.fold_size,
                             seeds=args.seeds, fold_seed=cfg.seed, progress=not args.quiet,
                             eval_variants=eval_grid(sweeps) if sweeps else None, problems=problems)
    for i, (fold, value) in enumerate(zip(result["folds"], result["fold_top1"])):
        names = (", ".join(benchmark.class_names[c] for c in fold) if benchmark is not None
                 else result["problems"][i])
        print(f"fold {i} ({names}): pseudo-unseen top-1 {value:.2f}")
    seeds = result["seed_means"]
    for name, value in result["eval_variants"].items():
        print(f"  scored with {name}: {value:.2f}")
    if result["baseline_mean_top1"] is not None:
        print(f"  projection baseline on the same folds: {result['baseline_mean_top1']:.2f}")
    print(f"class-fold validation top-1 {result['mean_top1']:.2f} (chance {result['chance_top1']:.1f}; "
          f"over seeds {seeds['mean']:.2f} ± {seeds['std']:.2f}); written to {out / 'folds.json'}")
    return 0


def _sweeps(args: argparse.Namespace, cfg) -> dict:
    """validate --sweep KEY=V1,V2: the scoring settings every fold model is also scored with, checked up front."""
    from ..config import CALIBRATIONS
    from ..errors import ConfigError

    sweeps = {}
    for item in args.sweep or []:
        key, _, values = item.partition("=")
        name = key.strip().removeprefix("eval.")
        if name not in ("timestep", "num_noise", "noise_seed", "calibration") or not values:
            raise ConfigError(f"--sweep {item!r} must look like eval.timestep=10,25,40, eval.num_noise=3,10 or "
                              f"eval.calibration=none,center (scoring settings only: training settings need their "
                              f"own validation run).")
        if name == "calibration":
            unknown = [v for v in values.split(",") if v not in CALIBRATIONS]
            if unknown:
                raise ConfigError(f"--sweep {item!r}: {unknown} is not a calibration; list some of "
                                  f"{', '.join(CALIBRATIONS)}.")
            sweeps[name] = values.split(",")
            continue
        try:
            sweeps[name] = [int(v) for v in values.split(",")]
        except ValueError:
            raise ConfigError(f"--sweep {item!r} must list integers, e.g. eval.timestep=10,25,40.") from None
    bad = [t for t in sweeps.get("timestep", []) if not 0 <= t < cfg.diffusion.num_timesteps]
    bad_counts = [n for n in sweeps.get("num_noise", []) if n < 1]
    if bad or bad_counts:  # refused before any fold is trained, not at the first fold's scoring
        raise ConfigError(f"--sweep eval.timestep values must lie in [0, {cfg.diffusion.num_timesteps}) (diffusion."
                          f"num_timesteps) and eval.num_noise values must be at least 1; got "
                          f"{bad + bad_counts}: give values inside those ranges.")
    return sweeps


def cmd_tune(args: argparse.Namespace) -> int:
    """An Optuna search over a space of config keys, scored by class-fold validation."""
    from ..runs.pipeline import load_data, load_text
    from ..runs.tune import read_space, run_tuning, tune_dir

    cfg = _config(args)
    _refuse_split_arguments(args)
    space = read_space(args.space)
    if args.fold_encoders:
        problems, benchmark = _fold_problems(args, cfg), None
        text = load_text(cfg, problems[0])
    else:
        problems, benchmark = None, load_data(cfg)
        text = load_text(cfg, benchmark)
    result = run_tuning(cfg, benchmark, text, space, trials=args.trials, num_folds=args.folds,
                        fold_size=args.fold_size, seeds=args.seeds, progress=not args.quiet, problems=problems)
    best = result["best"]
    if best is None:
        print(f"no trial finished; see {tune_dir(cfg) / 'trials.csv'}")
        return 1
    print(f"best trial {best['best_trial']}: class-fold validation top-1 {best['validation_top1']:.2f} "
          f"({best['complete']} complete, {best['pruned']} pruned)")
    print("chosen: " + " ".join(f"--set {item}" for item in best["set"]))
    print(f"tables in {tune_dir(cfg)}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    import yaml

    from ..model import Denoiser, count_parameters

    cfg = _config(args)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
    print(f"# denoiser parameters: {count_parameters(Denoiser(cfg.model)):,}")
    return 0


def cmd_splits(args: argparse.Namespace) -> int:
    from ..data.splits import PAPER_RESULTS, SPLITS

    for name, spec in SPLITS.items():
        paper = PAPER_RESULTS["TDSM"].get(name)
        extra = f"  TDSM paper top-1 {paper:.2f}" if paper is not None else ""
        print(f"{name:14s} {spec.label:14s} {spec.family:6s} unseen {list(spec.unseen)}{extra}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tdsm_core", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser, default: str | None = None) -> argparse.ArgumentParser:
        if default:
            p.add_argument("config", nargs="?", default=default, help=f"YAML config (default {default})")
        else:
            p.add_argument("config", help="YAML config, e.g. configs/ntu60_u5.yaml")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.steps=100")
        return p

    def with_splits(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--unseen", type=int, default=None, help="unseen classes per random split (default 5)")
        p.add_argument("--splits", type=_at_least_one, default=None, help="number of random splits (default 3)")
        p.add_argument("--split", default=None,
                       help="one built-in split instead of random ones, e.g. ntu60_u20 (default: the config's data.split)")
        p.add_argument("--split-seed", type=int, default=0, help="seed of the split draws (and of the class folds "
                                                                  "of --fold-encoders)")
        p.add_argument("--unseen-classes", default=None, metavar="IDS",
                       help="a split of your own: 0-based unseen class ids, e.g. 1,4,7, or a .npy/.txt file of them")
        return p

    def with_fold_encoders(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--fold-encoders", action="store_true",
                       help="from raw skeletons (skeleton.source): each class fold of each split gets a skeleton "
                            "encoder trained without its classes, as the real unseen classes are; the splits are "
                            "skeleton-zsl's (--unseen, --splits, --split, --unseen-classes)")
        return with_splits(p)

    def with_run(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the config's train.device)")
        p.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        return p

    p = with_config(sub.add_parser("demo-data", help="write the built-in synthetic demo benchmark (into data.features; "
                                                     "a folder holding other files is refused)"), DEFAULT_DEMO_CONFIG)
    p.add_argument("--force", action="store_true", help="write even where the folder holds files the demo did not "
                                                        "write (files of the same name are replaced)")
    p.set_defaults(func=cmd_demo_data)
    p = with_config(sub.add_parser("embed-text", help="encode and cache the class prompts"))
    p.set_defaults(func=cmd_embed_text)
    p = with_run(with_config(sub.add_parser("train", help="train (resuming from last.pt when present); "
                                                          "works under torchrun for several GPUs or machines")))
    p.add_argument("--stop-after", type=_at_least_one, default=None, metavar="N",
                   help="stop after N more steps (checkpointed); run again to continue the same schedule")
    p.set_defaults(func=cmd_train)
    p = with_config(sub.add_parser("evaluate", help="zero-shot evaluation on ztest, writes metrics.json"))
    p.add_argument("--checkpoint", default="", help="last (default), best (chosen on validation), or a path")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_evaluate)
    p = with_run(with_config(sub.add_parser("demo", help="every notebook on the built-in demo (data, training, "
                                                         "evaluation, alignment figures)"), DEFAULT_DEMO_CONFIG))
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="a notebook parameter, e.g. max_umap_points=500")
    p.set_defaults(func=cmd_demo)
    p = with_config(sub.add_parser("notebooks", help="run the numbered notebooks of one config headless (papermill)"))
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="a notebook parameter, e.g. sensitivity_samples=120 (see each notebook's parameters cell)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the config's train.device)")
    p.add_argument("--force", action="store_true", help="redo notebooks that finished before")
    p.set_defaults(func=cmd_notebooks)
    p = sub.add_parser("run-all", help="run the notebooks of every split config (and seed), "
                                       "then write outputs/summary.csv")
    p.add_argument("configs", nargs="*", help="configs to run (default: every benchmark split in configs/)")
    p.add_argument("--seeds", type=_at_least_one, default=1, help="seeds per config, counting up from the config's seed")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key in every run")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="a notebook parameter for every run")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the config's train.device)")
    p.add_argument("--force", action="store_true", help="redo notebooks that finished before")
    p.add_argument("--summary-dir", default=None, help="where summary.csv/.md go (default: the runs' output folder)")
    p.add_argument("--parallel", action="store_true",
                   help="with several GPUs visible, run one split/seed per GPU at once (on CPU: one at a time)")
    p.set_defaults(func=cmd_run_all)
    p = sub.add_parser("strip-notebooks", help="clear the outputs of notebooks before committing them")
    p.add_argument("paths", nargs="*", help="notebooks (default: notebooks/NN_*.ipynb)")
    p.set_defaults(func=cmd_strip_notebooks)
    p = sub.add_parser("convert", help="convert a raw skeleton dataset folder to the generic .npz")
    p.add_argument("kind", help="ntu, msr or utkinect")
    p.add_argument("folder", help="the dataset folder")
    p.add_argument("out", help="the .npz to write")
    p.add_argument("--workers", type=_at_least_one, default=None,
                   help="NTU: processes that parse files (default: every core); a rerun reuses finished shards")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_convert)
    p = with_config(sub.add_parser("skeleton-zsl", help="raw skeletons -> Shift-GCN features -> TDSM and baseline, "
                                                        "over several unseen-class splits"))
    with_splits(p)
    p.add_argument("--seeds", type=_at_least_one, default=1,
                   help="TDSM and baseline seeds per split, on one encoder per split (seed, seed+1, ...)")
    p.add_argument("--no-resume", action="store_true", help="redo finished splits and checkpoints")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_skeleton_zsl)
    p = with_config(sub.add_parser("protocols", help="several seeds; protocols (a) final, (b) validation, (c) paper; "
                                                     "GZSL with calibration chosen on validation data"))
    p.add_argument("--seeds", type=_at_least_one, default=3)
    p.add_argument("--final-only", action="store_true", help="only protocol (a), no validation run or GZSL")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_protocols)
    p = with_config(sub.add_parser("ablate", help="one of the paper's ablations over seeds (table + figure)"))
    p.add_argument("study", help="loss, timesteps, text, inference_t or noises")
    p.add_argument("--seeds", type=_at_least_one, default=3)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_ablate)
    p = with_config(sub.add_parser("validate", help="class-fold validation on the seen classes: the score that "
                                                    "settings are chosen on (never ztest)"))
    p.add_argument("--folds", type=int, default=0, help="number of class folds (default: enough to cover every "
                                                         "seen class once)")
    p.add_argument("--fold-size", type=int, default=0, help="pseudo-unseen classes per fold (default: as many as "
                                                             "the split has unseen classes)")
    p.add_argument("--seeds", type=_at_least_one, default=1, help="seeds per fold")
    p.add_argument("--sweep", action="append", metavar="KEY=V1,V2",
                   help="also score every fold model with these eval settings, e.g. eval.timestep=10,25,40 "
                        "or eval.calibration=none,center,standardize")
    p.add_argument("--quiet", action="store_true")
    with_fold_encoders(p)
    p.set_defaults(func=cmd_validate)
    p = with_config(sub.add_parser("tune", help="Optuna search over config keys, scored by class-fold validation "
                                                "(seeded, resumable, pruned)"))
    p.add_argument("--space", required=True, help="search space YAML, e.g. configs/tune/small_data.yaml")
    p.add_argument("--trials", type=_at_least_one, default=20, help="finished trials to reach (a rerun continues)")
    p.add_argument("--folds", type=int, default=0, help="class folds per trial (default: cover every seen class)")
    p.add_argument("--fold-size", type=int, default=0, help="pseudo-unseen classes per fold (default: as many as "
                                                             "the split has unseen classes)")
    p.add_argument("--seeds", type=_at_least_one, default=1, help="seeds per fold")
    p.add_argument("--quiet", action="store_true")
    with_fold_encoders(p)
    p.set_defaults(func=cmd_tune)
    p = with_config(sub.add_parser("summary", help="print the resolved config and the parameter count"))
    p.set_defaults(func=cmd_summary)
    p = sub.add_parser("splits", help="list the built-in benchmark splits")
    p.set_defaults(func=cmd_splits)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        try:
            return args.func(args)
        except OSError as exc:
            if isinstance(exc, TDSMError) or args.debug:
                raise
            # a file the command could not read or write at a point that names no input: say which file and why
            from ..inputs import raise_os_error

            raise_os_error(exc, exc.filename, "file", "check that path, its permissions and the free disk space",
                           writing=True if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else None)
    except TDSMError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
