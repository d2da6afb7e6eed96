"""Notebook 00_skeletons and what it draws: tables of a skeleton set, stick figures, the animation, the handoff
of the exported features to notebook 01, and the runner skipping it for configs without a skeleton source."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tdsm_core.workbook import skeleton_views, notebooks, runner
from tdsm_core.skeletons.format import load_skeleton_npz, save_skeleton_npz
from tdsm_core.skeletons.layouts import MSR20, UTKINECT20

from conftest import ROOT
from test_notebooks import PNG_MAGIC, cells, jupyter_env  # noqa: F401  (the fixture)
from test_skeletons import MSR_DIR, standing_pose, synthetic_set


def test_dropped_sequences_travel_with_the_converted_file(tmp_path):
    data = synthetic_set()
    data.dropped = {"s9": "too few frames (3 < 5)", "s10": "all joints are zero"}
    save_skeleton_npz(tmp_path / "a.npz", data)
    assert load_skeleton_npz(tmp_path / "a.npz").dropped == data.dropped
    data.dropped = {}
    save_skeleton_npz(tmp_path / "b.npz", data)
    with np.load(tmp_path / "b.npz") as archive:
        assert "dropped_ids" not in archive.files  # nothing dropped: no field
    assert load_skeleton_npz(tmp_path / "b.npz").dropped == {}
    table = skeleton_views.dropped_table(load_skeleton_npz(tmp_path / "a.npz"))
    assert table.to_dict("records") == [{"sequence": "s9", "reason": "too few frames (3 < 5)"},
                                        {"sequence": "s10", "reason": "all joints are zero"}]


def test_dataset_and_performer_tables_count_the_set():
    data = synthetic_set()  # labels 0, 1, 2, 0; lengths 30, 23, 12, 2; subjects 1..4
    table = skeleton_views.dataset_table(data)
    assert table["sequences"].tolist() == [2, 1, 1] and table["performers"].tolist() == [2, 1, 1]
    assert table.loc[0, "frames_min"] == 2 and table.loc[0, "frames_max"] == 30 and table.loc[0, "class"] == "a"
    performers = skeleton_views.performer_table(data)
    assert performers.loc["a"].tolist() == [1, 0, 0, 1] and performers.values.sum() == len(data)
    assert skeleton_views.example_rows(data).tolist() == [3, 1, 2]  # class a: the shorter of two (median, first)


@pytest.mark.parametrize("turn", ["kinect", "y_down", "z_up"])
def test_front_view_draws_the_spine_up_and_the_hips_across_whatever_the_sensor_axes(turn):
    pose = standing_pose()  # x to the right, y up
    axes = {"kinect": np.eye(3), "y_down": np.diag([1.0, -1.0, 1.0]),
            "z_up": np.array([[-1.0, 0, 0], [0, 0, 1], [0, 1, 0]])}[turn]
    frames = (pose @ axes.T)[None, None]  # (1, 1, 20, 3)
    xy = skeleton_views.front_view(frames, UTKINECT20)[0, 0]
    head, base = xy[UTKINECT20.index("head")], xy[UTKINECT20.index("hip_center")]
    left, right = xy[UTKINECT20.index("hip_left")], xy[UTKINECT20.index("hip_right")]
    assert head[1] > base[1] + 0.5 and right[0] > left[0]
    np.testing.assert_allclose(np.abs(xy), np.abs(pose[:, :2]))


def test_filmstrips_and_the_animation_are_drawn_and_saved_whole(tmp_path):
    data = synthetic_set()
    sequences = [data.frames_of(i, i + 1) for i in range(len(data))]
    fig = skeleton_views.filmstrips(sequences, UTKINECT20, data.bones, ["a", "b", "c", "d"], frames=3, columns=3)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4
    drawn = fig.axes[0]
    # 3 frames of actor 0 and 2 of actor 1 (tracked every other frame), one line per bone each
    assert len(drawn.lines) == (3 + 2) * len(UTKINECT20.bones)
    anim = skeleton_views.animation(sequences[0], UTKINECT20, data.bones, "a")
    path = skeleton_views.save_animation(anim, tmp_path / "anim.gif", fps=10)
    assert path.read_bytes()[:6] == b"GIF89a" and [p.name for p in tmp_path.iterdir()] == ["anim.gif"]
    from PIL import Image

    with Image.open(path) as gif:
        assert gif.n_frames == 30


def test_encoder_history_keeps_the_last_record_of_a_step(tmp_path):
    rows = [{"step": 2, "epoch": 1, "loss": 2.0, "lr": 0.1, "val_seen_top1": 10.0},
            {"step": 4, "epoch": 2, "loss": 1.5, "lr": 0.1, "val_seen_top1": 20.0},
            {"step": 4, "epoch": 2, "loss": 1.4, "lr": 0.1, "val_seen_top1": 25.0}]  # a resumed run wrote it again
    (tmp_path / "encoder_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    history = skeleton_views.encoder_history(tmp_path)
    assert history["val_seen_top1"].tolist() == [10.0, 25.0]
    assert len(skeleton_views.encoder_curves(history).axes) == 3
    assert skeleton_views.encoder_history(tmp_path / "missing").empty


def test_configs_without_a_skeleton_source_skip_the_skeleton_notebook(tmp_path):
    said = []
    report = runner.run_notebooks(ROOT / "configs" / "demo.yaml", [f"output_dir={tmp_path}"],
                                    notebooks=[ROOT / "notebooks" / "00_skeletons.ipynb"], log=said.append)
    assert report.executed == [] and report.skipped == []
    assert len(said) == 1 and said[0].startswith("00_skeletons: not run") and "skeleton.source" in said[0]
    cfg = notebooks.notebook_config(str(ROOT / "configs" / "msr_action3d.yaml"), [f"output_dir={tmp_path}"])
    assert cfg.data.features == str(tmp_path / "msr_action3d" / "features")
    assert cfg.data.unseen_file == str(tmp_path / "msr_action3d" / "unseen.npy")


def write_msr_folder(folder: Path, subjects: int = 2, frames: int = 12) -> Path:
    """MSR Action3D-format files (aAA_sSS_eEE_skeleton3D.txt, rows `x y z c`) for all 20 classes: a standing
    msr20 pose whose joints move with a class-dependent rhythm, in a y-down sensor frame."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pose = np.zeros((20, 3))
    for j, name in enumerate(MSR20.joints):
        pose[j] = rng.normal(0, 0.15, 3)
    spine = {"hip_center": 0.0, "spine": 0.2, "shoulder_center": 0.5, "head": 0.7}
    for name, y in spine.items():
        pose[MSR20.index(name)] = (0, y, 0)
    pose[MSR20.index("hip_left")], pose[MSR20.index("hip_right")] = (-0.1, -0.05, 0), (0.1, -0.05, 0)
    for action in range(1, 21):
        for subject in range(1, subjects + 1):
            t = np.arange(frames)[:, None, None]
            moving = pose + 0.1 * np.sin(0.4 * action * t + np.arange(20)[:, None] * 0.1)  # (T, 20, 3)
            moving = moving * [1, -1, 1] + [0, 1, 2.5]  # y down, in front of the sensor
            rows = np.concatenate([moving.reshape(-1, 3), np.ones((frames * 20, 1))], axis=1)
            np.savetxt(folder / f"a{action:02d}_s{subject:02d}_e01_skeleton3D.txt", rows, fmt="%.5f")
    return folder


@pytest.mark.slow
def test_the_skeleton_notebook_exports_features_that_the_data_notebook_reads(tmp_path, jupyter_env):
    source = MSR_DIR if MSR_DIR.is_dir() else write_msr_folder(tmp_path / "msr")
    overrides = [f"output_dir={tmp_path / 'outputs'}", f"text.cache_dir={tmp_path / 'cache'}",
                 f"skeleton.source={source}", "skeleton.channels=[8,16]", "skeleton.strides=[1,2]",
                 "skeleton.epochs=2", "skeleton.batch_size=16", "skeleton.length=8", "skeleton.device=cpu",
                 "model.feature_dim=16"]
    paths = [ROOT / "notebooks" / "00_skeletons.ipynb", ROOT / "notebooks" / "01_data.ipynb"]
    report = runner.run_notebooks(ROOT / "configs" / "msr_action3d.yaml", overrides, "cpu",
                                    {"max_umap_points": 200, "frames_shown": 3}, notebooks=paths, log=lambda _: None)
    assert report.executed == ["00_skeletons.ipynb", "01_data.ipynb"]
    run = tmp_path / "outputs" / "msr_action3d"
    unseen = np.load(run / "unseen.npy")
    assert len(unseen) == 5 and json.loads((run / "features" / "export.json").read_text())["seen"] == \
        sorted(set(range(20)) - set(unseen.tolist()))
    for name in ["skeletons_raw.png", "skeletons_preprocessed.png", "encoder_curves.png", "umap_encoder_features.png"]:
        assert (run / "figures" / name).read_bytes()[:8] == PNG_MAGIC, name
    assert (run / "figures" / "skeleton_animation.gif").read_bytes()[:6] == b"GIF89a"
    executed = cells(run / "notebooks" / "00_skeletons.ipynb")
    outputs = [o for c in executed for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # every saved figure is shown inline
    assert any("text/html" in o.get("data", {}) and "<script" in "".join(o["data"]["text/html"]) for o in outputs)
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "unseen classes:" in text and "encoder: " in text
    data_notebook = json.dumps(cells(run / "notebooks" / "01_data.ipynb"))
    assert str(run / "features") in data_notebook  # 01 read the features 00 exported
