"""Analytic cost of one denoiser call, and a peak-memory probe, for the benchmarks.

FLOPs count multiply-adds as 2 and only the matrix products (linear layers and attention), which
is where the work is; normalisations and activations are a few percent more.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import torch

from ..model import DenoiserConfig

# Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s), by a substring of the device name.
GPU_BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "4090": 165e12}


@dataclass
class CallFlops:
    """FLOPs of one denoiser call: the part that depends only on (t, class), the sample's linear layers,
    and the attention products."""

    conditioning: float  # timestep/text embedders and every adaLN modulation
    linear: float  # skeleton embedding, the blocks' projections and MLPs, the final layer
    attention: float  # q k^T and the weighted sum of v

    @property
    def per_sample(self) -> float:
        return self.linear + self.attention

    @property
    def total(self) -> float:
        return self.conditioning + self.linear + self.attention


def denoiser_call_flops(cfg: DenoiserConfig, skip_last_text_stream: bool = True) -> CallFlops:
    """FLOPs of one call of `Denoiser` on one (noisy feature, class text) pair."""
    d, length, depth = cfg.hidden_dim, cfg.text_len, cfg.depth
    tokens = 1 + length
    conditioning = (256 * d + d * d) + (cfg.text_dim * d + d * d) + length * cfg.text_dim * d  # t, pooled, tokens
    conditioning += depth * 2 * d * 6 * d + d * 2 * d  # adaLN of every block (both streams) and the final layer
    block = 12 * d * d  # qkv 3D^2 + output projection D^2 + MLP 8D^2, per token
    linear = cfg.feature_dim * d + depth * tokens * block + d * cfg.feature_dim
    attention = depth * 2 * tokens * tokens * d  # scores and weighted sum, all heads
    if skip_last_text_stream:  # the last block's text tokens only serve as keys and values
        linear -= length * (block - 3 * d * d)  # their qkv is still computed; projection and MLP are not
        attention -= 2 * tokens * length * d
    return CallFlops(2.0 * conditioning, 2.0 * linear, 2.0 * attention)


def gpu_bf16_peak(device: torch.device) -> tuple[str, float | None]:
    """(device name, dense bf16 peak FLOP/s or None when unknown)."""
    name = torch.cuda.get_device_name(device)
    for key, peak in GPU_BF16_PEAK.items():
        if key in name:
            return name, peak
    return name, None


class PeakMemory:
    """Peak memory of a block of code: CUDA allocator peak on GPUs, resident set size sampled on CPUs."""

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device, self.interval, self.peak_bytes = device, interval, 0
        self._stop = threading.Event()

    @staticmethod
    def rss_bytes() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * 4096

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self.rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            self.baseline = self.rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, self.rss_bytes())

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / 2**30

    @property
    def added_gib(self) -> float:
        """Peak above what was in use when the block started."""
        return max(0, self.peak_bytes - self.baseline) / 2**30
