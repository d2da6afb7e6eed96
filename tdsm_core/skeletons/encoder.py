"""Training the Shift-GCN skeleton encoder on the seen classes, and exporting its features.

The encoder never sees an unseen class: it is trained with cross-entropy over the seen classes of
the training subjects only. Its pooled activations are then written in the SA-DVAE layout

    train = seen classes, training subjects      val   = seen classes, test subjects
    ztest = unseen classes, test subjects        gtest = all classes, test subjects

so the rest of the workbook runs on them unchanged. The skeletons may stay on disk (a DiskArray from
`preprocess.preprocess_to_file`): training and export read one batch of rows at a time. Checkpoints,
resume, seeding and the metrics log follow the denoiser trainer's conventions (`runs/metrics_log.py`, `runs/checkpoint.py`).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..runs.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from ..config import ExperimentConfig, encoder_differences
from ..data.features import PARTS
from ..runs.distributed import World, average_scalars, shard, wrap_ddp
from ..errors import CheckpointError, ConfigError, DataError
from ..io import resolve_device, save_npy_atomic, write_json
from ..runs.lock import RunLock, remove_stale_temporaries
from ..runs.metrics_log import TENSORBOARD_DIR, MetricsLog, batch_indices
from .shiftgcn import ShiftGCN, ShiftGCNConfig
from .store import DiskArray
from .streams import apply_augmentation, draw_augmentation, stream_input
from ..runs.train import cosine_with_warmup

LAST, BEST = "encoder_last.pt", "encoder_best.pt"


# The performers of the official NTU RGB+D cross-subject training set: the first 20 are NTU-60's, the
# whole list is NTU-120's (NTU-120 only adds performers 41 to 106, so one list serves both).
NTU_TRAIN_SUBJECTS = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38, 45, 46, 47, 49, 50,
                      52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89, 91, 92, 93, 94, 95,
                      97, 98, 100, 103)


def default_train_subjects(subjects: np.ndarray, layout: str = "") -> np.ndarray:
    """The cross-subject training performers when none are configured: NTU's official list for NTU
    skeletons (layout ntu25), odd performer ids otherwise (the MSR Action3D and UTKinect convention)."""
    present = np.unique(subjects)
    if layout == "ntu25":
        return np.intersect1d(present, NTU_TRAIN_SUBJECTS)
    return present[present % 2 == 1]


def subject_split(labels: np.ndarray, subjects: np.ndarray | None, unseen: np.ndarray,
                  train_subjects: list[int] | None = None, layout: str = "") -> dict[str, np.ndarray]:
    """Row indices of train / val / ztest / gtest from a cross-subject split; without `train_subjects`
    the training performers are `default_train_subjects(subjects, layout)`."""
    if subjects is None:
        raise DataError("the skeleton data has no `subjects` field, so no cross-subject split can be made; "
                        "add performer ids to the .npz (field `subjects`).")
    train_subjects = np.asarray(train_subjects if train_subjects else default_train_subjects(subjects, layout))
    in_train = np.isin(subjects, train_subjects)
    unseen_row = np.isin(labels, unseen)
    parts = {"train": np.flatnonzero(in_train & ~unseen_row), "val": np.flatnonzero(~in_train & ~unseen_row),
             "ztest": np.flatnonzero(~in_train & unseen_row), "gtest": np.flatnonzero(~in_train)}
    for name in ("train", "ztest"):
        if parts[name].size == 0:
            raise DataError(f"the cross-subject split leaves no {name} samples (training subjects "
                            f"{train_subjects.tolist()}); set skeleton.train_subjects to a subset of the subjects.")
    return parts


def all_samples_split(labels: np.ndarray, unseen: np.ndarray, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Row indices of the all-samples protocol: every sample of the unseen classes is tested (ztest); each seen
    class keeps a seeded `val_fraction` of its samples (at least one) for seen-class validation and gtest, and
    trains on the rest. Subjects play no part."""
    rng = np.random.default_rng(seed)
    unseen_row = np.isin(labels, unseen)
    val = []
    for c in np.setdiff1d(np.unique(labels), unseen):
        rows = rng.permutation(np.flatnonzero(labels == c))
        if len(rows) < 2:
            raise DataError(f"seen class {c} has {len(rows)} sample, and the all-samples protocol needs at least 2 per "
                            f"seen class (one to train on, one to validate with).")
        val.append(rows[:max(1, int(round(val_fraction * len(rows))))])
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train = np.setdiff1d(np.flatnonzero(~unseen_row), val)
    ztest = np.flatnonzero(unseen_row)
    if ztest.size == 0:
        raise DataError("the all-samples protocol leaves no ztest samples: no sequence belongs to an unseen class.")
    return {"train": train, "val": val, "ztest": ztest, "gtest": np.sort(np.concatenate([val, ztest]))}


def encoder_config(cfg: ExperimentConfig, num_seen: int, num_joints: int, num_actors: int) -> ShiftGCNConfig:
    s = cfg.skeleton
    encoder = ShiftGCNConfig(num_classes=num_seen, num_joints=num_joints, num_actors=num_actors,
                             in_channels=3 * len(s.streams), channels=list(s.channels), strides=list(s.strides))
    if encoder.feature_dim != cfg.model.feature_dim:
        raise DataError(f"the encoder's last width skeleton.channels[-1] = {encoder.feature_dim} must equal "
                        f"model.feature_dim = {cfg.model.feature_dim}; change one of them.")
    return encoder


class EncoderTrainer:
    """Cross-entropy training of Shift-GCN on the seen classes, into `run_dir` (encoder_*.pt, encoder_metrics.jsonl)."""

    def __init__(self, cfg: ExperimentConfig, skeletons: np.ndarray | DiskArray, labels: np.ndarray,
                 parts: dict[str, np.ndarray], seen: np.ndarray, run_dir: str | Path,
                 device: str | torch.device | None = None, world: World | None = None, bones: np.ndarray | None = None):
        self.cfg = cfg
        self.bones = np.zeros((0, 2), np.int64) if bones is None else np.asarray(bones, dtype=np.int64)
        if any(s.startswith("bone") for s in cfg.skeleton.streams) and not len(self.bones):
            raise ConfigError(f"skeleton.streams {cfg.skeleton.streams} need the layout's bones, which the skeleton "
                              f"data does not give; use streams joint and joint_motion, or add bones to the .npz.")
        self.run_dir = Path(run_dir)
        self.world = world or World(device=resolve_device(str(device) if device is not None else cfg.skeleton.device))
        self.device = self.world.device
        if cfg.skeleton.batch_size % self.world.size:
            raise ConfigError(f"skeleton.batch_size ({cfg.skeleton.batch_size}) must be divisible by the number of "
                              f"processes ({self.world.size}).")
        self.seen = np.asarray(seen)
        lookup = np.full(int(max(labels.max(), self.seen.max())) + 1, -1, dtype=np.int64)
        lookup[self.seen] = np.arange(len(self.seen))
        self.x = skeletons  # (N, T, M, J, 3) in memory or a DiskArray on disk; batches are read and moved to the device
        self.targets = torch.from_numpy(lookup[labels])  # seen index, -1 for unseen rows
        self.parts = parts
        _, _, actors, joints, _ = skeletons.shape
        config = encoder_config(cfg, len(self.seen), joints, actors)
        with torch.random.fork_rng(devices=[]):  # initialisation from the run seed alone
            torch.manual_seed(cfg.seed)
            self.model = ShiftGCN(config).to(self.device)
        self.train_model: torch.nn.Module = self.model
        if self.world.distributed:  # BatchNorm statistics stay per process; buffers follow rank 0
            self.train_model = wrap_ddp(self.model, self.device, has_buffers=True)
        s = cfg.skeleton
        self.steps_per_epoch = math.ceil(len(parts["train"]) / s.batch_size)
        self.total_steps = s.epochs * self.steps_per_epoch
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=s.lr, momentum=s.momentum, nesterov=True,
                                         weight_decay=s.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_with_warmup(s.warmup_epochs * self.steps_per_epoch, self.total_steps, first_step=1.0))
        self.step, self.best = 0, -math.inf
        self.log_path = self.run_dir / "encoder_metrics.jsonl"

    def state(self) -> dict[str, Any]:
        return dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict(), step=self.step,
                    config=self.cfg.to_dict(), encoder=self.model.config.__dict__, seen=self.seen.tolist(),
                    best_score=self.best)

    def resume(self) -> bool:
        path = self.run_dir / LAST
        if not path.exists():
            return False
        data = load_checkpoint(path, map_location=self.device)
        if data.get("encoder") != self.model.config.__dict__ or data.get("seen") != self.seen.tolist():
            raise CheckpointError(f"checkpoint {path} belongs to another encoder or split; use a new output folder.")
        changed = encoder_differences(data.get("config", {}), self.cfg)
        if changed:
            raise CheckpointError(f"encoder checkpoint {path} was trained with other settings ({'; '.join(changed)}); "
                                  f"put them back to resume it, or use a new output folder.")
        load_model_state(self.model, data["model"], path)
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        self.step, self.best = int(data["step"]), float(data["best_score"])
        return True

    def batch(self, rows: np.ndarray) -> torch.Tensor:
        """The skeletons of `rows` on the device: (B, T, M, J, 3). Only these rows are read."""
        return torch.from_numpy(np.ascontiguousarray(self.x[np.asarray(rows)])).to(self.device)

    def training_step(self) -> float:
        s = self.cfg.skeleton
        rows = self.parts["train"][batch_indices(self.cfg.seed, self.step, len(self.parts["train"]), s.batch_size)]
        # seeded augmentation, drawn for the global batch (skeleton.augment; the default scales by U(0.9, 1.1))
        matrix = draw_augmentation(self.cfg.seed, self.step, len(rows), s.augment, s.rotate_degrees, s.shear)
        local = shard(len(rows), self.world)
        rows = rows[local]
        x = apply_augmentation(self.batch(rows), None if matrix is None else matrix[local])
        x = stream_input(x, self.bones, s.streams)
        self.train_model.train()
        loss = torch.nn.functional.cross_entropy(self.train_model(x), self.targets[rows].to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return average_scalars({"loss": float(loss.detach())}, self.world)["loss"]

    @torch.no_grad()
    def features(self, rows: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Pooled features and seen-class logits of the given rows (eval mode)."""
        self.model.eval()
        feats, logits = [], []
        for start in range(0, len(rows), batch_size):
            x = stream_input(self.batch(rows[start:start + batch_size]), self.bones, self.cfg.skeleton.streams)
            h = self.model.features(x)
            feats.append(h.float().cpu())
            logits.append(self.model.classifier(h).float().cpu())
        return torch.cat(feats).numpy(), torch.cat(logits).numpy()

    def validate(self) -> float:
        """Seen-class accuracy (%) on the seen classes of the test subjects."""
        rows = self.parts["val"]
        if rows.size == 0:
            return float("nan")
        _, logits = self.features(rows)
        return float(100.0 * (logits.argmax(1) == self.targets[rows].numpy()).mean())

    def fit(self, resume: bool = True, progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
        """Train to the end of the schedule (or `stop_after` more steps), checkpointing every epoch."""
        if not self.world.is_main:
            return self._fit(resume, progress, stop_after)
        with RunLock(self.run_dir, "encoder"):
            remove_stale_temporaries(self.run_dir)
            return self._fit(resume, progress, stop_after)

    def _fit(self, resume: bool, progress: bool, stop_after: int | None) -> dict[str, Any]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.resume() if resume else False
        main = self.world.is_main
        log = MetricsLog(self.log_path, self.run_dir / TENSORBOARD_DIR, "encoder", self.step) if main else None
        try:
            return self._train(progress, stop_after, resumed, log)
        finally:
            if log is not None:
                log.close()

    def _train(self, progress: bool, stop_after: int | None, resumed: bool, log: MetricsLog | None) -> dict[str, Any]:
        main = log is not None
        started = time.time()
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"encoder {self.cfg.name}",
                   disable=not (progress and main), dynamic_ncols=True)
        end = self.total_steps if stop_after is None else min(self.total_steps, self.step + stop_after)
        while self.step < end:
            loss = self.training_step()
            bar.update(1)
            if self.step % self.steps_per_epoch == 0 or self.step == end:
                accuracy = self.validate()  # the same on every rank (same weights, same data)
                bar.set_postfix(loss=f"{loss:.3f}", val=f"{accuracy:.1f}")
                improved = accuracy > self.best
                self.best = max(self.best, accuracy)
                if main:  # rank 0 alone writes
                    log.write({"step": self.step, "epoch": self.step // self.steps_per_epoch, "loss": loss,
                               "lr": self.scheduler.get_last_lr()[0], "val_seen_top1": accuracy})
                    if improved:
                        save_checkpoint(self.run_dir / BEST, **self.state())
                    save_checkpoint(self.run_dir / LAST, **self.state())
        bar.close()
        return {"step": self.step, "resumed": resumed, "seconds": round(time.time() - started, 1),
                "final_val_seen_top1": self.validate(), "best_val_seen_top1": self.best}

    def export(self, out_dir: str | Path, labels: np.ndarray) -> Path:
        """Write the features of every part in the SA-DVAE layout (plus `export.json`) into `out_dir`."""
        out_dir = Path(out_dir)
        for part, (feature_file, label_file) in PARTS.items():
            rows = self.parts[part]
            if rows.size == 0:
                continue
            feats, _ = self.features(rows)
            save_npy_atomic(out_dir / feature_file, feats.astype(np.float32))
            save_npy_atomic(out_dir / label_file, labels[rows].astype(np.int64))
        write_json(out_dir / "export.json", {"encoder_step": self.step, "seen": self.seen.tolist(),
                                             "counts": {p: int(r.size) for p, r in self.parts.items()}})
        return out_dir
