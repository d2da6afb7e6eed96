import pytest
import torch

from tdsm_core.diffusion import NoiseSchedule


def test_scaled_linear_golden_values():
    schedule = NoiseSchedule()
    assert schedule.num_timesteps == 50
    assert schedule.alpha_bar[0].item() == pytest.approx(0.999150, abs=5e-7)
    assert schedule.alpha_bar[25].item() == pytest.approx(0.934101, abs=5e-7)
    assert schedule.alpha_bar[49].item() == pytest.approx(0.763763, abs=5e-7)
    assert schedule.betas[0].item() == pytest.approx(0.00085)
    assert schedule.betas[-1].item() == pytest.approx(0.012)
    assert torch.all(schedule.alpha_bar[1:] < schedule.alpha_bar[:-1])


def test_add_noise_follows_the_closed_form():
    schedule = NoiseSchedule()
    x0, eps = torch.randn(4, 1, 8), torch.randn(4, 1, 8)
    t = torch.tensor([0, 10, 25, 49])
    z = schedule.add_noise(x0, eps, t)
    for i, step in enumerate(t.tolist()):
        a = schedule.alpha_bar[step].item()
        torch.testing.assert_close(z[i], a**0.5 * x0[i] + (1 - a) ** 0.5 * eps[i])


def test_targets_of_the_three_prediction_types():
    x0, eps, t = torch.randn(3, 1, 5), torch.randn(3, 1, 5), torch.tensor([3, 20, 40])
    assert torch.equal(NoiseSchedule(prediction_type="epsilon").target(x0, eps, t), eps)
    assert torch.equal(NoiseSchedule(prediction_type="sample").target(x0, eps, t), x0)
    schedule = NoiseSchedule(prediction_type="v_prediction")
    v = schedule.target(x0, eps, t)
    a = schedule.alpha_bar[t].float().view(3, 1, 1)
    torch.testing.assert_close(v, a.sqrt() * eps - (1 - a).sqrt() * x0)
    # v-prediction identity: x0 = sqrt(a) z_t - sqrt(1 - a) v
    z = schedule.add_noise(x0, eps, t)
    torch.testing.assert_close(a.sqrt() * z - (1 - a).sqrt() * v, x0, rtol=1e-5, atol=1e-5)


def test_scalar_timestep_broadcasts():
    schedule = NoiseSchedule()
    x0, eps = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    z = schedule.add_noise(x0, eps, torch.tensor(25))
    torch.testing.assert_close(z, schedule.add_noise(x0, eps, torch.tensor([25, 25])))


def test_training_timesteps_are_uniform_integers_in_range():
    from tdsm_core.runs.train import draw_step  # what training draws: uniform integers in [0, T)

    t = torch.cat([draw_step(0, step, 100, 1000, 4, torch.arange(3), 50).timesteps for step in range(20)])
    assert t.min() == 0 and t.max() == 49
    counts = torch.bincount(t, minlength=50).float()
    assert counts.min() > 0.7 * counts.mean()


def test_bad_arguments_are_rejected_with_the_choices():
    with pytest.raises(ValueError, match="epsilon"):
        NoiseSchedule(prediction_type="eps")
    with pytest.raises(ValueError, match="scaled_linear"):
        NoiseSchedule(beta_schedule="cosine")
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        NoiseSchedule().add_noise(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([50]))
