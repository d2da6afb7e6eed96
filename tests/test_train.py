import json

import numpy as np
import pytest
import torch

from tdsm_core import evaluate as evaluate_module
from tdsm_core.runs.checkpoint import load_checkpoint
from tdsm_core.data.features import load_benchmark
from tdsm_core.errors import CheckpointError
from tdsm_core.runs.train import BEST, LAST, Trainer, cosine_with_warmup, draw_step

from conftest import random_text, tiny_config


def make_trainer(base, run_dir, **sections):
    cfg = tiny_config(base, **sections)
    benchmark = load_benchmark(cfg.data, cfg.model.feature_dim)
    return Trainer(cfg, benchmark, random_text(), run_dir=run_dir, device="cpu")


def weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_training_changes_the_weights_and_logs_every_term(tiny_benchmark_dir):
    trainer = make_trainer(tiny_benchmark_dir, tiny_benchmark_dir / "run")
    before = weights(trainer)
    summary = trainer.fit(progress=False)
    assert summary["step"] == 8 and not summary["resumed"]
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    records = [json.loads(line) for line in (tiny_benchmark_dir / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    assert [r["step"] for r in losses] == [2, 4, 6, 8]
    assert all({"loss", "loss_diffusion", "loss_triplet", "lr"} <= r.keys() for r in losses)
    assert all(abs(r["loss"] - r["loss_diffusion"] - r["loss_triplet"]) < 1e-5 for r in losses)
    assert [r["step"] for r in records if "val_seen_top1" in r] == [4, 8]


def test_checkpoint_holds_everything_needed_to_resume(tiny_benchmark_dir):
    trainer = make_trainer(tiny_benchmark_dir, tiny_benchmark_dir / "run")
    trainer.fit(progress=False)
    data = load_checkpoint(tiny_benchmark_dir / "run" / LAST)
    assert {"model", "optimizer", "scheduler", "step", "config", "best_score"} <= data.keys()
    assert data["step"] == 8 and data["config"]["model"]["hidden_dim"] == 32
    assert (tiny_benchmark_dir / "run" / BEST).exists()
    assert (tiny_benchmark_dir / "run" / "config.yaml").exists()


def test_stopped_and_resumed_run_ends_with_the_same_weights(tiny_benchmark_dir):
    straight = make_trainer(tiny_benchmark_dir, tiny_benchmark_dir / "straight")
    straight.fit(progress=False)
    first = make_trainer(tiny_benchmark_dir, tiny_benchmark_dir / "split")
    first.fit(progress=False, stop_after=4)
    assert first.step == 4
    second = make_trainer(tiny_benchmark_dir, tiny_benchmark_dir / "split")  # a new process would do this
    summary = second.fit(progress=False)
    assert summary["resumed"] and second.step == 8
    assert_same_weights(weights(straight), weights(second))
    assert second.optimizer.param_groups[0]["lr"] == pytest.approx(straight.optimizer.param_groups[0]["lr"])
    steps = [json.loads(line)["step"] for line in (tiny_benchmark_dir / "split" / "metrics.jsonl").read_text().splitlines()
             if "loss" in line]
    assert steps == [2, 4, 6, 8]  # no duplicated log lines after the resume


def test_same_seed_same_weights_other_seed_other_weights(tiny_benchmark_dir):
    a = make_trainer(tiny_benchmark_dir, tiny_benchmark_dir / "a")
    b = make_trainer(tiny_benchmark_dir, tiny_benchmark_dir / "b")
    torch.manual_seed(999)  # global RNG state must not leak into the run
    a.fit(progress=False)
    b.fit(progress=False)
    assert_same_weights(weights(a), weights(b))
    c = make_trainer(tiny_benchmark_dir, tiny_benchmark_dir / "c")
    c.cfg.seed = 4
    c.fit(progress=False)
    assert any(not torch.equal(v, weights(a)[k]) for k, v in weights(c).items())


def test_resume_refuses_a_different_schedule(tiny_benchmark_dir):
    make_trainer(tiny_benchmark_dir, tiny_benchmark_dir / "run").fit(progress=False, stop_after=4)
    other = make_trainer(tiny_benchmark_dir, tiny_benchmark_dir / "run", train={"steps": 20})
    with pytest.raises(CheckpointError, match="20"):
        other.fit(progress=False)


@pytest.mark.parametrize("section,change,named", [
    ("train", {"lr": 5e-3}, "train.lr"), ("loss", {"margin": 0.5}, "loss.margin"),
    ("diffusion", {"prediction_type": "v_prediction"}, "diffusion.prediction_type"),
])
def test_resume_refuses_other_training_settings_and_keeps_the_saved_config(tiny_benchmark_dir, section, change, named):
    run = tiny_benchmark_dir / "run"
    make_trainer(tiny_benchmark_dir, run).fit(progress=False, stop_after=4)
    saved_config = (run / "config.yaml").read_text()
    other = make_trainer(tiny_benchmark_dir, run, **{section: change})
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        other.fit(progress=False)
    assert (run / "config.yaml").read_text() == saved_config  # still describes the checkpoint


def test_resume_accepts_reporting_and_scoring_changes(tiny_benchmark_dir):
    run = tiny_benchmark_dir / "run"
    make_trainer(tiny_benchmark_dir, run).fit(progress=False, stop_after=4)
    later = make_trainer(tiny_benchmark_dir, run, train={"log_every": 3, "device": "cpu"}, eval={"num_noise": 2})
    assert later.resume() and later.step == 4


def test_validation_and_training_never_touch_ztest(tiny_benchmark_dir, monkeypatch):
    trainer = make_trainer(tiny_benchmark_dir, tiny_benchmark_dir / "run")
    seen_arrays = []
    original = evaluate_module.ZeroShotScorer.score

    def spy(self, features, classes):
        seen_arrays.append(np.asarray(features))
        return original(self, features, classes)

    monkeypatch.setattr(evaluate_module.ZeroShotScorer, "score", spy)
    trainer.fit(progress=False)
    ztest = trainer.benchmark.ztest.features
    assert seen_arrays, "validation should have scored something"
    for array in seen_arrays:
        assert not any(np.array_equal(row, z) for row in array for z in ztest)


def test_paper_protocol_is_logged_separately(tiny_benchmark_dir):
    trainer = make_trainer(tiny_benchmark_dir, tiny_benchmark_dir / "run", train={"paper_protocol_every": 4})
    summary = trainer.fit(progress=False)
    records = [json.loads(line) for line in (tiny_benchmark_dir / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "paper_protocol_ztest_top1" in r] == [4, 8]
    assert summary["paper_protocol_best_ztest_top1"] is not None


def test_step_draws_are_reproducible_and_cover_every_sample_once_per_epoch():
    seen = torch.tensor([0, 1, 3])
    full = draw_step(7, 5, num_samples=10, batch_size=8, feature_dim=4, seen=seen, num_timesteps=50)
    again = draw_step(7, 5, num_samples=10, batch_size=8, feature_dim=4, seen=seen, num_timesteps=50)
    assert torch.equal(full.noise, again.noise) and torch.equal(full.indices, again.indices)
    assert set(full.negative_labels.tolist()) <= {0, 1, 3}
    # each epoch visits every sample once: steps 0..4 of batch 8 over 10 samples = 4 epochs
    visits = torch.cat([draw_step(7, s, 10, 8, 4, seen, 50).indices for s in range(5)])
    assert torch.equal(torch.bincount(visits, minlength=10), torch.full((10,), 4))


def test_cosine_schedule_with_warmup():
    f = cosine_with_warmup(10, 110)  # the release's factor: step / warmup_steps
    assert f(0) == 0.0 and f(1) == pytest.approx(0.1) and f(9) == pytest.approx(0.9) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)
    g = cosine_with_warmup(10, 110, first_step=1.0)  # the skeleton encoder's: its first update already moves
    assert g(0) == pytest.approx(0.1) and g(9) == pytest.approx(1.0) and g(60) == f(60)


def test_first_updates_use_the_release_warmup_and_the_log_shows_each_steps_rate(tiny_benchmark_dir):
    # lr 1e-3 with 100 warm-up steps: the release's updates run at 0, 1e-5, 2e-5, ...
    trainer = make_trainer(tiny_benchmark_dir, tiny_benchmark_dir / "run",
                           train={"lr": 1e-3, "warmup_steps": 100, "log_every": 1, "steps": 3})
    before = weights(trainer)
    trainer.fit(progress=False, stop_after=1)
    assert_same_weights(before, weights(trainer))  # lr 0: AdamW's first update (decay included) changes nothing
    trainer.fit(progress=False, resume=False)
    records = [json.loads(line) for line in (tiny_benchmark_dir / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [(r["step"], r["lr"]) for r in records if "loss" in r]
    assert [step for step, _ in lrs] == [1, 2, 3]
    assert [lr for _, lr in lrs] == [0.0, pytest.approx(1e-5), pytest.approx(2e-5)]
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(3e-5)  # what step 4 would use


def test_training_history_skips_a_line_cut_short_by_a_kill(tmp_path):
    from tdsm_core.workbook.analysis import training_history
    from tdsm_core.errors import DataError

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 10, "loss": 1.0}\n{"step": 10, "val_seen_top1": 50.0}\n{"step": 20, "loss": 0.5}\n{"step": 3')
    history = training_history(tmp_path)
    assert history.index.tolist() == [10, 20]
    assert history.loc[10, "val_seen_top1"] == 50.0 and history.loc[20, "loss"] == 0.5
    log.write_text('{"step": 1')
    with pytest.raises(DataError, match="no complete record"):
        training_history(tmp_path)


def test_a_fresh_start_forgets_what_the_previous_weights_produced(tiny_benchmark_dir):
    run = tiny_benchmark_dir / "run"
    make_trainer(tiny_benchmark_dir, run, train={"keep_every": 4}).fit(progress=False)
    (run / "metrics.json").write_text('{"zsl_top1": 99.0}')  # as evaluate would have written
    (run / "scores_ztest.npz").write_bytes(b"old")
    assert (run / BEST).exists() and (run / "step_0000004.pt").exists()
    make_trainer(tiny_benchmark_dir, run).fit(progress=False, resume=False, stop_after=1)
    left = {p.name for p in run.iterdir()}
    assert not left & {"metrics.json", "scores_ztest.npz", BEST, "step_0000004.pt", "step_0000008.pt"}
    assert load_checkpoint(run / LAST)["step"] == 1


def test_evaluating_a_checkpoint_under_other_settings_is_refused_before_scoring(tiny_benchmark_dir):
    """Another split could make the checkpoint's seen classes 'unseen'; another encoder or width is garbage."""
    from tdsm_core.runs.pipeline import evaluate_run

    cfg = tiny_config(tiny_benchmark_dir)
    Trainer(cfg, load_benchmark(cfg.data, cfg.model.feature_dim), random_text()).fit(progress=False)
    np.save(tiny_benchmark_dir / "other_unseen.npy", np.array([0, 1, 2]))
    for section, change, named in [("data", {"unseen_file": str(tiny_benchmark_dir / "other_unseen.npy")}, "data.unseen_file"),
                                   ("text", {"encoder": "bert-base-uncased"}, "text.encoder"),
                                   ("model", {"feature_dim": 32}, "model.feature_dim")]:
        other = tiny_config(tiny_benchmark_dir, **{section: change})
        with pytest.raises(CheckpointError, match=rf"trained with other settings .*{named}"):
            evaluate_run(other)  # no benchmark or text given: the refusal comes before they are loaded
    assert not (cfg.run_dir() / "metrics.json").exists()


def board_scalars(folder):
    """{tag: {step: value}} of the TensorBoard events in `folder`, as TensorBoard itself reads them (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    out = {}
    for tag in events.Tags()["scalars"]:
        steps = [e.step for e in events.Scalars(tag)]
        assert len(steps) == len(set(steps)), f"{tag}: a step logged twice {steps}"
        out[tag] = {e.step: e.value for e in events.Scalars(tag)}
    return out


def test_tensorboard_events_hold_the_logged_scalars_once_each_after_a_resume(tiny_benchmark_dir):
    pytest.importorskip("tensorboard")
    run = tiny_benchmark_dir / "board"
    make_trainer(tiny_benchmark_dir, run).fit(progress=False, stop_after=4)  # logs steps 2, 4; checkpoint at 4
    at_four = (run / LAST).read_bytes()
    make_trainer(tiny_benchmark_dir, run).fit(progress=False, stop_after=2)  # logs step 6 ...
    (run / LAST).write_bytes(at_four)  # ... and is killed before its checkpoint at 6
    make_trainer(tiny_benchmark_dir, run).fit(progress=False)  # resumes at 4: step 6 is logged again
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    board = board_scalars(run / "tensorboard")
    for field in ("loss", "loss_diffusion", "loss_triplet", "pos_error", "neg_error", "lr", "val_seen_top1"):
        expected = {r["step"]: r[field] for r in records if field in r}
        assert expected, field
        got = board[f"denoiser/{field}"]
        assert sorted(got) == sorted(expected), (field, got, expected)
        assert all(got[s] == pytest.approx(v, rel=1e-6, abs=1e-12) for s, v in expected.items()), field
