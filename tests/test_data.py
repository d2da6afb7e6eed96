"""Every bad input the data loader knows gets one clear sentence naming the file."""
from pathlib import Path

import numpy as np
import pytest

from tdsm_core.data.features import load_benchmark, load_class_prompts
from tdsm_core.errors import DataError
from tdsm_core.data.splits import BENCHMARK_SPLITS, SPLITS, get_split

from conftest import NUM_CLASSES, ROOT, UNSEEN, requires_shared_data, tiny_config


def load(base, **data):
    cfg = tiny_config(base, data=data)
    return load_benchmark(cfg.data, cfg.model.feature_dim)


def test_tiny_benchmark_loads(tiny_benchmark_dir):
    b = load(tiny_benchmark_dir)
    assert b.num_classes == NUM_CLASSES and b.unseen.tolist() == UNSEEN
    assert set(b.train.labels) == set(b.seen) and set(b.ztest.labels) == set(UNSEEN)
    assert b.val is not None and b.gtest is not None and b.feature_dim == 16
    assert b.class_names[3] == "Action 3" and b.prompts.motion[3] == "move part 3 of the body"


def test_optional_parts_may_be_absent(tiny_benchmark_dir):
    for name in ("val.npy", "val_label.npy", "gtest.npy", "g_label.npy"):
        (tiny_benchmark_dir / "feats" / name).unlink()
    b = load(tiny_benchmark_dir)
    assert b.val is None and b.gtest is None


def corrupt(base, name, array):
    np.save(base / "feats" / name, array)


@pytest.mark.parametrize("mutate,pattern", [
    (lambda d: (d / "feats" / "ztest.npy").unlink(), r"ztest feature file .* is missing"),
    (lambda d: (d / "feats" / "train_label.npy").unlink(), r"train label file .* is missing"),
    (lambda d: corrupt(d, "train.npy", np.zeros((42, 15), np.float32)), r"width 15 but model.feature_dim is 16"),
    (lambda d: corrupt(d, "train_label.npy", np.zeros(5, np.int64)), r"5 labels but its feature file has 42"),
    (lambda d: corrupt(d, "z_label.npy", np.array([2, 5, 7, 0] * 4 + [2, 2], np.int64)),
     r"z_label.npy contains class ids \[0\] that are not unseen"),
    (lambda d: corrupt(d, "train_label.npy", np.array([2] * 42, np.int64)),
     r"train_label.npy contains class ids \[2\] that are not seen"),
    (lambda d: corrupt(d, "train.npy", np.full((42, 16), np.nan, np.float32)), r"NaN or infinite values in 42 rows"),
    (lambda d: corrupt(d, "val.npy", np.where(np.eye(42, 16) > 0, np.inf, 0).astype(np.float32)), r"NaN or infinite"),
    (lambda d: corrupt(d, "train.npy", np.zeros((42, 16), np.int32)), r"floating-point features, got dtype int32"),
    (lambda d: corrupt(d, "train_label.npy", np.full(42, 99, np.int64)), r"outside \[0, 10\)"),
    (lambda d: (d / "feats" / "train.npy").write_bytes(b"\x93NUMPY garbage"), r"truncated or corrupt"),
    (lambda d: np.save(d / "unseen.npy", np.array([2, 5, 5])), r"more than once"),
    (lambda d: np.save(d / "unseen.npy", np.array([2, 10])), r"outside \[0, 10\)"),
    (lambda d: np.save(d / "unseen.npy", np.array([], np.int64)), r"non-empty"),
    (lambda d: (d / "classes_llm.txt").write_text('"A" a.\n\n"C" c.\n' + "x\n" * 7), r"empty lines \[2\]"),
    (lambda d: (d / "classes_llm.txt").write_text('"A" a.\n'), r"has 1 lines but .* lists 10 classes"),
    (lambda d: (d / "classes.csv").write_text("idx,label\n1,a\n2,\n"), r"line 3 has an empty label"),
    (lambda d: (d / "classes.csv").unlink(), r"class prompt file .* is missing"),
    (lambda d: corrupt(d, "ztest.npy", np.zeros((18, 24), np.float32)),
     r"ztest.npy has features of width 24 but train.npy has 16; every part .* same encoder"),
    (lambda d: corrupt(d, "train.npy", np.zeros((16, 42), np.float32)), r"looks transposed"),
    (lambda d: np.savez(d / "feats" / "ztest.npy", np.zeros((18, 16), np.float32)) or
     (d / "feats" / "ztest.npy.npz").rename(d / "feats" / "ztest.npy"), r"is an .npz archive, not one .npy array"),
    (lambda d: np.save(d / "feats" / "train_label.npy", np.array([0, "a"] * 21, dtype=object), allow_pickle=True),
     r"holds Python objects .* numeric array"),
])
def test_bad_inputs_get_one_clear_sentence(tiny_benchmark_dir, mutate, pattern):
    mutate(tiny_benchmark_dir)
    with pytest.raises(DataError, match=pattern) as info:
        load(tiny_benchmark_dir)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")


def test_missing_folder_and_missing_split(tiny_benchmark_dir):
    with pytest.raises(DataError, match="does not exist"):
        load(tiny_benchmark_dir, features=str(tiny_benchmark_dir / "nowhere"))
    with pytest.raises(DataError, match="is a file; it must be the folder that holds train.npy"):
        load(tiny_benchmark_dir, features=str(tiny_benchmark_dir / "feats" / "train.npy"))
    with pytest.raises(DataError, match="no label split given"):
        load(tiny_benchmark_dir, unseen_file="", split="")
    with pytest.raises(DataError, match="unknown split 'ntu60_u7'; valid built-in splits are: ntu60_u5"):
        load(tiny_benchmark_dir, unseen_file="", split="ntu60_u7")
    with pytest.raises(DataError, match="split ntu60_u5 is for 60 classes"):
        load(tiny_benchmark_dir, unseen_file="", split="ntu60_u5")


def test_seen_file_overlapping_unseen_is_rejected(tiny_benchmark_dir):
    np.save(tiny_benchmark_dir / "seen.npy", np.array([0, 1, 2]))
    with pytest.raises(DataError, match=r"classes \[2\] are listed both as seen"):
        load(tiny_benchmark_dir, seen_file=str(tiny_benchmark_dir / "seen.npy"))


def test_builtin_split_tables_have_the_published_sizes():
    sizes = {name: (len(SPLITS[name].seen), len(SPLITS[name].unseen)) for name in BENCHMARK_SPLITS}
    assert sizes == {"ntu60_u5": (55, 5), "ntu60_u12": (48, 12), "ntu60_u20": (40, 20), "ntu60_u30": (30, 30),
                     "ntu120_u10": (110, 10), "ntu120_u24": (96, 24), "ntu120_u40": (80, 40), "ntu120_u60": (60, 60)}
    for spec in SPLITS.values():
        assert len(set(spec.unseen)) == len(spec.unseen) and max(spec.unseen) < spec.num_classes


def test_builtin_split_tables_match_the_released_label_splits():
    shared = requires_shared_data()
    for name in BENCHMARK_SPLITS:
        spec = get_split(name)
        folder = shared / "ntu" / "label_splits" / spec.dataset
        unseen = np.load(folder / f"ru{len(spec.unseen)}.npy")
        seen = np.load(folder / f"rs{len(spec.seen)}.npy")
        assert sorted(unseen.tolist()) == sorted(spec.unseen), name
        assert sorted(seen.tolist()) == sorted(spec.seen), name


def test_real_class_lists_load():
    shared = requires_shared_data() / "ntu" / "class_lists"
    ntu60 = load_class_prompts(shared / "ntu60.csv", shared / "ntu60_llm.txt")
    ntu120 = load_class_prompts(shared / "ntu120.csv", shared / "ntu120_llm.txt")
    assert len(ntu60) == 60 and len(ntu120) == 120
    assert ntu60.names[0] == "Drink water" and ntu120.names[119] != ntu120.motion[119]
    assert len(load_class_prompts(shared / "ntu120.csv", shared / "ntu120_llm.txt", num_classes=60)) == 60


def test_builtin_prompts_refuse_a_second_description_file(tmp_path):
    with pytest.raises(DataError, match="class_llm"):
        load_class_prompts("builtin:ntu60", tmp_path / "ntu60_llm.txt")


def test_builtin_prompts_cover_ntu60():
    prompts = load_class_prompts("builtin:ntu60")
    assert len(prompts) == 60 and prompts.names[57] == "handshaking"
    assert all(prompts.motion) and len(set(prompts.motion)) == 60


def test_class_csv_rows_must_follow_idx_and_the_name_description_format_is_read(tmp_path):
    path = tmp_path / "classes.csv"
    path.write_text("idx,label\n2,kick\n1,jump\n")
    with pytest.raises(DataError, match="row 2 has idx '2' where 1 belongs; .*sort the file by idx"):
        load_class_prompts(path)
    path.write_text("\ufeffidx,name,description\n1,jump,leave the ground with both feet\n2,kick,swing one leg\n")
    prompts = load_class_prompts(path)  # a BOM is not part of the header
    assert prompts.names == ["jump", "kick"] and prompts.motion[1] == "swing one leg" and prompts.definition == ["jump", "kick"]
    path.write_text("idx;label\n1;jump\n")
    with pytest.raises(DataError, match="separated by ;"):
        load_class_prompts(path)


def test_every_command_refuses_a_test_sample_copied_into_training(tiny_benchmark_dir):
    """load_data (train, evaluate, protocols, the skeleton chain) runs notebook 01's sanity checks."""
    from tdsm_core.runs.pipeline import load_data

    cfg = tiny_config(tiny_benchmark_dir)
    load_data(cfg)  # the tiny benchmark is clean
    train, ztest = (np.load(tiny_benchmark_dir / "feats" / name) for name in ("train.npy", "ztest.npy"))
    train[0] = ztest[3]
    np.save(tiny_benchmark_dir / "feats" / "train.npy", train)
    with pytest.raises(DataError, match="1 ztest feature rows also occur in train.npy"):
        load_data(cfg)


NTU60_PROMPTS_THAT_DIFFER = [5, 25, 26, 34, 47, 55]  # 0-based, between ntu60.csv and ntu120.csv's first 60 rows


@pytest.mark.parametrize("split", ["ntu60_u5", "ntu60_u12", "ntu60_u20", "ntu60_u30"])
def test_ntu60_configs_read_the_ntu120_prompts_as_the_release_does(split):
    from tdsm_core.config import load_config

    cfg = load_config(ROOT / "configs" / f"{split}.yaml")
    assert Path(cfg.data.class_csv).name == "ntu120.csv" and Path(cfg.data.class_llm).name == "ntu120_llm.txt"
    assert cfg.data.num_classes == 60
    shared = requires_shared_data() / "ntu" / "class_lists"
    resolved = load_class_prompts(shared / Path(cfg.data.class_csv).name, shared / Path(cfg.data.class_llm).name,
                                  cfg.data.num_classes)
    reference = load_class_prompts(shared / "ntu120.csv", shared / "ntu120_llm.txt")
    assert len(resolved) == 60
    assert resolved.motion == reference.motion[:60] and resolved.definition == reference.definition[:60]


def test_the_six_ntu60_motion_prompts_that_differ_between_the_two_files():
    shared = requires_shared_data() / "ntu" / "class_lists"
    ntu60 = load_class_prompts(shared / "ntu60.csv", shared / "ntu60_llm.txt")  # still loads when pointed at
    ntu120 = load_class_prompts(shared / "ntu120.csv", shared / "ntu120_llm.txt", num_classes=60)
    differ = [k for k in range(60) if ntu60.motion[k] != ntu120.motion[k]]
    assert differ == NTU60_PROMPTS_THAT_DIFFER
    assert ntu60.definition == ntu120.definition
    assert ntu120.motion[26] == "bend knees slightly then spring quickly off the ground"
