"""Training-step throughput at the paper's configuration: fp32 against the fast path, side by side.

One step = the triplet diffusion step of `Trainer.training_step` (batch B doubled by the negatives,
forward, backward, AdamW). Variants: fp32 (no autocast, unfused AdamW; TF32 matmuls on CUDA),
fp32strict (the same without TF32) and fast (bf16 autocast,
TF32, fused AdamW on CUDA; optionally torch.compile); a `+ddp` suffix wraps the model in
DistributedDataParallel inside a one-process group, which measures DDP's overhead on one device
(gradient bucketing and the all-reduce call) with the same step. Reports samples/s (before doubling), achieved
FLOP/s (forward + backward ~ 3x the forward's analytic FLOPs), and peak memory.

    python benchmarks/bench_training.py --batch 256 --steps 20              # on a GPU
    python benchmarks/bench_training.py --batch 8 --steps 3 --device cpu    # on this CPU (slow: ~9 s a step at batch 64)
    python benchmarks/bench_training.py --variants fast,fast+compile
    python benchmarks/bench_training.py --variants fast,fast+ddp,fast+ddp0  # DDP overhead on one GPU
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_scoring import SIZES, machine, synchronize  # noqa: E402

from tdsm_core.config import ExperimentConfig, DataConfig  # noqa: E402
from tdsm_core.data.features import Benchmark, ClassPrompts, FeatureSet  # noqa: E402
from tdsm_core.runs.flops import PeakMemory, denoiser_call_flops, gpu_bf16_peak  # noqa: E402
from tdsm_core.runs.distributed import wrap_ddp  # noqa: E402
from tdsm_core.io import resolve_device  # noqa: E402
from tdsm_core.data.text import ClassTextFeatures  # noqa: E402
from tdsm_core.runs.train import Trainer  # noqa: E402


def synthetic_problem(model_cfg, num_classes=60, per_class=64, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes - 5), per_class)
    features = rng.normal(size=(len(labels), model_cfg.feature_dim)).astype(np.float32)
    names = [f"class {i}" for i in range(num_classes)]
    benchmark = Benchmark("synthetic", np.arange(num_classes - 5), np.arange(num_classes - 5, num_classes),
                          ClassPrompts(names, names, names), FeatureSet(features, labels), FeatureSet(features[:5], labels[:5]))
    g = torch.Generator().manual_seed(seed)
    text = ClassTextFeatures(torch.randn(num_classes, model_cfg.text_len, model_cfg.text_dim, generator=g),
                             torch.randn(num_classes, model_cfg.text_dim, generator=g))
    return benchmark, text


class PlainFP32Trainer(Trainer):
    """The same step with no autocast and the default (unfused) AdamW: the fp32 reference."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.train.lr,
                                           weight_decay=self.cfg.train.weight_decay, fused=False, foreach=False)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)

    def training_step(self):
        with _no_autocast():
            return super().training_step()


@contextlib.contextmanager
def _no_autocast():
    import tdsm_core.runs.train as train_module

    original = train_module.autocast_context
    train_module.autocast_context = lambda device, enabled=True: contextlib.nullcontext()
    try:
        yield
    finally:
        train_module.autocast_context = original


def one_process_group(device: torch.device) -> None:
    """A process group of one, so DDP can wrap the model without torchrun."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(port))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="paper")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variants", default="fp32,fast")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    model_cfg = SIZES[args.size]
    benchmark, text = synthetic_problem(model_cfg)
    flops = denoiser_call_flops(model_cfg, skip_last_text_stream=False)
    per_step = 3 * 2 * args.batch * flops.total  # forward + backward, positives and negatives
    peak = gpu_bf16_peak(device)[1] if device.type == "cuda" else None
    print(f"machine: {machine(device)}")
    print(f"model: {model_cfg}; batch {args.batch} (x2 with negatives); {per_step / 1e12:.2f} TFLOP per step (analytic)")
    rates = {}
    for variant in args.variants.split(","):
        compile_model = "+compile" in variant
        cfg = ExperimentConfig(name="bench", model=model_cfg, data=DataConfig())
        cfg.train.batch_size, cfg.train.steps, cfg.train.compile = args.batch, 10**6, compile_model
        trainer_cls = PlainFP32Trainer if variant.startswith("fp32") else Trainer
        trainer = trainer_cls(cfg, benchmark, text, run_dir="/tmp/tdsm-bench-unused", device=device)
        if variant.startswith("fp32strict"):  # IEEE fp32 matmuls: no TF32 either
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        if "+ddp" in variant:  # "+ddp": as the Trainer wraps it; "+ddp0": DDP's default options
            one_process_group(device)
            if "+ddp0" in variant:
                ids = [device.index or 0] if device.type == "cuda" else None
                trainer.train_model = torch.nn.parallel.DistributedDataParallel(trainer.model, device_ids=ids)
            else:
                trainer.train_model = wrap_ddp(trainer.model, device)
            if compile_model:
                trainer.train_model = torch.compile(trainer.train_model)
        for _ in range(args.warmup):
            trainer.training_step()
        with PeakMemory(device) as memory:
            synchronize(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.training_step()
            synchronize(device)
            seconds = (time.perf_counter() - start) / args.steps
        rates[variant] = args.batch / seconds
        fraction = f" ({100 * per_step / seconds / peak:.1f}% of bf16 peak)" if peak else ""
        print(f"{variant:14s} {seconds * 1e3:9.1f} ms/step  {rates[variant]:9.1f} samples/s  "
              f"{per_step / seconds / 1e12:7.2f} TFLOP/s{fraction}  peak mem {memory.peak_gib:.2f} GiB")
        del trainer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for reference in ("fp32strict", "fp32"):
        if reference in rates:
            for variant, rate in rates.items():
                if variant != reference:
                    print(f"{variant} / {reference} throughput: {rate / rates[reference]:.2f}x")
    for variant, rate in rates.items():
        plain = variant.replace("+ddp0", "").replace("+ddp", "")
        if "+ddp" in variant and plain in rates:
            print(f"{variant} / {plain} throughput: {rate / rates[plain]:.3f}x (DDP overhead on one device: "
                  f"{100 * (1 - rate / rates[plain]):.1f}%)")


if __name__ == "__main__":
    main()
