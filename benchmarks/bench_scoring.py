"""Zero-shot scoring throughput: the release-style loop against the batched scorer, side by side.

Both paths get the same weights, the same test features and the same fixed noises; the loop runs
one denoiser call per (test batch, noise, class) exactly as the original release does. Reported:
denoiser calls per second, test samples per second, achieved FLOP/s (analytic count), the
throughput ratio to the loop, peak memory, and how many predictions agree with the loop's.

    python benchmarks/bench_scoring.py --size paper --samples 512 --classes 5 --noises 3
    python benchmarks/bench_scoring.py --size paper --variants fp32,bf16,int8,bf16+cascade2 --device cpu
    python benchmarks/bench_scoring.py --run outputs/demo     # a trained run: also top-1 of each variant

Variants: fp32 (exact: no autocast, no TF32), amp (fp32 weights under bf16 autocast with TF32: the
scorer's default on GPUs, the same as fp32 on CPUs), bf16 (bf16 weights and activations), int8
(dynamic int8 linears, CPU), and any of them with "+cascadeK" (top-K cascade) and/or one of
"+compile", "+autotune", "+graphs" (torch.compile of the denoiser in mode default,
max-autotune-no-cudagraphs, reduce-overhead; compiled calls have a fixed row count). Each path runs
once untimed on a few samples first (compilation, kernel selection, allocator warm-up), and the
compile variants print how long that took.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tdsm_core.diffusion import NoiseSchedule  # noqa: E402
from tdsm_core.evaluate import ZeroShotScorer, score_one_class_at_a_time, zero_shot_metrics  # noqa: E402
from tdsm_core.runs.flops import PeakMemory, denoiser_call_flops, gpu_bf16_peak  # noqa: E402
from tdsm_core.model import Denoiser, DenoiserConfig  # noqa: E402
from tdsm_core.data.text import ClassTextFeatures  # noqa: E402

SIZES = {"paper": DenoiserConfig(), "demo": DenoiserConfig(hidden_dim=128, depth=2, num_heads=4, text_dim=768)}


def machine(device: torch.device) -> str:
    """One line describing where the figures were measured."""
    cpu = platform.processor() or "cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def random_weights(model: Denoiser, seed: int = 0) -> Denoiser:
    """Non-zero weights everywhere (an untrained denoiser outputs zeros, which would make every class tie)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
    return model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    with PeakMemory(device) as memory:
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        seconds = time.perf_counter() - start
    return result, seconds, memory


COMPILE_SUFFIXES = {"+compile": "default", "+autotune": "max-autotune-no-cudagraphs", "+graphs": "reduce-overhead"}


def parse_variant(name: str) -> tuple[str, int, str | None]:
    """'bf16+cascade2+compile' -> (precision, cascade k, torch.compile mode or None)."""
    mode = None
    for suffix, compile_mode in COMPILE_SUFFIXES.items():
        if suffix in name:
            mode, name = compile_mode, name.replace(suffix, "")
    precision, _, cascade = name.partition("+cascade")
    return precision, int(cascade or 0), mode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="paper")
    parser.add_argument("--run", default="", help="a trained run folder (uses its model, config and ztest)")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--noises", type=int, default=3)
    parser.add_argument("--batch", type=int, default=512, help="test batch of the release-style loop")
    parser.add_argument("--rows", type=int, default=0, help="rows per batched call (0: the scorer's default)")
    parser.add_argument("--variants", default="fp32", help="comma-separated, e.g. fp32,amp,bf16,int8,bf16+cascade2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-loop", action="store_true", help="do not time the release-style loop")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    labels = None
    if args.run:
        from tdsm_core.runs.pipeline import load_data, load_text
        from tdsm_core.runs.build import build_schedule, load_trained_model, select_text_features

        model, cfg, _ = load_trained_model(Path(args.run) / "last.pt", device)
        benchmark = load_data(cfg)
        text = select_text_features(load_text(cfg, benchmark), cfg.train.text_features)
        features, labels, classes = benchmark.ztest.features, benchmark.ztest.labels, benchmark.unseen
        schedule, timestep, num_noise = build_schedule(cfg), cfg.eval.timestep, cfg.eval.num_noise
        model_cfg = cfg.model
    else:
        model_cfg = SIZES[args.size]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = random_weights(Denoiser(model_cfg)).to(device).eval()
        g = torch.Generator().manual_seed(1)
        text = ClassTextFeatures(torch.randn(args.classes, model_cfg.text_len, model_cfg.text_dim, generator=g),
                                 torch.randn(args.classes, model_cfg.text_dim, generator=g))
        features = torch.randn(args.samples, model_cfg.feature_dim, generator=g).abs().numpy()
        classes = np.arange(args.classes)
        schedule, timestep, num_noise = NoiseSchedule(), 25, args.noises
    calls = len(features) * len(classes) * num_noise
    flops = denoiser_call_flops(model_cfg)
    print(f"machine: {machine(device)}")
    print(f"model: {model_cfg}  ({flops.total / 1e9:.2f} GFLOP per call, analytic)")
    print(f"work: {len(features)} samples x {len(classes)} classes x {num_noise} noises = {calls} denoiser calls")
    peak = gpu_bf16_peak(device)[1] if device.type == "cuda" else None

    def report(name, seconds, memory, predictions, reference, scores=None, calls_done=calls):
        agree = "" if reference is None else f"  agree {100 * np.mean(predictions == reference):.1f}%"
        top1 = ""
        if labels is not None and scores is not None:
            top1 = f"  top-1 {zero_shot_metrics(scores, labels, classes).top1:.2f}%"
        achieved = calls_done * flops.per_sample / seconds  # conditioning is per class, negligible
        fraction = f" ({100 * achieved / peak:.1f}% of bf16 peak)" if peak else ""
        print(f"{name:18s} {seconds:8.2f} s  {calls_done / seconds:9.1f} calls/s  {len(features) / seconds:8.2f} samples/s"
              f"  {achieved / 1e9:8.1f} GFLOP/s{fraction}  peak mem +{memory.added_gib:.2f} GiB{agree}{top1}")
        return calls_done / seconds

    reference = None
    loop_rate = None
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # exact fp32 unless "amp"
    if not args.skip_loop:
        score_one_class_at_a_time(model, schedule, text, features[:8], classes[:2], timestep, 1)  # warm-up
        scores, seconds, memory = timed(lambda: score_one_class_at_a_time(
            model, schedule, text, features, classes, timestep, num_noise, batch_size=args.batch), device)
        reference = classes[scores.argmin(1)]
        loop_rate = report("release loop fp32", seconds, memory, reference, None, scores)
    for variant in args.variants.split(","):
        precision, cascade, compile_mode = parse_variant(variant)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "amp"
        scorer = ZeroShotScorer(model, schedule, text, timestep=timestep, num_noise=num_noise, max_rows_per_call=args.rows,
                                precision=precision, cascade_top_k=cascade,
                                compile=compile_mode is not None, compile_mode=compile_mode or "default")
        _, warmup_seconds, _ = timed(lambda: scorer.score(features[:8], classes), device)  # warm-up, compilation
        if compile_mode:
            print(f"{'':18s} torch.compile ({compile_mode}) and first call: {warmup_seconds:.1f} s")
        scorer.calls = 0
        scores, seconds, memory = timed(lambda: scorer.score(features, classes), device)
        predictions = classes[scores.argmin(1)]
        rate = report(f"batched {variant}", seconds, memory, predictions, reference, scores, calls_done=calls)
        if loop_rate:
            print(f"{'':18s} throughput ratio to the loop: {rate / loop_rate:.2f}x  "
                  f"(rows actually run: {scorer.calls}, {scorer.calls / calls:.2f} of the full grid)")


if __name__ == "__main__":
    main()
