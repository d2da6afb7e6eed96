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
