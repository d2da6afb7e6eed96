"""NTU RGB+D `.skeleton` files: their names, and two parsers that give the same array.

The text format (SPEC section 9): line 1 holds the frame count; each frame a body count, then per
body an info line of 10 values (body id, clipped edges, hand states, tracking state, lean x/y, ...),
a joint count (25) and 25 joint lines of 12 values (x y z, depth x y, colour x y, orientation
w x y z, tracking state). Only x y z are kept.

- `read_ntu_skeleton`, the fast parser, finds the joint lines from the counts, checks the layout
  of the whole file at once (the characters it uses, the values on every info line, the values of
  all joint lines together), and lets NumPy's text reader parse the x y z columns of every joint
  line in one call: Python handles each frame and body, never each joint line. A file it does not
  expect (NaN, tabs, a truncated or corrupt file) goes to the careful parser.
- `read_ntu_skeleton_by_line`, the careful parser, reads line by line and names the first line that
  is wrong. It is the reference the fast parser is tested against: the same bytes for every file.

Neither imports torch, so the conversion workers (`ntu_convert`) start quickly and small.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..inputs import read_text, reading

RAW_FIX = "restore the dataset file (extract the archive again)"

NTU_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
LINES_PER_BODY = 27  # info line, joint count, 25 joint lines
SPACES_PER_BODY = 9 + 25 * 11  # 10 values on the info line, 12 on each joint line
WELL_FORMED = b"0123456789.-+eE \n"  # every byte a file the fast parser reads may contain


def ntu_action_and_performer(path: Path) -> tuple[int, int]:
    """(0-based action label, performer id) from a file name SsssCcccPpppRrrrAaaa.skeleton."""
    match = NTU_NAME.fullmatch(path.stem)
    if not match:
        raise DataError(f"NTU file name {path.name} does not follow SsssCcccPpppRrrrAaaa.skeleton; rename or remove it.")
    return int(match.group(5)) - 1, int(match.group(3))


def order_bodies(bodies: dict[str, np.ndarray], n_frames: int, max_actors: int) -> np.ndarray:
    """{body id: (T, 25, 3)} -> (T, max_actors, 25, 3) float32: the `max_actors` bodies whose joints move
    most (the largest sum over joints and axes of the position variance over the frames where the body
    is tracked), largest first; ties keep the order in which the bodies first appear."""
    out = np.zeros((n_frames, max_actors, 25, 3), np.float32)
    tracked = {body: positions[positions.reshape(n_frames, -1).any(axis=1)] for body, positions in bodies.items()}
    motion = {body: float(frames.var(axis=0).sum()) if len(frames) else -1.0 for body, frames in tracked.items()}
    for slot, body in enumerate(sorted(bodies, key=lambda b: -motion[b])[:max_actors]):
        out[:, slot] = bodies[body]
    return out


def read_ntu_skeleton(path: str | Path, max_actors: int = 2) -> np.ndarray:
    """One NTU `.skeleton` file -> (T, max_actors, 25, 3), all frames kept (0-body frames as zeros).

    The kept actors are those of `order_bodies`. Fast on well-formed files; any other file is read by
    `read_ntu_skeleton_by_line`, which gives the same result or names the line that is wrong.
    """
    path = Path(path)
    try:
        return _read_well_formed(path, max_actors)
    except _Unexpected:
        return read_ntu_skeleton_by_line(path, max_actors)


class _Unexpected(Exception):
    """The file is not laid out as the fast parser expects; the careful parser takes over."""


def _read_well_formed(path: Path, max_actors: int) -> np.ndarray:
    with reading(path, "raw skeleton file", RAW_FIX):
        raw = path.read_bytes()
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n")
    if raw.translate(None, WELL_FORMED):  # NaN, tabs or stray characters: left to the careful parser
        raise _Unexpected
    text = raw.decode("ascii")
    lines = text.split("\n")

    def count(i: int) -> int:
        if i >= len(lines) or not lines[i].isdigit():
            raise _Unexpected
        return int(lines[i])

    n_frames = count(0)
    info_lines, frame_of = [], []  # per body seen: its info line and its frame
    cursor = 1
    for frame in range(n_frames):
        n_bodies = count(cursor)
        info_lines += range(cursor + 1, cursor + 1 + LINES_PER_BODY * n_bodies, LINES_PER_BODY)
        frame_of += [frame] * n_bodies
        cursor += 1 + LINES_PER_BODY * n_bodies
    if cursor > len(lines) or any(line.strip() for line in lines[cursor:]):
        raise _Unexpected  # truncated, or text after the announced frames
    ids = [lines[at].split(" ", 1)[0] for at in info_lines]
    if (any(lines[at + 1] != "25" or lines[at].count(" ") != 9 for at in info_lines) or not all(ids)
            or len(set(zip(ids, frame_of))) < len(ids)):  # 25 joints, 10 values, a body once per frame
        raise _Unexpected
    # with 9 spaces on every info line, the total says that the joint lines hold 12 values each; a joint
    # line with a value missing, or an empty one, has another line make up for it only by a second error
    if text.count(" ") != SPACES_PER_BODY * len(info_lines):
        raise _Unexpected
    joint_lines: list[str] = []
    for at in info_lines:
        joint_lines += lines[at + 2:at + LINES_PER_BODY]
    bodies: dict[str, np.ndarray] = {}  # body id -> (T, 25, 3)
    if joint_lines:
        try:
            xyz = np.loadtxt(joint_lines, usecols=(0, 1, 2), delimiter=" ", comments=None, quotechar=None,
                             dtype=np.float64, ndmin=2).reshape(-1, 25, 3)  # (bodies seen, 25, 3)
        except ValueError:
            raise _Unexpected from None
        frame_of = np.array(frame_of)
        for body in dict.fromkeys(ids):  # in the order the bodies first appear
            mine = [k for k, other in enumerate(ids) if other == body]
            bodies[body] = np.zeros((n_frames, 25, 3))
            bodies[body][frame_of[mine]] = xyz[mine]
    return order_bodies(bodies, n_frames, max_actors)


def read_ntu_skeleton_by_line(path: str | Path, max_actors: int = 2) -> np.ndarray:
    """The careful parser: the same result as `read_ntu_skeleton`, or a DataError naming the first line
    of the file that does not follow the format."""
    path = Path(path)
    lines = read_text(path, "raw skeleton file", RAW_FIX).splitlines()
    cursor = 0

    def take(count: int, what: str) -> list[list[str]]:
        nonlocal cursor
        if cursor + count > len(lines):
            raise DataError(f"{path} ends at line {len(lines)} while reading {what} (from line {cursor + 1}); "
                            f"the file is truncated, so extract it again.")
        cursor += count
        return [line.split() for line in lines[cursor - count:cursor]]

    def number(what: str) -> int:
        values = take(1, what)[0]
        if len(values) != 1 or not values[0].isdigit():
            raise DataError(f"{path} line {cursor} should hold {what} (one integer) but reads {lines[cursor - 1][:60]!r}; "
                            f"the file is corrupt.")
        return int(values[0])

    n_frames = number("the frame count")
    bodies: dict[str, np.ndarray] = {}  # body id -> (T, 25, 3)
    for frame in range(n_frames):
        for _ in range(number(f"the body count of frame {frame + 1}")):
            info = take(1, "a body info line")[0]
            if len(info) != 10:
                raise DataError(f"{path} line {cursor} should be a body info line of 10 values but has {len(info)}; "
                                f"the file is corrupt.")
            n_joints = number("the joint count")
            if n_joints != 25:
                raise DataError(f"{path} line {cursor} gives {n_joints} joints but NTU skeletons have 25; "
                                f"the file is corrupt.")
            rows = take(25, "25 joint lines")
            try:
                if any(len(row) != 12 for row in rows):
                    raise ValueError
                joints = np.array(rows, np.float64)[:, :3]  # (25, 3): x y z of the 12 values
            except ValueError:
                bad = next(i for i, row in enumerate(rows) if len(row) != 12 or not _all_numbers(row))
                raise DataError(f"{path} line {cursor - 24 + bad} should be a joint line of 12 numbers but reads "
                                f"{lines[cursor - 25 + bad][:60]!r}; the file is corrupt.") from None
            bodies.setdefault(info[0], np.zeros((n_frames, 25, 3)))[frame] = joints
    if any(line.strip() for line in lines[cursor:]):
        raise DataError(f"{path} has text after the {n_frames} frames its first line announces (line {cursor + 1}); "
                        f"the file is corrupt.")
    return order_bodies(bodies, n_frames, max_actors)


def _all_numbers(values: list[str]) -> bool:
    try:
        [float(v) for v in values]
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# A folder of NTU files

def ntu_folder_table(folder: Path, class_names: list[str] | None, descriptions: list[str] | None
                     ) -> tuple[list[Path], np.ndarray, np.ndarray, list[str], list[str] | None]:
    """(paths sorted by name, labels = A - 1, performers = P, class names, descriptions) of a folder's
    `SsssCcccPpppRrrrAaaa.skeleton` files.

    class_names defaults to the built-in NTU-60 list (60 classes) when every file is an action up to A060,
    and to the built-in NTU-120 list (120 classes) when any file is A061 or above.
    """
    paths = sorted(folder.glob("*.skeleton"))
    named = [ntu_action_and_performer(path) for path in paths]
    labels = np.array([label for label, _ in named], np.int64)
    performers = np.array([performer for _, performer in named], np.int64)
    if class_names is None:
        from ..data.features import builtin_class_table  # (imports torch; only the main process comes here)

        class_names, descriptions = builtin_class_table("ntu60" if labels.max(initial=0) < 60 else "ntu120")
    too_large = np.flatnonzero(labels >= len(class_names))
    if too_large.size:
        path, label = paths[too_large[0]], labels[too_large[0]]
        raise DataError(f"{path.name} is action A{label + 1:03d} but only {len(class_names)} class names were given; "
                        f"give at least {label + 1} names, or leave class_names out to use the built-in NTU lists.")
    return paths, labels, performers, list(class_names), descriptions
