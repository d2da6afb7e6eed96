"""Zero-shot scoring by denoising error, and the accuracy metrics built on it.

For a test feature x0 and a candidate class k, TDSM noises x0 with a few fixed noises at one fixed
timestep t and measures how well the denoiser, given the text of k, predicts its target:

    score_k(x0) = sum_j mean((denoiser(z_t^(j), t, text_k) - target^(j))^2),
    z_t^(j) = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps_j.

The predicted class is argmin_k score_k. The batched scorer computes the text-only part of the
denoiser (timestep + text embeddings and every adaLN modulation) once per class and then runs all
(sample, class, noise) rows through the blocks in large calls, chunked to a row budget.
`score_one_class_at_a_time` is the plain loop of the original release, kept as the reference.

Optional calibration (eval.calibration, off by default as in the paper): some class texts give a low error
for every skeleton, and argmin then names that class for almost every sample. `center` subtracts from each
class's column its mean error over a fixed subsample of the seen classes' training features (features
the model trained on, never test data); `standardize` also divides by their standard deviation.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .config import CALIBRATIONS, COMPILE_MODES, PRECISIONS, EvalConfig
from .diffusion import NoiseSchedule
from .errors import ConfigError
from .model import Conditioning, Denoiser

if TYPE_CHECKING:  # the class texts' container (data/text.py); scoring only reads its tensors
    from .data.text import ClassTextFeatures


def fixed_noises(num_noise: int, feature_dim: int, seed: int) -> torch.Tensor:
    """The evaluation noises (num_noise, feature_dim), from their own generator (independent of training)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_noise, feature_dim, generator=generator)


def autocast_context(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU results stay exact fp32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def default_rows_per_call(device: torch.device) -> int:
    """Rows per scoring call: small on CPU (activations stay in cache), large on GPUs (fill the device)."""
    return 16384 if device.type == "cuda" else 512


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> amp on CUDA, fp32 elsewhere; checks the name and that int8 runs on a CPU."""
    if precision not in PRECISIONS:
        raise ConfigError(f"eval.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    if precision == "auto":
        return "amp" if device.type == "cuda" else "fp32"
    if precision == "int8" and device.type != "cpu":
        raise ConfigError("eval.precision int8 (dynamic quantisation) runs on the CPU only; use bf16 or amp on GPUs.")
    return precision


@contextlib.contextmanager
def exact_matmuls(device: torch.device, exact: bool = True):
    """Turns TF32 off for the block on CUDA (fp32 scoring is then exact), and restores the flags after."""
    if not (exact and device.type == "cuda"):
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def reduced_precision_copy(model: Denoiser, precision: str) -> Denoiser:
    """The model itself (fp32, amp), a bf16 copy, or a copy with dynamically quantised int8 linears (CPU only)."""
    precision = resolve_precision(precision, next(model.parameters()).device)
    if precision in ("fp32", "amp"):
        return model
    clone = copy.deepcopy(model).eval()
    if precision == "bf16":
        return clone.to(torch.bfloat16)
    with warnings.catch_warnings():  # eager dynamic quantisation is deprecated upstream but still the CPU int8 path here
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(clone, {torch.nn.Linear}, dtype=torch.qint8)


def check_calibration(mode: str) -> None:
    """Refuses an eval.calibration that is not one of CALIBRATIONS."""
    if mode not in CALIBRATIONS:
        raise ConfigError(f"eval.calibration must be one of {', '.join(CALIBRATIONS)}, got {mode!r}.")


def calibrate_scores(scores: np.ndarray, reference_scores: np.ndarray, mode: str) -> np.ndarray:
    """(N, K) scores of test features and (R, K) scores of reference (seen training) features for the same K
    classes -> calibrated (N, K) scores, still lower = better: none returns the scores, center subtracts each
    column's reference mean, standardize also divides by the column's reference standard deviation."""
    check_calibration(mode)
    if mode == "none":
        return scores
    reference_scores = np.asarray(reference_scores, dtype=np.float64)
    out = np.asarray(scores, dtype=np.float64) - reference_scores.mean(axis=0)
    if mode == "standardize":
        out = out / np.maximum(reference_scores.std(axis=0), 1e-12)
    return out.astype(np.float32)


def reference_rows(num_rows: int, limit: int, seed: int) -> np.ndarray:
    """The calibration subsample: the first `limit` rows of a seeded permutation (all rows when fewer)."""
    return np.sort(np.random.default_rng(seed).permutation(num_rows)[:limit])


class ZeroShotScorer:
    """Scores test features against candidate classes with a trained denoiser.

    The exact path (precision fp32, no cascade) matches `score_one_class_at_a_time` to float
    tolerance. Explicit options trade exactness for speed: `precision` amp (bf16 autocast and TF32
    on CUDA, the "auto" choice there), bf16 (weights and activations) or int8 (dynamic quantisation
    of the linear layers, CPU), and `cascade_top_k`:
    score every class with the first noise, keep the k best classes per sample, and finish only
    those with the remaining noises (the other classes stay ranked behind them by their
    first-noise error, scaled to the full number of noises).

    With `calibration` other than none, `reference` (the seen classes' training features) is required: a
    seeded subsample of `calibration_samples` of its rows is scored against the same candidate classes with
    the same noises, and `calibrate_scores` turns the raw errors into calibrated ones.
    """

    def __init__(self, model: Denoiser, schedule: NoiseSchedule, text: ClassTextFeatures,
                 settings: EvalConfig | None = None, reference: np.ndarray | torch.Tensor | None = None, **overrides):
        """`settings`: the scoring settings (a config's eval section, as `build.make_scorer` passes it; default: EvalConfig's
        defaults), with optional keyword overrides of its fields (timestep=10, num_noise=1, ...). `reference`: the
        training features that calibration measures each class's error level on (needed only when it is on)."""
        settings = dataclasses.replace(settings or EvalConfig(), **overrides)
        self.settings = settings
        timestep, num_noise, noise_seed = settings.timestep, settings.num_noise, settings.noise_seed
        max_rows_per_call, precision, cascade_top_k = settings.max_rows_per_call, settings.precision, settings.cascade_top_k
        compile, compile_mode = settings.compile, settings.compile_mode
        if not 0 <= timestep < schedule.num_timesteps:
            raise ValueError(f"eval timestep must lie in [0, {schedule.num_timesteps}), got {timestep}.")
        if num_noise < 1:
            raise ValueError(f"eval num_noise must be at least 1, got {num_noise}.")
        if cascade_top_k < 0:
            raise ValueError(f"eval cascade_top_k must be 0 (off) or positive, got {cascade_top_k}.")
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"eval compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}.")
        check_calibration(settings.calibration)
        self.calibration = settings.calibration
        self.reference = None
        if self.calibration != "none":
            if settings.calibration_samples < 2:
                raise ConfigError(f"eval.calibration_samples must be at least 2 (a mean and a spread), got "
                                  f"{settings.calibration_samples}.")
            if reference is None or len(reference) < 2:
                raise ConfigError(f"eval.calibration {self.calibration} measures each class's error level on the seen "
                                  f"classes' training features, and the scorer was given "
                                  f"{'none' if reference is None else 'fewer than 2'}; pass reference="
                                  f"benchmark.train.features (make_scorer does), or set eval.calibration: none.")
            rows = reference_rows(len(reference), settings.calibration_samples, settings.noise_seed)
            self.reference = torch.as_tensor(np.asarray(reference[rows]), dtype=torch.float32)  # reads only those rows
        self._reference_scores: dict[tuple[int, ...], np.ndarray] = {}
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device)  # never "auto"
        self.model = reduced_precision_copy(model, self.precision)
        self.schedule = schedule
        self.text = text
        self.timestep = timestep
        self.noises = fixed_noises(num_noise, model.config.feature_dim, noise_seed)
        self.max_rows_per_call = max_rows_per_call or default_rows_per_call(self.device)
        self.autocast = self.precision == "amp"
        self.cascade_top_k = cascade_top_k
        # Compiled, every call has exactly max_rows_per_call rows (the last call of a chunk is padded), so one
        # static-shape graph serves the whole split and max-autotune can tune its matrix products for that size.
        self._pad_calls = compile
        self._denoise_rows = (torch.compile(self._denoise_rows_eager, dynamic=False,
                                            mode=None if compile_mode == "default" else compile_mode)
                              if compile else self._denoise_rows_eager)
        self.calls = 0  # denoiser rows evaluated so far, padding excluded (for benchmarks)

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def _conditioning(self, classes: torch.Tensor) -> Conditioning:
        """Text-only part of the denoiser, once per candidate class."""
        t = torch.full((len(classes),), self.timestep, device=self.device, dtype=torch.long)
        with autocast_context(self.device, self.autocast):
            return self.model.condition(t, self.text.pooled[classes].to(self.device, self.dtype),
                                        self.text.tokens[classes].to(self.device, self.dtype))

    def _denoise_rows_eager(self, z_t: torch.Tensor, cond: Conditioning, class_rows: torch.Tensor) -> torch.Tensor:
        """z_t (r, 1, F) and each row's class -> prediction (r, 1, F). The gather of each row's conditioning
        happens inside, so that a compiled graph can read the per-class tensors instead of materialising
        (r, depth, 12, D) copies."""
        return self.model.denoise(z_t, cond.index(class_rows))

    def _errors(self, x0: torch.Tensor, cond: Conditioning, sample_rows: torch.Tensor, class_rows: torch.Tensor,
                noise_rows: torch.Tensor) -> torch.Tensor:
        """Denoising error of each (sample, class, noise) row, in calls of at most max_rows_per_call rows."""
        t = torch.tensor(self.timestep, device=self.device)
        noises = self.noises.to(self.device)
        out = torch.empty(len(sample_rows), device=self.device)
        for start in range(0, len(sample_rows), self.max_rows_per_call):
            rows = slice(start, start + self.max_rows_per_call)
            picks = sample_rows[rows], class_rows[rows], noise_rows[rows]
            real = len(picks[0])
            if self._pad_calls and real < self.max_rows_per_call:  # repeat the last row up to the static size
                extra = self.max_rows_per_call - real
                picks = tuple(torch.cat([p, p[-1:].expand(extra)]) for p in picks)
            clean, noise = x0[picks[0]], noises[picks[2]]  # (r, F)
            z_t = self.schedule.add_noise(clean, noise, t)[:, None].to(self.dtype)  # (r, 1, F)
            target = self.schedule.target(clean, noise, t)
            with autocast_context(self.device, self.autocast):
                pred = self._denoise_rows(z_t, cond, picks[1])  # (r, 1, F)
            out[rows] = (pred[:real, 0].float() - target[:real]).pow(2).mean(dim=-1)
            self.calls += real
        return out

    @staticmethod
    def _grid(n: int, classes: torch.Tensor | int, noises: torch.Tensor, device) -> tuple[torch.Tensor, ...]:
        """All (sample, class, noise) index triples, ordered sample-major."""
        k = classes if isinstance(classes, int) else classes.shape[-1]
        s = torch.arange(n, device=device)[:, None, None].expand(n, k, len(noises))
        c = (torch.arange(k, device=device)[None, :, None] if isinstance(classes, int) else classes[:, :, None])
        return s.reshape(-1), c.expand(n, k, len(noises)).reshape(-1), noises[None, None].expand(n, k, -1).reshape(-1)

    def score(self, features: np.ndarray | torch.Tensor, classes: np.ndarray | list[int]) -> np.ndarray:
        """features (N, F), candidate class ids (K,) -> scores (N, K), lower = better match (calibrated when
        eval.calibration is on)."""
        raw = self.raw_score(features, classes)
        if self.calibration == "none":
            return raw
        return calibrate_scores(raw, self.reference_scores(classes), self.calibration)

    def raw_score(self, features: np.ndarray | torch.Tensor, classes: np.ndarray | list[int]) -> np.ndarray:
        """The uncalibrated (N, K) denoising errors, whatever eval.calibration says."""
        with exact_matmuls(self.device, self.precision == "fp32"):
            return self._score(features, classes)

    def reference_scores(self, classes: np.ndarray | list[int]) -> np.ndarray:
        """Raw (R, K) errors of the calibration subsample against `classes`, computed once per class list."""
        key = tuple(int(c) for c in np.asarray(classes).reshape(-1))
        if key not in self._reference_scores:
            self._reference_scores[key] = self.raw_score(self.reference, classes)
        return self._reference_scores[key]

    @torch.no_grad()
    def _score(self, features: np.ndarray | torch.Tensor, classes: np.ndarray | list[int]) -> np.ndarray:
        self.model.eval()
        device = self.device
        classes = torch.as_tensor(np.asarray(classes), dtype=torch.long)
        features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        if device.type == "cuda":
            features = features.pin_memory()
        num_classes, num_noise = len(classes), len(self.noises)
        cond = self._conditioning(classes)
        if self._pad_calls:  # compiled: one graph for any number of candidate classes (seen, unseen, all, ...)
            for tensor in (cond.text_tokens, cond.block_mods, cond.final_mod):
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
        cascade = 0 < self.cascade_top_k < num_classes and num_noise > 1
        per_sample = num_classes if cascade else num_classes * num_noise
        samples_per_chunk = max(1, 8 * self.max_rows_per_call // per_sample)  # keeps index tensors small
        scores = np.empty((len(features), num_classes), dtype=np.float32)
        all_noises = torch.arange(num_noise, device=device)
        for start in range(0, len(features), samples_per_chunk):
            x0 = features[start:start + samples_per_chunk].to(device, non_blocking=True)
            n = x0.shape[0]
            if not cascade:
                errors = self._errors(x0, cond, *self._grid(n, num_classes, all_noises, device))
                scores[start:start + n] = errors.view(n, num_classes, num_noise).sum(-1).cpu().numpy()
                continue
            first = self._errors(x0, cond, *self._grid(n, num_classes, all_noises[:1], device)).view(n, num_classes)
            keep = first.topk(self.cascade_top_k, dim=1, largest=False).indices  # (n, k)
            rest = self._errors(x0, cond, *self._grid(n, keep, all_noises[1:], device))
            finished = first.gather(1, keep) + rest.view(n, self.cascade_top_k, num_noise - 1).sum(-1)  # (n, k)
            estimate = first * num_noise  # classes not finished: ranked by their first-noise error ...
            offset = (finished.max(1, keepdim=True).values - estimate.min(1, keepdim=True).values).clamp(min=0) + 1e-3
            chunk = estimate + offset  # ... and always behind every finished class
            chunk.scatter_(1, keep, finished)
            scores[start:start + n] = chunk.cpu().numpy()
        return scores


@torch.no_grad()
def score_one_class_at_a_time(
    model: Denoiser, schedule: NoiseSchedule, text: ClassTextFeatures, features: np.ndarray | torch.Tensor,
    classes: np.ndarray | list[int], timestep: int = EvalConfig.timestep, num_noise: int = EvalConfig.num_noise,
    noise_seed: int = EvalConfig.noise_seed, batch_size: int = 512,
) -> np.ndarray:
    """Reference scoring as the original release does it: one full denoiser call per (batch, noise, class)."""
    model.eval()
    device = next(model.parameters()).device
    noises = fixed_noises(num_noise, model.config.feature_dim, noise_seed).to(device)
    features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    scores = np.zeros((len(features), len(classes)), dtype=np.float32)
    for start in range(0, len(features), batch_size):
        x0 = features[start:start + batch_size].to(device)[:, None, :]  # (b, 1, F)
        b = x0.shape[0]
        t = torch.full((b,), timestep, device=device, dtype=torch.long)
        for j in range(num_noise):
            noise = noises[j].expand_as(x0)
            z_t = schedule.add_noise(x0, noise, t)
            target = schedule.target(x0, noise, t)
            for col, k in enumerate(classes):
                pooled = text.pooled[k].to(device).expand(b, -1)
                tokens = text.tokens[k].to(device).expand(b, -1, -1)
                pred = model(z_t, t, pooled, tokens)
                scores[start:start + b, col] += (pred - target).pow(2).mean(dim=(1, 2)).cpu().numpy()
    return scores


@dataclass
class ZeroShotResult:
    """Accuracy of one scored split."""

    top1: float  # percent
    top5: float  # percent (top-k with k = min(5, K))
    per_class: dict[int, float]  # class id -> percent
    confusion: np.ndarray  # (K, K) rows = true class, columns = predicted, counts
    classes: np.ndarray  # (K,) class ids, in score-column order
    predictions: np.ndarray  # (N,) predicted class ids
    tied: float = 0.0  # percent of samples whose smallest error is shared exactly by another class


def zero_shot_metrics(scores: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> ZeroShotResult:
    """Top-1/top-5 accuracy, per-class accuracy and confusion matrix from (N, K) scores (lower = better)."""
    classes = np.asarray(classes)
    column = {int(c): i for i, c in enumerate(classes)}
    true_cols = np.array([column[int(y)] for y in labels])
    order = np.argsort(scores, axis=1, kind="stable")  # best first
    k = min(5, len(classes))
    top1_hits = order[:, 0] == true_cols
    top5_hits = (order[:, :k] == true_cols[:, None]).any(axis=1)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (true_cols, order[:, 0]), 1)
    per_class = {}
    for i, c in enumerate(classes):
        total = confusion[i].sum()
        per_class[int(c)] = float(100.0 * confusion[i, i] / total) if total else float("nan")
    ranked = np.take_along_axis(scores, order[:, :2], axis=1)
    # exact ties at the top: a denoiser whose output ignores the text (e.g. one that never left its zero
    # initialisation) gives every class the same error, and the stable sort then always picks the first class
    tied = float(100.0 * (ranked[:, 0] == ranked[:, 1]).mean()) if len(classes) > 1 and len(scores) else 0.0
    return ZeroShotResult(
        top1=float(100.0 * top1_hits.mean()), top5=float(100.0 * top5_hits.mean()), per_class=per_class,
        confusion=confusion, classes=classes, predictions=classes[order[:, 0]], tied=tied,
    )
