"""seedkit.models.attention: backends agree with a naive softmax reference; varlen equals per-sample attention."""

from __future__ import annotations

import pytest
import torch

from seedkit.models.attention import (
    attention,
    is_flash_attn_available,
    is_xformers_available,
    varlen_attention,
)


def naive_attention(query, key, value, keep=None):
    scores = query.double() @ key.double().transpose(-2, -1) / query.shape[-1] ** 0.5
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    return (scores.softmax(-1) @ value.double()).to(query.dtype)


def random_qkv(batch=2, heads=3, query_len=7, key_len=9, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, heads, query_len, dim, generator=generator),
        torch.randn(batch, heads, key_len, dim, generator=generator),
        torch.randn(batch, heads, key_len, dim, generator=generator),
    )


@pytest.mark.parametrize("backend", [None, "sdpa", "math"])
def test_backends_match_naive_reference(backend):
    query, key, value = random_qkv()
    expected = naive_attention(query, key, value)
    torch.testing.assert_close(attention(query, key, value, backend=backend), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_boolean_key_mask_matches_reference(backend):
    query, key, value = random_qkv()
    keep = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    keep[0, ..., 6:] = False
    keep[1, ..., :2] = False
    expected = naive_attention(query, key, value, keep)
    output = attention(query, key, value, attention_mask=keep, backend=backend)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    # masked keys really are ignored: changing them changes nothing
    key[0, :, 6:] = 100.0
    value[0, :, 6:] = -100.0
    torch.testing.assert_close(attention(query, key, value, attention_mask=keep, backend=backend), output)


def test_unknown_backend_names_valid_ones():
    query, key, value = random_qkv()
    with pytest.raises(ValueError, match="valid backends: sdpa, flash, xformers, math"):
        attention(query, key, value, backend="cudnn")


@pytest.mark.skipif(is_flash_attn_available(), reason="flash-attn is installed; the missing-package error cannot occur")
def test_flash_backend_without_package_raises_clear_error():
    query, key, value = random_qkv()
    with pytest.raises(ImportError, match=r"seedkit\[flash\]"):
        attention(query, key, value, backend="flash")


@pytest.mark.skipif(is_xformers_available(), reason="xformers is installed; the missing-package error cannot occur")
def test_xformers_backend_without_package_raises_clear_error():
    query, key, value = random_qkv()
    with pytest.raises(ImportError, match=r"seedkit\[xformers\]"):
        attention(query, key, value, backend="xformers")


@pytest.mark.parametrize("backend", [None, "sdpa", "math"])
def test_varlen_equals_per_sample_attention(backend):
    generator = torch.Generator().manual_seed(1)
    lengths = [5, 1, 12, 7]
    heads, dim = 2, 16
    query = torch.randn(sum(lengths), heads, dim, generator=generator)
    key = torch.randn(sum(lengths), heads, dim, generator=generator)
    value = torch.randn(sum(lengths), heads, dim, generator=generator)
    cu_seqlens = torch.tensor([0, 5, 6, 18, 25], dtype=torch.int32)
    output = varlen_attention(query, key, value, cu_seqlens, cu_seqlens, max(lengths), max(lengths), backend=backend)
    assert output.shape == query.shape
    start = 0
    for length in lengths:
        segment = slice(start, start + length)
        expected = naive_attention(
            query[segment].transpose(0, 1), key[segment].transpose(0, 1), value[segment].transpose(0, 1)
        ).transpose(0, 1)
        torch.testing.assert_close(output[segment], expected, atol=1e-5, rtol=1e-5)
        start += length
    # no cross-sample attention: perturbing segment 2 leaves segment 0 unchanged
    key[6:18] = torch.randn(12, heads, dim, generator=generator) * 3
    perturbed = varlen_attention(query, key, value, cu_seqlens, cu_seqlens, 12, 12, backend=backend)
    torch.testing.assert_close(perturbed[:5], output[:5])
    assert (perturbed[6:18] - output[6:18]).abs().max() > 1e-3


def test_varlen_rejects_mismatched_segments():
    tensor = torch.randn(4, 1, 8)
    with pytest.raises(ValueError, match="same number of segments"):
        varlen_attention(
            tensor, tensor, tensor, torch.tensor([0, 4]), torch.tensor([0, 2, 4]), 4, 4
        )
