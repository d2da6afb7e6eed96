"""Typed experiment configuration, loaded from YAML.

A config file may name a `base:` file (relative to itself) whose values it overrides, so the split
configs stay a few lines each. Unknown keys and wrongly typed values are rejected where the file is
read, with the list of valid keys. Relative paths are resolved against the project root: the folder
above `configs/` when the file lives in one, else the current directory.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .diffusion import BETA_SCHEDULES, PREDICTION_TYPES
from .errors import ConfigError
from .inputs import read_text
from .io import DEVICE_NAMES
from .model import DenoiserConfig

TextFeatureUse = Literal["both", "pooled", "tokens"]
# eval.precision: auto is amp on CUDA, fp32 elsewhere. fp32 is exact on every device (no autocast, no TF32);
# amp keeps fp32 weights under bf16 autocast with TF32 matmuls (CUDA; the same as fp32 on CPUs); bf16 casts
# weights and activations; int8 quantises the linear layers dynamically (CPU only).
PRECISIONS = ("auto", "fp32", "amp", "bf16", "int8")
# train.precision: auto trains under bf16 autocast with TF32 matmuls on CUDA (fp32 on CPUs); fp32 is IEEE fp32
# on every device (no autocast, no TF32), about 3.8x slower per step on an H100 (docs/benchmarks.md).
TRAIN_PRECISIONS = ("auto", "fp32")
# eval.compile_mode: torch.compile modes ("max-autotune" also tunes the matrix products; it compiles for minutes)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# eval.calibration: none scores by the raw denoising error (the paper); center subtracts, per candidate class, the
# mean error that class's text gives on a fixed subsample of the seen classes' training features; standardize also
# divides by their standard deviation (evaluate.calibrate_scores)
CALIBRATIONS = ("none", "center", "standardize")


@dataclass
class DataConfig:
    """Where the features, label split and class prompts live."""

    features: str = ""  # folder in the SA-DVAE layout (train.npy, train_label.npy, ztest.npy, z_label.npy, ...)
    split: str = ""  # a built-in split name (see `python -m tdsm_core splits`), e.g. ntu60_u5
    unseen_file: str = ""  # or a .npy of unseen class ids (overrides `split`)
    seen_file: str = ""  # optional .npy of seen ids; default: every class that is not unseen
    class_csv: str = ""  # idx,label csv (short motion descriptions), or builtin:ntu60
    class_llm: str = ""  # one definition per line, beside a class_csv file (a builtin class_csv has its own)
    num_classes: int = 0  # 0: as many classes as the prompt files list
    # How features enter the diffusion: "none" as stored (the release), or "standard": each dimension
    # minus the training set's mean, divided by its std (statistics saved with the run, applied to every part).
    normalize: str = "none"


@dataclass
class TextConfig:
    """The frozen text encoder and its cache."""

    encoder: str = "minilm"  # "minilm" (offline default), a local folder, or a Hugging Face hub id
    subfolder: str = ""  # e.g. "text_encoder" inside a Stable Diffusion repository
    tokenizer_subfolder: str = ""  # default: "tokenizer" when subfolder is "text_encoder", else subfolder
    max_length: int = 35
    # False encodes as the TDSM release does: token ids only, no attention mask, so the states at
    # padding positions are what the encoder computes over the padding tokens too (CLIP's causal
    # attention leaves the real tokens and the pooled vector unchanged; a bidirectional encoder such
    # as MiniLM lets every state see the padding). True passes the tokenizer's mask. Mean pooling
    # always averages over the real tokens only.
    attention_mask: bool = False
    cache_dir: str = "data/cache/text"
    batch_size: int = 64
    allow_download: bool = False  # True lets transformers fetch a hub id; the default never touches the network


@dataclass
class DiffusionConfig:
    num_timesteps: int = 50
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    prediction_type: str = "epsilon"


@dataclass
class LossConfig:
    margin: float = 1.0
    diffusion_weight: float = 1.0
    triplet_weight: float = 1.0
    num_negatives: int = 1  # random seen classes per sample, each denoising the same z_t (the paper: 1)


@dataclass
class TrainConfig:
    steps: int = 50000
    batch_size: int = 256  # before doubling by the negatives
    lr: float = 1.0e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 0.0  # 0 disables clipping
    log_every: int = 100
    checkpoint_every: int = 1000
    validate_every: int = 0  # 0: validate only at the end; validation never looks at ztest
    validation_samples: int = 1024  # seeded subsample of `val` scored at each validation
    paper_protocol_every: int = 0  # >0: also evaluate ztest every N steps, reported only as the paper's protocol (`protocols`: 0 = every epoch)
    keep_every: int = 0  # >0: keep a weights-only snapshot every N steps (the validation protocol picks one)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto: bf16 autocast + TF32 on CUDA, fp32 on CPUs | fp32: IEEE fp32 everywhere
    text_features: str = "both"  # both | pooled | tokens (ablation: zero the unused part)
    compile: bool = False  # torch.compile the training step's model (GPU)
    # >0: keep an exponential moving average of the weights (as DiT trains) and evaluate it; the decay at
    # update n is min(ema_decay, (1 + n) / (10 + n)), so a short schedule is not dominated by the initial weights
    ema_decay: float = 0.0
    # >0: add Gaussian noise to the class text of every training row (positive and negatives, pooled and
    # tokens), with a standard deviation of text_noise times the spread of the seen classes' texts (the
    # per-dimension standard deviation across seen classes, averaged over dimensions); scoring never adds it.
    # It makes the denoiser see a neighbourhood of each training text instead of a handful of points.
    text_noise: float = 0.0


@dataclass
class EvalConfig:
    timestep: int = 25
    num_noise: int = 3
    noise_seed: int = 0  # the fixed test noises come from their own generator
    max_rows_per_call: int = 0  # (sample, class, noise) rows per denoiser call; 0: 512 on CPU, 16384 on CUDA
    checkpoint: str = "last"  # last | best
    precision: str = "auto"  # auto (amp on CUDA, fp32 elsewhere) | fp32 (exact everywhere) | amp | bf16 | int8 (CPU)
    cascade_top_k: int = 0  # >0: first noise on every class, remaining noises only on the k best (explicit option)
    compile: bool = False  # torch.compile the denoiser for scoring (GPU)
    compile_mode: str = "default"  # default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
    calibration: str = "none"  # none | center | standardize: per-class error levels measured on seen training features
    calibration_samples: int = 512  # training features (a seeded subsample) that measure those levels


@dataclass
class SkeletonConfig:
    """Raw skeletons -> Shift-GCN features (used by the skeleton commands, ignored otherwise)."""

    source: str = ""  # a dataset folder (kind ntu / msr / utkinect) or a generic skeleton .npz (kind npz)
    kind: str = "npz"
    converted: str = ""  # where a converted raw dataset is cached; default <output_dir>/skeletons/<kind>_<folder>_<hash>.npz
    length: int = 32  # frames per sequence after resampling
    align: bool = True  # rotate each sequence so the hips lie along x in its first frame
    train_subjects: list[int] = field(default_factory=list)  # cross-subject training performers; empty: NTU's official list for NTU skeletons, odd ids otherwise
    channels: list[int] = field(default_factory=lambda: [64, 64, 64, 64, 128, 128, 128, 256, 256, 256])
    strides: list[int] = field(default_factory=lambda: [1, 1, 1, 1, 2, 1, 1, 2, 1, 1])
    epochs: int = 65
    batch_size: int = 64
    lr: float = 0.1  # SGD with Nesterov momentum, as Shift-GCN
    momentum: float = 0.9
    weight_decay: float = 1.0e-4
    warmup_epochs: int = 5
    augment: list[str] = field(default_factory=lambda: ["scale"])  # any of scale, rotate, shear (skeletons/streams.py)
    rotate_degrees: float = 15.0  # "rotate": U(-r, r) degrees about each axis
    shear: float = 0.2  # "shear": off-diagonal entries U(-s, s)
    streams: list[str] = field(default_factory=lambda: ["joint"])  # any of joint, bone, joint_motion, bone_motion
    # cross_subject: train on the training performers, test on the others (NTU's protocol, and the default);
    # all_samples: every sample of the seen classes trains (minus a held-out val_fraction for seen-class
    # validation) and every sample of the unseen classes is tested, as the small-dataset ZSL literature does
    protocol: str = "cross_subject"
    val_fraction: float = 0.2  # all_samples: share of each seen class held out as val (and as gtest's seen part)
    device: str = "auto"


@dataclass
class ExperimentConfig:
    """Everything one run needs; saved next to every result and inside every checkpoint."""

    name: str = "experiment"
    seed: int = 2025
    output_dir: str = "outputs"
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    skeleton: SkeletonConfig = field(default_factory=SkeletonConfig)

    def run_dir(self) -> Path:
        """Folder of this run's checkpoints and metrics."""
        return Path(self.output_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_CHOICES = {
    ("diffusion", "prediction_type"): PREDICTION_TYPES,
    ("diffusion", "beta_schedule"): BETA_SCHEDULES,
    ("train", "text_features"): typing.get_args(TextFeatureUse),
    ("eval", "checkpoint"): ("last", "best"),
    ("eval", "precision"): PRECISIONS,
    ("train", "precision"): TRAIN_PRECISIONS,
    ("eval", "compile_mode"): COMPILE_MODES,
    ("eval", "calibration"): CALIBRATIONS,
    ("skeleton", "kind"): ("npz", "ntu", "msr", "utkinect"),
    ("data", "normalize"): ("none", "standard"),
    ("skeleton", "protocol"): ("cross_subject", "all_samples"),
}
_PATH_KEYS = {("data", "features"), ("data", "unseen_file"), ("data", "seen_file"), ("data", "class_csv"),
              ("data", "class_llm"), ("text", "cache_dir"), ("", "output_dir"),
              ("skeleton", "source"), ("skeleton", "converted")}


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_value(where: str, value: Any, kind: Any) -> Any:
    """Return value converted to `kind` (int, float, str, bool) or raise ConfigError."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            number = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if number is not None:
            if not math.isfinite(number):  # .inf / .nan: no setting here means anything at infinity
                raise ConfigError(f"config key {where} must be a finite number, got {value!r}.")
            return number
    elif kind is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        if isinstance(value, (list, tuple)):
            return [_check_value(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
        raise ConfigError(f"config key {where} must be a list of {item.__name__}, got {value!r}.")
    else:  # pragma: no cover - every field uses one of the kinds above
        return value
    raise ConfigError(f"config key {where} must be of type {kind.__name__}, got {value!r} ({type(value).__name__}).")


# Keys older versions had: a config file that sets one is told to drop it; a saved config (checkpoint) loads.
RETIRED_KEYS = {"eval.batch_size": "scoring is chunked by eval.max_rows_per_call, which never changes a score"}


def without_retired_keys(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a saved config dict without the keys in RETIRED_KEYS."""
    values = copy.deepcopy(values)
    for key in RETIRED_KEYS:
        section, _, name = key.rpartition(".")
        node = values.get(section, {}) if section else values
        if isinstance(node, dict):
            node.pop(name, None)
    return values


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Instantiate dataclass `cls` from a (possibly partial) dict, recursing into nested sections."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section {prefix or 'top level'} must be a mapping, got {values!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    for name in unknown:
        key = f"{prefix}.{name}" if prefix else name
        if key in RETIRED_KEYS:
            raise ConfigError(f"config key {key} is no longer used ({RETIRED_KEYS[key]}); delete it from the config.")
    if unknown:
        where = f"in section '{prefix}'" if prefix else "at the top level"
        raise ConfigError(f"unknown config key(s) {unknown} {where}; valid keys are: {', '.join(names)}.")
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        key = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value, key)
            continue
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is Literal:
            kind = str
        kwargs[name] = _check_value(key, value, kind)
        choices = _CHOICES.get((prefix, name))
        if choices and kwargs[name] not in choices:
            raise ConfigError(f"config key {key} must be one of {list(choices)}, got {value!r}.")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # DenoiserConfig validates its sizes
        raise ConfigError(str(exc)) from None


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML file, following its `base:` chain."""
    path = path.resolve()
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; pass a YAML file, e.g. one from configs/.")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass a file from configs/ or your own YAML file.")
    if path in seen:
        raise ConfigError(f"config file {path} names itself as a base (through {[str(p) for p in seen]}).")
    text = read_text(path, "config file", "pass a YAML config, e.g. one from configs/")
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML ({' '.join(str(exc).split())}); fix the syntax at "
                          f"the position shown.") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, got {type(values).__name__}.")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"config file {path} has base: {base!r}, but base must name another YAML file (relative "
                          f"to this one), e.g. base: base.yaml.")
    return _merge(_read_yaml(path.parent / base, seen + (path,)), values)


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """['train.steps=100', 'text.encoder=minilm'] -> nested dict (values parsed as YAML scalars).

    Each key is set once: an override inside a key that another one sets to a value (train=3, then
    train.steps=5) is refused, as is a key with an empty part or a value that is not valid YAML."""
    nested: dict[str, Any] = {}
    given: dict[str, str] = {}  # dotted key -> the override that set it to a value
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} must look like section.key=value, e.g. train.steps=100.")
        key, raw = pair.split("=", 1)
        parts = key.strip().split(".")
        if not all(part.strip() for part in parts):
            raise ConfigError(f"override {pair!r} has an empty key name; write section.key=value, e.g. train.steps=100.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"override {pair!r} has a value that is not valid YAML ({problem}); write it as YAML, "
                              f"with text that starts with [, {{ or a quote in quotes of the other kind.") from None
        node = nested
        for depth, part in enumerate(parts[:-1]):
            inner = node.setdefault(part, {})
            if not isinstance(inner, dict):
                earlier = given[".".join(parts[:depth + 1])]
                raise ConfigError(f"override {pair!r} sets a key inside {'.'.join(parts[:depth + 1])}, which the "
                                  f"override {earlier!r} sets to a value; keep only one of the two.")
            node = inner
        if isinstance(node.get(parts[-1]), dict) and not isinstance(value, dict):
            raise ConfigError(f"override {pair!r} sets {key.strip()} to a value, but earlier overrides set keys inside "
                              f"it; keep only one of them.")
        node[parts[-1]] = value
        given[".".join(parts)] = pair
    return nested


def project_root_for(config_path: Path) -> Path:
    """The folder above `configs/` if the file lives there, else the current directory."""
    config_path = config_path.resolve()
    for parent in config_path.parents:
        if parent.name == "configs":
            return parent.parent
    return Path.cwd()


def _resolve_paths(config: ExperimentConfig, root: Path) -> None:
    for section, key in _PATH_KEYS:
        owner = getattr(config, section) if section else config
        value = getattr(owner, key)
        if value and not value.startswith("builtin:") and not Path(value).is_absolute():
            setattr(owner, key, str((root / value).resolve()))
    # text.encoder is a name ("minilm"), a hub id or a folder: a folder relative to the project is resolved like
    # the paths above, so notebooks (which run in notebooks/) and every working directory find the same one
    encoder = config.text.encoder
    if encoder != "minilm" and not Path(encoder).is_absolute() and (root / encoder).is_dir():
        config.text.encoder = str((root / encoder).resolve())


_DEVICE = DEVICE_NAMES  # the names resolve_device accepts


def _check_ranges(config: ExperimentConfig) -> None:
    """Values that are well typed but cannot work, caught before any data is read."""
    rules = [
        (bool(config.name.strip()) and not Path(config.name).is_absolute() and ".." not in Path(config.name).parts,
         "name must be a folder name inside output_dir (not empty, absolute or with ..)", repr(config.name)),
        (config.seed >= 0, "seed must not be negative", config.seed),
        (config.data.num_classes >= 0, "data.num_classes must be 0 (as many classes as the prompt files list) or "
         "positive", config.data.num_classes),
        (bool(config.text.encoder.strip()), "text.encoder must name an encoder: minilm, a local encoder folder or a "
         "Hugging Face hub id", repr(config.text.encoder)),
        (config.train.steps >= 1, "train.steps must be at least 1", config.train.steps),
        (config.train.batch_size >= 1, "train.batch_size must be at least 1", config.train.batch_size),
        (config.train.lr > 0, "train.lr must be positive", config.train.lr),
        (config.train.weight_decay >= 0, "train.weight_decay must not be negative", config.train.weight_decay),
        (config.train.warmup_steps >= 0, "train.warmup_steps must not be negative", config.train.warmup_steps),
        (config.train.log_every >= 1 and config.train.checkpoint_every >= 1,
         "train.log_every and train.checkpoint_every must be at least 1", (config.train.log_every, config.train.checkpoint_every)),
        (min(config.train.validate_every, config.train.paper_protocol_every, config.train.keep_every) >= 0,
         "train.validate_every, paper_protocol_every and keep_every must be 0 (off) or positive",
         (config.train.validate_every, config.train.paper_protocol_every, config.train.keep_every)),
        (config.diffusion.num_timesteps >= 1, "diffusion.num_timesteps must be at least 1", config.diffusion.num_timesteps),
        (0 < config.diffusion.beta_start <= config.diffusion.beta_end < 1,
         "diffusion.beta_start and beta_end must satisfy 0 < beta_start <= beta_end < 1",
         (config.diffusion.beta_start, config.diffusion.beta_end)),
        (config.train.validation_samples >= 1, "train.validation_samples must be at least 1",
         config.train.validation_samples),
        (config.text.batch_size >= 1, "text.batch_size must be at least 1", config.text.batch_size),
        (config.train.grad_clip >= 0, "train.grad_clip must be 0 (off) or positive", config.train.grad_clip),
        (config.train.text_noise >= 0, "train.text_noise must be 0 (off) or positive, e.g. 0.3",
         config.train.text_noise),
        (0 <= config.train.ema_decay < 1, "train.ema_decay must be 0 (off) or in (0, 1), e.g. 0.999",
         config.train.ema_decay),
        (config.loss.num_negatives >= 1, "loss.num_negatives must be at least 1", config.loss.num_negatives),
        (_DEVICE.fullmatch(config.train.device) is not None and _DEVICE.fullmatch(config.skeleton.device) is not None,
         "train.device and skeleton.device must be auto, cpu, cuda, cuda:N or mps",
         (config.train.device, config.skeleton.device)),
        (0 <= config.eval.timestep < config.diffusion.num_timesteps,
         f"eval.timestep must lie in [0, diffusion.num_timesteps = {config.diffusion.num_timesteps})", config.eval.timestep),
        (config.eval.num_noise >= 1, "eval.num_noise must be at least 1", config.eval.num_noise),
        (config.eval.cascade_top_k >= 0, "eval.cascade_top_k must be 0 (off) or positive", config.eval.cascade_top_k),
        (config.eval.max_rows_per_call >= 0, "eval.max_rows_per_call must be 0 (automatic) or positive",
         config.eval.max_rows_per_call),
        (config.loss.margin >= 0 and config.loss.diffusion_weight >= 0 and config.loss.triplet_weight >= 0,
         "loss.margin, loss.diffusion_weight and loss.triplet_weight must not be negative",
         (config.loss.margin, config.loss.diffusion_weight, config.loss.triplet_weight)),
        (config.text.max_length == config.model.text_len,
         f"text.max_length ({config.text.max_length}) must equal model.text_len, the length of the model's text "
         f"sequence", config.model.text_len),
        (config.skeleton.length >= 1 and config.skeleton.epochs >= 1 and config.skeleton.batch_size >= 1,
         "skeleton.length, skeleton.epochs and skeleton.batch_size must be at least 1",
         (config.skeleton.length, config.skeleton.epochs, config.skeleton.batch_size)),
        (set(config.skeleton.augment) <= {"scale", "rotate", "shear"},
         "skeleton.augment may hold scale, rotate and shear", config.skeleton.augment),
        (len(config.skeleton.streams) > 0 and set(config.skeleton.streams) <= {"joint", "bone", "joint_motion", "bone_motion"}
         and len(set(config.skeleton.streams)) == len(config.skeleton.streams),
         "skeleton.streams must list distinct streams among joint, bone, joint_motion and bone_motion",
         config.skeleton.streams),
        (0 < config.skeleton.val_fraction < 1, "skeleton.val_fraction must lie in (0, 1)", config.skeleton.val_fraction),
        (len(config.skeleton.channels) == len(config.skeleton.strides) > 0,
         "skeleton.channels and skeleton.strides must be non-empty lists of the same length",
         (config.skeleton.channels, config.skeleton.strides)),
    ]
    for ok, rule, value in rules:
        if not ok:
            raise ConfigError(f"{rule}; got {value}.")


def config_from_dict(values: dict[str, Any], root: Path | str | None = None) -> ExperimentConfig:
    """Build and validate a config from a dict (the inverse of `ExperimentConfig.to_dict`)."""
    config = _build(ExperimentConfig, values, "")
    _check_ranges(config)
    _resolve_paths(config, Path(root) if root is not None else Path.cwd())
    return config


def load_config(path: str | Path, overrides: list[str] | dict | None = None, root: str | Path | None = None) -> ExperimentConfig:
    """Load a YAML config (following `base:`), apply overrides, validate, resolve relative paths."""
    path = Path(path)
    values = _read_yaml(path)
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    values = _merge(values, extra)
    return config_from_dict(values, root if root is not None else project_root_for(path))


# Settings that leave the trained weights alone: names, reporting, checkpoint cadence, device, compile and
# everything about scoring. Any other difference means a checkpoint belongs to a different run.
# The skeleton section is the encoder's: its own resume check (`encoder_differences`) compares it, and the
# features it exports are what the denoiser sees.
_RESUME_FREE = ("name", "output_dir", "eval.", "text.cache_dir", "text.batch_size", "text.allow_download",
                "train.log_every", "train.checkpoint_every", "train.validate_every", "train.validation_samples",
                "train.paper_protocol_every", "train.keep_every", "train.device", "train.compile", "skeleton.")
# Where the raw skeletons come from may change (a raw folder, then its converted .npz) without changing them.
_ENCODER_FREE = ("skeleton.device", "skeleton.source", "skeleton.kind", "skeleton.converted")


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _differences(saved: dict[str, Any], config: ExperimentConfig, compared, free) -> list[str]:
    old, new = _flatten(saved), _flatten(config.to_dict())
    matches = lambda key, names: any(key == n or (n.endswith(".") and key.startswith(n)) for n in names)
    return [f"{key}: {old[key]!r} -> {value!r}" for key, value in new.items()
            if key in old and old[key] != value and compared(key) and not matches(key, free)]


def training_differences(saved: dict[str, Any], config: ExperimentConfig) -> list[str]:
    """'key: saved -> now' for each setting that shapes the denoiser's weights and differs from a saved config.

    Keys the saved config does not have (written by an older version) are not compared."""
    return _differences(saved, config, lambda key: True, _RESUME_FREE)


def encoder_differences(saved: dict[str, Any], config: ExperimentConfig) -> list[str]:
    """The same for the skeleton encoder: the seed and the skeleton section, wherever the skeletons are read from."""
    return _differences(saved, config, lambda key: key == "seed" or key.startswith("skeleton."), _ENCODER_FREE)


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
