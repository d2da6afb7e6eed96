"""The benchmark splits of zero-shot skeleton action recognition, and the published results.

Unseen class ids are 0-based NTU class ids. The SynSE splits (55/5, 48/12, 110/10, 96/24) and the
PURLS splits (40/20, 30/30, 80/40, 60/60) are the eight TDSM reports; the SMIE splits are three
random 5-unseen (NTU-60) and 10-unseen (NTU-120) draws. Seen classes are all the others.

References: SynSE (Gupta et al., ICIP 2021), PURLS (Zhu et al., CVPR 2024), SMIE (Zhou et al.,
ACM MM 2023), SA-DVAE (Li et al., ECCV 2024), TDSM (Do & Kim, ICCV 2025).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError


@dataclass(frozen=True)
class SplitSpec:
    """One benchmark split: its dataset, class count and unseen ids."""

    name: str
    dataset: str
    num_classes: int
    unseen: tuple[int, ...]
    family: str  # SynSE | PURLS | SMIE

    @property
    def seen(self) -> tuple[int, ...]:
        unseen = set(self.unseen)
        return tuple(c for c in range(self.num_classes) if c not in unseen)

    @property
    def label(self) -> str:
        return f"{self.dataset.upper()} {len(self.seen)}/{len(self.unseen)}"


def _ids(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split())


SPLITS: dict[str, SplitSpec] = {
    spec.name: spec
    for spec in [
        SplitSpec("ntu60_u5", "ntu60", 60, _ids("10 11 19 26 56"), "SynSE"),
        SplitSpec("ntu60_u12", "ntu60", 60, _ids("3 5 9 12 15 40 42 47 51 56 58 59"), "SynSE"),
        SplitSpec("ntu60_u20", "ntu60", 60, _ids("0 12 13 14 15 16 17 22 23 26 29 30 31 35 36 42 43 48 56 57"), "PURLS"),
        SplitSpec("ntu60_u30", "ntu60", 60, _ids(
            "0 1 2 6 7 8 10 12 13 15 16 18 20 21 25 26 27 31 32 33 39 42 45 47 48 51 52 55 58 59"), "PURLS"),
        SplitSpec("ntu120_u10", "ntu120", 120, _ids("4 13 37 43 49 65 88 95 99 106"), "SynSE"),
        SplitSpec("ntu120_u24", "ntu120", 120, _ids(
            "5 9 11 16 18 20 22 29 35 39 45 49 59 68 70 81 84 87 93 94 104 113 114 119"), "SynSE"),
        SplitSpec("ntu120_u40", "ntu120", 120, _ids(
            "11 12 18 22 23 26 28 34 37 38 42 44 46 47 48 57 59 64 66 70 73 74 75 83 86 90 92 93 "
            "95 96 102 104 107 108 110 112 115 116 118 119"), "PURLS"),
        SplitSpec("ntu120_u60", "ntu120", 120, _ids(
            "0 1 4 6 7 8 9 17 18 21 23 25 26 28 30 32 33 34 37 38 39 40 41 42 44 45 50 51 52 53 "
            "56 61 62 65 67 68 69 70 74 77 78 81 83 87 89 90 91 92 94 95 96 97 100 101 109 111 114 115 116 118"),
            "PURLS"),
        SplitSpec("ntu60_smie1", "ntu60", 60, _ids("4 19 31 47 51"), "SMIE"),
        SplitSpec("ntu60_smie2", "ntu60", 60, _ids("12 29 32 44 59"), "SMIE"),
        SplitSpec("ntu60_smie3", "ntu60", 60, _ids("7 20 28 39 58"), "SMIE"),
        SplitSpec("ntu120_smie1", "ntu120", 120, _ids("3 18 26 38 41 60 87 99 102 110"), "SMIE"),
        SplitSpec("ntu120_smie2", "ntu120", 120, _ids("5 12 14 15 17 42 67 82 100 119"), "SMIE"),
        SplitSpec("ntu120_smie3", "ntu120", 120, _ids("6 20 27 33 42 55 71 97 104 118"), "SMIE"),
    ]
}

BENCHMARK_SPLITS = ("ntu60_u5", "ntu60_u12", "ntu60_u20", "ntu60_u30",
                    "ntu120_u10", "ntu120_u24", "ntu120_u40", "ntu120_u60")

# Published top-1 zero-shot accuracy (%) on the eight benchmark splits (TDSM paper, Table 1).
PAPER_RESULTS: dict[str, dict[str, float | None]] = {
    "SynSE": dict(zip(BENCHMARK_SPLITS, (75.81, 33.30, 19.85, 12.00, 62.69, 38.70, 13.64, 7.73))),
    "PURLS": dict(zip(BENCHMARK_SPLITS, (79.23, 40.99, 31.05, 23.52, 71.95, 52.01, 28.38, 19.63))),
    "SA-DVAE": dict(zip(BENCHMARK_SPLITS, (82.37, 41.38, None, None, 68.77, 46.12, None, None))),
    "TDSM": dict(zip(BENCHMARK_SPLITS, (86.49, 56.03, 36.09, 25.88, 74.15, 65.06, 36.95, 27.21))),
}


def get_split(name: str) -> SplitSpec:
    """Look up a built-in split by name, with a message listing the valid names."""
    try:
        return SPLITS[name]
    except KeyError:
        raise DataError(f"unknown split {name!r}; valid built-in splits are: {', '.join(SPLITS)}.") from None


def validate_class_ids(ids: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    """Check a 1-D list of class ids: integers, in [0, num_classes), no duplicates. Returns int64 ids."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.size == 0:
        raise DataError(f"{what} must be a non-empty 1-D list of class ids, got shape {ids.shape}.")
    if not np.issubdtype(ids.dtype, np.integer):
        if np.issubdtype(ids.dtype, np.floating) and np.all(np.isfinite(ids)) and np.all(ids == np.round(ids)):
            ids = ids.astype(np.int64)
        else:
            raise DataError(f"{what} must hold integer class ids, got dtype {ids.dtype}.")
    ids = ids.astype(np.int64)
    bad = ids[(ids < 0) | (ids >= num_classes)]
    if bad.size:
        raise DataError(f"{what} has class ids {sorted(set(bad.tolist()))} outside [0, {num_classes}); "
                        f"class ids are 0-based and must be below the number of classes.")
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{what} lists class ids {values[counts > 1].tolist()} more than once; each class may appear once.")
    return ids
