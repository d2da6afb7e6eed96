"""Training the denoiser with the triplet diffusion objective, with checkpoints and exact resume.

Randomness: the batch indices, timesteps, noises and negative classes of step s come from a
generator seeded by (seed, s), and the sample order from one seeded permutation per epoch. A run
stopped at any checkpoint and resumed therefore draws exactly what an uninterrupted run draws, on
any device and for any number of processes (each process takes its slice of the global batch).

Selection is honest: `best.pt` is chosen on validation data (seen classes, test subjects) and
never on `ztest`. The paper's protocol (best ztest accuracy over periodic evaluations) can be
logged separately, labelled `paper_protocol_*`, for comparison with published numbers only.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, load_model_state, save_checkpoint
from ..config import ExperimentConfig, save_config, training_differences
from ..data.features import Benchmark, FeatureNorm
from .distributed import World, average_scalars, shard, sharded_score, wrap_ddp
from ..errors import CheckpointError, ConfigError, TrainingError
from ..evaluate import ZeroShotScorer, autocast_context, exact_matmuls, resolve_precision, zero_shot_metrics
from ..io import resolve_device
from .lock import RunLock, check_writable_folder, remove_stale_temporaries
from .build import build_model, build_schedule, select_text_features
from ..losses import triplet_diffusion_objective
from ..model import Denoiser, DenoiserConfig
from .metrics_log import TENSORBOARD_DIR, MetricsLog, batch_indices, step_generator
from ..data.text import ClassTextFeatures

LAST, BEST = "last.pt", "best.pt"
BADLY_SCALED = 1e4  # features beyond this magnitude are blamed when the loss diverges (pooled activations are O(1-10))


def snapshot_name(step: int) -> str:
    """File name of the weights-only snapshot kept at `step` (train.keep_every)."""
    return f"step_{step:07d}.pt"


def forget_previous_results(run_dir: Path) -> list[Path]:
    """Before a run starts from step 0 in a folder that held another: remove what the earlier weights
    produced (scores, metrics.json, best.pt, snapshots, TensorBoard events), so nothing can read them as this run's."""
    stale = ([run_dir / name for name in ("metrics.json", "scores_ztest.npz", BEST)] + sorted(run_dir.glob("step_*.pt"))
             + sorted((run_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*")))
    removed = [path for path in stale if path.is_file()]
    for path in removed:
        path.unlink()
    return removed


def cosine_with_warmup(warmup_steps: int, total_steps: int, first_step: float = 0.0) -> Callable[[int], float]:
    """LR multiplier of update `step` (0-based): linear warm-up to 1, then a half cosine down to 0 at total_steps.

    The warm-up factor is (step + first_step) / warmup_steps. The denoiser uses first_step 0, as the
    TDSM release does (`step / warmup_steps`: its first update runs at lr 0); the skeleton encoder
    keeps first_step 1, so its first update already moves."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + first_step) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


@dataclass
class StepDraw:
    """Everything random about one global training step (the same on every process)."""

    indices: torch.Tensor  # (B,) rows of the training set
    timesteps: torch.Tensor  # (B,)
    noise: torch.Tensor  # (B, F)
    negative_labels: torch.Tensor  # (B,), or (B, K) with K > 1 negatives per sample


def draw_step(seed: int, step: int, num_samples: int, batch_size: int, feature_dim: int,
              seen: torch.Tensor, num_timesteps: int, num_negatives: int = 1) -> StepDraw:
    """The global batch of `step`: sample order from per-epoch permutations, the rest from (seed, step)."""
    indices = batch_indices(seed, step, num_samples, batch_size)
    generator = step_generator(seed, step, 2)
    timesteps = torch.randint(0, num_timesteps, (batch_size,), generator=generator)
    noise = torch.randn(batch_size, feature_dim, generator=generator)
    shape = (batch_size,) if num_negatives == 1 else (batch_size, num_negatives)
    negatives = seen[torch.randint(0, len(seen), shape, generator=generator)]
    return StepDraw(torch.from_numpy(indices), timesteps, noise, negatives)


def seen_text_spread(text: ClassTextFeatures, seen: torch.Tensor) -> tuple[float, float]:
    """How far the seen classes' texts lie apart: the standard deviation across seen classes of every
    dimension (of every token position, for tokens), averaged over dimensions; (pooled, tokens).
    The unit of train.text_noise. Unseen classes' texts are never read."""
    if len(seen) < 2:
        raise ConfigError("train.text_noise needs at least 2 seen classes to measure their texts' spread; "
                          "set train.text_noise: 0.")
    pooled = text.pooled[seen.to(text.pooled.device)].float()
    tokens = text.tokens[seen.to(text.tokens.device)].float()
    return float(pooled.std(dim=0).mean()), float(tokens.std(dim=0).mean())


class WeightAverage:
    """Exponential moving average of a model's weights (train.ema_decay), updated after every step.

    The decay of update n is min(decay, (1 + n) / (10 + n)): early updates average over the few steps
    taken so far instead of holding on to the initial weights. Buffers are copied as they are."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averaged = list(self.model.parameters())
        torch._foreach_lerp_(averaged, [p.detach() for p in model.parameters()], 1.0 - decay)
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


class Trainer:
    """Trains one config on one benchmark into `run_dir` (checkpoints, metrics.jsonl, config.yaml)."""

    def __init__(self, cfg: ExperimentConfig, benchmark: Benchmark, text: ClassTextFeatures,
                 run_dir: str | Path | None = None, device: str | torch.device | None = None,
                 world: World | None = None):
        self.cfg = cfg
        self.benchmark = benchmark
        self.run_dir = Path(run_dir) if run_dir is not None else cfg.run_dir()
        self.world = world or World(device=resolve_device(str(device) if device is not None else cfg.train.device))
        self.device = self.world.device
        self.rank, self.world_size = self.world.rank, self.world.size
        if cfg.train.batch_size % self.world_size:
            raise ConfigError(f"train.batch_size ({cfg.train.batch_size}) must be divisible by the number of processes "
                              f"({self.world_size}); pick a batch size that is a multiple of --nproc_per_node.")
        resolve_precision(cfg.eval.precision, self.device)  # e.g. int8 on a GPU: refused now, not after training
        # A batch larger than the training set is allowed: it runs on through the next epoch's permutation
        # (batch_indices), so each sample appears once or twice in it with its own noise and timestep. Class-fold
        # validation of a small dataset needs it (an MSR or UTKinect fold trains on 40 to 150 samples) to keep the
        # recipe of the real split.
        check_writable_folder(self.run_dir)
        self.text = select_text_features(text, cfg.train.text_features).to(self.device)
        self.schedule = build_schedule(cfg)
        self.model = build_model(cfg).to(self.device)
        for p in self.model.unused_parameters():
            p.requires_grad_(False)  # never read, so never updated; DDP must not wait for their gradients
        # what the step calls: the model, wrapped by DDP across processes, optionally compiled
        self.train_model: torch.nn.Module = self.model
        if self.world.distributed:
            self.train_model = wrap_ddp(self.model, self.device)
        if cfg.train.compile:
            self.train_model = torch.compile(self.train_model)
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr,
                                           weight_decay=cfg.train.weight_decay, fused=fused)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_with_warmup(cfg.train.warmup_steps, cfg.train.steps))
        self.average = WeightAverage(self.model, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        self.features = torch.from_numpy(benchmark.train.features).to(self.device)
        self.labels = torch.from_numpy(benchmark.train.labels).to(self.device)
        self.seen = torch.from_numpy(benchmark.seen)
        self.text_spread = seen_text_spread(self.text, self.seen) if cfg.train.text_noise > 0 else None
        self.step = 0
        self.best_score = -math.inf
        self.paper_best = -math.inf
        self.history: dict[str, Any] = {}
        self.metrics_log: MetricsLog | None = None  # rank 0, while fitting

    # ------------------------------------------------------------------------------------------
    # checkpoints

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def eval_model(self) -> Denoiser:
        """The weights that are evaluated: the moving average when train.ema_decay is set, else the model."""
        return self.average.model if self.average is not None else self.model

    def state(self) -> dict[str, Any]:
        norm = self.benchmark.feature_norm
        extra = {"ema": self.average.state_dict()} if self.average is not None else {}
        return dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict(), step=self.step,
                    config=self.cfg.to_dict(), best_score=self.best_score, paper_best=self.paper_best,
                    seen=self.benchmark.seen.tolist(), unseen=self.benchmark.unseen.tolist(),
                    feature_norm=norm.as_dict() if norm is not None else None, **extra)

    def save(self, name: str) -> None:
        if self.is_main:
            save_checkpoint(self.run_dir / name, **self.state())

    def resume(self, path: str | Path | None = None) -> bool:
        """Load `last.pt` (or `path`) if present; returns whether a checkpoint was loaded."""
        path = Path(path) if path is not None else self.run_dir / LAST
        if not path.exists():
            return False
        data = load_checkpoint(path, map_location=self.device)
        saved_model = DenoiserConfig(**data["config"]["model"])
        if saved_model != self.cfg.model:
            raise CheckpointError(f"checkpoint {path} was trained with model {saved_model} but the config asks for "
                                  f"{self.cfg.model}; use a new output folder or the original config.")
        if data["config"]["train"]["steps"] != self.cfg.train.steps:
            raise CheckpointError(f"checkpoint {path} belongs to a {data['config']['train']['steps']}-step schedule but "
                                  f"train.steps is {self.cfg.train.steps}; resume with the same schedule or start a new run.")
        changed = training_differences(data["config"], self.cfg)
        if changed:
            raise CheckpointError(f"checkpoint {path} was trained with other settings ({'; '.join(changed)}); put them "
                                  f"back to resume it, or start a new run under another name (--set name=...).")
        check_feature_norm(data, self.benchmark, path)
        load_model_state(self.model, data["model"], path)
        if self.average is not None:
            if "ema" not in data:
                raise CheckpointError(f"checkpoint {path} holds no weight average although train.ema_decay is set; "
                                      f"resume it with the settings it was trained with, or start a new run.")
            self.average.load_state_dict(data["ema"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        self.step = int(data["step"])
        self.best_score = float(data.get("best_score", -math.inf))
        self.paper_best = float(data.get("paper_best", -math.inf))
        return True

    # ------------------------------------------------------------------------------------------
    # one step

    def training_step(self) -> dict[str, float]:
        """One optimiser step on this process's slice of the global batch of `self.step`."""
        cfg = self.cfg
        draw = draw_step(cfg.seed, self.step, len(self.labels), cfg.train.batch_size, cfg.model.feature_dim,
                         self.seen, self.schedule.num_timesteps, cfg.loss.num_negatives)
        local = shard(cfg.train.batch_size, self.world)  # equal shares: the batch divides by the world size
        idx = draw.indices[local].to(self.device)
        t = draw.timesteps[local].to(self.device)
        noise = draw.noise[local].to(self.device)[:, None, :]  # (b, 1, F)
        negatives = draw.negative_labels[local].to(self.device).reshape(len(idx), -1).T.reshape(-1)  # (K * b,)
        x0 = self.features[idx][:, None, :]  # (b, 1, F)
        labels = self.labels[idx]
        offsets = self.text_offsets(local, len(negatives) // len(idx))
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this update uses (the scheduler moves it after)
        self.train_model.train()
        exact = cfg.train.precision == "fp32"
        with exact_matmuls(self.device, exact), autocast_context(self.device, enabled=not exact):
            terms = triplet_diffusion_objective(self.train_model, self.schedule, x0, labels, negatives,
                                                self.text.pooled, self.text.tokens, noise, t, cfg.loss.margin,
                                                cfg.loss.diffusion_weight, cfg.loss.triplet_weight, offsets)
        self.optimizer.zero_grad(set_to_none=True)
        with exact_matmuls(self.device, exact):
            terms.total.backward()
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.average is not None:
            self.average.update(self.model)
        self.step += 1
        logged = {"lr": lr, **average_scalars(terms.as_floats(), self.world)}
        if not math.isfinite(logged["loss"]):
            scale = float(self.features.abs().max())
            if scale > BADLY_SCALED:  # then the data, not the step size, is what breaks the arithmetic
                raise TrainingError(f"the loss became {logged['loss']} at step {self.step} and the training features "
                                    f"reach {scale:.3g} in absolute value, far beyond the unit scale of the diffusion "
                                    f"noise; standardise the features (e.g. zero mean, unit variance), and lower "
                                    f"train.lr if it still diverges.")
            raise TrainingError(f"the loss became {logged['loss']} at step {self.step}; lower train.lr "
                                     f"or set train.grad_clip.")
        return logged

    def text_offsets(self, local: slice, num_negatives: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """train.text_noise: this process's rows of the step's text noise, positives then negatives (or None).

        Drawn for the whole global batch from (seed, step), so the noise of a row does not depend on the
        number of processes."""
        if self.text_spread is None:
            return None
        cfg, (pooled_spread, tokens_spread) = self.cfg, self.text_spread
        generator = step_generator(cfg.seed, self.step, 6)
        rows = (1 + num_negatives, cfg.train.batch_size)
        pooled = torch.randn(*rows, self.text.pooled.shape[-1], generator=generator)[:, local]
        tokens = torch.randn(*rows, *self.text.tokens.shape[1:], generator=generator)[:, local]
        scale = cfg.train.text_noise
        return ((scale * pooled_spread * pooled.flatten(0, 1)).to(self.device),
                (scale * tokens_spread * tokens.flatten(0, 1)).to(self.device))

    # ------------------------------------------------------------------------------------------
    # validation

    def scorer(self) -> ZeroShotScorer:
        """Scorer for validation: the text already ablated, never the cascade, int8 or bf16 copies; the default
        precision (exact fp32 on CPUs, amp on CUDA) unless eval.precision is fp32."""
        e = self.cfg.eval
        return ZeroShotScorer(self.eval_model, self.schedule, self.text, e, reference=self.benchmark.train.features,
                              precision="fp32" if e.precision == "fp32" else "auto", cascade_top_k=0, compile=False)

    def validate(self) -> float | None:
        """Seen-class top-1 on a seeded subsample of `val` (never ztest); None when there is no val."""
        val = self.benchmark.val
        if val is None:
            return None
        rows = np.random.default_rng(self.cfg.seed).permutation(len(val))[:self.cfg.train.validation_samples]
        scores = sharded_score(self.scorer(), val.features[rows], self.benchmark.seen, self.world)
        return zero_shot_metrics(scores, val.labels[rows], self.benchmark.seen).top1

    def paper_protocol_eval(self) -> float:
        """ztest top-1 now (only for the labelled paper-protocol figure)."""
        z = self.benchmark.ztest
        return zero_shot_metrics(sharded_score(self.scorer(), z.features, self.benchmark.unseen, self.world), z.labels,
                                 self.benchmark.unseen).top1

    # ------------------------------------------------------------------------------------------
    # the loop

    def _log(self, record: dict[str, Any]) -> None:
        if self.metrics_log is not None:
            self.metrics_log.write(record)

    def fit(self, resume: bool = True, progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
        """Train to cfg.train.steps (or stop after `stop_after` more steps), checkpointing as it goes.

        Rank 0 holds the run folder's lock for the whole fit, so a second run on the same folder
        refuses to start instead of interleaving its writes."""
        if not self.is_main:
            return self._fit(resume, progress, stop_after)
        with RunLock(self.run_dir, "train"):
            remove_stale_temporaries(self.run_dir)  # left by a process killed while writing
            try:
                return self._fit(resume, progress, stop_after)
            finally:
                if self.metrics_log is not None:
                    self.metrics_log.close()
                    self.metrics_log = None

    def _fit(self, resume: bool, progress: bool, stop_after: int | None) -> dict[str, Any]:
        cfg = self.cfg.train
        resumed = self.resume() if resume else False  # before config.yaml: a refused resume leaves it as it was
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not resumed and self.step == 0:  # a fresh start (fit can also continue in memory, resume=False)
                forget_previous_results(self.run_dir)
            save_config(self.cfg, self.run_dir / "config.yaml")
            self.metrics_log = MetricsLog(self.run_dir / "metrics.jsonl", self.run_dir / TENSORBOARD_DIR, "denoiser",
                                          self.step)
        end = cfg.steps if stop_after is None else min(cfg.steps, self.step + stop_after)
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {self.cfg.name}", disable=not (progress and self.is_main),
                   dynamic_ncols=True)
        started, last_time = time.time(), time.time()
        while self.step < end:
            logged = self.training_step()
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                now = time.time()
                record = {"step": self.step, **logged,  # lr: the rate the logged step used
                          "seconds": round(now - last_time, 3)}
                last_time = now
                bar.set_postfix(loss=f"{logged['loss']:.4f}")
                self._log(record)
            validate_now = cfg.validate_every and self.step % cfg.validate_every == 0
            if validate_now or self.step == cfg.steps:
                score = self.validate()
                if score is not None:
                    self._log({"step": self.step, "val_seen_top1": score})
                    if score > self.best_score:
                        self.best_score = score
                        self.save(BEST)
            if cfg.paper_protocol_every and (self.step % cfg.paper_protocol_every == 0 or self.step == cfg.steps):
                accuracy = self.paper_protocol_eval()
                self.paper_best = max(self.paper_best, accuracy)
                self._log({"step": self.step, "paper_protocol_ztest_top1": accuracy})
            if cfg.keep_every and self.step % cfg.keep_every == 0 and self.is_main:
                norm = self.benchmark.feature_norm
                save_checkpoint(self.run_dir / snapshot_name(self.step), model=self.eval_model.state_dict(),
                                step=self.step, config=self.cfg.to_dict(),
                                feature_norm=norm.as_dict() if norm is not None else None)
            if self.step % cfg.checkpoint_every == 0 or self.step == end:
                self.save(LAST)
        bar.close()
        return {"step": self.step, "resumed": resumed, "seconds": time.time() - started,
                "best_val_seen_top1": self.best_score if self.best_score > -math.inf else None,
                "paper_protocol_best_ztest_top1": self.paper_best if self.paper_best > -math.inf else None}


def check_feature_norm(data: dict[str, Any], benchmark: Benchmark, path: str | Path) -> None:
    """A checkpoint's saved feature statistics (data.normalize) must be those of the benchmark it meets."""
    saved = data.get("feature_norm")
    if saved is None and benchmark.feature_norm is None:
        return
    if saved is None or benchmark.feature_norm is None or not benchmark.feature_norm.same_as(FeatureNorm.from_dict(saved)):
        raise CheckpointError(f"checkpoint {path} was trained on features standardised with other statistics "
                              f"(data.normalize, or another train.npy); use the features and setting it was trained "
                              f"with, or train a new run.")
