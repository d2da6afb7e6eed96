"""Property-based checks of the parts with mathematical invariants."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tdsm_core.diffusion import NoiseSchedule
from tdsm_core.errors import DataError
from tdsm_core.evaluate import zero_shot_metrics
from tdsm_core.runs.gzsl import calibrated_predictions, harmonic_mean
from tdsm_core.losses import triplet_diffusion_loss
from tdsm_core.data.splits import validate_class_ids

FAST = settings(max_examples=60, deadline=None)
finite = st.floats(-10, 10, allow_nan=False, width=32)


@FAST
@given(st.integers(1, 500), st.integers(0, 10**6), st.sampled_from(["epsilon", "sample", "v_prediction"]))
def test_noising_and_targets(num_timesteps, seed, prediction_type):
    schedule = NoiseSchedule(num_timesteps=num_timesteps, prediction_type=prediction_type)
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(6, 1, 5, generator=g, dtype=torch.float64), torch.randn(6, 1, 5, generator=g, dtype=torch.float64)
    t = torch.randint(0, num_timesteps, (6,), generator=g)
    a = schedule.alpha_bar[t].view(6, 1, 1)
    z = schedule.add_noise(x0, eps, t)
    assert torch.allclose(z, a.sqrt() * x0 + (1 - a).sqrt() * eps)
    target = schedule.target(x0, eps, t)
    # every target lets x0 and eps be recovered from z_t
    if prediction_type == "epsilon":
        x0_hat = (z - (1 - a).sqrt() * target) / a.sqrt()
    elif prediction_type == "sample":
        x0_hat = target
    else:
        x0_hat = a.sqrt() * z - (1 - a).sqrt() * target
    assert torch.allclose(x0_hat, x0, atol=1e-8)
    assert torch.all((schedule.alpha_bar > 0) & (schedule.alpha_bar < 1))


@FAST
@given(arrays(np.float32, 8, elements=st.floats(0, 5, width=32)), arrays(np.float32, 8, elements=st.floats(0, 5, width=32)),
       arrays(np.int64, 8, elements=st.integers(0, 3)), arrays(np.int64, 8, elements=st.integers(0, 3)),
       st.floats(0, 3))
def test_triplet_mask_and_hinge(pos, neg, labels, negatives, margin):
    target = torch.zeros(8, 1, 1)
    pred_pos, pred_neg = torch.from_numpy(np.sqrt(pos)).view(8, 1, 1), torch.from_numpy(np.sqrt(neg)).view(8, 1, 1)
    terms = triplet_diffusion_loss(pred_pos, pred_neg, target, torch.from_numpy(labels), torch.from_numpy(negatives),
                                   margin=margin)
    active = labels != negatives
    expected = np.where(active, np.maximum(0, pos - neg + margin), 0).mean()
    assert np.isclose(float(terms.triplet), expected, rtol=1e-4, atol=1e-5)
    assert float(terms.triplet) >= 0 and np.array_equal(terms.triplet_active.numpy(), active)
    assert np.isclose(float(terms.diffusion), pos.mean(), rtol=1e-5, atol=1e-6)


@FAST
@given(st.lists(st.integers(-3, 30), min_size=0, max_size=12), st.integers(1, 25))
def test_split_validation_accepts_exactly_unique_in_range_ids(ids, num_classes):
    valid = len(ids) > 0 and len(set(ids)) == len(ids) and all(0 <= i < num_classes for i in ids)
    try:
        out = validate_class_ids(np.array(ids, dtype=np.int64), num_classes, "ids")
    except DataError:
        assert not valid
    else:
        assert valid and out.tolist() == ids


@FAST
@given(st.integers(1, 30), st.integers(2, 8), st.integers(0, 10**6))
def test_score_matrix_aggregation(n, k, seed):
    rng = np.random.default_rng(seed)
    classes = rng.choice(100, k, replace=False)
    scores = rng.normal(size=(n, k))
    labels = classes[rng.integers(0, k, n)]
    result = zero_shot_metrics(scores, labels, classes)
    assert result.confusion.sum() == n and 0 <= result.top1 <= result.top5 <= 100
    assert np.isclose(result.top1, 100 * np.trace(result.confusion) / n)
    # reordering the candidate columns (with the scores) changes nothing
    order = rng.permutation(k)
    shuffled = zero_shot_metrics(scores[:, order], labels, classes[order])
    assert shuffled.top1 == result.top1 and shuffled.top5 == result.top5
    assert np.array_equal(shuffled.predictions, result.predictions)
    # adding a constant per sample (e.g. a shared noise term) changes nothing either
    shifted = zero_shot_metrics(scores + rng.normal(size=(n, 1)), labels, classes)
    assert np.array_equal(shifted.predictions, result.predictions)


@FAST
@given(st.integers(1, 20), st.integers(2, 6), st.integers(0, 10**6))
def test_calibration_is_monotone_in_gamma(n, k, seed):
    rng = np.random.default_rng(seed)
    classes, seen = np.arange(k), np.arange(k // 2 + 1)
    scores = rng.normal(size=(n, k))
    seen_counts = [np.isin(calibrated_predictions(scores, classes, seen, g), seen).sum() for g in (-5, -1, 0, 1, 5)]
    assert seen_counts == sorted(seen_counts, reverse=True)
    assert seen_counts[0] == n and (k == len(seen) or seen_counts[-1] == 0)


@FAST
@given(st.floats(0, 100), st.floats(0, 100))
def test_harmonic_mean_bounds(s, u):
    h = harmonic_mean(s, u)
    assert min(s, u) - 1e-9 <= h <= max(s, u) + 1e-9 or (s + u == 0 and h == 0)
