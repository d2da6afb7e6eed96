"""Shared fixtures: tiny configs, a tiny benchmark folder in the SA-DVAE layout, random text features."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(2)

from tdsm_core.config import ExperimentConfig, config_from_dict  # noqa: E402
from tdsm_core.errors import TDSMError  # noqa: E402
from tdsm_core.data.text import ClassTextFeatures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Every user-facing error message raised in this test session, for the docs/errors.md sync test.
RAISED_MESSAGES: list[str] = []
_tdsm_error_init = TDSMError.__init__


def _recording_init(self, *args):
    if args:
        RAISED_MESSAGES.append(str(args[0]))
    _tdsm_error_init(self, *args)


TDSMError.__init__ = _recording_init
SHARED_DATA = ROOT.parent / "shared" / "data"

TINY_MODEL = dict(feature_dim=16, hidden_dim=32, depth=2, num_heads=4, text_dim=24, text_len=7)
NUM_CLASSES = 10
UNSEEN = [2, 5, 7]


def requires_shared_data() -> Path:
    """The reference data beside the project, or skip (a user's fresh clone has none)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def write_prompts(folder: Path, num_classes: int = NUM_CLASSES) -> tuple[Path, Path]:
    """Class prompt files in the SA-DVAE format."""
    csv_path, llm_path = folder / "classes.csv", folder / "classes_llm.txt"
    csv_path.write_text("idx,label\n" + "".join(f"{i + 1},move part {i} of the body\n" for i in range(num_classes)))
    llm_path.write_text("\n".join(f'"Action {i}" is action number {i}.' for i in range(num_classes)))
    return csv_path, llm_path


def write_features(folder: Path, feature_dim: int = 16, seed: int = 0, per_class: int = 6,
                   unseen: list[int] = UNSEEN, num_classes: int = NUM_CLASSES) -> Path:
    """A tiny benchmark: class-dependent Gaussian features for train/val (seen), ztest (unseen), gtest (all)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (num_classes, feature_dim))
    seen = [c for c in range(num_classes) if c not in unseen]

    def part(classes):
        labels = np.repeat(classes, per_class)
        return (centres[labels] + rng.normal(0, 0.5, (len(labels), feature_dim))).astype(np.float32), labels.astype(np.int64)

    folder.mkdir(parents=True, exist_ok=True)
    for stem, label_name, classes in [("train", "train_label", seen), ("val", "val_label", seen),
                                      ("ztest", "z_label", unseen), ("gtest", "g_label", list(range(num_classes)))]:
        features, labels = part(classes)
        np.save(folder / f"{stem}.npy", features)
        np.save(folder / f"{label_name}.npy", labels)
    return folder


@pytest.fixture
def tiny_benchmark_dir(tmp_path: Path) -> Path:
    write_prompts(tmp_path)
    write_features(tmp_path / "feats")
    np.save(tmp_path / "unseen.npy", np.array(UNSEEN, dtype=np.int64))
    return tmp_path


def tiny_config(base: Path, **sections) -> ExperimentConfig:
    """A config for the tiny benchmark written by `tiny_benchmark_dir` (random text features, tiny model)."""
    values = {
        "name": "tiny", "seed": 3, "output_dir": str(base / "outputs"),
        "data": {"features": str(base / "feats"), "unseen_file": str(base / "unseen.npy"),
                 "class_csv": str(base / "classes.csv"), "class_llm": str(base / "classes_llm.txt")},
        "text": {"cache_dir": str(base / "cache"), "max_length": TINY_MODEL["text_len"]},
        "model": dict(TINY_MODEL),
        "train": {"steps": 8, "batch_size": 8, "warmup_steps": 2, "log_every": 2, "checkpoint_every": 4,
                  "validate_every": 4, "validation_samples": 16, "device": "cpu"},
        "eval": {"num_noise": 2},
    }
    for section, overrides in sections.items():
        if isinstance(overrides, dict):
            values.setdefault(section, {}).update(overrides)
        else:
            values[section] = overrides
    return config_from_dict(values)


def random_text(num_classes: int = NUM_CLASSES, length: int = TINY_MODEL["text_len"],
                dim: int = TINY_MODEL["text_dim"], seed: int = 0) -> ClassTextFeatures:
    generator = torch.Generator().manual_seed(seed)
    return ClassTextFeatures(torch.randn(num_classes, length, dim, generator=generator),
                             torch.randn(num_classes, dim, generator=generator), "random")


def randomise(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter non-zero values (a fresh denoiser outputs exactly zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)
    return model


def undocumented_messages() -> list[str]:
    """Messages raised in this session that no template of docs/errors.md matches."""
    from tdsm_core.cli.errors_doc import matches, templates

    catalogue = templates()
    return sorted({m for m in RAISED_MESSAGES if not matches(m, catalogue)})


def pytest_sessionfinish(session, exitstatus):
    """Whatever tests ran, in whatever order or subset: a raised message missing from docs/errors.md fails
    the session (test_zz_errors_doc checks the same at the end of a full run, with the names in its report)."""
    if RAISED_MESSAGES and exitstatus == 0:
        missing = undocumented_messages()
        if missing:
            print(f"\nraised but not in docs/errors.md: {missing[:5]}")
            session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    """How many distinct user-facing errors this session triggered, against the documented ones."""
    if not RAISED_MESSAGES:
        return
    from tdsm_core.cli.errors_doc import templates

    catalogue = templates()
    hit = {t for t in catalogue for m in set(RAISED_MESSAGES) if t.pattern().match(m)}
    terminalreporter.write_line(f"user-facing errors triggered: {len(set(RAISED_MESSAGES))} distinct messages, "
                                f"{len(hit)} of the {len(catalogue)} documented in docs/errors.md")
