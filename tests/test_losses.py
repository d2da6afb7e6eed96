import pytest
import torch

from tdsm_core.losses import triplet_diffusion_loss


def make(pos_errors, neg_errors):
    """Predictions whose squared errors against a zero target are exactly the given per-sample values."""
    target = torch.zeros(len(pos_errors), 1, 4)
    pos = torch.tensor(pos_errors).sqrt().view(-1, 1, 1).expand(-1, 1, 4).clone()
    neg = torch.tensor(neg_errors).sqrt().view(-1, 1, 1).expand(-1, 1, 4).clone()
    return pos, neg, target


def test_loss_terms_without_masked_negatives():
    pos, neg, target = make([0.5, 2.0], [3.0, 1.5])
    terms = triplet_diffusion_loss(pos, neg, target, torch.tensor([0, 1]), torch.tensor([2, 3]), margin=1.0)
    assert terms.diffusion.item() == pytest.approx(1.25)
    # hinge: max(0, 0.5 - 3 + 1) = 0 ; max(0, 2 - 1.5 + 1) = 1.5 ; mean = 0.75
    assert terms.triplet.item() == pytest.approx(0.75)
    assert terms.total.item() == pytest.approx(2.0)
    assert terms.triplet_active.tolist() == [True, True]


def test_negatives_equal_to_the_true_class_are_masked_but_still_counted_in_the_mean():
    pos, neg, target = make([2.0, 2.0], [1.0, 1.0])
    terms = triplet_diffusion_loss(pos, neg, target, torch.tensor([4, 5]), torch.tensor([4, 6]), margin=1.0)
    # sample 0 is masked (negative == label): only sample 1 contributes 2.0, averaged over 2 samples.
    assert terms.triplet.item() == pytest.approx(1.0)
    assert terms.triplet_active.tolist() == [False, True]


def test_weights_and_margin_apply():
    pos, neg, target = make([1.0], [1.0])
    terms = triplet_diffusion_loss(pos, neg, target, torch.tensor([0]), torch.tensor([1]), margin=0.3,
                                   diffusion_weight=2.0, triplet_weight=0.5)
    assert terms.diffusion.item() == pytest.approx(2.0)
    assert terms.triplet.item() == pytest.approx(0.15)
    logged = terms.as_floats()
    assert set(logged) >= {"loss", "loss_diffusion", "loss_triplet"}


def test_gradient_flows_to_both_predictions():
    pos, neg, target = make([1.0, 1.0], [1.2, 0.5])
    pos.requires_grad_(True), neg.requires_grad_(True)
    triplet_diffusion_loss(pos, neg, target, torch.tensor([0, 1]), torch.tensor([1, 0])).total.backward()
    assert pos.grad.abs().sum() > 0 and neg.grad.abs().sum() > 0


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("num_negatives", [1, 3])
def test_the_whole_objective_matches_a_plain_two_call_computation(prediction_type, num_negatives):
    """triplet_diffusion_objective (one denoiser call for positives and negatives) against the objective written
    out by hand: noise with the schedule's alpha_bar, one call per text, squared errors, hinge."""
    from conftest import TINY_MODEL, randomise, random_text

    from tdsm_core.diffusion import NoiseSchedule
    from tdsm_core.losses import triplet_diffusion_objective
    from tdsm_core.model import Denoiser, DenoiserConfig

    g = torch.Generator().manual_seed(1)
    model = randomise(Denoiser(DenoiserConfig(**TINY_MODEL)), std=0.15).eval()
    schedule, text = NoiseSchedule(prediction_type=prediction_type), random_text()
    b, f = 6, TINY_MODEL["feature_dim"]
    x0, noise = torch.randn(b, 1, f, generator=g), torch.randn(b, 1, f, generator=g)
    t = torch.randint(0, schedule.num_timesteps, (b,), generator=g)
    labels = torch.tensor([0, 1, 3, 4, 6, 8])
    negatives = torch.randint(0, 10, (num_negatives * b,), generator=g)
    negatives[0] = labels[0]  # one masked pair
    terms = triplet_diffusion_objective(model, schedule, x0, labels, negatives, text.pooled, text.tokens, noise, t,
                                        margin=0.7, diffusion_weight=1.3, triplet_weight=0.6)

    abar = schedule.alpha_bar[t].view(-1, 1, 1)
    z = (abar.sqrt() * x0 + (1 - abar).sqrt() * noise).float()
    target = {"epsilon": noise, "sample": x0,
              "v_prediction": abar.sqrt() * noise - (1 - abar).sqrt() * x0}[prediction_type].float()
    with torch.no_grad():
        pos = ((model(z, t, text.pooled[labels], text.tokens[labels]) - target) ** 2).mean(dim=(1, 2))
        hinges = []
        for k in range(num_negatives):
            neg_k = negatives[k * b:(k + 1) * b]
            neg = ((model(z, t, text.pooled[neg_k], text.tokens[neg_k]) - target) ** 2).mean(dim=(1, 2))
            hinges.append(torch.clamp(pos - neg + 0.7, min=0) * (labels != neg_k))
    expected_diffusion = 1.3 * pos.mean()
    expected_triplet = 0.6 * torch.cat(hinges).mean()
    assert terms.diffusion.item() == pytest.approx(expected_diffusion.item(), rel=1e-5)
    assert terms.triplet.item() == pytest.approx(expected_triplet.item(), rel=1e-5, abs=1e-7)
    assert terms.total.item() == pytest.approx((expected_diffusion + expected_triplet).item(), rel=1e-5)
    assert not terms.triplet_active[0]
