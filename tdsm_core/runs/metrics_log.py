"""Conventions shared by every trainer in the package: seeded per-step draws and the metrics log.

Randomness of step s comes from a generator seeded by (run seed, s, stream), and the sample order
from one seeded permutation per epoch, so a resumed run draws exactly what an uninterrupted one
draws. Each run folder has a `metrics.jsonl` log, one JSON record per line; on resume the records
written after the checkpoint (by a run that was killed later) are dropped. The same scalars also go
to TensorBoard event files in the run's `tensorboard/` folder (`MetricsLog`; `make board` serves
them), when the tensorboard package is installed and TDSM_TENSORBOARD is not 0; `metrics.jsonl`
stays what the figures and the resume read.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_write_text


def step_seed(seed: int, step: int, stream: int) -> int:
    """A 63-bit seed for (run seed, step, stream) so every draw is reproducible on its own."""
    mixed = np.random.SeedSequence([seed & 0xFFFFFFFF, step, stream]).generate_state(2, dtype=np.uint32)
    return int(mixed[0]) << 31 ^ int(mixed[1])


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A CPU generator for one (seed, step, stream)."""
    return torch.Generator().manual_seed(step_seed(seed, step, stream))


def batch_indices(seed: int, step: int, num_samples: int, batch_size: int) -> np.ndarray:
    """Rows of global batch `step`: positions step*B .. step*B+B-1 of a stream of per-epoch permutations."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = np.divmod(positions, num_samples)
    indices = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        perm = torch.randperm(num_samples, generator=step_generator(seed, int(epoch), 1)).numpy()
        mask = epochs == epoch
        indices[mask] = perm[offsets[mask]]
    return indices


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line to a metrics log."""
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a metrics log (a line cut short by a crash is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def trim_records(path: str | Path, last_step: int) -> None:
    """Keep only records up to `last_step` (called when resuming from the checkpoint of that step)."""
    path = Path(path)
    if path.exists():
        kept = [r for r in read_records(path) if r.get("step", 0) <= last_step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


TENSORBOARD_DIR = "tensorboard"
NOT_SCALARS = ("step", "epoch", "seconds")


def tensorboard_enabled() -> bool:
    """Whether trainers write TensorBoard event files: the package is installed and TDSM_TENSORBOARD is not 0."""
    if os.environ.get("TDSM_TENSORBOARD", "1") == "0":
        return False
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class MetricsLog:
    """One trainer's metrics: JSON lines in `path` and the same scalars as TensorBoard events in `board_dir`.

    Opening it for a run that resumes from step `resume_step` drops the JSON records after that step
    and tells TensorBoard to purge its events after it (`purge_step`), so both logs hold each step
    once. Every numeric field but step, epoch and seconds becomes the scalar `<prefix>/<field>`."""

    def __init__(self, path: str | Path, board_dir: str | Path, prefix: str, resume_step: int = 0):
        self.path, self.prefix = Path(path), prefix
        trim_records(self.path, resume_step)
        self.writer = None
        if tensorboard_enabled():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(board_dir), purge_step=resume_step + 1 if resume_step else None)

    def write(self, record: dict[str, Any]) -> None:
        append_record(self.path, record)
        if self.writer is None:
            return
        for key, value in record.items():
            if key not in NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{self.prefix}/{key}", value, int(record["step"]))
        self.writer.flush()  # a killed run keeps what it logged

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
