"""Joint layouts of the skeleton datasets: joint names in file order, bones, and the joints that
preprocessing uses (body centre, torso, hips).

Orders (0-based here):
- ntu25: Kinect v2 (NTU RGB+D): spine base, spine mid, neck, head, left arm (shoulder, elbow,
  wrist, hand), right arm, left leg (hip, knee, ankle, foot), right leg, spine at the shoulders,
  then left hand tip, left thumb, right hand tip, right thumb.
- utkinect20: Kinect v1 SDK: hip centre, spine, shoulder centre, head, left arm, right arm, left
  leg, right leg (each arm shoulder, elbow, wrist, hand; each leg hip, knee, ankle, foot).
- msr20: MSR Action3D's own order of the same 20 joints: shoulders, neck, spine, hips, hip
  centre, elbows, wrists, hands, knees, ankles, feet (left before right), head last. Sides were
  checked on the data: in the one-arm and one-leg actions (the performers used their right limbs)
  joints 12 and 18 move most, and the right side has the larger x, as in UTKinect.

Bones are (joint, parent) pairs pointing towards the body centre; each layout is a tree.

A skeleton file of another layout describes its own joints (`layout_from_fields`): either joint
names using the built-in names above, from which the centre, torso and hip joints are found, or
the indices of those joints directly.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DataError


@dataclass(frozen=True)
class JointLayout:
    """A skeleton's joints in file order, its bones, and the joints preprocessing relies on.

    For a layout of your own, build one of these with your joint names and bone pairs.
    """

    name: str
    joints: tuple[str, ...]
    bones: tuple[tuple[int, int], ...]  # (joint, parent), 0-based
    root: int  # body centre used for centring (a spine joint)
    torso: tuple[int, int]  # (lower, upper) spine ends: the "up" direction and the torso length
    hips: tuple[int, int]  # (left, right): the across direction for view alignment

    def index(self, name: str) -> int:
        """Position of a joint by name."""
        return self.joints.index(name)


def _layout(name: str, joints: str, bones: list[tuple[str, str]], root: str, torso: tuple[str, str]) -> JointLayout:
    """Build a layout from names, so bone lists can be shared between joint orders."""
    order = tuple(joints.split())
    at = {joint: i for i, joint in enumerate(order)}
    assert len(at) == len(order), f"{name}: duplicate joint names"
    return JointLayout(name=name, joints=order, bones=tuple((at[a], at[b]) for a, b in bones), root=at[root],
                       torso=(at[torso[0]], at[torso[1]]), hips=(at["hip_left"], at["hip_right"]))


def _limbs(top: str, extra: dict[str, list[tuple[str, str]]] | None = None) -> list[tuple[str, str]]:
    """Arm and leg bones of both sides, arms hanging from `top` (the spine joint at the shoulders)."""
    bones = []
    for side in ("left", "right"):
        bones += [(f"shoulder_{side}", top), (f"elbow_{side}", f"shoulder_{side}"),
                  (f"wrist_{side}", f"elbow_{side}"), (f"hand_{side}", f"wrist_{side}")]
        bones += (extra or {}).get(side, [])
    return bones


def _legs(base: str) -> list[tuple[str, str]]:
    bones = []
    for side in ("left", "right"):
        bones += [(f"hip_{side}", base), (f"knee_{side}", f"hip_{side}"),
                  (f"ankle_{side}", f"knee_{side}"), (f"foot_{side}", f"ankle_{side}")]
    return bones


_HAND_V2 = {side: [(f"hand_tip_{side}", f"hand_{side}"), (f"thumb_{side}", f"wrist_{side}")] for side in ("left", "right")}

NTU25 = _layout(
    "ntu25",
    "spine_base spine_mid neck head shoulder_left elbow_left wrist_left hand_left "
    "shoulder_right elbow_right wrist_right hand_right hip_left knee_left ankle_left foot_left "
    "hip_right knee_right ankle_right foot_right spine_shoulder hand_tip_left thumb_left hand_tip_right thumb_right",
    [("spine_mid", "spine_base"), ("spine_shoulder", "spine_mid"), ("neck", "spine_shoulder"), ("head", "neck")]
    + _limbs("spine_shoulder", _HAND_V2) + _legs("spine_base"),
    root="spine_mid", torso=("spine_base", "spine_shoulder"))

_KINECT_V1_BONES = ([("spine", "hip_center"), ("shoulder_center", "spine"), ("head", "shoulder_center")]
                    + _limbs("shoulder_center") + _legs("hip_center"))

UTKINECT20 = _layout(
    "utkinect20",
    "hip_center spine shoulder_center head shoulder_left elbow_left wrist_left hand_left "
    "shoulder_right elbow_right wrist_right hand_right hip_left knee_left ankle_left foot_left "
    "hip_right knee_right ankle_right foot_right",
    _KINECT_V1_BONES, root="spine", torso=("hip_center", "shoulder_center"))

MSR20 = _layout(
    "msr20",
    "shoulder_left shoulder_right shoulder_center spine hip_left hip_right hip_center elbow_left elbow_right "
    "wrist_left wrist_right hand_left hand_right knee_left knee_right ankle_left ankle_right foot_left foot_right head",
    _KINECT_V1_BONES, root="spine", torso=("hip_center", "shoulder_center"))

LAYOUTS: dict[str, JointLayout] = {layout.name: layout for layout in (NTU25, MSR20, UTKINECT20)}


def get_layout(name: str) -> JointLayout:
    """A known layout by name; an unknown name is a DataError listing the known ones."""
    if name not in LAYOUTS:
        raise DataError(f"unknown joint layout {name!r}; known layouts are {sorted(LAYOUTS)}, or describe the joints "
                        f"in the skeleton file (fields joints, or root, torso and hips).")
    return LAYOUTS[name]


# built-in joint names that play each role, in order of preference (NTU's names first, then Kinect v1's)
ROLE_NAMES = {"root": ("spine_mid", "spine"), "torso_lower": ("spine_base", "hip_center"),
              "torso_upper": ("spine_shoulder", "shoulder_center"), "hip_left": ("hip_left",), "hip_right": ("hip_right",)}


def layout_from_fields(name: str, num_joints: int, bones, joints=None, root=None, torso=None, hips=None,
                       where: str = "skeleton file") -> JointLayout:
    """The layout of a skeleton file: a built-in one by name, else the one its fields describe.

    `joints` names the joints (with the built-in names, the roles are found from them); `root`,
    `torso` (lower, upper) and `hips` (left, right) give joint indices and take precedence."""
    if name in LAYOUTS and joints is None and root is None and torso is None and hips is None:
        return LAYOUTS[name]
    names = tuple(str(j) for j in joints) if joints is not None else tuple(f"joint_{i}" for i in range(num_joints))
    at = {joint: i for i, joint in enumerate(names)}
    found = {role: next((at[n] for n in options if n in at), None) for role, options in ROLE_NAMES.items()}
    root = int(root) if root is not None else found["root"]
    torso = tuple(int(t) for t in torso) if torso is not None else (found["torso_lower"], found["torso_upper"])
    hips = tuple(int(h) for h in hips) if hips is not None else (found["hip_left"], found["hip_right"])
    if root is None or None in torso or None in hips:
        raise DataError(f"{where} has layout {name!r}, which is not built in ({', '.join(sorted(LAYOUTS))}), and does "
                        f"not say which joints to centre, align and scale by; add a field joints with the built-in "
                        f"names (spine or spine_mid, hip_center or spine_base, shoulder_center or spine_shoulder, "
                        f"hip_left, hip_right), or fields root, torso (lower, upper) and hips (left, right) as joint "
                        f"indices.")
    return JointLayout(name=name, joints=names, bones=tuple((int(a), int(b)) for a, b in bones), root=root,
                       torso=torso, hips=hips)
