"""The small-dataset levers (issue 17): feature standardisation, the weight average, several negatives,
class-fold validation, the Optuna search, encoder streams and augmentation, the all-samples protocol,
splits of one's own and several seeds per split in the raw-skeleton chain."""
import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tdsm_core.runs.baseline import BaselineConfig, train_projection_baseline
from tdsm_core.runs.checkpoint import load_checkpoint
from tdsm_core.data.features import FeatureNorm, load_benchmark, normalize_features
from tdsm_core.skeletons.encoder import all_samples_split
from tdsm_core.data.text import ClassTextFeatures
from tdsm_core.errors import CheckpointError, ConfigError, DataError
from tdsm_core.runs.folds import class_folds, fold_benchmark, fold_validation
from tdsm_core.losses import triplet_diffusion_loss
from tdsm_core.runs.pipeline import load_data
from tdsm_core.skeletons.streams import apply_augmentation, bone_vectors, draw_augmentation, motion, stream_input
from tdsm_core.skeletons.chain import given_split_unseen, read_unseen_classes
from tdsm_core.runs.build import build_model, build_schedule, load_trained_model
from tdsm_core.runs.train import Trainer, draw_step

from conftest import TINY_MODEL, random_text, tiny_config


# ----------------------------------------------------------------------------------------------
# denoiser levers

def test_standardised_features_use_training_statistics_only(tiny_benchmark_dir):
    cfg = tiny_config(tiny_benchmark_dir, data={"normalize": "standard"})
    raw = load_benchmark(cfg.data, cfg.model.feature_dim)
    benchmark = load_data(cfg)
    assert np.allclose(benchmark.train.features.mean(0), 0, atol=1e-5)
    assert np.allclose(benchmark.train.features.std(0), 1, atol=1e-4)
    expected = (raw.ztest.features - raw.train.features.mean(0)) / raw.train.features.std(0)
    np.testing.assert_allclose(benchmark.ztest.features, expected, rtol=1e-5, atol=1e-5)
    assert normalize_features(raw, "none") is raw


def test_the_statistics_travel_with_the_run_and_a_mismatch_is_refused(tiny_benchmark_dir):
    cfg = tiny_config(tiny_benchmark_dir, data={"normalize": "standard"})
    benchmark = load_data(cfg)
    trainer = Trainer(cfg, benchmark, random_text(), run_dir=tiny_benchmark_dir / "run", device="cpu")
    trainer.fit(progress=False)
    saved = FeatureNorm.from_dict(load_checkpoint(tiny_benchmark_dir / "run" / "last.pt")["feature_norm"])
    assert saved.same_as(benchmark.feature_norm)
    other = dataclasses.replace(benchmark, feature_norm=FeatureNorm(saved.mean + 1.0, saved.std))
    again = Trainer(cfg, other, random_text(), run_dir=tiny_benchmark_dir / "run", device="cpu")
    with pytest.raises(CheckpointError, match="standardised with other statistics"):
        again.resume()


def test_one_negative_is_the_papers_loss_and_several_average_their_hinges():
    torch.manual_seed(0)
    target, pos = torch.randn(4, 1, 6), torch.randn(4, 1, 6)
    negs = torch.randn(3 * 4, 1, 6)
    labels = torch.tensor([0, 1, 2, 3])
    neg_labels = torch.tensor([1, 1, 0, 2, 0, 2, 2, 3, 3, 0, 1, 1])  # negative-major: k * 4 + i
    one = triplet_diffusion_loss(pos, negs[:4], target, labels, neg_labels[:4], margin=0.5)
    pos_err = (pos - target).pow(2).mean((1, 2))
    neg_err = (negs[:4] - target).pow(2).mean((1, 2))
    hinge = torch.clamp(pos_err - neg_err + 0.5, min=0) * (labels != neg_labels[:4])
    torch.testing.assert_close(one.triplet, hinge.mean())
    torch.testing.assert_close(one.diffusion, pos_err.mean())
    three = triplet_diffusion_loss(pos, negs, target, labels, neg_labels, margin=0.5)
    per_k = []
    for k in range(3):
        rows = slice(4 * k, 4 * k + 4)
        err = (negs[rows] - target).pow(2).mean((1, 2))
        per_k.append(torch.clamp(pos_err - err + 0.5, min=0) * (labels != neg_labels[rows]))
    torch.testing.assert_close(three.triplet, torch.stack(per_k).mean())
    with pytest.raises(ValueError, match="K negatives"):
        triplet_diffusion_loss(pos, negs[:5], target, labels, neg_labels[:5])


def test_the_default_draw_is_unchanged_and_k_negatives_are_seen_classes():
    seen = torch.tensor([0, 2, 4])
    a = draw_step(7, 3, 20, 8, 5, seen, 50)
    b = draw_step(7, 3, 20, 8, 5, seen, 50, num_negatives=1)
    assert torch.equal(a.negative_labels, b.negative_labels) and a.negative_labels.shape == (8,)
    c = draw_step(7, 3, 20, 8, 5, seen, 50, num_negatives=4)
    assert c.negative_labels.shape == (8, 4) and set(c.negative_labels.unique().tolist()) <= {0, 2, 4}
    assert torch.equal(a.noise, c.noise) and torch.equal(a.timesteps, c.timesteps)


def test_training_with_several_negatives_and_a_weight_average_resumes_exactly(tiny_benchmark_dir):
    sections = dict(loss={"num_negatives": 3}, train={"ema_decay": 0.9})
    cfg = tiny_config(tiny_benchmark_dir, **sections)
    benchmark = load_data(cfg)
    straight = Trainer(cfg, benchmark, random_text(), run_dir=tiny_benchmark_dir / "a", device="cpu")
    straight.fit(progress=False)
    first = Trainer(cfg, benchmark, random_text(), run_dir=tiny_benchmark_dir / "b", device="cpu")
    first.fit(progress=False, stop_after=3)
    second = Trainer(cfg, benchmark, random_text(), run_dir=tiny_benchmark_dir / "b", device="cpu")
    assert second.fit(progress=False)["resumed"]
    for a, b in zip(straight.average.model.state_dict().values(), second.average.model.state_dict().values()):
        assert torch.equal(a, b)
    raw = dict(straight.model.named_parameters())
    averaged = dict(straight.average.model.named_parameters())
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw)  # the average lags the raw weights
    model, _, _ = load_trained_model(tiny_benchmark_dir / "a" / "last.pt")  # evaluation reads the average
    for key, value in model.state_dict().items():
        assert torch.equal(value, straight.average.model.state_dict()[key]), key


def test_the_weight_average_follows_its_decay_formula():
    from tdsm_core.runs.train import WeightAverage

    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average.update(model)  # decay min(0.99, 1/10) = 0.1: 0.1 * 0 + 0.9 * 1
    torch.testing.assert_close(average.model.weight, torch.full((1, 2), 0.9))
    average.update(model)  # decay 2/11
    torch.testing.assert_close(average.model.weight, torch.full((1, 2), 0.9 * 2 / 11 + 9 / 11))


# ----------------------------------------------------------------------------------------------
# class-fold validation and the search

def test_class_folds_cover_every_seen_class_and_keep_their_size():
    folds = class_folds(np.arange(15), 5, seed=0)
    assert len(folds) == 3 and sorted(np.concatenate(folds).tolist()) == list(range(15))
    folds = class_folds(np.array([0, 2, 3, 5, 6, 8, 9]), 3, seed=1)
    assert len(folds) == 3 and all(len(f) == 3 for f in folds)
    assert set(np.concatenate(folds).tolist()) == {0, 2, 3, 5, 6, 8, 9}
    with pytest.raises(DataError, match="fewer than 2 to train on"):
        class_folds(np.arange(5), 4)


def test_a_fold_never_trains_on_its_pseudo_unseen_classes_and_never_reads_ztest(tiny_benchmark_dir):
    cfg = tiny_config(tiny_benchmark_dir)
    benchmark = load_data(cfg)
    held = benchmark.seen[:2]
    fold = fold_benchmark(benchmark, held)
    assert not np.isin(fold.train.labels, held).any() and set(fold.ztest.labels.tolist()) <= set(held.tolist())
    assert not np.isin(fold.ztest.labels, benchmark.unseen).any()
    source = benchmark.val if benchmark.val is not None else benchmark.train
    assert len(fold.ztest) == int(np.isin(source.labels, held).sum())


def test_fold_validation_scores_every_fold_and_continues_after_a_kill(tiny_benchmark_dir, monkeypatch):
    cfg = tiny_config(tiny_benchmark_dir)
    benchmark = load_data(cfg)
    text = random_text()
    out = tiny_benchmark_dir / "folds"
    small = BaselineConfig(steps=20, hidden_dim=16)
    result = fold_validation(cfg, benchmark, text, out, fold_size=1, num_folds=2, seeds=2, baseline=small)
    assert len(result["fold_top1"]) == 2 and len(result["runs"]) == 4
    assert result["mean_top1"] == pytest.approx(np.mean(result["fold_top1"]))
    assert 0 <= result["baseline_mean_top1"] <= 100 and all("baseline_top1" in r for r in result["runs"].values())
    assert not any((out / key).exists() for key in result["runs"])  # fold runs removed after scoring
    import tdsm_core.runs.folds as folds

    monkeypatch.setattr(folds, "Trainer", None)  # a rerun must not train again
    again = fold_validation(cfg, benchmark, text, out, fold_size=1, num_folds=2, seeds=2, baseline=small)
    assert again["fold_top1"] == result["fold_top1"]
    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=cfg.train.lr * 2))
    with pytest.raises(TypeError):  # other settings: not reused, so it tries to train (Trainer is gone)
        fold_validation(changed, benchmark, text, out, fold_size=1, num_folds=2, seeds=2, baseline=small)


def test_tuning_writes_its_tables_and_a_rerun_continues_the_study(tiny_benchmark_dir, capsys):
    pytest.importorskip("optuna")
    from tdsm_core.runs.tune import read_space, run_tuning, tune_dir

    cfg = tiny_config(tiny_benchmark_dir)
    benchmark = load_data(cfg)
    text = random_text()
    space_file = tiny_benchmark_dir / "space.yaml"
    space_file.write_text("train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\nloss.num_negatives: [1, 2]\n")
    space = read_space(space_file)
    small = BaselineConfig(steps=20, hidden_dim=16)
    first = run_tuning(cfg, benchmark, text, space, trials=2, fold_size=1, num_folds=2, startup=2, baseline=small)
    assert len(first["trials"]) == 2 and first["best"]["validation_top1"] >= 0
    out = tune_dir(cfg)
    assert (out / "trials.csv").read_text().count("\n") == 3 and (out / "best.yaml").exists()
    assert set(first["best"]["overrides"]) == {"train.lr", "loss.num_negatives"}
    second = run_tuning(cfg, benchmark, text, space, trials=3, fold_size=1, num_folds=2, startup=2, baseline=small)
    assert len(second["trials"]) == 3  # two kept from the journal, one new
    assert [r["value"] for r in second["trials"][:2]] == [r["value"] for r in first["trials"]]


@pytest.mark.parametrize("content, message", [
    ("train.lr: 3\n", "must be section.key"), ("lr: [1, 2]\n", "must be section.key"), ("[1, 2]\n", "must map"),
    ("a: [1\n", "not valid UTF-8 YAML")])
def test_a_bad_search_space_gets_one_sentence(tmp_path, content, message):
    from tdsm_core.errors import ConfigError
    from tdsm_core.runs.tune import read_space

    path = tmp_path / "space.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        read_space(path)


# ----------------------------------------------------------------------------------------------
# encoder input and protocol

def test_bone_and_motion_streams_on_a_three_joint_chain():
    x = torch.zeros(1, 3, 1, 3, 3)  # (N, T, M, V, 3): joint 0 root, 1 child of 0, 2 child of 1
    for t in range(3):
        x[0, t, 0] = torch.tensor([[0.0, 0, 0], [0, 1, 0], [0, 1, 1]]) + t
    bones = np.array([[1, 0], [2, 1]])
    b = bone_vectors(x, bones)
    assert b[0, 0, 0, 0].tolist() == [0, 0, 0] and b[0, 0, 0, 1].tolist() == [0, 1, 0] and b[0, 0, 0, 2].tolist() == [0, 0, 1]
    m = motion(x)
    assert m[0, 0, 0].tolist() == [[1, 1, 1]] * 3 and m[0, 2].abs().sum() == 0
    inputs = stream_input(x, bones, ["joint", "bone", "joint_motion", "bone_motion"])
    assert inputs.shape == (1, 3, 1, 3, 12) and torch.equal(inputs[..., :3], x)
    assert stream_input(x, bones, ["joint"]) is x


def test_augmentation_keeps_the_original_scale_draw_and_zero_joints():
    from tdsm_core.runs.metrics_log import step_generator

    x = torch.randn(4, 5, 2, 3, 3)
    x[:, :, 1] = 0.0  # an absent second actor
    scale = draw_augmentation(3, 7, 4, ["scale"])
    original = 1.0 + 0.1 * (2 * torch.rand(4, generator=step_generator(3, 7, 3)) - 1)
    assert torch.equal(apply_augmentation(x, scale), x * original.view(-1, 1, 1, 1, 1))
    rotation = draw_augmentation(3, 7, 4, ["rotate"], rotate_degrees=30)
    rotated = apply_augmentation(x, rotation)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))  # lengths kept
    assert not torch.allclose(rotated, x) and rotated[:, :, 1].abs().sum() == 0
    sheared = apply_augmentation(x, draw_augmentation(3, 7, 4, ["scale", "rotate", "shear"]))
    assert sheared[:, :, 1].abs().sum() == 0
    assert draw_augmentation(3, 7, 4, []) is None


def test_all_samples_protocol_tests_every_unseen_sample_and_holds_out_seen_ones():
    labels = np.repeat(np.arange(6), 10)
    parts = all_samples_split(labels, np.array([1, 4]), 0.2, seed=0)
    assert set(labels[parts["ztest"]].tolist()) == {1, 4} and len(parts["ztest"]) == 20
    assert not np.isin(labels[parts["train"]], [1, 4]).any()
    assert np.bincount(labels[parts["val"]], minlength=6).tolist() == [2, 0, 2, 2, 0, 2]
    assert len(np.intersect1d(parts["train"], parts["val"])) == 0
    assert len(parts["train"]) + len(parts["val"]) + len(parts["ztest"]) == 60
    with pytest.raises(DataError, match="at least 2 per"):
        all_samples_split(np.array([0, 1, 1]), np.array([1]), 0.2, seed=0)


def test_a_split_of_ones_own(tmp_path):
    names = np.array([f"class {i}" for i in range(6)])
    assert given_split_unseen([4, 1], names).tolist() == [1, 4]
    assert read_unseen_classes("4, 1") == [4, 1]
    (tmp_path / "u.txt").write_text("2\n5\n")
    assert read_unseen_classes(str(tmp_path / "u.txt")) == [2, 5]
    np.save(tmp_path / "u.npy", np.array([0, 3]))
    assert read_unseen_classes(str(tmp_path / "u.npy")) == [0, 3]
    for bad, message in [([1, 1], "twice"), ([9], "not class ids"), ([0, 1, 2, 3, 4], "fewer than 2 seen")]:
        with pytest.raises(DataError, match=message):
            given_split_unseen(bad, names)
    with pytest.raises(DataError, match="integer class ids"):
        read_unseen_classes("a,b")


def test_the_chain_runs_a_given_split_with_seeds_streams_and_the_all_samples_protocol(tmp_path, monkeypatch):
    import tdsm_core.skeletons.chain as chain
    from tdsm_core.config import config_from_dict
    from tdsm_core.skeletons.format import SkeletonSet, save_skeleton_npz

    small = BaselineConfig(steps=20, hidden_dim=32)
    monkeypatch.setattr(chain, "train_projection_baseline", functools.partial(train_projection_baseline, cfg=small))
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 6)
    from tdsm_core.skeletons.layouts import get_layout

    layout = get_layout("msr20")
    motion_of = rng.normal(size=(6, 1, 1, 20, 3))
    t = np.linspace(0, 1, 8)[None, :, None, None, None]
    skeletons = (motion_of[labels] * t + 0.05 * rng.normal(size=(len(labels), 8, 1, 20, 3))).astype(np.float32)
    names = [f"action {i}" for i in range(6)]
    save_skeleton_npz(tmp_path / "own.npz", SkeletonSet(
        skeletons=skeletons, lengths=np.full(len(labels), 8), labels=labels, class_names=np.array(names),
        layout="msr20", bones=np.array(layout.bones), subjects=np.tile([1, 2], 18),
        descriptions=np.array([f"does thing {i}" for i in range(6)])))
    csv = tmp_path / "classes.csv"
    csv.write_text("idx,name,description\n" + "".join(f"{i + 1},{n},does thing {i}\n" for i, n in enumerate(names)))
    cfg = config_from_dict({
        "name": "own", "output_dir": str(tmp_path), "data": {"class_csv": str(csv), "normalize": "standard"},
        "text": {"cache_dir": str(tmp_path / "cache")},
        "model": {"feature_dim": 16, "hidden_dim": 32, "depth": 1, "num_heads": 2, "text_dim": 768},
        "train": {"steps": 4, "batch_size": 8, "validation_samples": 8, "device": "cpu"}, "eval": {"num_noise": 1},
        "skeleton": {"source": str(tmp_path / "own.npz"), "kind": "npz", "channels": [8, 16], "strides": [1, 2],
                     "epochs": 1, "batch_size": 4, "length": 8, "device": "cpu", "protocol": "all_samples",
                     "streams": ["joint", "bone", "joint_motion"], "augment": ["scale", "rotate", "shear"]}})
    summary = chain.run_skeleton_benchmark(cfg, progress=False, unseen_classes=[2, 5], seeds=2)
    (row,) = summary["splits"]
    assert row["unseen"] == [2, 5] and len(row["tdsm_seeds"]) == 2 and len(row["baseline_seeds"]) == 2
    assert row["counts"]["ztest"] == 12 and "all samples" in summary["sample_protocol"]
    split_dir = tmp_path / "own_from_skeletons_own_2_5"
    assert (split_dir / "metrics.json").exists() and (tmp_path / "own_from_skeletons_own_2_5_seed1" / "metrics.json").exists()
    assert json.loads((split_dir / "summary.json").read_text())["seeds"] == [cfg.seed, cfg.seed + 1]
    again = chain.run_skeleton_benchmark(cfg, progress=False, unseen_classes=[2, 5], seeds=2)  # reused
    assert again["splits"][0]["tdsm_seeds"] == row["tdsm_seeds"]


def test_prompt_similarity_ranks_pairs_and_flags_near_duplicates(tiny_benchmark_dir):
    from tdsm_core.workbook.analysis import prompt_similarity
    from tdsm_core.data.text import ClassTextFeatures

    cfg = tiny_config(tiny_benchmark_dir)
    benchmark = load_data(cfg)
    k = benchmark.num_classes
    pooled = torch.eye(k, 2 * k)  # every class its own direction ...
    pooled[1] = pooled[0] + 0.01 * pooled[1]  # ... but class 1 almost class 0 in the first prompt
    text = ClassTextFeatures(torch.zeros(k, 3, 2 * k), pooled)
    table = prompt_similarity(text, benchmark)
    assert len(table) == k * (k - 1) // 2
    top = table.iloc[0]
    assert {top["class a"], top["class b"]} == {benchmark.class_names[0], benchmark.class_names[1]}
    assert bool(top["near_duplicate"]) and int(table["near_duplicate"].sum()) == 1
    assert table["cosine both"].is_monotonic_decreasing


def test_dropout_changes_training_passes_only_and_keeps_the_weight_names():
    from tdsm_core.model import Denoiser, DenoiserConfig

    sizes = dict(feature_dim=8, hidden_dim=16, depth=2, num_heads=2, text_dim=12, text_len=5)
    plain, dropped = Denoiser(DenoiserConfig(**sizes)), Denoiser(DenoiserConfig(**sizes, dropout=0.5))
    assert list(plain.state_dict()) == list(dropped.state_dict())
    dropped.load_state_dict(plain.state_dict())
    for p in dropped.parameters():  # non-zero adaLN so that the blocks act
        torch.nn.init.normal_(p, std=0.3)
    plain.load_state_dict(dropped.state_dict())
    z, t, pooled, tokens = torch.randn(4, 1, 8), torch.tensor([1, 2, 3, 4]), torch.randn(4, 12), torch.randn(4, 5, 12)
    plain.eval(), dropped.eval()
    torch.testing.assert_close(plain(z, t, pooled, tokens), dropped(z, t, pooled, tokens))
    dropped.train()
    assert not torch.allclose(dropped(z, t, pooled, tokens), plain(z, t, pooled, tokens))
    with pytest.raises(ValueError, match="model.dropout"):
        DenoiserConfig(**sizes, dropout=1.0)


def test_eval_variants_score_the_same_fold_models_with_other_settings(tiny_benchmark_dir):
    from tdsm_core.runs.folds import eval_grid

    grid = eval_grid({"timestep": [5, 25], "num_noise": [1, 2]})
    assert list(grid) == ["timestep=5,num_noise=1", "timestep=5,num_noise=2", "timestep=25,num_noise=1",
                          "timestep=25,num_noise=2"]
    cfg = tiny_config(tiny_benchmark_dir)  # eval: timestep 25, 2 noises
    result = fold_validation(cfg, load_data(cfg), random_text(), tiny_benchmark_dir / "f", fold_size=1, num_folds=2,
                             eval_variants=grid, baseline=BaselineConfig(steps=20, hidden_dim=16))
    assert set(result["eval_variants"]) == set(grid)
    assert result["eval_variants"]["timestep=25,num_noise=2"] == pytest.approx(result["mean_top1"])


def test_evaluation_refuses_features_standardised_otherwise_than_in_training(tiny_benchmark_dir):
    from tdsm_core.runs.pipeline import evaluate_run, train_run

    cfg = tiny_config(tiny_benchmark_dir, data={"normalize": "standard"})
    text = random_text()
    train_run(cfg, text=text, progress=False)
    assert evaluate_run(cfg, text=text)["zsl_top1"] >= 0
    raw = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, normalize="none"))
    with pytest.raises(CheckpointError, match="other settings"):  # a training setting: named as such
        evaluate_run(raw, text=text)
    train_file = tiny_benchmark_dir / "feats" / "train.npy"
    np.save(train_file, 2.0 * np.load(train_file))  # new training features under the same path
    with pytest.raises(CheckpointError, match="standardised with other statistics"):
        evaluate_run(cfg, text=text)


# ----------------------------------------------------------------------------------------------
# train.text_noise: noise on the training rows' class text

def test_text_spread_reads_only_the_seen_classes_texts():
    from tdsm_core.runs.train import seen_text_spread

    text = random_text()
    seen = torch.tensor([0, 2, 3])
    pooled, tokens = seen_text_spread(text, seen)
    assert pooled == pytest.approx(float(text.pooled[seen].std(dim=0).mean()))
    assert tokens == pytest.approx(float(text.tokens[seen].std(dim=0).mean()))
    changed = ClassTextFeatures(text.tokens.clone(), text.pooled.clone(), "random")
    changed.pooled[1] += 100.0  # an unseen class
    changed.tokens[1] += 100.0
    assert seen_text_spread(changed, seen) == (pooled, tokens)
    with pytest.raises(ConfigError, match="at least 2 seen classes"):
        seen_text_spread(text, torch.tensor([0]))


def test_text_offsets_enter_the_objective_as_text_added_to_each_row():
    from tdsm_core.losses import triplet_diffusion_objective

    cfg = tiny_config(Path("."))
    model, schedule = build_model(cfg).eval(), build_schedule(cfg)
    text = random_text()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained-looking denoiser: the zero-initialised output layer would ignore the text
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2, generator=g)
    x0, noise = torch.randn(4, 1, TINY_MODEL["feature_dim"], generator=g), torch.randn(4, 1, TINY_MODEL["feature_dim"], generator=g)
    t, labels, negatives = torch.tensor([3, 10, 20, 40]), torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 0])
    pooled_off = torch.randn(8, text.pooled.shape[-1], generator=g)
    tokens_off = torch.randn(8, *text.tokens.shape[1:], generator=g)
    with torch.no_grad():
        terms = triplet_diffusion_objective(model, schedule, x0, labels, negatives, text.pooled, text.tokens, noise, t,
                                            text_offsets=(pooled_off, tokens_off))
        # the plain reference: each row's text written out, the denoiser called on positives and negatives apart
        z_t = schedule.add_noise(x0, noise, t)
        rows = torch.cat([labels, negatives])
        pooled, tokens = text.pooled[rows] + pooled_off, text.tokens[rows] + tokens_off
        pos = model(z_t, t, pooled[:4], tokens[:4])
        neg = model(z_t, t, pooled[4:], tokens[4:])
        target = schedule.target(x0, noise, t)
        reference = triplet_diffusion_loss(pos, neg, target, labels, negatives)
        plain = triplet_diffusion_objective(model, schedule, x0, labels, negatives, text.pooled, text.tokens, noise, t)
    torch.testing.assert_close(terms.total, reference.total)
    torch.testing.assert_close(terms.positive_error, reference.positive_error)
    assert not torch.allclose(terms.positive_error, plain.positive_error)


def test_text_noise_changes_training_is_seeded_per_step_and_resumes_exactly(tiny_benchmark_dir):
    cfg = tiny_config(tiny_benchmark_dir, train={"text_noise": 0.5})
    benchmark = load_data(cfg)
    noisy = Trainer(cfg, benchmark, random_text(), run_dir=tiny_benchmark_dir / "a", device="cpu")
    first = noisy.text_offsets(slice(0, cfg.train.batch_size), 1)
    assert first[0].shape == (2 * cfg.train.batch_size, TINY_MODEL["text_dim"])
    assert first[1].shape == (2 * cfg.train.batch_size, TINY_MODEL["text_len"], TINY_MODEL["text_dim"])
    spread = noisy.text_spread[0]
    assert float(first[0].std()) == pytest.approx(0.5 * spread, rel=0.2)  # in units of the seen texts' spread
    halves = [noisy.text_offsets(part, 1)[0].reshape(2, -1, TINY_MODEL["text_dim"]) for part in (slice(0, 4), slice(4, 8))]
    torch.testing.assert_close(torch.cat(halves, dim=1).flatten(0, 1), first[0])  # two processes draw the same rows
    noisy.fit(progress=False)
    assert not torch.equal(noisy.text_offsets(slice(0, 8), 1)[0], first[0])  # a new draw every step
    clean = Trainer(tiny_config(tiny_benchmark_dir), benchmark, random_text(), run_dir=tiny_benchmark_dir / "c", device="cpu")
    assert clean.text_offsets(slice(0, 8), 1) is None
    clean.fit(progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(noisy.model.state_dict().values(), clean.model.state_dict().values()))
    split = Trainer(cfg, benchmark, random_text(), run_dir=tiny_benchmark_dir / "b", device="cpu")
    split.fit(progress=False, stop_after=3)
    resumed = Trainer(cfg, benchmark, random_text(), run_dir=tiny_benchmark_dir / "b", device="cpu")
    assert resumed.fit(progress=False)["resumed"]
    for a, b in zip(noisy.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="text_noise"):
        Trainer(tiny_config(tiny_benchmark_dir, train={"text_noise": 0.1}), benchmark, random_text(),
                run_dir=tiny_benchmark_dir / "b", device="cpu").fit(progress=False)


def test_negative_text_noise_is_refused_with_its_key():
    with pytest.raises(ConfigError, match="train.text_noise"):
        tiny_config(Path("."), train={"text_noise": -0.1})


def test_a_calibration_sweep_rescores_the_fold_models_and_matches_a_calibrated_run(tiny_benchmark_dir):
    """--sweep eval.calibration=...: the variant scored with a calibration equals a validation whose config
    sets that calibration (the scorer gets the fold's own training features, never its pseudo-unseen ones)."""
    import dataclasses

    from tdsm_core.runs.folds import eval_grid

    cfg = tiny_config(tiny_benchmark_dir)
    grid = eval_grid({"calibration": ["none", "center"]})
    small = BaselineConfig(steps=20, hidden_dim=16)
    swept = fold_validation(cfg, load_data(cfg), random_text(), tiny_benchmark_dir / "a", fold_size=1, num_folds=2,
                            eval_variants=grid, baseline=small)
    assert swept["eval_variants"]["calibration=none"] == pytest.approx(swept["mean_top1"])
    centred = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, calibration="center"))
    direct = fold_validation(centred, load_data(cfg), random_text(), tiny_benchmark_dir / "b", fold_size=1,
                             num_folds=2, baseline=small)
    assert swept["eval_variants"]["calibration=center"] == pytest.approx(direct["mean_top1"])

