"""Which direction of a cross-modal map carries over to unseen classes: a linear probe on fold problems.

TDSM denoises a skeleton feature conditioned on a class text: it maps text into the skeleton space
(each class's text decides where in that space its denoiser pulls a noisy feature). The projection
baseline maps a skeleton feature into the text space. On small datasets the two can be compared
without either network, by the simplest map of each direction, fitted in closed form (ridge
regression) on the training features of the pseudo-seen classes and scored on the pseudo-unseen ones:

    text -> skeleton:  prototype_k = W^T (text_k - mean seen text) + mean prototype,  predict argmin_k |x - prototype_k|^2
    skeleton -> text:  predict argmax_k cos(W^T x, text_k - mean seen text)

(features standardised with the training statistics, texts = the pooled vectors the models read, L2-normalised).
It runs on the fold problems of `validate --fold-encoders` (the same cached fold encoders; no real unseen
class is read) and prints top-1 per fold for a few ridge strengths, so the comparison does not hang on one.

    python benchmarks/direction_probe.py configs/msr_action3d.yaml --set skeleton.source=<MSR folder>
    python benchmarks/direction_probe.py configs/utkinect.yaml --set skeleton.source=<UTKinect folder> --unseen 3
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from tdsm_core.config import load_config
from tdsm_core.evaluate import zero_shot_metrics
from tdsm_core.runs.pipeline import load_text
from tdsm_core.skeletons.fold_encoders import fold_encoder_problems

TEXT_TO_SKELETON_RIDGE = (0.01, 0.1, 1.0)  # on unit-norm texts
SKELETON_TO_TEXT_RIDGE = (1.0, 10.0, 100.0)  # on standardised 256-d features


def ridge(inputs: np.ndarray, targets: np.ndarray, strength: float) -> np.ndarray:
    """W minimising |inputs W - targets|^2 + strength |W|^2 (inputs and targets already centred)."""
    gram = inputs.T @ inputs + strength * np.eye(inputs.shape[1])
    return np.linalg.solve(gram, inputs.T @ targets)


def probe(problem, pooled: np.ndarray) -> dict[str, float]:
    """Top-1 of both directions on one fold problem, for every ridge strength."""
    texts = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    train, test = problem.train, problem.ztest
    mean, std = train.features.mean(0), train.features.std(0) + 1e-6
    x_train = (train.features - mean) / std
    x_test = (test.features - mean) / std
    seen_text_mean = texts[problem.seen].mean(0)
    result = {}
    prototypes = np.stack([x_train[train.labels == c].mean(0) for c in problem.seen])  # (S, F)
    for strength in TEXT_TO_SKELETON_RIDGE:
        w = ridge(texts[problem.seen] - seen_text_mean, prototypes - prototypes.mean(0), strength)
        unseen_prototypes = (texts[problem.unseen] - seen_text_mean) @ w + prototypes.mean(0)  # (U, F)
        distances = ((x_test[:, None] - unseen_prototypes[None]) ** 2).sum(-1)
        result[f"text->skeleton {strength:g}"] = zero_shot_metrics(distances, test.labels, problem.unseen).top1
    targets = texts[train.labels] - seen_text_mean
    candidates = texts[problem.unseen] - seen_text_mean
    candidates /= np.linalg.norm(candidates, axis=1, keepdims=True)
    for strength in SKELETON_TO_TEXT_RIDGE:
        projected = x_test @ ridge(x_train, targets, strength)
        projected /= np.linalg.norm(projected, axis=1, keepdims=True)
        result[f"skeleton->text {strength:g}"] = zero_shot_metrics(-(projected @ candidates.T), test.labels,
                                                                  problem.unseen).top1
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--unseen", type=int, default=5)
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args()
    started = time.time()
    cfg = load_config(args.config, args.set)
    problems = fold_encoder_problems(cfg, num_unseen=args.unseen, num_splits=args.splits, split_seed=args.split_seed,
                                     fold_seed=args.split_seed, progress=False)
    pooled = load_text(cfg, problems[0]).pooled.double().numpy()
    rows = [probe(problem, pooled) for problem in problems]
    keys = list(rows[0])
    print("| fold | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for problem, row in zip(problems, rows):
        print(f"| {problem.name} | " + " | ".join(f"{row[k]:.1f}" for k in keys) + " |")
    print("| **mean** | " + " | ".join(f"**{np.mean([r[k] for r in rows]):.2f}**" for k in keys) + " |")
    print(f"chance {100 / len(problems[0].unseen):.1f}%; {len(problems)} fold problems; {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
