import pytest
import torch
import torch.nn.functional as F

from tdsm_core.model import Denoiser, DenoiserConfig, count_parameters, modulate

from conftest import TINY_MODEL, randomise


def tiny_inputs(batch=3, cfg=DenoiserConfig(**TINY_MODEL), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 1, cfg.feature_dim, generator=g), torch.randint(0, 50, (batch,), generator=g),
            torch.randn(batch, cfg.text_dim, generator=g), torch.randn(batch, cfg.text_len, cfg.text_dim, generator=g))


def test_paper_configuration_has_the_published_parameter_count():
    with torch.device("meta"):  # no memory for 261M parameters
        model = Denoiser(DenoiserConfig(256, 768, 12, 12, 2048, 35))
    assert count_parameters(model) == 261_208_576


def test_default_config_is_the_paper_configuration():
    assert DenoiserConfig() == DenoiserConfig(256, 768, 12, 12, 2048, 35)


def test_untrained_model_outputs_zeros():
    model = Denoiser(DenoiserConfig(**TINY_MODEL))
    out = model(*tiny_inputs())
    assert out.shape == (3, 1, TINY_MODEL["feature_dim"])
    assert torch.count_nonzero(out) == 0


def test_adaln_zero_layers_are_zero_and_others_are_not():
    model = Denoiser(DenoiserConfig(**TINY_MODEL))
    assert torch.count_nonzero(model.blocks[0].ada_x[-1].weight) == 0
    assert torch.count_nonzero(model.final_layer.linear.weight) == 0
    assert torch.count_nonzero(model.blocks[0].attn.qkv_x.weight) > 0
    assert torch.count_nonzero(model.blocks[0].attn.qkv_x.bias) == 0
    assert 0.005 < model.text_pos_embed.std().item() < 0.05


def plain_modulate(h, shift, scale):
    return h * (1 + scale[:, None]) + shift[:, None]


def test_modulation_matches_the_plain_formula():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(4, 7, 16, generator=g)
    shift, scale = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    torch.testing.assert_close(modulate(h, shift, scale), plain_modulate(h, shift, scale))
    assert not torch.allclose(modulate(h, shift, scale), modulate(h, scale, shift))  # argument order matters


def reference_forward(model: Denoiser, z_t, t, text_pooled, text_tokens):
    """A plain transcription of the spec: both streams in every block, attention written out by hand."""
    modulate = plain_modulate
    c = model.timestep_embedder(t) + model.pooled_text_embedder(text_pooled)
    x = model.skeleton_embedder(z_t)
    y = model.token_text_embedder(text_tokens) + model.text_pos_embed
    heads = model.config.num_heads
    for block in model.blocks:
        sx_a, cx_a, gx_a, sx_m, cx_m, gx_m = block.ada_x(c).chunk(6, dim=-1)
        sy_a, cy_a, gy_a, sy_m, cy_m, gy_m = block.ada_y(c).chunk(6, dim=-1)
        hx = modulate(F.layer_norm(x, x.shape[-1:], eps=1e-6), sx_a, cx_a)
        hy = modulate(F.layer_norm(y, y.shape[-1:], eps=1e-6), sy_a, cy_a)
        qkv = torch.cat([block.attn.qkv_x(hx), block.attn.qkv_y(hy)], dim=1)  # (B, 1+L, 3D)
        q, k, v = qkv.chunk(3, dim=-1)
        B, N, D = q.shape
        split = lambda a: a.view(B, N, heads, D // heads).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)
        weights = torch.softmax(q @ k.transpose(-1, -2) * (D // heads) ** -0.5, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(B, N, D)
        ax, ay = block.attn.proj_x(out[:, :1]), block.attn.proj_y(out[:, 1:])
        x = x + gx_a[:, None] * ax
        x = x + gx_m[:, None] * block.mlp_x(modulate(F.layer_norm(x, x.shape[-1:], eps=1e-6), sx_m, cx_m))
        y = y + gy_a[:, None] * ay
        y = y + gy_m[:, None] * block.mlp_y(modulate(F.layer_norm(y, y.shape[-1:], eps=1e-6), sy_m, cy_m))
    shift, scale = model.final_layer.ada(c).chunk(2, dim=-1)
    return model.final_layer.linear(modulate(F.layer_norm(x, x.shape[-1:], eps=1e-6), shift, scale))


def test_forward_matches_a_plain_transcription_of_the_spec():
    model = randomise(Denoiser(DenoiserConfig(**TINY_MODEL)), std=0.15)
    inputs = tiny_inputs(batch=4)
    with torch.no_grad():
        fast, plain = model(*inputs), reference_forward(model, *inputs)
    assert fast.abs().max() > 1e-3
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


def test_text_and_timestep_change_the_prediction():
    model = randomise(Denoiser(DenoiserConfig(**TINY_MODEL)), std=0.15)
    z, t, pooled, tokens = tiny_inputs(batch=2)
    with torch.no_grad():
        base = model(z, t, pooled, tokens)
        assert not torch.allclose(base, model(z, t, pooled, tokens + 1.0))  # tokens reach x through attention
        assert not torch.allclose(base, model(z, t, pooled + 1.0, tokens))
        assert not torch.allclose(base, model(z, (t + 7) % 50, pooled, tokens))


def test_precomputed_conditioning_gives_the_same_output():
    model = randomise(Denoiser(DenoiserConfig(**TINY_MODEL)), std=0.15)
    z, t, pooled, tokens = tiny_inputs(batch=5)
    cond = model.condition(t[:2], pooled[:2], tokens[:2])
    rows = torch.tensor([0, 1, 1, 0, 1])
    with torch.no_grad():
        expected = model(z, t[:2][rows], pooled[:2][rows], tokens[:2][rows])
        got = model.denoise(z, cond.index(rows))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("field,value", [("hidden_dim", 30), ("depth", 0), ("text_len", -1), ("num_heads", 1.5)])
def test_invalid_sizes_are_rejected(field, value):
    sizes = dict(TINY_MODEL)
    sizes[field] = value
    with pytest.raises(ValueError, match=field):
        DenoiserConfig(**sizes)
