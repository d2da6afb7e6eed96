import shutil

import numpy as np
import pytest
import torch

from tdsm_core.diffusion import NoiseSchedule
from tdsm_core.evaluate import ZeroShotScorer, fixed_noises, score_one_class_at_a_time, zero_shot_metrics
from tdsm_core.model import Denoiser, DenoiserConfig

from conftest import TINY_MODEL, randomise, random_text


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("rows", [1, 7, 64, 100000])
def test_batched_scoring_matches_the_one_class_at_a_time_reference(prediction_type, rows):
    model = randomise(Denoiser(DenoiserConfig(**TINY_MODEL)), std=0.15)
    schedule = NoiseSchedule(prediction_type=prediction_type)
    text = random_text()
    features = np.random.default_rng(0).normal(size=(11, TINY_MODEL["feature_dim"])).astype(np.float32)
    classes = np.array([7, 2, 5, 0])
    fast = ZeroShotScorer(model, schedule, text, timestep=25, num_noise=3, noise_seed=4,
                          max_rows_per_call=rows).score(features, classes)
    plain = score_one_class_at_a_time(model, schedule, text, features, classes, timestep=25, num_noise=3,
                                      noise_seed=4, batch_size=4)
    assert fast.shape == (11, 4)
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-6)
    assert (fast.argmin(1) == plain.argmin(1)).all()


def test_scores_depend_on_the_noise_seed_and_timestep_but_noises_are_fixed():
    model = randomise(Denoiser(DenoiserConfig(**TINY_MODEL)), std=0.15)
    text, schedule = random_text(), NoiseSchedule()
    x = np.random.default_rng(1).normal(size=(3, TINY_MODEL["feature_dim"])).astype(np.float32)
    a = ZeroShotScorer(model, schedule, text, noise_seed=0).score(x, [1, 2])
    torch.manual_seed(123)  # global RNG must not matter
    b = ZeroShotScorer(model, schedule, text, noise_seed=0).score(x, [1, 2])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, ZeroShotScorer(model, schedule, text, noise_seed=1).score(x, [1, 2]))
    assert not np.allclose(a, ZeroShotScorer(model, schedule, text, timestep=5).score(x, [1, 2]))
    torch.testing.assert_close(fixed_noises(3, 4, 9), fixed_noises(3, 4, 9))


def test_metrics_on_a_hand_made_score_matrix():
    classes = np.array([10, 20, 30])
    scores = np.array([[0.1, 0.5, 0.9],   # true 10 -> predicted 10
                       [0.2, 0.1, 0.3],   # true 20 -> 20
                       [0.1, 0.2, 0.3],   # true 30 -> 10 (30 is third)
                       [0.3, 0.2, 0.1]])  # true 10 -> 30
    labels = np.array([10, 20, 30, 10])
    result = zero_shot_metrics(scores, labels, classes)
    assert result.top1 == pytest.approx(50.0)
    assert result.top5 == pytest.approx(100.0)  # top-k with k = 3 classes
    assert result.per_class == {10: 50.0, 20: 100.0, 30: 0.0}
    np.testing.assert_array_equal(result.confusion, [[1, 0, 1], [0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(result.predictions, [10, 20, 10, 30])


def test_top5_counts_a_true_class_ranked_fifth():
    scores = np.arange(7, dtype=float)[None].repeat(2, 0)  # class order 0..6
    result = zero_shot_metrics(scores, np.array([4, 5]), np.arange(7))
    assert result.top1 == 0.0 and result.top5 == 50.0


def scored(**options):
    model = randomise(Denoiser(DenoiserConfig(**TINY_MODEL)), std=0.15)
    features = np.random.default_rng(2).normal(size=(40, TINY_MODEL["feature_dim"])).astype(np.float32)
    scorer = ZeroShotScorer(model, NoiseSchedule(), random_text(), num_noise=3, max_rows_per_call=50, **options)
    return scorer.score(features, np.arange(10)), scorer


def test_cascade_finishes_the_best_classes_exactly_and_ranks_the_rest_behind():
    exact, plain = scored()
    cascade, scorer = scored(cascade_top_k=3)
    assert scorer.calls == 40 * 10 + 40 * 3 * 2 < plain.calls == 40 * 10 * 3
    order = np.argsort(cascade, axis=1)
    finished = order[:, :3]
    np.testing.assert_allclose(np.take_along_axis(cascade, finished, 1), np.take_along_axis(exact, finished, 1),
                               rtol=1e-5)
    assert (np.take_along_axis(cascade, order[:, 3:], 1) > np.take_along_axis(cascade, finished, 1).max(1, keepdims=True)).all()
    assert (cascade.argmin(1) == exact.argmin(1)).mean() >= 0.9
    full, _ = scored(cascade_top_k=10)  # keeping every class is the exact path
    np.testing.assert_allclose(full, exact, rtol=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_stays_close_to_fp32(precision):
    exact, _ = scored()
    reduced, scorer = scored(precision=precision)
    assert scorer.precision == precision
    np.testing.assert_allclose(reduced, exact, rtol=0.1, atol=0.05)
    assert (reduced.argmin(1) == exact.argmin(1)).mean() >= 0.8


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp32"):
        scored(precision="fp16")


def test_auto_and_amp_precision_on_a_cpu_are_the_exact_path():
    """auto means amp on CUDA and fp32 elsewhere; amp (bf16 autocast) is a no-op on a CPU."""
    exact, fp32_scorer = scored(precision="fp32")
    for precision, resolved in (("auto", "fp32"), ("amp", "amp")):
        scores, scorer = scored(precision=precision)
        assert scorer.precision == resolved and scorer.model is not None
        np.testing.assert_array_equal(scores, exact)


def test_exact_ties_at_the_top_are_counted():
    scores = np.array([[1.0, 1.0, 2.0], [0.5, 1.0, 2.0], [3.0, 3.0, 3.0], [2.0, 1.0, 1.5]])
    result = zero_shot_metrics(scores, np.array([4, 4, 9, 9]), np.array([4, 9, 11]))
    assert result.tied == pytest.approx(50.0)  # rows 0 and 2
    assert result.predictions.tolist() == [4, 4, 4, 9]  # a tie goes to the first class


def test_an_untrained_denoiser_ties_every_class():
    """adaLN-Zero: a fresh denoiser outputs zeros whatever the text, so every class gets the same error."""
    model = Denoiser(DenoiserConfig(**TINY_MODEL))
    features = np.random.default_rng(2).normal(size=(9, TINY_MODEL["feature_dim"])).astype(np.float32)
    scores = ZeroShotScorer(model, NoiseSchedule(), random_text(), num_noise=2).score(features, [1, 3, 4])
    assert zero_shot_metrics(scores, np.full(9, 3), np.array([1, 3, 4])).tied == 100.0


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch's own
def test_compiled_scoring_pads_calls_to_one_size_and_matches_eager():
    """Compiled, every call has max_rows_per_call rows: the padded rows are dropped, not counted, not scored.

    40 samples x 10 classes in calls of 50 rows, and a cascade whose second stage ends in a short call,
    so both the full-grid path and the cascade hit the padding.
    """
    eager_cascade, eager_scorer = scored(cascade_top_k=3)
    compiled_cascade, compiled_scorer = scored(cascade_top_k=3, compile=True)
    assert compiled_scorer.calls == eager_scorer.calls == 40 * 10 + 40 * 3 * 2
    np.testing.assert_allclose(compiled_cascade, eager_cascade, rtol=1e-5, atol=1e-6)
    exact, _ = scored()
    compiled, scorer = scored(compile=True)
    np.testing.assert_allclose(compiled, exact, rtol=1e-5, atol=1e-6)
    assert (compiled.argmin(1) == exact.argmin(1)).all()
    # another number of candidate classes (validation scores the seen ones, GZSL all) reuses the graph
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    features = np.random.default_rng(5).normal(size=(9, TINY_MODEL["feature_dim"])).astype(np.float32)
    fewer = scorer.score(features, np.arange(7))
    assert counters["stats"]["unique_graphs"] == graphs
    eager = ZeroShotScorer(scorer.model, NoiseSchedule(), scorer.text, num_noise=3, max_rows_per_call=50)
    np.testing.assert_allclose(fewer, eager.score(features, np.arange(7)), rtol=1e-5, atol=1e-6)


def test_unknown_compile_mode_is_refused():
    with pytest.raises(ValueError, match="max-autotune"):
        scored(compile=True, compile_mode="fastest")
