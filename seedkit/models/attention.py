"""Attention dispatch: torch SDPA by default, flash-attn / xformers when they are importable.

Two entry points:

* :func:`attention` for padded batches in the ``[batch, heads, seq_len, head_dim]`` layout that
  :func:`torch.nn.functional.scaled_dot_product_attention` uses.
* :func:`varlen_attention` for packed sequences (native-resolution packing): all samples are concatenated into one
  ``[total_tokens, heads, head_dim]`` tensor and ``cu_seqlens`` marks where each sample starts, so no token ever
  attends across samples and no dense block mask is materialised.

flash-attn and xformers are optional (CUDA-only) extras. They are imported lazily and only when requested; asking for
a backend that is not installed raises an error that says which extra to install.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

ATTENTION_BACKENDS = ("sdpa", "flash", "xformers", "math")


def is_flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def is_xformers_available() -> bool:
    return importlib.util.find_spec("xformers") is not None


def _check_backend(backend: str) -> None:
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; valid backends: {', '.join(ATTENTION_BACKENDS)}")
    if backend == "flash" and not is_flash_attn_available():
        raise ImportError("attention backend 'flash' needs flash-attn; install it with `pip install seedkit[flash]`")
    if backend == "xformers" and not is_xformers_available():
        raise ImportError(
            "attention backend 'xformers' needs xformers; install it with `pip install seedkit[xformers]`"
        )


def math_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Reference softmax attention computed in float32 (slow; for tests and debugging).

    Shapes as in :func:`attention`.
    """
    scale = query.shape[-1] ** -0.5
    scores = torch.matmul(query.float(), key.float().transpose(-2, -1)) * scale
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask.float()
    probabilities = scores.softmax(dim=-1)
    return torch.matmul(probabilities, value.float()).to(query.dtype)


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention.

    Args:
        query: ``[B, heads, Lq, D]``.
        key, value: ``[B, heads, Lk, D]``.
        attention_mask: ``None`` (keep SDPA on its fastest path), a boolean mask broadcastable to
            ``[B, heads, Lq, Lk]`` where ``True`` means "attend", or an additive float bias of that shape.
        backend: ``"sdpa"`` (default), ``"flash"``, ``"xformers"`` or ``"math"`` (float32 reference).

    Returns:
        ``[B, heads, Lq, D]``.
    """
    backend = backend or "sdpa"
    _check_backend(backend)
    if backend == "sdpa":
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
    if backend == "math":
        return math_attention(query, key, value, attention_mask)
    if backend == "flash":
        if attention_mask is not None:
            raise ValueError(
                "attention backend 'flash' takes no dense mask; drop padded tokens and use varlen_attention, "
                "or use backend='sdpa'"
            )
        from flash_attn import flash_attn_func

        output = flash_attn_func(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
        return output.transpose(1, 2)
    # xformers
    import xformers.ops

    attention_bias = None
    if attention_mask is not None:
        batch_size, num_heads, query_len, _ = query.shape
        key_len = key.shape[2]
        if attention_mask.dtype == torch.bool:
            attention_bias = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device)
            attention_bias = attention_bias.masked_fill(~attention_mask, float("-inf"))
        else:
            attention_bias = attention_mask.to(query.dtype)
        attention_bias = attention_bias.expand(batch_size, num_heads, query_len, key_len)
    output = xformers.ops.memory_efficient_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_bias=attention_bias
    )
    return output.transpose(1, 2)


def varlen_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    backend: str | None = None,
) -> torch.Tensor:
    """Attention over packed variable-length sequences; segment ``i`` attends only to itself.

    Args:
        query: ``[total_q, heads, D]``, the segments concatenated along the first axis.
        key, value: ``[total_k, heads, D]``.
        cu_seqlens_q, cu_seqlens_k: int32 ``[num_segments + 1]`` cumulative lengths starting at 0.
        max_seqlen_q, max_seqlen_k: the longest segment (used by flash-attn to size its launch grid).
        backend: ``None`` picks flash-attn for CUDA tensors when it is installed and SDPA per segment otherwise;
            ``"flash"`` insists on flash-attn; ``"sdpa"`` / ``"math"`` run one dense call per segment.

    Returns:
        ``[total_q, heads, D]``.
    """
    if cu_seqlens_q.shape != cu_seqlens_k.shape:
        raise ValueError(
            f"cu_seqlens_q {tuple(cu_seqlens_q.shape)} and cu_seqlens_k {tuple(cu_seqlens_k.shape)} must describe "
            "the same number of segments"
        )
    if backend is None:
        backend = "flash" if (query.is_cuda and is_flash_attn_available()) else "sdpa"
    _check_backend(backend)
    if backend == "flash":
        from flash_attn import flash_attn_varlen_func

        return flash_attn_varlen_func(
            query, key, value, cu_seqlens_q.int(), cu_seqlens_k.int(), max_seqlen_q, max_seqlen_k
        )
    if backend == "xformers":
        raise ValueError("varlen_attention supports backends 'flash', 'sdpa' and 'math', not 'xformers'")

    # One host sync for the boundaries, then one dense attention call per segment: cost stays linear in the
    # number of segments and no [total, total] block-diagonal mask is ever built.
    boundaries_q = cu_seqlens_q.tolist()
    boundaries_k = cu_seqlens_k.tolist()
    outputs = []
    for segment in range(len(boundaries_q) - 1):
        start_q, end_q = boundaries_q[segment], boundaries_q[segment + 1]
        start_k, end_k = boundaries_k[segment], boundaries_k[segment + 1]
        segment_query = query[start_q:end_q].transpose(0, 1).unsqueeze(0)
        segment_key = key[start_k:end_k].transpose(0, 1).unsqueeze(0)
        segment_value = value[start_k:end_k].transpose(0, 1).unsqueeze(0)
        segment_output = attention(segment_query, segment_key, segment_value, backend=backend)
        outputs.append(segment_output.squeeze(0).transpose(0, 1))
    return torch.cat(outputs, dim=0)
