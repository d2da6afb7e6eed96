"""Raw skeleton readers, the generic .npz format, joint layouts and preprocessing."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tdsm_core.errors import DataError
from tdsm_core.skeletons.preprocess import preprocess
from tdsm_core.skeletons.layouts import LAYOUTS, MSR20, UTKINECT20, get_layout
from tdsm_core.skeletons.readers import (SkeletonSet, class_table, convert_dataset, load_skeleton_npz, read_msr, read_msr_file, read_ntu,
                                 read_ntu_skeleton, read_utkinect, save_skeleton_npz)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "skeletons"
MSR_DIR, UT_DIR = SHARED / "msr_action3d", SHARED / "utkinect"


def needs(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"reference data {folder} is not available (fresh clone without ../shared)")


# ----------------------------------------------------------------------------------------------
# Synthetic data

def standing_pose() -> np.ndarray:
    """(20, 3) a frontal Kinect v1 (utkinect20 order) pose: x to the subject's right, y up."""
    half = {"shoulder": (0.2, 0.45), "elbow": (0.3, 0.2), "wrist": (0.35, 0.0), "hand": (0.37, -0.08),
            "hip": (0.1, -0.05), "knee": (0.1, -0.5), "ankle": (0.1, -0.9), "foot": (0.1, -0.95)}
    spine = {"hip_center": (0, 0), "spine": (0, 0.2), "shoulder_center": (0, 0.5), "head": (0, 0.7)}
    pose = np.zeros((20, 3))
    for name in UTKINECT20.joints:
        if name in spine:
            pose[UTKINECT20.index(name), :2] = spine[name]
        else:
            part, side = name.split("_")
            x, y = half[part]
            pose[UTKINECT20.index(name), :2] = (x if side == "right" else -x, y)
    return pose


def synthetic_set(n: int = 4, t: int = 30, seed: int = 0) -> SkeletonSet:
    """Moving, rotated, translated copies of the standing pose with varied lengths and a second actor."""
    rng = np.random.default_rng(seed)
    skeletons = np.zeros((n, t, 2, 20, 3), np.float32)
    lengths = np.array([t, t - 7, 12, 2][:n], np.int64)
    for i in range(n):
        angle = rng.uniform(-1, 1)
        turn = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
        for f in range(lengths[i]):
            pose = standing_pose().copy()
            pose[UTKINECT20.index("hand_right")] += [0, 0.3 * np.sin(f / 3), 0.1]
            pose = pose @ turn.T + [rng.uniform(-1, 1), 0.1 * f, 3.0]
            skeletons[i, f, 0] = pose
            if f % 2 == 0:  # the second actor is tracked every other frame only
                skeletons[i, f, 1] = pose + [1.0, 0, 0]
    return SkeletonSet(skeletons=skeletons, lengths=lengths, labels=np.arange(n) % 3,
                       class_names=np.array(["a", "b", "c"]), layout="utkinect20",
                       bones=np.array(UTKINECT20.bones), subjects=np.arange(n) + 1,
                       descriptions=np.array(["do a", "do b", "do c"]), sample_ids=np.array([f"s{i}" for i in range(n)]))


def ntu_body_lines(body_id: int, joints: np.ndarray) -> list[str]:
    lines = [f"{body_id} 0 1 1 1 1 0 0.01 0.02 2", "25"]
    lines += [f"{x:.6f} {y:.6f} {z:.6f} 250.1 200.2 1000.3 500.4 0.5 0.1 0.2 0.3 2" for x, y, z in joints]
    return lines


def write_ntu(path: Path, frames: list[list[tuple[int, np.ndarray]]]) -> Path:
    lines = [str(len(frames))]
    for bodies in frames:
        lines.append(str(len(bodies)))
        for body_id, joints in bodies:
            lines += ntu_body_lines(body_id, joints)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def ntu_folder(tmp_path: Path) -> tuple[Path, dict[int, np.ndarray]]:
    """One S001C002P003R001A005 file: 4 frames, frame 2 without bodies, a still body, a moving one
    and a body seen once."""
    rng = np.random.default_rng(1)
    still = [rng.normal(size=(25, 3)) * 0.01 + [0, 0, 3] for _ in range(4)]
    moving = [rng.normal(size=(25, 3)) + [1, 0, 3] for _ in range(4)]
    once = rng.normal(size=(25, 3))
    frames = [[(111, still[0]), (222, moving[0])], [], [(222, moving[2]), (111, still[2])],
              [(333, once), (111, still[3]), (222, moving[3])]]
    write_ntu(tmp_path / "S001C002P003R001A005.skeleton", frames)
    return tmp_path, {111: np.array(still), 222: np.array(moving)}


# ----------------------------------------------------------------------------------------------
# Layouts

@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_is_a_tree_over_all_joints(name):
    layout = get_layout(name)
    assert len(set(layout.joints)) == len(layout.joints) and len(layout.bones) == len(layout.joints) - 1
    reached, frontier = {layout.root}, [layout.root]
    neighbours = {j: set() for j in range(len(layout.joints))}
    for a, b in layout.bones:
        neighbours[a].add(b)
        neighbours[b].add(a)
    while frontier:
        new = neighbours[frontier.pop()] - reached
        reached |= new
        frontier += list(new)
    assert reached == set(range(len(layout.joints)))


def test_layout_orders_are_pinned():
    ntu, kinect1 = get_layout("ntu25"), UTKINECT20
    assert [ntu.index(j) for j in ("spine_mid", "head", "hand_right", "foot_right", "spine_shoulder", "thumb_right")] \
        == [1, 3, 11, 19, 20, 24]
    assert [kinect1.index(j) for j in ("hip_center", "head", "hand_right", "hip_left", "foot_right")] == [0, 3, 11, 12, 19]
    assert [MSR20.index(j) for j in ("shoulder_left", "hip_center", "hand_right", "foot_right", "head")] == [0, 6, 12, 18, 19]


def test_utkinect_layout_matches_the_data():
    needs(UT_DIR)
    pose = np.loadtxt(UT_DIR / "joints_s01_e01.txt", max_rows=1)[1:].reshape(20, 3)
    assert pose[:, 1].argmax() == UTKINECT20.index("head") and pose[:, 1].argmin() in (15, 19)  # a foot lowest
    assert pose[UTKINECT20.index("shoulder_right"), 0] > pose[UTKINECT20.index("shoulder_left"), 0]


def test_unknown_layout_lists_known_ones():
    with pytest.raises(DataError, match="ntu25"):
        get_layout("kinect99")


def test_msr_layout_sides_match_the_data():
    """The one-arm wave (a01) moves the right hand; the forward kick (a14) the right foot; head on top."""
    needs(MSR_DIR)
    wave = read_msr_file(MSR_DIR / "a01_s01_e01_skeleton3D.txt")[:, 0]  # (T, 20, 3)
    kick = read_msr_file(MSR_DIR / "a14_s01_e01_skeleton3D.txt")[:, 0]

    def spread(x: np.ndarray, joint: str) -> float:
        return x[:, MSR20.index(joint)].std(axis=0).sum()

    assert spread(wave, "hand_right") > 3 * spread(wave, "hand_left")
    assert spread(kick, "foot_right") > 2 * spread(kick, "foot_left")
    assert wave[0, :, 1].argmax() == MSR20.index("head")
    assert wave[0, MSR20.index("shoulder_right"), 0] > wave[0, MSR20.index("shoulder_left"), 0]


# ----------------------------------------------------------------------------------------------
# NTU

def test_ntu_keeps_the_two_most_moving_bodies_and_drops_empty_frames(ntu_folder):
    folder, bodies = ntu_folder
    raw = read_ntu_skeleton(folder / "S001C002P003R001A005.skeleton")  # (4, 2, 25, 3)
    assert raw.shape == (4, 2, 25, 3) and not raw[1].any()
    np.testing.assert_allclose(raw[[0, 2, 3], 0], bodies[222][[0, 2, 3]], atol=1e-6)  # most motion first
    np.testing.assert_allclose(raw[[0, 2, 3], 1], bodies[111][[0, 2, 3]], atol=1e-6)
    data = read_ntu(folder, min_frames=2)
    assert data.labels.tolist() == [4] and data.subjects.tolist() == [3] and data.lengths.tolist() == [3]
    assert data.layout == "ntu25" and data.class_names[4] == "drop" and data.skeletons.shape == (1, 3, 2, 25, 3)
    np.testing.assert_allclose(data.skeletons[0, 1, 0], bodies[222][2], atol=1e-6)


def test_ntu_class_list_follows_the_largest_action_number(ntu_folder):
    folder, _ = ntu_folder
    assert len(read_ntu(folder, min_frames=2).class_names) == 60  # A005 only: NTU-60
    (folder / "S001C002P003R001A005.skeleton").rename(folder / "S018C002P045R001A074.skeleton")
    data = read_ntu(folder, min_frames=2)
    assert len(data.class_names) == 120 and data.labels.tolist() == [73] and data.class_names[73] == "counting money"
    ntu60, _ = class_table("ntu60")
    assert data.class_names[:60].tolist() == ntu60  # NTU-120 starts with the NTU-60 classes
    with pytest.raises(DataError, match="only 60 class names were given"):
        read_ntu(folder, class_names=ntu60, min_frames=2)


def test_ntu_truncated_file_names_the_line(ntu_folder, tmp_path):
    folder, _ = ntu_folder
    lines = (folder / "S001C002P003R001A005.skeleton").read_text().splitlines()
    bad = tmp_path / "S001C001P001R001A001.skeleton"
    bad.write_text("\n".join(lines[:-5]) + "\n")
    with pytest.raises(DataError, match=rf"ends at line {len(lines) - 5} .*truncated"):
        read_ntu_skeleton(bad)
    lines[5] = "0.1 0.2 0.3"  # a joint line of the first body (line 6) without its 12 values
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 6 should be a joint line"):
        read_ntu_skeleton(bad)


def test_ntu_file_name_must_carry_subject_and_action(ntu_folder):
    folder, _ = ntu_folder
    (folder / "S001C002P003R001A005.skeleton").rename(folder / "clip.skeleton")
    with pytest.raises(DataError, match="SsssCcccPpppRrrrAaaa"):
        read_ntu(folder)


# ----------------------------------------------------------------------------------------------
# MSR Action3D and UTKinect

def test_msr_reads_every_sequence_and_drops_the_zero_one():
    needs(MSR_DIR)
    data = read_msr(MSR_DIR)
    assert len(data) == 566 and data.dropped == {"a13_s09_e02": "all joints are zero"}
    assert data.layout == "msr20" and data.skeletons.shape[2:] == (1, 20, 3) and len(data.class_names) == 20
    first = list(data.sample_ids).index("a01_s01_e01")
    assert data.labels[first] == 0 and data.subjects[first] == 1 and data.lengths[first] == 54
    assert data.descriptions is not None and sorted(set(data.labels.tolist())) == list(range(20))


def test_msr_row_of_the_wrong_width_names_the_line(tmp_path):
    rows = ["0.1 0.2 2.5 1.0"] * 40
    rows[6] = "0.1 0.2 2.5"
    path = tmp_path / "a01_s01_e01_skeleton3D.txt"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"line 7 should hold 4 numbers"):
        read_msr(tmp_path)
    path.write_text("\n".join(["0.1 0.2 2.5 1.0"] * 39) + "\n")
    with pytest.raises(DataError, match="not a positive multiple of 20"):
        read_msr_file(path)


def test_utkinect_cuts_clips_and_drops_the_nan_one():
    needs(UT_DIR)
    data = read_utkinect(UT_DIR)
    # README says the NaN carry clip is s10_e01, but actionLabel.txt gives 'carry: NaN NaN' under s10_e02
    assert len(data) == 199 and list(data.dropped) == ["s10_e02_carry"] and "NaN" in data.dropped["s10_e02_carry"]
    walk = list(data.sample_ids).index("s01_e01_walk")
    ids = np.loadtxt(UT_DIR / "joints_s01_e01.txt", usecols=0)
    assert data.lengths[walk] == ((ids >= 252) & (ids <= 390)).sum()  # repeated ids are separate poses
    assert data.labels[walk] == 0 and data.subjects[walk] == 1 and data.layout == "utkinect20"
    assert np.bincount(data.labels).tolist() == [20, 20, 20, 20, 19, 20, 20, 20, 20, 20]


def test_utkinect_drops_nan_joints_and_exact_duplicate_rows(tmp_path):
    pose = " ".join(f"{v:.3f}" for v in standing_pose().ravel())
    rows = [f"{i} {pose}" for i in (10, 12, 12, 14, 16, 18, 20)] + [f"{i} " + " ".join(["NaN"] * 60) for i in (30, 32)]
    rows[2] = f"12 {pose.replace('0.700', '0.710')}"  # a repeated id with a new pose stays
    rows.insert(2, rows[1])  # an exact duplicate row goes
    (tmp_path / "joints_s01_e01.txt").write_text("\n".join(rows) + "\n")
    (tmp_path / "actionLabel.txt").write_text("s01_e01\nwalk: 10 20 \npush: 30 32\npull: 40 50\n")
    data = read_utkinect(tmp_path, min_frames=2)
    assert data.sample_ids.tolist() == ["s01_e01_walk"] and data.lengths.tolist() == [7]
    assert data.dropped["s01_e01_push"] == "contains NaN" and data.dropped["s01_e01_pull"].startswith("too few frames")


def test_convert_dataset_writes_a_loadable_file_and_prints_a_summary(ntu_folder, tmp_path, capsys):
    folder, _ = ntu_folder
    written = convert_dataset("ntu", folder, tmp_path / "out" / "ntu.npz", min_frames=3)
    assert capsys.readouterr().out.startswith("ntu25: 1 sequences of up to 3 frames, 60 classes; dropped 0 ->")
    back = load_skeleton_npz(tmp_path / "out" / "ntu.npz")
    np.testing.assert_array_equal(back.skeletons, written.skeletons)
    with pytest.raises(DataError, match=r"no usable sequence \(1 dropped"):
        convert_dataset("ntu", folder, tmp_path / "none.npz", min_frames=4)  # 3 tracked frames only


def test_convert_dataset_rejects_unknown_kinds_and_missing_folders(tmp_path):
    with pytest.raises(DataError, match=r"\['msr', 'ntu', 'utkinect'\]"):
        convert_dataset("kinetics", tmp_path, tmp_path / "out.npz")
    with pytest.raises(DataError, match="does not exist"):
        convert_dataset("msr", tmp_path / "nowhere", tmp_path / "out.npz")
    with pytest.raises(DataError, match=r"\['max_actors'\] do not apply to msr"):
        convert_dataset("msr", tmp_path, tmp_path / "out.npz", max_actors=1)
    with pytest.raises(DataError, match="no actionLabel.txt"):
        convert_dataset("utkinect", tmp_path, tmp_path / "out.npz")


# ----------------------------------------------------------------------------------------------
# The generic .npz

def test_round_trip_keeps_every_field(tmp_path):
    data = synthetic_set()
    save_skeleton_npz(tmp_path / "set.npz", data)
    back = load_skeleton_npz(tmp_path / "set.npz")
    for name in ("skeletons", "lengths", "labels", "class_names", "bones", "subjects", "descriptions", "sample_ids"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name), err_msg=name)
    assert back.layout == "utkinect20" and back.skeletons.dtype == np.float32 and back.labels.dtype == np.int64


def test_missing_field_is_named(tmp_path):
    data = synthetic_set()
    np.savez(tmp_path / "set.npz", skeletons=data.skeletons, lengths=data.lengths, class_names=data.class_names,
             layout=np.array("utkinect20"), bones=data.bones)
    with pytest.raises(DataError, match=r"set\.npz lacks the field\(s\) \['labels'\]"):
        load_skeleton_npz(tmp_path / "set.npz")


@pytest.mark.parametrize("field, value, message", [
    ("labels", np.array([0, 1, 2, 3]), "labels' must lie in"),
    ("labels", np.array([0.0, 1.0, 2.0, 0.0]), "labels' must hold integers"),
    ("lengths", np.array([30, 23, 31, 2]), "lengths' must lie in"),
    ("subjects", np.array([1, 2, 3]), r"subjects' must have shape \(4,\)"),
    ("skeletons", np.zeros((4, 30, 20, 3), np.float32), "skeletons' must have shape"),
    ("descriptions", np.array(["x"]), "descriptions' must be a 1-D string array of length 3"),
    ("bones", np.array([[0, 20]]), "bones' must index the 20 joints"),
])
def test_bad_fields_are_named(tmp_path, field, value, message):
    data = synthetic_set()
    setattr(data, field, value)
    arrays = {name: getattr(data, name) for name in ("skeletons", "lengths", "labels", "class_names", "bones",
                                                      "subjects", "descriptions")}
    np.savez(tmp_path / "set.npz", layout=np.array("utkinect20"), **arrays)
    with pytest.raises(DataError, match=message):
        load_skeleton_npz(tmp_path / "set.npz")


def test_nan_skeletons_are_refused_on_save_and_load(tmp_path):
    data = synthetic_set()
    data.skeletons[2, 0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"NaN .* in 1 sequences \(first: \[2\]\)"):
        save_skeleton_npz(tmp_path / "set.npz", data)
    assert not (tmp_path / "set.npz").exists()


# ----------------------------------------------------------------------------------------------
# Preprocessing

def test_preprocess_is_deterministic_and_has_the_asked_length():
    data = synthetic_set()
    np.random.seed(1)
    first = preprocess(data, length=16)
    np.random.seed(2)
    assert first.shape == (4, 16, 2, 20, 3) and first.dtype == np.float32
    assert first.tobytes() == preprocess(data, length=16).tobytes()


@pytest.mark.parametrize("centring", ["first_frame", "per_frame"])
def test_centring_puts_the_root_at_the_origin(centring):
    out = preprocess(synthetic_set(), length=20, centring=centring)
    root = out[:, :, 0, UTKINECT20.root]  # (N, T, 3)
    np.testing.assert_allclose(root[:, 0], 0, atol=1e-6)
    assert np.allclose(root, 0, atol=1e-6) == (centring == "per_frame")


def test_resampling_interpolates_linearly_and_keeps_absent_actors_zero():
    data = synthetic_set()
    out = preprocess(data, length=9, centring="none", scale="none", align=False)
    head = data.skeletons[1, :data.lengths[1], 0, UTKINECT20.index("head"), 1]  # y rises 0.1 per frame
    np.testing.assert_allclose(out[1, :, 0, UTKINECT20.index("head"), 1], np.linspace(head[0], head[-1], 9), atol=1e-5)
    # sequence 0 has 30 frames, so 9 output frames fall at 0, 3.625, 7.25, ...: between a tracked and an
    # untracked frame of actor 1 except the first and last
    assert out[0, 0, 1].any() and not out[0, 1:-1, 1].any()


def test_alignment_undoes_a_turn_and_scale_makes_bones_unit_length():
    data = synthetic_set(n=2)
    out = preprocess(data, length=8, scale="torso")
    pose = out[:, 0, 0]  # (N, 20, 3)
    across = pose[:, UTKINECT20.hips[1]] - pose[:, UTKINECT20.hips[0]]
    np.testing.assert_allclose(across[:, 1:], 0, atol=1e-6)
    assert (across[:, 0] > 0).all()
    np.testing.assert_allclose(out[0, 0, 0], out[1, 0, 0], atol=1e-5)  # the same pose seen from two angles
    torso = np.linalg.norm(pose[:, UTKINECT20.torso[1]] - pose[:, UTKINECT20.torso[0]], axis=-1)
    np.testing.assert_allclose(torso, 1, rtol=1e-5)
    pose = preprocess(data, length=8, scale="bones")[:, 0, 0]
    bones = np.array(UTKINECT20.bones)
    np.testing.assert_allclose(np.linalg.norm(pose[:, bones[:, 0]] - pose[:, bones[:, 1]], axis=-1).mean(), 1, rtol=0.05)


def test_preprocess_rejects_bad_options():
    data = synthetic_set()
    with pytest.raises(DataError, match="first_frame"):
        preprocess(data, centring="middle")
    with pytest.raises(DataError, match="has 25 joints"):
        preprocess(data, layout=get_layout("ntu25"))


def test_preprocess_real_msr_sequences(tmp_path):
    needs(MSR_DIR)
    for name in ("a01_s01_e01", "a16_s05_e02", "a13_s09_e02"):
        shutil.copy(MSR_DIR / f"{name}_skeleton3D.txt", tmp_path)
    data = read_msr(tmp_path)
    assert len(data) == 2 and list(data.dropped) == ["a13_s09_e02"]
    out = preprocess(data, length=32)
    assert out.shape == (2, 32, 1, 20, 3) and np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0, 0, MSR20.root], 0, atol=1e-6)
