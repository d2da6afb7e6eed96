"""Class-fold validation from raw skeletons with one encoder per fold (validate/tune --fold-encoders)."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tdsm_core.cli import main as cli
from tdsm_core.config import load_config
from tdsm_core.data.features import builtin_class_table
from tdsm_core.runs.baseline import BaselineConfig
from tdsm_core.runs.folds import fold_validation
from tdsm_core.runs.pipeline import load_text
from tdsm_core.skeletons.chain import draw_unseen_splits
from tdsm_core.skeletons.fold_encoders import fold_encoder_problems
from tdsm_core.skeletons.format import SkeletonSet, save_skeleton_npz
from tdsm_core.skeletons.layouts import get_layout

from conftest import ROOT

TINY = ["skeleton.channels=[8, 16]", "skeleton.strides=[2, 2]", "skeleton.epochs=1", "skeleton.length=8",
        "skeleton.batch_size=8", "skeleton.device=cpu", "model.feature_dim=16", "model.hidden_dim=16", "model.depth=1",
        "model.num_heads=2", "train.steps=3", "train.batch_size=64", "eval.num_noise=1"]


@pytest.fixture
def msr_like(tmp_path):
    """20 MSR classes of synthetic motion, 3 sequences per class and performer, performers 1-4 (odd ones train)."""
    names, descriptions = builtin_class_table("msr_action3d")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(20), 12)
    subjects = np.tile(np.arange(1, 5), 60)
    motion = rng.normal(size=(20, 1, 1, 20, 3))
    t = np.linspace(0, 1, 8)[None, :, None, None, None]
    skeletons = (motion[labels] * t + 0.05 * rng.normal(size=(len(labels), 8, 1, 20, 3))).astype(np.float32)
    layout = get_layout("msr20")
    save_skeleton_npz(tmp_path / "msr.npz", SkeletonSet(
        skeletons=skeletons, lengths=np.full(len(labels), 8), labels=labels, class_names=np.array(names),
        layout="msr20", bones=np.array(layout.bones), subjects=subjects, descriptions=np.array(descriptions)))
    return load_config(ROOT / "configs" / "msr_action3d.yaml", [
        f"skeleton.source={tmp_path / 'msr.npz'}", "skeleton.kind=npz", f"output_dir={tmp_path / 'out'}",
        f"text.cache_dir={tmp_path / 'cache'}", *TINY])


def test_every_fold_encoder_is_trained_without_the_real_and_the_pseudo_unseen_classes(msr_like):
    problems = fold_encoder_problems(msr_like, num_unseen=5, num_splits=2, progress=False)
    splits = draw_unseen_splits(20, 5, 2, seed=0)
    assert len(problems) == 6  # 2 splits x 3 folds of the 15 seen classes
    for i, unseen in enumerate(splits):
        folds = problems[3 * i:3 * i + 3]
        assert sorted(np.concatenate([p.unseen for p in folds]).tolist()) == sorted(np.setdiff1d(np.arange(20), unseen).tolist())
        for k, problem in enumerate(folds):
            hidden = np.union1d(unseen, problem.unseen)
            assert not np.isin(problem.train.labels, hidden).any()
            assert set(problem.ztest.labels.tolist()) == set(problem.unseen.tolist())  # no real unseen sample is scored
            assert np.array_equal(problem.seen, np.setdiff1d(np.arange(20), hidden))
            export = json.loads((Path(msr_like.output_dir) / f"msr_action3d_split{i}_fold{k}" / "features" /
                                 "export.json").read_text())
            assert sorted(export["seen"]) == problem.seen.tolist()  # what the fold's encoder was trained on
            assert f"split{i} fold {k}" in problem.name


def test_fold_encoders_are_reused_and_their_features_key_the_validation_record(msr_like, monkeypatch):
    import tdsm_core.runs.folds as folds
    import tdsm_core.skeletons.encoder as encoder

    problems = fold_encoder_problems(msr_like, num_unseen=5, num_splits=1, progress=False)
    monkeypatch.setattr(encoder.EncoderTrainer, "training_step", None)  # so a rerun that trained would fail
    again = fold_encoder_problems(msr_like, num_unseen=5, num_splits=1, progress=False)  # nothing trained again
    for a, b in zip(problems, again):
        np.testing.assert_array_equal(a.train.features, b.train.features)
    text = load_text(msr_like, problems[0])
    small = BaselineConfig(steps=5, hidden_dim=8)
    record = Path(msr_like.output_dir) / "val"
    first = fold_validation(msr_like, None, text, record, problems=problems, baseline=small)
    assert len(first["fold_top1"]) == 3 and first["problems"][0].startswith("msr_action3d_split0 fold 0")
    assert "fold encoders" in first["source"]
    monkeypatch.setattr(folds, "Trainer", None)  # a rerun on the same features must not train
    assert fold_validation(msr_like, None, text, record, problems=problems, baseline=small)["fold_top1"] == first["fold_top1"]
    train = problems[0].train
    moved = [dataclasses.replace(problems[0], train=dataclasses.replace(train, features=train.features + 1.0))]
    with pytest.raises(TypeError):  # other features (another encoder run): not reused, so it tries to train
        fold_validation(msr_like, None, text, record, problems=moved + problems[1:], baseline=small)


def test_the_fold_encoder_commands_refuse_what_they_cannot_do(capsys, tmp_path):
    def refused(*argv):
        code = cli.main([str(a) for a in argv])
        assert code == 2
        return capsys.readouterr().err

    config = ROOT / "configs" / "msr_action3d.yaml"
    assert "--unseen choose the splits of --fold-encoders" in refused(
        "validate", config, "--set", f"data.features={tmp_path}", "--unseen", "5")
    assert "needs the raw skeletons; set skeleton.source" in refused(
        "validate", config, "--set", "skeleton.source=", "--fold-encoders")
    assert "--unseen-classes choose the splits" in refused(
        "tune", config, "--space", ROOT / "configs" / "tune" / "small_data.yaml", "--unseen-classes", "1,2")
