"""Raw skeletons at scale: the ragged format (and the padded one it replaces), the fast NTU parser, the
sharded parallel conversion, chunked preprocessing to disk and the encoder reading from disk."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from tdsm_core.skeletons import ntu, ntu_convert
from tdsm_core.errors import DataError
from tdsm_core.skeletons.preprocess import preprocess, preprocess_to_file
from tdsm_core.skeletons.format import SkeletonSet, load_skeleton_npz, save_skeleton_npz
from tdsm_core.skeletons.store import DiskArray, NpzWriter, npz_member, open_npy, write_npy_chunks
from tdsm_core.skeletons.readers import convert_dataset, read_msr, read_ntu

from conftest import ROOT, requires_shared_data
from test_skeletons import synthetic_set, write_ntu


def padded_reference():
    """The chain as it was on main before the ragged format (benchmarks/ntu_reference.py, a verbatim copy)."""
    if "ntu_reference" not in sys.modules:
        spec = importlib.util.spec_from_file_location("ntu_reference", ROOT / "benchmarks" / "ntu_reference.py")
        sys.modules["ntu_reference"] = module = importlib.util.module_from_spec(spec)  # (dataclasses look it up)
        spec.loader.exec_module(module)
    return sys.modules["ntu_reference"]


def ntu_dataset(folder, count=9, seed=0):
    """`count` small NTU files: one or two moving bodies, an empty first frame, a body seen once, one file
    too short to keep (3 frames), values written in several styles (E-notation, -0, +, 8 digits)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        n = 3 if i == 4 else int(rng.integers(6, 14))
        base = [rng.normal(size=(25, 3)) + [0, 0, 3], rng.normal(size=(25, 3)) + [1, 0, 3]]
        frames = []
        for f in range(n):
            bodies = [] if f == 0 and i % 3 == 0 else [(72057594037931100 + b, base[b] + 0.1 * f * rng.normal(size=(25, 3)))
                                                        for b in range(1 + i % 2)]
            if f == 2 and i == 1:
                bodies.append((99, rng.normal(size=(25, 3))))  # a body seen once
            frames.append(bodies)
        write_ntu(folder / f"S001C00{1 + i % 3}P00{1 + i % 4}R001A0{10 + 7 * i:02d}.skeleton", frames)
    odd = folder / "S001C001P001R001A010.skeleton"
    lines = odd.read_text().splitlines()
    lines[5] = "1.234567E-05 -0 +2.5 250.1 200.2 1000.3 500.4 0.5 0.1 0.2 0.3 2"
    lines[6] = "-0.12345678 3.5e-3 1e2 250.1 200.2 1000.3 500.4 0.5 0.1 0.2 0.3 2"
    odd.write_text("\r\n".join(lines) + "\r\n\r\n")  # Windows line ends and a blank line at the end
    return folder


# ----------------------------------------------------------------------------------------------
# The fast parser against the careful one

def test_fast_ntu_parser_gives_the_careful_parsers_bytes(tmp_path):
    for path in sorted(ntu_dataset(tmp_path).glob("*.skeleton")):
        fast = ntu._read_well_formed(path, 2)  # no fallback: the fast path itself
        assert fast.tobytes() == ntu.read_ntu_skeleton_by_line(path).tobytes(), path.name
        assert ntu._read_well_formed(path, 3).tobytes() == ntu.read_ntu_skeleton_by_line(path, 3).tobytes()
    odd = ntu.read_ntu_skeleton(tmp_path / "S001C001P001R001A010.skeleton")  # frame 0 is empty
    assert odd[1, 0, 0].tolist() == [pytest.approx(1.234567e-05), 0.0, 2.5] and np.signbit(odd[1, 0, 0, 1])


@pytest.mark.parametrize("change, message", [
    (lambda lines: lines[:5] + ["0.1 nan 0.3 " + " ".join(["1"] * 9)] + lines[6:], None),  # NaN: kept, dropped later
    (lambda lines: lines[:5] + [lines[5].replace(" ", "\t")] + lines[6:], None),  # tabs are whitespace too
    (lambda lines: lines[:5] + ["0.1 0.2 0.3"] + lines[6:], r"line 6 should be a joint line of 12 numbers"),
    (lambda lines: lines[:-5], r"ends at line \d+ .*truncated"),
    (lambda lines: lines[:3] + ["24"] + lines[4:], r"line 4 gives 24 joints"),
    (lambda lines: lines + ["1"], r"has text after the \d+ frames"),
    (lambda lines: lines[:5] + [lines[5].replace("250.1", "25x.1")] + lines[6:], r"line 6 should be a joint line"),
])
def test_files_the_fast_parser_does_not_expect_go_to_the_careful_one(tmp_path, change, message):
    rng = np.random.default_rng(3)
    path = write_ntu(tmp_path / "S001C001P001R001A001.skeleton",
                     [[(7, rng.normal(size=(25, 3)))] for _ in range(4)])
    path.write_text("\n".join(change(path.read_text().splitlines())) + "\n")
    with pytest.raises(ntu._Unexpected):
        ntu._read_well_formed(path, 2)
    if message is None:
        assert ntu.read_ntu_skeleton(path).tobytes() == ntu.read_ntu_skeleton_by_line(path).tobytes()
    else:
        with pytest.raises(DataError, match=message):
            ntu.read_ntu_skeleton(path)


# ----------------------------------------------------------------------------------------------
# Ragged storage against the padded reader

def test_ragged_round_trip_equals_the_padded_readers_output(tmp_path):
    folder = ntu_dataset(tmp_path / "raw")
    reference = padded_reference().read_ntu(folder)  # the padded reader of main before this change
    converted = convert_dataset("ntu", folder, tmp_path / "ntu.npz", workers=1, progress=False)
    back = load_skeleton_npz(tmp_path / "ntu.npz")
    assert back.ragged and isinstance(back.store, DiskArray) and back.store.shape[0] == reference.lengths.sum()
    assert back.skeletons.tobytes() == reference.skeletons.tobytes()
    for name in ("lengths", "labels", "class_names", "bones", "subjects", "descriptions", "sample_ids"):
        np.testing.assert_array_equal(getattr(back, name), getattr(reference, name), err_msg=name)
    assert back.layout == reference.layout and converted.dropped == reference.dropped == {
        "S001C002P001R001A038": "too few frames (3 < 5)"}
    in_memory = read_ntu(folder)
    assert in_memory.skeletons.tobytes() == reference.skeletons.tobytes()


def test_msr_ragged_round_trip_keeps_every_sequence(tmp_path):
    data = read_msr(requires_shared_data() / "skeletons" / "msr_action3d")
    save_skeleton_npz(tmp_path / "msr.npz", data)
    back = load_skeleton_npz(tmp_path / "msr.npz")
    assert (tmp_path / "msr.npz").stat().st_size < 0.7 * data.skeletons.nbytes  # no padding
    assert back.skeletons.tobytes() == data.skeletons.tobytes()
    for i in (0, 100, len(data) - 1):
        np.testing.assert_array_equal(back.padded(i, i + 1)[0, :data.lengths[i]], data.skeletons[i, :data.lengths[i]])


def test_old_padded_npz_files_still_load(tmp_path):
    data = synthetic_set()  # padded, with a second actor and lengths 30, 23, 12, 2
    old = padded_reference()
    old.save_skeleton_npz(tmp_path / "v1.npz", old.SkeletonSet(**{name: getattr(data, name) for name in (
        "skeletons", "lengths", "labels", "class_names", "layout", "bones", "subjects", "descriptions", "sample_ids")}))
    np.savez_compressed(tmp_path / "v1_compressed.npz", skeletons=data.skeletons, lengths=data.lengths,
                        labels=data.labels, class_names=data.class_names, layout=np.array(data.layout), bones=data.bones)
    v1, packed = load_skeleton_npz(tmp_path / "v1.npz"), load_skeleton_npz(tmp_path / "v1_compressed.npz")
    assert not v1.ragged and isinstance(v1.store, DiskArray) and isinstance(packed.store, np.ndarray)
    for loaded in (v1, packed):
        assert loaded.skeletons.tobytes() == data.skeletons.tobytes()
        assert loaded.frames_of(1, 3).tobytes() == np.concatenate([data.skeletons[1, :23], data.skeletons[2, :12]]).tobytes()
    save_skeleton_npz(tmp_path / "v2.npz", v1)  # an old file saved again becomes ragged
    v2 = load_skeleton_npz(tmp_path / "v2.npz")
    assert v2.ragged and v2.skeletons.tobytes() == data.skeletons.tobytes()
    assert preprocess(v2, length=9).tobytes() == preprocess(v1, length=9).tobytes() == preprocess(data, length=9).tobytes()


def test_unknown_format_versions_and_nan_on_disk_are_named(tmp_path):
    data = synthetic_set()
    save_skeleton_npz(tmp_path / "set.npz", data)
    arrays = dict(np.load(tmp_path / "set.npz"))
    np.savez(tmp_path / "v3.npz", **{**arrays, "format_version": np.array(3)})
    with pytest.raises(DataError, match="format_version 3 but this workbook reads versions 1 and 2"):
        load_skeleton_npz(tmp_path / "v3.npz")
    arrays["frames"][40, 0, 0, 0] = np.nan  # sequence 1 (frames 30..52), written past the checks
    with NpzWriter(tmp_path / "nan.npz") as npz:
        for name, value in arrays.items():
            npz.add(name, value)
    lazy = load_skeleton_npz(tmp_path / "nan.npz")  # frames on disk: checked when read
    with pytest.raises(DataError, match=r"nan\.npz: sequence 1 \(s1\) holds NaN"):
        preprocess(lazy, length=8)


# ----------------------------------------------------------------------------------------------
# The sharded, parallel conversion

def test_parallel_conversion_is_byte_identical_with_1_and_2_workers(tmp_path):
    folder = ntu_dataset(tmp_path / "raw")
    convert_dataset("ntu", folder, tmp_path / "one.npz", workers=1, shard_size=2, progress=False)
    convert_dataset("ntu", folder, tmp_path / "two.npz", workers=2, shard_size=2, progress=False)
    one = (tmp_path / "one.npz").read_bytes()
    assert one == (tmp_path / "two.npz").read_bytes()
    save_skeleton_npz(tmp_path / "memory.npz", read_ntu(folder))  # the in-memory reader writes the same bytes
    assert one == (tmp_path / "memory.npz").read_bytes()
    assert not (tmp_path / "one.npz.parts").exists() and not (tmp_path / "two.npz.parts").exists()


def test_conversion_restarts_without_redoing_finished_shards(tmp_path, monkeypatch):
    folder = ntu_dataset(tmp_path / "raw")
    last = sorted(folder.glob("*.skeleton"))[-1]
    good = last.read_text()
    last.write_text(good[:len(good) // 2])  # truncated: the last shard fails
    with pytest.raises(DataError, match=rf"{last.name} ends at line"):
        convert_dataset("ntu", folder, tmp_path / "ntu.npz", workers=2, shard_size=2, progress=False)
    assert not (tmp_path / "ntu.npz").exists() and len(list((tmp_path / "ntu.npz.parts").glob("shard_*.npz"))) >= 1
    last.write_text(good)  # fixed: only its shard (and any the pool had not finished) is parsed again
    finished = {p.name for p in (tmp_path / "ntu.npz.parts").glob("shard_*.npz")} - {"shard_00004.npz"}
    redone = []
    real = ntu_convert.convert_shard
    monkeypatch.setattr(ntu_convert, "convert_shard", lambda shard: redone.append(shard.index) or real(shard))
    convert_dataset("ntu", folder, tmp_path / "ntu.npz", workers=1, shard_size=2, progress=False)
    assert 4 in redone and not {f"shard_{i:05d}.npz" for i in redone} & finished
    convert_dataset("ntu", folder, tmp_path / "clean.npz", workers=1, shard_size=2, progress=False)
    assert (tmp_path / "ntu.npz").read_bytes() == (tmp_path / "clean.npz").read_bytes()


# ----------------------------------------------------------------------------------------------
# Arrays on disk, chunked preprocessing, the encoder reading from disk

def test_disk_array_reads_rows_in_any_order_and_names_a_truncated_file(tmp_path):
    values = np.arange(7 * 2 * 3, dtype=np.float32).reshape(7, 2, 3)
    write_npy_chunks(tmp_path / "a.npy", values.shape, np.float32, [values[:3], values[3:]])
    array = open_npy(tmp_path / "a.npy")
    assert array.shape == (7, 2, 3) and np.array_equal(np.load(tmp_path / "a.npy"), values)
    for rows in ([6, 0, 3], [2, 3, 4], [5, 5, 1], []):
        np.testing.assert_array_equal(array[np.array(rows, np.int64)], values[rows])
    np.testing.assert_array_equal(array[2:5], values[2:5])
    np.testing.assert_array_equal(array[-1], values[-1])
    with open(tmp_path / "a.npy", "r+b") as handle:
        handle.truncate(handle.seek(0, 2) - 10)
    with pytest.raises(DataError, match="truncated"):
        open_npy(tmp_path / "a.npy")[6]
    np.savez(tmp_path / "b.npz", x=values)
    np.testing.assert_array_equal(npz_member(tmp_path / "b.npz", "x")[1:3], values[1:3])


def test_preprocessing_in_chunks_and_to_a_file_gives_the_same_bytes(tmp_path):
    data = synthetic_set()
    ragged = check_ragged(data, tmp_path)
    whole = preprocess(data, length=11, chunk=len(data))
    assert preprocess(data, length=11, chunk=1).tobytes() == whole.tobytes()
    assert preprocess(ragged, length=11, chunk=3).tobytes() == whole.tobytes()
    on_disk = preprocess_to_file(ragged, tmp_path / "pre.npy", length=11)
    assert isinstance(on_disk, DiskArray) and np.asarray(on_disk).tobytes() == whole.tobytes()
    reference = padded_reference().preprocess(data, length=11)  # main's preprocess on the padded array
    assert reference.tobytes() == whole.tobytes()


def check_ragged(data: SkeletonSet, tmp_path) -> SkeletonSet:
    save_skeleton_npz(tmp_path / "ragged.npz", data)
    return load_skeleton_npz(tmp_path / "ragged.npz")


def test_encoder_trained_from_disk_matches_the_in_memory_one(tmp_path):
    from test_encoder import encoder_cfg, skeleton_arrays

    from tdsm_core.skeletons.encoder import EncoderTrainer, subject_split

    x, labels, subjects = skeleton_arrays()
    write_npy_chunks(tmp_path / "x.npy", x.shape, np.float32, [x])
    parts = subject_split(labels, subjects, np.array([1, 3]))
    seen = np.array([0, 2, 4])
    memory = EncoderTrainer(encoder_cfg(tmp_path), x, labels, parts, seen, tmp_path / "memory")
    disk = EncoderTrainer(encoder_cfg(tmp_path), open_npy(tmp_path / "x.npy"), labels, parts, seen, tmp_path / "disk")
    for _ in range(3):
        assert memory.training_step() == disk.training_step()
    for a, b in zip(memory.features(parts["gtest"]), disk.features(parts["gtest"])):
        assert a.tobytes() == b.tobytes()


def test_cli_convert_takes_workers(tmp_path, capsys):
    from tdsm_core.cli.main import main

    folder = ntu_dataset(tmp_path / "raw", count=3)
    assert main(["convert", "ntu", str(folder), str(tmp_path / "out.npz"), "--workers", "1", "--quiet"]) == 0
    assert "ntu25: 3 sequences" in capsys.readouterr().out
    assert load_skeleton_npz(tmp_path / "out.npz").ragged



def test_convert_shows_files_per_second(tmp_path, capsys):
    folder = ntu_dataset(tmp_path / "raw", count=3)
    convert_dataset("ntu", folder, tmp_path / "out.npz", workers=1)
    assert "files/s" in capsys.readouterr().err


def test_the_chain_preprocesses_once_per_skeleton_file_and_settings(tmp_path):
    from tdsm_core.config import config_from_dict
    from tdsm_core.skeletons.chain import preprocessed_skeletons

    save_skeleton_npz(tmp_path / "set.npz", synthetic_set())
    cfg = config_from_dict({"output_dir": str(tmp_path / "out"), "skeleton": {"length": 7}})
    first = preprocessed_skeletons(cfg, load_skeleton_npz(tmp_path / "set.npz"))
    assert first.shape == (4, 7, 2, 20, 3) and first.path.parent == tmp_path / "out" / "skeletons"
    np.testing.assert_array_equal(np.asarray(first), preprocess(synthetic_set(), length=7))
    written = first.path.stat().st_mtime_ns
    assert preprocessed_skeletons(cfg, load_skeleton_npz(tmp_path / "set.npz")).path.stat().st_mtime_ns == written
    longer = config_from_dict({"output_dir": str(tmp_path / "out"), "skeleton": {"length": 9}})
    assert preprocessed_skeletons(longer, load_skeleton_npz(tmp_path / "set.npz")).shape[1] == 9


def test_a_freshly_converted_set_keys_the_preprocessing_cache_on_its_own_file(tmp_path, monkeypatch):
    """Regression: a set returned by convert_dataset had no source, so the chain's cache key fell back to the
    working folder and two datasets converted from one folder shared (and replaced) one preprocessed file."""
    from tdsm_core.config import config_from_dict
    from tdsm_core.skeletons.chain import preprocessed_skeletons
    from test_skeleton_notebook import write_msr_folder

    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict({"output_dir": str(tmp_path / "out"), "skeleton": {"length": 7}})
    one = convert_dataset("msr", write_msr_folder(tmp_path / "one", subjects=2), tmp_path / "one.npz")
    two = convert_dataset("msr", write_msr_folder(tmp_path / "two", subjects=3), tmp_path / "two.npz")
    assert one.source == str(tmp_path / "one.npz")
    first, second = preprocessed_skeletons(cfg, one), preprocessed_skeletons(cfg, two)
    assert first.path != second.path and first.path.name.startswith("one_")
    assert len(preprocessed_skeletons(cfg, one)) == len(first)  # still the first set's file, not replaced
