"""Text encoding: the offline MiniLM default, a CLIP encoder from a local folder, the cache, the errors."""
import json

import numpy as np
import pytest
import torch

from tdsm_core.config import TextConfig
from tdsm_core.errors import TextEncoderError
from tdsm_core.data.text import cache_key, check_text_features, encode_class_prompts

PAIRS = [("raise the hand to the mouth", "Drink water is drinking."),
         ("wave one hand from side to side", "Hand waving greets someone."),
         ("jump with both feet", "Jump up.")]


def test_minilm_default_gives_35_tokens_and_pooled_of_two_prompts(tmp_path):
    cfg = TextConfig(cache_dir=str(tmp_path))
    text = encode_class_prompts(PAIRS, cfg)
    assert text.tokens.shape == (3, 35, 768) and text.pooled.shape == (3, 768)
    assert torch.isfinite(text.tokens).all()
    # pooled = masked mean of the token states, per prompt; prompts differ so features differ
    assert not torch.allclose(text.pooled[0], text.pooled[1])
    assert not torch.allclose(text.pooled[0, :384], text.pooled[0, 384:])
    cached = list(tmp_path.glob("*.npz"))
    assert len(cached) == 1
    again = encode_class_prompts(PAIRS, cfg)
    torch.testing.assert_close(again.tokens, text.tokens)


def test_cache_key_depends_on_prompts_encoder_and_length():
    cfg = TextConfig()
    key = cache_key(cfg, PAIRS)
    assert key == cache_key(TextConfig(), list(PAIRS))
    assert key != cache_key(cfg, PAIRS[:2])
    assert key != cache_key(TextConfig(max_length=20), PAIRS)
    assert key != cache_key(TextConfig(encoder="/some/clip"), PAIRS)


def test_cache_is_used_instead_of_the_encoder(tmp_path):
    cfg = TextConfig(encoder="/definitely/not/here", cache_dir=str(tmp_path))
    fake_tokens, fake_pooled = np.ones((3, 35, 8), np.float32), np.zeros((3, 8), np.float32)
    np.savez(tmp_path / f"{cache_key(cfg, PAIRS)}.npz", tokens=fake_tokens, pooled=fake_pooled)
    text = encode_class_prompts(PAIRS, cfg)  # would fail to load the encoder if the cache were ignored
    assert text.tokens.shape == (3, 35, 8)


def make_tiny_clip(folder):
    """A randomly initialised CLIP text model and a CLIP BPE tokenizer with a hand-made vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz."
    vocab = {}
    for ch in letters:
        vocab[ch] = len(vocab)
    for ch in letters:
        vocab[ch + "</w>"] = len(vocab)
    merges = ["#version: 0.2"]
    for a in letters[:26]:
        for b in letters[:26]:
            if len(vocab) >= 1200:
                break
            merges.append(f"{a} {b}</w>")
            vocab[a + b + "</w>"] = len(vocab)
    while len(vocab) < 1200:  # filler entries so the vocabulary has a realistic size
        vocab[f"filler{len(vocab)}</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (folder / "tokenizer" / "merges.txt").write_text("\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "tokenizer" / "vocab.json"), str(folder / "tokenizer" / "merges.txt"),
                              pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder / "tokenizer")
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77,
                            bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                            pad_token_id=vocab["<|endoftext|>"])
    torch.manual_seed(0)
    CLIPTextModel(config).save_pretrained(folder / "text_encoder")


def test_clip_text_encoder_from_a_local_folder_with_subfolder(tmp_path):
    make_tiny_clip(tmp_path / "sd")
    cfg = TextConfig(encoder=str(tmp_path / "sd"), subfolder="text_encoder", cache_dir=str(tmp_path / "cache"))
    text = encode_class_prompts(PAIRS, cfg)
    assert text.tokens.shape == (3, 35, 64) and text.pooled.shape == (3, 64)
    assert torch.isfinite(text.pooled).all() and not torch.allclose(text.pooled[0], text.pooled[1])
    check_text_features(text, 64, 35, cfg.encoder)
    with pytest.raises(TextEncoderError, match="set model.text_dim: 64"):
        check_text_features(text, 2048, 35, cfg.encoder)


def test_replaced_weights_in_the_same_folder_are_encoded_again(tmp_path):
    make_tiny_clip(tmp_path / "sd")
    cfg = TextConfig(encoder=str(tmp_path / "sd"), subfolder="text_encoder", cache_dir=str(tmp_path / "cache"))
    before = cache_key(cfg, PAIRS)
    assert cache_key(cfg, PAIRS) == before
    config = tmp_path / "sd" / "text_encoder" / "config.json"
    config.write_text(config.read_text() + " ")  # another model saved over the old one
    assert cache_key(cfg, PAIRS) != before


def test_a_missing_subfolder_is_named_with_the_fix(tmp_path):
    cfg = TextConfig(encoder="minilm", subfolder="text_encoder", cache_dir="")  # a split config's SD subfolder
    with pytest.raises(TextEncoderError, match="has no subfolder 'text_encoder'; .*set text.subfolder= "):
        encode_class_prompts(PAIRS, cfg)


def test_a_relative_encoder_folder_is_found_from_any_working_directory(tmp_path, monkeypatch):
    from tdsm_core.config import load_config

    (tmp_path / "configs").mkdir()
    (tmp_path / "data" / "encoders" / "mine").mkdir(parents=True)
    (tmp_path / "configs" / "c.yaml").write_text("text:\n  encoder: data/encoders/mine\n")
    monkeypatch.chdir(tmp_path / "configs")  # e.g. a notebook kernel, which runs in notebooks/
    assert load_config(tmp_path / "configs" / "c.yaml").text.encoder == str((tmp_path / "data" / "encoders" / "mine").resolve())
    (tmp_path / "configs" / "c.yaml").write_text("text:\n  encoder: someone/hub-model\n")
    assert load_config(tmp_path / "configs" / "c.yaml").text.encoder == "someone/hub-model"  # a hub id stays


def test_unavailable_encoder_gets_one_sentence_naming_it(tmp_path):
    cfg = TextConfig(encoder="stabilityai/stable-diffusion-2-1-base", subfolder="text_encoder",
                     cache_dir=str(tmp_path))
    with pytest.raises(TextEncoderError) as info:
        encode_class_prompts(PAIRS, cfg)
    message = str(info.value)
    assert "stabilityai/stable-diffusion-2-1-base" in message and "text.encoder" in message and "\n" not in message


def test_tokenizer_with_a_missing_vocabulary_is_refused(tmp_path):
    make_tiny_clip(tmp_path / "sd")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}
    (tmp_path / "sd" / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "sd" / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    (tmp_path / "sd" / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
    cfg = TextConfig(encoder=str(tmp_path / "sd"), subfolder="text_encoder", cache_dir="")
    with pytest.raises(TextEncoderError, match="vocabulary"):
        encode_class_prompts(PAIRS, cfg)


def test_unmasked_encoding_follows_the_release_at_padding_and_keeps_real_tokens(tmp_path):
    """text.attention_mask false is the release's call (token ids only): CLIP's causal attention keeps the
    real tokens' states and the pooled vector, while the padding positions get the unmasked states."""
    from transformers import AutoTokenizer, CLIPTextModel

    make_tiny_clip(tmp_path / "sd")
    common = dict(encoder=str(tmp_path / "sd"), subfolder="text_encoder", cache_dir=str(tmp_path / "cache"))
    release = encode_class_prompts(PAIRS, TextConfig(attention_mask=False, **common))
    masked = encode_class_prompts(PAIRS, TextConfig(attention_mask=True, **common))
    assert cache_key(TextConfig(attention_mask=False, **common), PAIRS) != cache_key(
        TextConfig(attention_mask=True, **common), PAIRS)

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "sd" / "tokenizer")
    model = CLIPTextModel.from_pretrained(tmp_path / "sd" / "text_encoder").eval()
    motion = [p[0] for p in PAIRS]
    batch = tokenizer(motion, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    with torch.no_grad():
        reference = model(input_ids=batch["input_ids"]).last_hidden_state  # the release: no attention_mask
    real = batch["attention_mask"].bool()  # (3, 35)
    assert (~real).sum() > 30  # short prompts: most positions are padding
    hidden = reference.shape[-1]
    torch.testing.assert_close(release.tokens[..., :hidden], reference, rtol=0, atol=1e-6)
    motion_release, motion_masked = release.tokens[..., :hidden], masked.tokens[..., :hidden]  # the motion prompt
    torch.testing.assert_close(motion_release[real], motion_masked[real], rtol=0, atol=1e-5)  # real tokens unchanged
    torch.testing.assert_close(release.pooled, masked.pooled, rtol=0, atol=1e-5)  # end-of-text state unchanged
    padding_gap = (motion_release[~real] - motion_masked[~real]).abs().max()
    assert padding_gap > 1e-2  # the padding states are what differs


def test_minilm_masking_is_a_real_choice(tmp_path):
    """For the bidirectional MiniLM the mask changes every state, so the two settings give other features
    (the pooled mean is taken over the real tokens in both)."""
    unmasked = encode_class_prompts(PAIRS[:1], TextConfig(cache_dir=str(tmp_path), attention_mask=False))
    masked = encode_class_prompts(PAIRS[:1], TextConfig(cache_dir=str(tmp_path), attention_mask=True))
    assert not torch.allclose(unmasked.pooled, masked.pooled, atol=1e-3)
    assert len(list(tmp_path.glob("*.npz"))) == 2
