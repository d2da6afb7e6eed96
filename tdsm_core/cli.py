"""Command line: `python -m tdsm_core <command> ...` (also installed as `tdsm`).

Errors caused by input (paths, data, configs, checkpoints, encoders) are printed as one sentence
without a traceback and exit with status 2; `--debug` shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import TDSMError

DEFAULT_DEMO_CONFIG = "configs/demo.yaml"


def _config(args: argparse.Namespace):
    from .config import load_config

    return load_config(args.config, args.set)


def cmd_demo_data(args: argparse.Namespace) -> int:
    from .config import load_config
    from .pipeline import ensure_demo_data

    cfg = load_config(args.config, args.set)
    made = ensure_demo_data(cfg)
    print(f"demo data {'written to' if made else 'already present in'} {cfg.data.features}")
    return 0


def cmd_embed_text(args: argparse.Namespace) -> int:
    from .pipeline import load_data, load_text

    cfg = _config(args)
    benchmark = load_data(cfg)
    text = load_text(cfg, benchmark)
    print(f"text features of {len(benchmark.prompts)} classes: tokens {tuple(text.tokens.shape)}, "
          f"pooled {tuple(text.pooled.shape)} (cached in {cfg.text.cache_dir})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .pipeline import train_run

    cfg = _config(args)
    summary = train_run(cfg, resume=not args.no_resume, progress=not args.quiet, device=args.device)
    print(json.dumps(summary, indent=2))
    print(f"checkpoints in {cfg.run_dir()}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .pipeline import evaluate_run

    cfg = _config(args)
    metrics = evaluate_run(cfg, checkpoint=args.checkpoint, device=args.device)
    _print_result(metrics, cfg.run_dir())
    return 0


def _print_result(metrics: dict, run_dir: Path) -> None:
    print(f"zero-shot top-1 {metrics['zsl_top1']:.2f}%  top-5 {metrics['zsl_top5']:.2f}%  "
          f"(chance {metrics['chance_top1']:.2f}%, {metrics['num_test']} test samples, {metrics['num_unseen']} unseen classes)")
    print(f"protocol: {metrics['protocol']}")
    if "paper_protocol" in metrics:
        print(f"paper protocol (labelled, optimistic): {metrics['paper_protocol']['zsl_top1']:.2f}%")
    print(f"metrics: {run_dir / 'metrics.json'}")


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    from .config import load_config
    from .pipeline import ensure_demo_data, run_all

    started = time.time()
    cfg = load_config(args.config, args.set)
    ensure_demo_data(cfg)
    metrics = run_all(cfg, resume=not args.no_resume, progress=not args.quiet, device=args.device)
    _print_result(metrics, cfg.run_dir())
    print(f"wall time {time.time() - started:.0f} s")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    import yaml

    from .model import Denoiser, count_parameters

    cfg = _config(args)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
    print(f"# denoiser parameters: {count_parameters(Denoiser(cfg.model)):,}")
    return 0


def cmd_splits(args: argparse.Namespace) -> int:
    from .splits import PAPER_RESULTS, SPLITS

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

    def with_run(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the config's train.device)")
        p.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        return p

    p = with_config(sub.add_parser("demo-data", help="write the built-in synthetic demo benchmark"), DEFAULT_DEMO_CONFIG)
    p.set_defaults(func=cmd_demo_data)
    p = with_config(sub.add_parser("embed-text", help="encode and cache the class prompts"))
    p.set_defaults(func=cmd_embed_text)
    p = with_run(with_config(sub.add_parser("train", help="train (resuming from last.pt when present)")))
    p.set_defaults(func=cmd_train)
    p = with_config(sub.add_parser("evaluate", help="zero-shot evaluation on ztest, writes metrics.json"))
    p.add_argument("--checkpoint", default="", help="last (default), best (chosen on validation), or a path")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_evaluate)
    p = with_run(with_config(sub.add_parser("demo", help="demo data + train + evaluate on the built-in demo"),
                             DEFAULT_DEMO_CONFIG))
    p.set_defaults(func=cmd_demo)
    p = with_config(sub.add_parser("summary", help="print the resolved config and the parameter count"))
    p.set_defaults(func=cmd_summary)
    p = sub.add_parser("splits", help="list the built-in benchmark splits")
    p.set_defaults(func=cmd_splits)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
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
