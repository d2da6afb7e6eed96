"""Class-fold validation from raw skeletons, with one skeleton encoder per fold.

`validate` on a features folder cuts the seen classes into folds but scores them on the features of
the encoder that was trained on every seen class, the held-out ones included: its pseudo-unseen
classes were shaped by supervised training and cluster more tightly than classes the encoder never
saw. Settings that exploit tight clusters then look better on the folds than they do on the unseen
classes of the real split (on MSR Action3D a triplet margin rose 11 points on such folds and 0.8 on
the test splits).

Here every fold is a small zero-shot problem of its own, built the way the real split is built:

    real split: unseen U, seen S     fold k of S: pseudo-unseen P_k, pseudo-seen S \\ P_k
    fold encoder: Shift-GCN trained on S \\ P_k only (training performers), features exported
    fold problem: denoiser trained on S \\ P_k, scored on P_k's test-performer samples

The real unseen classes U stay out of every fold: the fold encoder never trains on them and their
samples are never scored. Fold encoders are trained once and reused by every validation and search
that reads the same skeletons, settings and folds (each lives in <output_dir>/<split run>_fold<k>/).

References: the nested scheme follows the usual rule of model selection (select on data that plays
the test's part without being the test), e.g. S. Varma and R. Simon, "Bias in error estimation when
using cross-validation for model selection" (BMC Bioinformatics 2006).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..config import ExperimentConfig
from ..data.features import Benchmark, FeatureSet
from ..runs.folds import class_folds
from ..runs.pipeline import load_data
from .chain import (choose_unseen_sets, check_class_prompts, encode_split, in_run_folder, load_skeleton_data,
                    preprocessed_skeletons, split_config)


def fold_problem(benchmark: Benchmark, pseudo_unseen: np.ndarray, name: str) -> Benchmark:
    """The zero-shot problem of one fold, from the features of its own encoder (exported with the real and the
    pseudo-unseen classes both held out): train on the rest, score the pseudo-unseen classes' ztest samples only."""
    pseudo_unseen = np.sort(np.asarray(pseudo_unseen))
    keep = np.isin(benchmark.ztest.labels, pseudo_unseen)  # the real unseen classes' samples are dropped here
    return dataclasses.replace(benchmark, name=name, unseen=pseudo_unseen, val=None, gtest=None,
                               ztest=FeatureSet(benchmark.ztest.features[keep], benchmark.ztest.labels[keep]))


def fold_encoder_problems(cfg: ExperimentConfig, num_unseen: int = 5, num_splits: int = 3, split_seed: int = 0,
                          split: str = "", unseen_classes: list[int] | None = None, fold_size: int = 0,
                          num_folds: int = 0, fold_seed: int = 0, progress: bool = True,
                          resume: bool = True) -> list[Benchmark]:
    """Every (split, class fold) problem of a skeleton config, its fold encoder trained (or resumed) first.

    The splits are the ones `skeleton-zsl` runs with the same arguments; the folds of each split are
    `class_folds` of its seen classes (`fold_size` classes each, default the split's number of unseen classes)."""
    data = load_skeleton_data(cfg, progress=progress)
    skeletons = preprocessed_skeletons(cfg, data)
    check_class_prompts(cfg, data)
    unseen_sets, split = choose_unseen_sets(data, num_unseen, num_splits, split_seed, split, unseen_classes)
    problems = []
    for index, unseen in enumerate(unseen_sets):
        seen = np.setdiff1d(np.arange(len(data.class_names)), unseen)
        split_name = split_config(cfg, index, split).name
        for k, pseudo_unseen in enumerate(class_folds(seen, fold_size or len(unseen), num_folds, fold_seed)):
            fold_cfg = in_run_folder(dataclasses.replace(cfg, name=f"{split_name}_fold{k}"))
            encode_split(fold_cfg, skeletons, data, np.union1d(unseen, pseudo_unseen), progress=progress,
                         resume=resume)
            names = ", ".join(str(data.class_names[c]) for c in pseudo_unseen)
            problems.append(fold_problem(load_data(fold_cfg), pseudo_unseen, f"{split_name} fold {k} ({names})"))
    return problems
