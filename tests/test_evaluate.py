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


# ----------------------------------------------------------------------------------------------
# eval.calibration: per-class error levels measured on the seen classes' training features


def test_calibrate_scores_matches_a_plain_per_column_loop():
    from tdsm_core.evaluate import calibrate_scores

    rng = np.random.default_rng(3)
    scores, reference = rng.random((6, 4)) + 1.0, rng.random((9, 4)) * np.array([1.0, 2.0, 0.5, 3.0])
    assert calibrate_scores(scores, reference, "none") is scores
    centred, standard = calibrate_scores(scores, reference, "center"), calibrate_scores(scores, reference, "standardize")
    for k in range(4):
        column = reference[:, k]
        mean = sum(column) / len(column)
        spread = (sum((v - mean) ** 2 for v in column) / len(column)) ** 0.5
        for i in range(6):
            assert centred[i, k] == pytest.approx(scores[i, k] - mean, rel=1e-5)
            assert standard[i, k] == pytest.approx((scores[i, k] - mean) / spread, rel=1e-5)
    with pytest.raises(Exception, match="eval.calibration must be one of"):
        calibrate_scores(scores, reference, "zscore")


def test_centring_undoes_a_class_whose_text_lowers_every_error():
    """The failure it exists for: one class's error is lower by a constant for every sample (and for the training
    features too), so the raw argmin names that class for all; subtracting the reference means recovers the rest."""
    from tdsm_core.evaluate import calibrate_scores

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    clean = rng.random((30, 3)) + 1.0
    clean[np.arange(30), labels] -= 1.0  # the true class has the lowest error ...
    bias = np.array([-2.0, 0.0, 0.0])  # ... until class 0's text lowers every error by 2
    reference = rng.random((50, 3)) + 1.0 + bias
    raw = clean + bias
    assert (raw.argmin(1) == 0).all()
    assert (calibrate_scores(raw, reference, "center").argmin(1) == labels).mean() > 0.9


@pytest.mark.parametrize("mode", ["center", "standardize"])
def test_calibrated_scoring_equals_the_reference_loop_on_the_seeded_subsample(mode):
    from tdsm_core.evaluate import calibrate_scores, reference_rows

    model = randomise(Denoiser(DenoiserConfig(**TINY_MODEL)), std=0.15)
    schedule, text = NoiseSchedule(), random_text()
    rng = np.random.default_rng(2)
    features = rng.normal(size=(7, TINY_MODEL["feature_dim"])).astype(np.float32)
    train = rng.normal(size=(30, TINY_MODEL["feature_dim"])).astype(np.float32)
    classes = [3, 1, 6]
    scorer = ZeroShotScorer(model, schedule, text, reference=train, timestep=20, num_noise=2, noise_seed=5,
                            calibration=mode, calibration_samples=12, max_rows_per_call=13)
    rows = reference_rows(30, 12, 5)
    assert len(rows) == 12 == len(set(rows.tolist()))
    plain = lambda x: score_one_class_at_a_time(model, schedule, text, x, classes, timestep=20, num_noise=2,
                                                noise_seed=5)
    expected = calibrate_scores(plain(features), plain(train[rows]), mode)
    np.testing.assert_allclose(scorer.score(features, classes), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scorer.raw_score(features, classes), plain(features), rtol=1e-5, atol=1e-6)
    assert not np.allclose(scorer.score(features, classes), plain(features))


def test_calibration_without_training_features_is_refused_in_one_sentence():
    from tdsm_core.errors import ConfigError

    model = Denoiser(DenoiserConfig(**TINY_MODEL))
    with pytest.raises(ConfigError, match="pass reference=benchmark.train.features"):
        ZeroShotScorer(model, NoiseSchedule(), random_text(), calibration="center")
    with pytest.raises(ConfigError, match="eval.calibration must be one of"):
        ZeroShotScorer(model, NoiseSchedule(), random_text(), calibration="zscore")
