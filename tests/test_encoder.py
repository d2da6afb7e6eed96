"""Shift-GCN, its training on seen classes, the feature export, the baseline, and the raw-data chain."""
import dataclasses
import importlib.util
import json

import numpy as np
import pytest
import torch

from tdsm_core.runs.baseline import BaselineConfig, train_projection_baseline
from tdsm_core.config import config_from_dict
from tdsm_core.data.features import builtin_class_table, load_benchmark
from tdsm_core.skeletons.encoder import NTU_TRAIN_SUBJECTS, EncoderTrainer, default_train_subjects, subject_split
from tdsm_core.errors import DataError
from tdsm_core.skeletons.shiftgcn import ShiftGCN, ShiftGCNConfig, SpatialShift, TemporalShift
from tdsm_core.skeletons.format import SkeletonSet, save_skeleton_npz
from tdsm_core.skeletons.layouts import NTU25
from tdsm_core.skeletons.chain import check_class_prompts, draw_unseen_splits, named_split_unseen, run_skeleton_benchmark
from tdsm_core.data.splits import get_split

from conftest import ROOT, random_text, requires_shared_data, tiny_config


def test_temporal_shift_by_whole_frames_is_a_zero_filled_roll():
    shift = TemporalShift(2)
    with torch.no_grad():
        shift.shift.copy_(torch.tensor([1.0, -2.0]))
    x = torch.arange(1.0, 7.0).view(1, 1, 6, 1).repeat(1, 2, 1, 3)
    out = shift(x)[0, :, :, 0]
    assert out[0].tolist() == [2, 3, 4, 5, 6, 0] and out[1].tolist() == [0, 0, 1, 2, 3, 4]
    out.sum().backward()
    assert shift.shift.grad is not None and shift.shift.grad.abs().sum() > 0


def test_spatial_shift_moves_channel_c_by_c_joints_and_back():
    layer = SpatialShift(4, 4, num_joints=5)
    x = torch.randn(2, 4, 3, 5)  # (N, C, T, V)
    h = layer._shift(x.permute(0, 2, 3, 1), layer.shift_in)  # (N, T, V, C)
    for c in range(4):
        torch.testing.assert_close(h[..., c], torch.roll(x[:, c], shifts=-c, dims=-1))
    back = layer._shift(h, layer.shift_out)
    torch.testing.assert_close(back, x.permute(0, 2, 3, 1))


def test_shift_gcn_shapes_and_every_actor_counts():
    model = ShiftGCN(ShiftGCNConfig(num_classes=4, num_joints=6, num_actors=2, channels=[8, 16], strides=[1, 2])).eval()
    x = torch.randn(3, 10, 2, 6, 3)
    assert model(x).shape == (3, 4) and model.features(x).shape == (3, 16)
    other = x.clone()
    other[:, :, 1] += 1.0
    assert not torch.allclose(model.features(x), model.features(other))


def skeleton_arrays(n_per_class=6, classes=5, subjects=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    subj = np.tile(np.arange(1, subjects + 1), len(labels) // subjects + 1)[:len(labels)]
    motion = rng.normal(size=(classes, 1, 1, 5, 3))
    t = np.linspace(0, 1, 8)[None, :, None, None, None]
    x = (motion[labels] * t + 0.1 * rng.normal(size=(len(labels), 8, 1, 5, 3))).astype(np.float32)
    return x, labels, subj


def encoder_cfg(tmp_path):
    return config_from_dict({"name": "enc", "seed": 1, "output_dir": str(tmp_path),
                             "model": {"feature_dim": 16},
                             "skeleton": {"channels": [8, 16], "strides": [1, 2], "epochs": 3, "batch_size": 4,
                                          "lr": 0.05, "warmup_epochs": 1, "device": "cpu"}})


def test_subject_split_keeps_unseen_classes_out_of_training():
    _, labels, subjects = skeleton_arrays()
    parts = subject_split(labels, subjects, unseen=np.array([1, 3]))
    assert set(labels[parts["train"]]) == {0, 2, 4} and set(labels[parts["ztest"]]) == {1, 3}
    assert set(subjects[parts["train"]]) == {1, 3} and set(subjects[parts["gtest"]]) == {2, 4}
    assert set(parts["val"]) | set(parts["ztest"]) == set(parts["gtest"])
    with pytest.raises(DataError, match="no `subjects` field"):
        subject_split(labels, None, np.array([1]))
    with pytest.raises(DataError, match="leaves no train samples"):
        subject_split(labels, subjects, np.array([1]), train_subjects=[99])


def test_ntu_skeletons_default_to_the_official_cross_subject_training_performers():
    subjects = np.arange(1, 107)  # NTU-120 has performers 1..106
    ntu = default_train_subjects(subjects, "ntu25")
    assert ntu.tolist() == list(NTU_TRAIN_SUBJECTS) and len(ntu) == 53
    assert default_train_subjects(np.arange(1, 41), "ntu25").tolist() == [1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19,
                                                                          25, 27, 28, 31, 34, 35, 38]  # NTU-60's 20
    assert default_train_subjects(np.arange(1, 11), "msr20").tolist() == [1, 3, 5, 7, 9]  # odd ids elsewhere
    labels = np.array([0, 0, 0, 0, 1, 1])
    parts = subject_split(labels, np.array([1, 3, 4, 5, 6, 7]), np.array([1]), layout="ntu25")
    assert parts["train"].tolist() == [0, 2, 3] and parts["val"].tolist() == [1] and parts["ztest"].tolist() == [4, 5]


def test_a_built_in_split_must_fit_the_dataset():
    assert named_split_unseen("ntu60_u20", 60).tolist() == list(get_split("ntu60_u20").unseen)
    with pytest.raises(DataError, match="defined over the 120 classes of ntu120 but the skeleton data has 60"):
        named_split_unseen("ntu120_u40", 60)


def test_a_built_in_split_drives_the_raw_skeleton_chain(tmp_path, monkeypatch):
    """The PURLS splits have no published features: the chain extracts them for the split's own unseen classes."""
    import functools

    import tdsm_core.skeletons.chain as chain

    small = BaselineConfig(steps=20, hidden_dim=32)  # the baseline's own test covers its default size
    monkeypatch.setattr(chain, "train_projection_baseline", functools.partial(train_projection_baseline, cfg=small))
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(60), 3)
    subjects = np.tile([1, 2, 3], 60)  # 1 and 2 are NTU training performers, 3 is a test performer
    motion = rng.normal(size=(60, 1, 1, 25, 3))
    t = np.linspace(0, 1, 8)[None, :, None, None, None]
    skeletons = (motion[labels] * t + 0.05 * rng.normal(size=(len(labels), 8, 1, 25, 3))).astype(np.float32)
    ntu, descriptions = builtin_class_table("ntu60")
    save_skeleton_npz(tmp_path / "ntu.npz", SkeletonSet(
        skeletons=skeletons, lengths=np.full(len(labels), 8), labels=labels, class_names=np.array(ntu),
        layout="ntu25", bones=np.array(NTU25.bones), subjects=subjects, descriptions=np.array(descriptions)))
    from tdsm_core.config import load_config

    cfg = load_config(ROOT / "configs" / "ntu60_u20.yaml", [
        f"skeleton.source={tmp_path / 'ntu.npz'}", "skeleton.kind=npz", f"output_dir={tmp_path}",
        f"text.cache_dir={tmp_path / 'cache'}", "data.class_csv=builtin:ntu60", "data.class_llm=",
        "text.encoder=minilm", "text.subfolder=", "model.text_dim=768",
        "skeleton.channels=[8, 32]", "skeleton.strides=[2, 2]", "skeleton.epochs=1", "skeleton.length=8",
        "skeleton.device=cpu", "model.feature_dim=32", "model.hidden_dim=32", "model.depth=1", "model.num_heads=2",
        "train.steps=4", "train.batch_size=16", "train.validation_samples=16", "eval.num_noise=1"])
    summary = run_skeleton_benchmark(cfg, progress=False, split=cfg.data.split)
    (row,) = summary["splits"]
    assert summary["split"] == "ntu60_u20" and summary["chance_top1"] == 5.0
    assert row["unseen"] == list(get_split("ntu60_u20").unseen)
    run_dir = tmp_path / "ntu60_u20_from_skeletons_ntu60_u20"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_subjects"] == [1, 2] and metrics["unseen_classes"] == row["unseen"]
    z_label = np.load(run_dir / "features" / "z_label.npy")  # every unseen sample of test performer 3, once
    assert sorted(z_label.tolist()) == sorted(row["unseen"])
    assert "split ntu60_u20" in (run_dir / "summary.md").read_text()


def test_encoder_trains_on_seen_classes_resumes_exactly_and_exports_the_sa_dvae_layout(tmp_path):
    x, labels, subjects = skeleton_arrays()
    unseen = np.array([1, 3])
    parts = subject_split(labels, subjects, unseen)
    cfg = encoder_cfg(tmp_path)
    seen = np.array([0, 2, 4])
    straight = EncoderTrainer(cfg, x, labels, parts, seen, tmp_path / "a", device="cpu")
    straight.fit(progress=False)
    first = EncoderTrainer(cfg, x, labels, parts, seen, tmp_path / "b", device="cpu")
    first.fit(progress=False, stop_after=2)
    resumed = EncoderTrainer(cfg, x, labels, parts, seen, tmp_path / "b", device="cpu")
    assert resumed.fit(progress=False)["resumed"]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    if importlib.util.find_spec("tensorboard"):  # the encoder's curves are in TensorBoard too, each epoch once
        from test_train import board_scalars

        records = [json.loads(line) for line in (tmp_path / "b" / "encoder_metrics.jsonl").read_text().splitlines()]
        board = board_scalars(tmp_path / "b" / "tensorboard")
        for field in ("loss", "lr", "val_seen_top1"):
            assert board[f"encoder/{field}"] == pytest.approx({r["step"]: r[field] for r in records}), field
    straight.export(tmp_path / "features", labels)
    (tmp_path / "classes.csv").write_text("idx,label\n" + "".join(f"{i + 1},class {i}\n" for i in range(5)))
    np.save(tmp_path / "unseen.npy", unseen)
    data = config_from_dict({"data": {"features": str(tmp_path / "features"), "unseen_file": str(tmp_path / "unseen.npy"),
                                      "class_csv": str(tmp_path / "classes.csv")}}).data
    benchmark = load_benchmark(data, 16)
    assert len(benchmark.train) == len(parts["train"]) and set(benchmark.ztest.labels) == {1, 3}
    assert len(benchmark.gtest) == len(parts["gtest"])


def test_projection_baseline_is_deterministic_and_beats_chance_on_separable_data(tiny_benchmark_dir):
    cfg = tiny_config(tiny_benchmark_dir)
    benchmark = load_benchmark(cfg.data, cfg.model.feature_dim)
    text = random_text()
    small = BaselineConfig(steps=60, hidden_dim=32)
    a = train_projection_baseline(benchmark, text, seed=0, cfg=small)
    b = train_projection_baseline(benchmark, text, seed=0, cfg=small)
    assert a == b and 0.0 <= a["baseline_zsl_top1"] <= 100.0


def test_unseen_split_draws_are_distinct_and_seeded():
    splits = draw_unseen_splits(20, 5, 4, seed=3)
    assert len({tuple(s) for s in splits}) == 4 and all(len(s) == 5 for s in splits)
    assert [s.tolist() for s in splits] == [s.tolist() for s in draw_unseen_splits(20, 5, 4, seed=3)]
    with pytest.raises(DataError, match="between 1 and 19"):
        draw_unseen_splits(20, 20, 1, seed=0)


def test_real_msr_chain_end_to_end_runs_and_resumes(tmp_path):
    source = requires_shared_data() / "skeletons" / "msr_action3d"
    from tdsm_core.config import load_config

    cfg = load_config(ROOT / "configs" / "msr_action3d.yaml", [
        f"skeleton.source={source}", f"output_dir={tmp_path}", f"text.cache_dir={tmp_path / 'cache'}",
        "skeleton.channels=[8, 32]", "skeleton.strides=[2, 2]", "skeleton.epochs=1", "skeleton.length=16",
        "model.feature_dim=32", "model.hidden_dim=32", "model.depth=1", "model.num_heads=2",
        "train.steps=20", "train.batch_size=16", "train.validation_samples=16", "eval.num_noise=1"])
    summary = run_skeleton_benchmark(cfg, num_unseen=5, num_splits=2, progress=False)
    assert summary["chance_top1"] == 20.0 and len(summary["splits"]) == 2
    for row in summary["splits"]:
        assert 0.0 <= row["tdsm_top1"] <= 100.0 and 0.0 <= row["baseline_top1"] <= 100.0
    assert (tmp_path / "msr_action3d" / "summary.md").read_text().count("\n") >= 5
    assert (tmp_path / "msr_action3d" / "summary.png").read_bytes()[:4] == b"\x89PNG"  # TDSM and baseline per split
    again = run_skeleton_benchmark(cfg, num_unseen=5, num_splits=2, progress=False)  # finished splits are reused
    assert again["tdsm_top1"] == summary["tdsm_top1"]


def test_the_chain_refuses_another_datasets_class_texts(tmp_path):
    """UTKinect skeletons through the MSR config would be conditioned on MSR's texts: refused, with a fix."""
    from tdsm_core.config import load_config

    names, descriptions = builtin_class_table("utkinect")
    data = SkeletonSet(skeletons=np.zeros((2, 4, 1, 20, 3), np.float32), lengths=np.array([4, 4]),
                       labels=np.array([0, 1]), class_names=np.array(names), layout="utkinect20",
                       bones=np.zeros((0, 2), np.int64), descriptions=np.array(descriptions))
    msr = load_config(ROOT / "configs" / "msr_action3d.yaml", [f"output_dir={tmp_path}"])
    with pytest.raises(DataError, match="lists 20 classes but the skeleton data has 10"):
        check_class_prompts(msr, data)
    ntu_names = builtin_class_table("ntu60")[0]
    shuffled = dataclasses.replace(data, class_names=np.array(ntu_names[:10]))
    utk = load_config(ROOT / "configs" / "utkinect.yaml", [f"output_dir={tmp_path}"])
    with pytest.raises(DataError, match="calls class 0 'walk' where the skeleton data has 'drink water'"):
        check_class_prompts(utk, shuffled)
    check_class_prompts(utk, data)  # the right prompts pass
    written = tmp_path / "utkinect" / "classes_from_skeletons.csv"
    own = load_config(ROOT / "configs" / "utkinect.yaml", [f"output_dir={tmp_path}", f"data.class_csv={written}"])
    check_class_prompts(own, shuffled)  # the file the error names is this dataset's own table
