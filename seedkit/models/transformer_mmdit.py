"""SeedTransformer3DModel: the hybrid-stream MMDiT behind seedkit's image and video models.

Architecture (the FLUX / HunyuanVideo / Seaweed hybrid stream):

1. Latents ``[B, C, F, H, W]`` (plus optional condition channels, e.g. an I2V first-frame latent and its mask) are cut
   into ``(pt, ph, pw)`` patches and projected to ``dim`` tokens; text embeddings go through a 2-layer MLP.
2. The timestep (``sigma * 1000``, as diffusers' flow-matching schedulers give it) and, when configured, a pooled
   text vector form one conditioning vector ``c``. adaLN modulation follows AdaSingle (PixArt-alpha, Seaweed): one
   shared projection ``c -> 6 x dim`` (shift, scale, gate for attention and for the MLP), to which every block adds
   its own learned table. The shared projection, the tables and the output projection start at zero (adaLN-zero),
   so every block is the identity at initialisation.
3. Dual-stream blocks: text and video tokens keep separate norms, QKV, output and MLP weights, and meet in one joint
   attention over ``[text, video]``.
4. Single-stream blocks: one sequence ``[text, video]`` with shared weights; attention and MLP run in parallel from
   one fused input projection (FLUX's single block).
5. Final adaLN norm, linear projection and unpatchify give the velocity ``noise - x0`` of the rectified-flow path.

Queries and keys get RMSNorm per head and 3D rotary embeddings; text tokens get multimodal RoPE positions
(see :mod:`seedkit.models.embeddings`). Padded prompt tokens are masked out as keys.

``forward_packed`` runs several samples of different sizes as one packed sequence (native-resolution training):
every token carries its own sample's timestep modulation and RoPE positions, and attention is restricted to each
sample's segment through :func:`seedkit.models.attention.varlen_attention`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.embeddings import PixArtAlphaTextProjection
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import USE_PEFT_BACKEND, scale_lora_layers, unscale_lora_layers
from torch import nn

from .attention import attention, varlen_attention
from .embeddings import (
    GridPositionEmbedding,
    RotaryPositionEmbedding3D,
    TimestepPooledTextEmbedding,
    apply_rotary_embedding,
    patchify,
    text_position_ids,
    unpatchify,
    video_position_ids,
)
from .normalization import ModulatedLayerNorm, build_qk_norm

# The layers whose output a block adds to the residual stream (zero them and the block is the identity).
DUAL_BLOCK_OUTPUTS = ("video_attention_out.", "text_attention_out.", "video_mlp.fc_out.", "text_mlp.fc_out.")
SINGLE_BLOCK_OUTPUTS = ("attention_mlp_out.",)
NUM_MODULATIONS = 6  # shift, scale, gate for attention; shift, scale, gate for the MLP


@dataclass
class JointSequence:
    """How the text and video streams of one forward pass are joined, positioned and attended.

    Padded batch (``forward``): the joint sequence of each sample is ``[text, video]``; ``attention_mask`` is ``None``
    or a boolean ``[B, 1, 1, L]`` mask hiding padded text keys; modulation vectors ``[B, dim]`` broadcast over tokens.

    Packed batch (``forward_packed``): batch size 1; the text stream holds every sample's text tokens, the video
    stream every sample's video tokens, and the joint sequence is ``[text_0, video_0, text_1, video_1, ...]``
    (``join_index`` / ``split_index`` reorder between the two); ``cu_seqlens`` bounds each sample's segment and the
    ``*_sample_index`` tensors say which sample every token belongs to, so modulation is per token.
    """

    rotary_cos: torch.Tensor  # [B or 1, L_joint, head_dim / 2]
    rotary_sin: torch.Tensor
    num_text_tokens: int
    attention_mask: torch.Tensor | None = None
    backend: str | None = None
    join_index: torch.Tensor | None = None
    split_index: torch.Tensor | None = None
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int = 0
    text_sample_index: torch.Tensor | None = None
    video_sample_index: torch.Tensor | None = None
    joint_sample_index: torch.Tensor | None = None

    def join(self, text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """``[B, Lt, ...]`` and ``[B, Lv, ...]`` -> joint ``[B, Lt + Lv, ...]``."""
        joint = torch.cat([text, video], dim=1)
        if self.join_index is not None:
            joint = joint.index_select(1, self.join_index)
        return joint

    def split(self, joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse of :meth:`join`."""
        if self.split_index is not None:
            joint = joint.index_select(1, self.split_index)
        return joint[:, : self.num_text_tokens], joint[:, self.num_text_tokens :]

    def per_token(self, values: torch.Tensor, stream: str) -> torch.Tensor:
        """Modulation ``[B or num_samples, dim]`` -> ``[B, 1, dim]`` (padded) or ``[1, L_stream, dim]`` (packed)."""
        index = {"text": self.text_sample_index, "video": self.video_sample_index, "joint": self.joint_sample_index}[
            stream
        ]
        if index is None:
            return values.unsqueeze(1)
        return values.index_select(0, index).unsqueeze(0)

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Joint attention, ``[B, L, heads, head_dim]`` in and out."""
        if self.cu_seqlens is None:
            output = attention(
                query.transpose(1, 2),
                key.transpose(1, 2),
                value.transpose(1, 2),
                attention_mask=self.attention_mask,
                backend=self.backend,
            )
            return output.transpose(1, 2)
        output = varlen_attention(
            query[0],
            key[0],
            value[0],
            self.cu_seqlens,
            self.cu_seqlens,
            self.max_seqlen,
            self.max_seqlen,
            backend=self.backend,
        )
        return output.unsqueeze(0)


class FeedForward(nn.Module):
    """``Linear -> GELU(tanh) -> Linear``, ``[..., dim] -> [..., dim]``."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc_in = nn.Linear(dim, hidden_dim)
        self.activation = nn.GELU(approximate="tanh")
        self.fc_out = nn.Linear(hidden_dim, dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.fc_in(hidden_states)
        hidden_states = self.activation(hidden_states)
        return self.fc_out(hidden_states)


class DualStreamTransformerBlock(nn.Module):
    """MMDiT block: separate weights for text and video tokens, one joint attention over both."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, mlp_ratio: float, qk_norm: str | None, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        mlp_hidden_dim = int(dim * mlp_ratio)

        self.video_modulation_table = nn.Parameter(torch.zeros(NUM_MODULATIONS, dim))
        self.text_modulation_table = nn.Parameter(torch.zeros(NUM_MODULATIONS, dim))

        self.video_norm1 = ModulatedLayerNorm(dim, eps)
        self.text_norm1 = ModulatedLayerNorm(dim, eps)
        self.video_qkv = nn.Linear(dim, 3 * dim)
        self.text_qkv = nn.Linear(dim, 3 * dim)
        self.video_query_norm = build_qk_norm(qk_norm, head_dim, eps)
        self.video_key_norm = build_qk_norm(qk_norm, head_dim, eps)
        self.text_query_norm = build_qk_norm(qk_norm, head_dim, eps)
        self.text_key_norm = build_qk_norm(qk_norm, head_dim, eps)
        self.video_attention_out = nn.Linear(dim, dim)
        self.text_attention_out = nn.Linear(dim, dim)

        self.video_norm2 = ModulatedLayerNorm(dim, eps)
        self.text_norm2 = ModulatedLayerNorm(dim, eps)
        self.video_mlp = FeedForward(dim, mlp_hidden_dim)
        self.text_mlp = FeedForward(dim, mlp_hidden_dim)

    def forward(
        self,
        text_hidden_states: torch.Tensor,
        video_hidden_states: torch.Tensor,
        modulation: torch.Tensor,
        sequence: JointSequence,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            text_hidden_states: ``[B, Lt, dim]``.
            video_hidden_states: ``[B, Lv, dim]``.
            modulation: shared timestep modulation ``[B or num_samples, 6, dim]``.
            sequence: joins the streams and runs the attention.

        Returns:
            ``(text_hidden_states, video_hidden_states)`` of the same shapes.
        """
        video_params = [sequence.per_token(p, "video") for p in (modulation + self.video_modulation_table).unbind(1)]
        text_params = [sequence.per_token(p, "text") for p in (modulation + self.text_modulation_table).unbind(1)]
        video_shift_attn, video_scale_attn, video_gate_attn, video_shift_mlp, video_scale_mlp, video_gate_mlp = (
            video_params
        )
        text_shift_attn, text_scale_attn, text_gate_attn, text_shift_mlp, text_scale_mlp, text_gate_mlp = text_params

        # 1. Joint attention: per-stream projections and QK norms, one attention over [text, video].
        norm_video = self.video_norm1(video_hidden_states, video_shift_attn, video_scale_attn)
        norm_text = self.text_norm1(text_hidden_states, text_shift_attn, text_scale_attn)
        video_query, video_key, video_value = (
            self.video_qkv(norm_video).unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(-3)
        )
        text_query, text_key, text_value = (
            self.text_qkv(norm_text).unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(-3)
        )
        video_query = self.video_query_norm(video_query)
        video_key = self.video_key_norm(video_key)
        text_query = self.text_query_norm(text_query)
        text_key = self.text_key_norm(text_key)

        query = sequence.join(text_query, video_query)
        key = sequence.join(text_key, video_key)
        value = sequence.join(text_value, video_value)
        query = apply_rotary_embedding(query, sequence.rotary_cos, sequence.rotary_sin)
        key = apply_rotary_embedding(key, sequence.rotary_cos, sequence.rotary_sin)
        attended = sequence.attend(query, key, value).flatten(-2)
        text_attended, video_attended = sequence.split(attended)

        video_hidden_states = torch.addcmul(
            video_hidden_states, video_gate_attn, self.video_attention_out(video_attended)
        )
        text_hidden_states = torch.addcmul(text_hidden_states, text_gate_attn, self.text_attention_out(text_attended))

        # 2. Per-stream MLPs.
        norm_video = self.video_norm2(video_hidden_states, video_shift_mlp, video_scale_mlp)
        norm_text = self.text_norm2(text_hidden_states, text_shift_mlp, text_scale_mlp)
        video_hidden_states = torch.addcmul(video_hidden_states, video_gate_mlp, self.video_mlp(norm_video))
        text_hidden_states = torch.addcmul(text_hidden_states, text_gate_mlp, self.text_mlp(norm_text))
        return text_hidden_states, video_hidden_states


class SingleStreamTransformerBlock(nn.Module):
    """Parallel attention + MLP block over the joint sequence, fed by one fused input projection."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, mlp_ratio: float, qk_norm: str | None, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dim = dim
        self.mlp_hidden_dim = int(dim * mlp_ratio)

        # Single blocks use the attention triple (shift, scale, gate) of the shared modulation.
        self.modulation_table = nn.Parameter(torch.zeros(3, dim))
        self.norm = ModulatedLayerNorm(dim, eps)
        self.qkv_mlp_in = nn.Linear(dim, 3 * dim + self.mlp_hidden_dim)
        self.query_norm = build_qk_norm(qk_norm, head_dim, eps)
        self.key_norm = build_qk_norm(qk_norm, head_dim, eps)
        self.mlp_activation = nn.GELU(approximate="tanh")
        self.attention_mlp_out = nn.Linear(dim + self.mlp_hidden_dim, dim)

    def forward(self, hidden_states: torch.Tensor, modulation: torch.Tensor, sequence: JointSequence) -> torch.Tensor:
        """``hidden_states [B, L_joint, dim]``, ``modulation [B or num_samples, 6, dim]`` -> ``[B, L_joint, dim]``."""
        shift, scale, gate = [
            sequence.per_token(p, "joint") for p in (modulation[:, :3] + self.modulation_table).unbind(1)
        ]
        norm_hidden_states = self.norm(hidden_states, shift, scale)
        qkv, mlp_hidden_states = self.qkv_mlp_in(norm_hidden_states).split(
            [3 * self.dim, self.mlp_hidden_dim], dim=-1
        )
        query, key, value = qkv.unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(-3)
        query = self.query_norm(query)
        key = self.key_norm(key)
        query = apply_rotary_embedding(query, sequence.rotary_cos, sequence.rotary_sin)
        key = apply_rotary_embedding(key, sequence.rotary_cos, sequence.rotary_sin)
        attended = sequence.attend(query, key, value).flatten(-2)
        mlp_hidden_states = self.mlp_activation(mlp_hidden_states)
        output = self.attention_mlp_out(torch.cat([attended, mlp_hidden_states], dim=-1))
        return torch.addcmul(hidden_states, gate, output)


def _recut_patch_axis(weights: torch.Tensor, dim: int, old: int, new: int, merge: str) -> torch.Tensor:
    """Re-cut one patch axis ``dim`` of ``weights`` from ``old`` to ``new`` sub-positions (one divides the other).

    Shrinking merges each run of ``old / new`` sub-positions (``merge``: "sum" for input weights, so a constant
    input gives the same sum; "mean" for output weights); growing gives sub-position ``j`` the weights of old
    sub-position ``j // (new / old)``, divided by ``new / old`` for summed (input) weights.
    """
    if new <= old:
        grouped = weights.unflatten(dim, (new, old // new))
        return grouped.sum(dim + 1) if merge == "sum" else grouped.mean(dim + 1)
    repeats = new // old
    spread = weights.repeat_interleave(repeats, dim=dim)
    return spread / repeats if merge == "sum" else spread


# RoPE sees the video grid's own positions; a re-cut model (with_patch_size) scales them.
UNSCALED_ROPE_POSITIONS: tuple[float, float, float] = (1.0, 1.0, 1.0)


class SeedTransformer3DModel(ModelMixin, ConfigMixin, PeftAdapterMixin):
    r"""Hybrid-stream MMDiT for video and images (``F = 1``) trained with rectified flow.

    Args:
        in_channels: latent channels.
        out_channels: predicted channels (``None``: ``in_channels``).
        patch_size: ``(pt, ph, pw)`` patch of the latent grid per token.
        num_attention_heads, attention_head_dim: the model width is their product.
        num_dual_layers: dual-stream (separate text / video weights) blocks.
        num_single_layers: single-stream blocks after them.
        mlp_ratio: MLP hidden width over model width.
        text_embed_dim: width of ``encoder_hidden_states``.
        pooled_projection_dim: width of the pooled text vector added to the timestep embedding (``None``: none).
        condition_channels: channels of the ``condition`` tensor concatenated to the latents before patch embedding
            (image-to-video: condition latents + a mask channel). ``0`` disables conditioning.
        qk_norm: ``"rms_norm"``, ``"layer_norm"`` or ``None``.
        rope_axes_dim: ``(t, h, w)`` head channels rotated by each position axis; sums to ``attention_head_dim``.
        rope_theta: RoPE base.
        rope_position_scale: ``(t, h, w)`` factors on the video grid positions RoPE sees (text positions start
            after the scaled grid). ``(1, 0.5, 0.5)`` makes a ``(1, 1, 1)``-patch grid span the rotary distances of a
            ``(1, 2, 2)``-patch one; :meth:`with_patch_size` sets it when it re-cuts a model's patches.
        eps: norm epsilon.
        mark_first_frame: add a learned vector (``first_frame_embedding``, zero at init) to the tokens of the first
            latent frame. A causal video VAE encodes frame 0 alone and every later latent frame from several frames,
            so one red square has unrelated latents in frame 0 and after it (shapes-tiny's VAE decodes frame 0's red
            code in a later frame as teal). Rotary positions are relative, so without this a token can tell which
            code to use only indirectly.
        absolute_position_embedding: add :class:`~seedkit.models.embeddings.GridPositionEmbedding` (each token's
            distance to both ends of every grid axis, zero at init) to the video tokens, so a token knows its frame
            index and where the frame edges are, which RoPE's relative offsets give only indirectly.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["DualStreamTransformerBlock", "SingleStreamTransformerBlock"]
    _skip_layerwise_casting_patterns = ["patch_embedder", "norm", "modulation"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 16,
        out_channels: int | None = None,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        num_attention_heads: int = 24,
        attention_head_dim: int = 128,
        num_dual_layers: int = 12,
        num_single_layers: int = 24,
        mlp_ratio: float = 4.0,
        text_embed_dim: int = 4096,
        pooled_projection_dim: int | None = None,
        condition_channels: int = 0,
        qk_norm: str | None = "rms_norm",
        rope_axes_dim: tuple[int, int, int] = (16, 56, 56),
        rope_theta: float = 10000.0,
        rope_position_scale: tuple[float, float, float] = UNSCALED_ROPE_POSITIONS,
        eps: float = 1e-6,
        mark_first_frame: bool = False,
        absolute_position_embedding: bool = False,
    ):
        super().__init__()
        if sum(rope_axes_dim) != attention_head_dim:
            raise ValueError(
                f"rope_axes_dim {tuple(rope_axes_dim)} must sum to attention_head_dim={attention_head_dim}"
            )
        if len(patch_size) != 3:
            raise ValueError(f"patch_size must be (pt, ph, pw), got {patch_size!r}")
        if len(rope_position_scale) != 3 or min(rope_position_scale) <= 0:
            raise ValueError(
                f"rope_position_scale must be three positive factors (t, h, w), got {rope_position_scale!r}"
            )
        dim = num_attention_heads * attention_head_dim
        out_channels = out_channels or in_channels
        patch_volume = math.prod(patch_size)
        self.inner_dim = dim
        self.out_channels = out_channels

        # 1. Input embeddings.
        self.patch_embedder = nn.Linear((in_channels + condition_channels) * patch_volume, dim)
        self.text_embedder = PixArtAlphaTextProjection(text_embed_dim, dim, act_fn="gelu_tanh")
        self.condition_embedder = TimestepPooledTextEmbedding(dim, pooled_projection_dim)
        self.timestep_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, NUM_MODULATIONS * dim))
        self.rotary_embedding = RotaryPositionEmbedding3D(tuple(rope_axes_dim), rope_theta)
        self.first_frame_embedding = nn.Parameter(torch.zeros(dim)) if mark_first_frame else None
        self.grid_position_embedding = GridPositionEmbedding(dim) if absolute_position_embedding else None

        # 2. Transformer blocks.
        self.dual_stream_blocks = nn.ModuleList(
            [
                DualStreamTransformerBlock(dim, num_attention_heads, attention_head_dim, mlp_ratio, qk_norm, eps)
                for _ in range(num_dual_layers)
            ]
        )
        self.single_stream_blocks = nn.ModuleList(
            [
                SingleStreamTransformerBlock(dim, num_attention_heads, attention_head_dim, mlp_ratio, qk_norm, eps)
                for _ in range(num_single_layers)
            ]
        )

        # 3. Output head.
        self.output_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.norm_out = ModulatedLayerNorm(dim, eps)
        self.proj_out = nn.Linear(dim, out_channels * patch_volume)

        # adaLN-zero: blocks start as the identity and the model starts by predicting zero velocity.
        for layer in (self.timestep_modulation[1], self.output_modulation[1], self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

        self.gradient_checkpointing = False

    # ------------------------------------------------------------------------------------------------------------
    # helpers

    @staticmethod
    def _parse_attention_kwargs(attention_kwargs: dict | None) -> tuple[str | None, float]:
        attention_kwargs = dict(attention_kwargs or {})
        lora_scale = attention_kwargs.pop("scale", 1.0)
        backend = attention_kwargs.pop("backend", None)
        if attention_kwargs:
            raise ValueError(
                f"unknown attention_kwargs {sorted(attention_kwargs)}; valid keys: 'backend', 'scale' (LoRA scale)"
            )
        return backend, lora_scale

    def _mark_first_frame(self, video_hidden_states: torch.Tensor, frame_index: torch.Tensor) -> torch.Tensor:
        """Add ``first_frame_embedding`` to the tokens ``[..., L, dim]`` whose ``frame_index [L]`` is 0."""
        if self.first_frame_embedding is None:
            return video_hidden_states
        is_first = (frame_index == 0).to(video_hidden_states.dtype)[:, None]
        return video_hidden_states + is_first * self.first_frame_embedding.to(video_hidden_states.dtype)

    def _add_grid_positions(
        self,
        video_hidden_states: torch.Tensor,
        positions: list[torch.Tensor],
        grid_sizes: list[tuple[int, int, int]],
    ) -> torch.Tensor:
        """Add the absolute position embedding (if any) to tokens ``[..., L, dim]``: per sample, its positions
        ``[L_i, 3]`` in its grid ``grid_sizes[i]``, in the tokens' order."""
        if self.grid_position_embedding is None:
            return video_hidden_states
        extents = [sample.new_tensor(grid).expand_as(sample) for sample, grid in zip(positions, grid_sizes)]
        embedded = self.grid_position_embedding(torch.cat(positions), torch.cat(extents))
        return video_hidden_states + embedded.to(video_hidden_states.dtype)

    def _rotary_position_ids(
        self, num_text_tokens: int, grid_size: tuple[int, int, int], video_positions: torch.Tensor
    ) -> torch.Tensor:
        """``[num_text_tokens + L, 3]`` RoPE positions of ``[text, video]``: the video grid positions ``[L, 3]`` times
        ``rope_position_scale``, the text on the diagonal after the scaled grid."""
        scale = tuple(float(factor) for factor in self.config.rope_position_scale)
        scaled_grid = tuple(size * factor for size, factor in zip(grid_size, scale))
        text_positions = text_position_ids(num_text_tokens, scaled_grid, device=video_positions.device)
        return torch.cat([text_positions, video_positions * video_positions.new_tensor(scale)])

    def _grid_size(self, latent_shape: tuple[int, ...]) -> tuple[int, int, int]:
        num_frames, height, width = latent_shape[-3:]
        patch_t, patch_h, patch_w = self.config.patch_size
        return num_frames // patch_t, height // patch_h, width // patch_w

    def _concat_condition(self, hidden_states: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """Append the condition channels (``[B, condition_channels, F, H, W]``) to the latents."""
        condition_channels = self.config.condition_channels
        if condition_channels == 0:
            if condition is not None:
                raise ValueError("got a condition tensor but the model was built with condition_channels=0")
            return hidden_states
        if condition is None:
            # An all-zero condition (zero mask: no frame given) is the unconditional case the model is trained on
            # alongside I2V, so one model serves text-to-video and image-to-video.
            shape = (hidden_states.shape[0], condition_channels, *hidden_states.shape[2:])
            condition = hidden_states.new_zeros(shape)
        expected = (hidden_states.shape[0], condition_channels, *hidden_states.shape[2:])
        if tuple(condition.shape) != expected:
            raise ValueError(f"condition has shape {tuple(condition.shape)}, expected {expected}")
        return torch.cat([hidden_states, condition.to(hidden_states.dtype)], dim=1)

    @staticmethod
    def _broadcast_timestep(timestep: torch.Tensor | float, batch_size: int, device: torch.device) -> torch.Tensor:
        """A scalar, ``[1]`` or ``[batch_size]`` timestep -> ``[batch_size]``."""
        timestep = torch.as_tensor(timestep, device=device).reshape(-1)
        if timestep.shape[0] not in (1, batch_size):
            raise ValueError(f"got {timestep.shape[0]} timesteps for {batch_size} samples; pass 1 or {batch_size}")
        return timestep.expand(batch_size)

    def _check_pooled(self, pooled_projections: torch.Tensor | None) -> None:
        if self.config.pooled_projection_dim is None and pooled_projections is not None:
            raise ValueError("got pooled_projections but the model was built with pooled_projection_dim=None")
        if self.config.pooled_projection_dim is not None and pooled_projections is None:
            raise ValueError(
                f"the model needs pooled_projections of width {self.config.pooled_projection_dim} "
                "(it was built with pooled_projection_dim set)"
            )

    def _timestep_modulation(
        self, timestep: torch.Tensor, pooled_projections: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``timestep [N]`` -> conditioning ``[N, dim]`` and shared block modulation ``[N, 6, dim]``."""
        conditioning = self.condition_embedder(timestep, pooled_projections)
        modulation = self.timestep_modulation(conditioning).unflatten(-1, (NUM_MODULATIONS, self.inner_dim))
        return conditioning, modulation

    def _run_blocks(
        self,
        text_hidden_states: torch.Tensor,
        video_hidden_states: torch.Tensor,
        modulation: torch.Tensor,
        sequence: JointSequence,
    ) -> torch.Tensor:
        """Dual-stream then single-stream blocks; returns the video tokens ``[B, Lv, dim]``."""
        checkpointing = torch.is_grad_enabled() and self.gradient_checkpointing
        for block in self.dual_stream_blocks:
            if checkpointing:
                text_hidden_states, video_hidden_states = self._gradient_checkpointing_func(
                    block, text_hidden_states, video_hidden_states, modulation, sequence
                )
            else:
                text_hidden_states, video_hidden_states = block(
                    text_hidden_states, video_hidden_states, modulation, sequence
                )

        hidden_states = sequence.join(text_hidden_states, video_hidden_states)
        for block in self.single_stream_blocks:
            if checkpointing:
                hidden_states = self._gradient_checkpointing_func(block, hidden_states, modulation, sequence)
            else:
                hidden_states = block(hidden_states, modulation, sequence)
        _, video_hidden_states = sequence.split(hidden_states)
        return video_hidden_states

    # ------------------------------------------------------------------------------------------------------------
    # patch re-cutting

    def with_patch_size(self, patch_size: tuple[int, int, int]) -> SeedTransformer3DModel:
        """A copy of this model with patches of ``patch_size``, its weights re-cut so a fine-tune starts from what
        this one knows (e.g. ``(1, 2, 2) -> (1, 1, 1)``: 4x the tokens, each latent position its own token).

        Per axis, the old and new patch lengths must divide one another. Smaller patches: a new token's patch
        embedding sums the old weights of the sub-positions it merges with, so latents constant over an old patch
        embed exactly as before; the output projection averages the old rows of those sub-positions. Larger patches:
        the embedding weights are shared out evenly over the new sub-positions, the output rows repeated. RoPE
        positions are scaled by new / old (``rope_position_scale``), so the grid spans the same rotary distances.
        Every other weight is copied. The copy is close to, not equal to, the original: tokens that shared a patch now
        sit at different RoPE positions, and their number changes the video keys' share of attention against text.
        """
        old_patch = tuple(int(size) for size in self.config.patch_size)
        new_patch = tuple(int(size) for size in patch_size)
        if len(new_patch) != 3 or min(new_patch) < 1:
            raise ValueError(f"patch_size must be three positive lengths (pt, ph, pw), got {patch_size!r}")
        for old, new in zip(old_patch, new_patch):
            if max(old, new) % min(old, new):
                raise ValueError(
                    f"cannot re-cut patches {old_patch} into {new_patch}: per axis one length must divide the other"
                )
        architecture = {key: value for key, value in self.config.items() if not key.startswith("_")}
        architecture["patch_size"] = new_patch
        architecture["rope_position_scale"] = tuple(
            float(scale) * new / old for scale, new, old in zip(self.config.rope_position_scale, new_patch, old_patch)
        )
        resized = type(self).from_config(architecture).to(self.device)

        state = self.state_dict()
        input_channels = self.config.in_channels + self.config.condition_channels
        embedding = state["patch_embedder.weight"].unflatten(1, (input_channels, *old_patch))  # [dim, c, pt, ph, pw]
        projection = state["proj_out.weight"].unflatten(0, (self.out_channels, *old_patch))  # [c, pt, ph, pw, dim]
        projection_bias = state["proj_out.bias"].unflatten(0, (self.out_channels, *old_patch))  # [c, pt, ph, pw]
        for axis, (old, new) in enumerate(zip(old_patch, new_patch)):
            embedding = _recut_patch_axis(embedding, 2 + axis, old, new, merge="sum")
            projection = _recut_patch_axis(projection, 1 + axis, old, new, merge="mean")
            projection_bias = _recut_patch_axis(projection_bias, 1 + axis, old, new, merge="mean")
        state["patch_embedder.weight"] = embedding.flatten(1)
        state["proj_out.weight"] = projection.flatten(0, 3)
        state["proj_out.bias"] = projection_bias.flatten(0)
        resized.load_state_dict(state, strict=True)
        return resized if self.dtype == resized.dtype else resized.to(dtype=self.dtype)

    def with_depth(self, num_dual_layers: int, num_single_layers: int) -> SeedTransformer3DModel:
        """A deeper copy of this model that computes the same function, so a fine-tune adds capacity without
        starting over (function-preserving growth, as in Net2Net, Chen et al. 2016, arXiv:1511.05641).

        Each depth must be a multiple ``k`` of this model's. Every block is followed by ``k - 1`` copies of itself
        whose output projections are zero; each block adds its gated output to the residual stream, so a copy starts
        as the identity and its first gradients go to those projections. Copies rather than fresh blocks: they start
        with attention patterns and MLP features that already suit the stream they read.
        """
        # block list -> (old depth, new depth, the output layers a copy starts with at zero)
        growth = {
            "dual_stream_blocks": (self.config.num_dual_layers, int(num_dual_layers), DUAL_BLOCK_OUTPUTS),
            "single_stream_blocks": (self.config.num_single_layers, int(num_single_layers), SINGLE_BLOCK_OUTPUTS),
        }
        for blocks, (old, new, _) in growth.items():
            if new < old or new % old:
                kind = blocks.removesuffix("_stream_blocks")
                raise ValueError(
                    f"cannot grow {old} {kind}-stream blocks into {new}: the new depth must be a multiple of the old "
                    f"one ({old}, {2 * old}, {3 * old}, ...)"
                )
        architecture = {key: value for key, value in self.config.items() if not key.startswith("_")}
        architecture.update(num_dual_layers=int(num_dual_layers), num_single_layers=int(num_single_layers))
        deeper = type(self).from_config(architecture).to(self.device)

        state = {}
        for name, tensor in self.state_dict().items():
            blocks, _, rest = name.partition(".")
            if blocks not in growth:
                state[name] = tensor
                continue
            index, _, parameter = rest.partition(".")
            old, new, outputs = growth[blocks]
            factor = new // old
            for copy in range(factor):
                zeroed = copy > 0 and parameter.startswith(outputs)
                state[f"{blocks}.{int(index) * factor + copy}.{parameter}"] = (
                    torch.zeros_like(tensor) if zeroed else tensor.clone()
                )
        deeper.load_state_dict(state, strict=True)
        return deeper if self.dtype == deeper.dtype else deeper.to(dtype=self.dtype)

    # ------------------------------------------------------------------------------------------------------------
    # forward

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        pooled_projections: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
        attention_kwargs: dict | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Predict the flow velocity ``noise - x0``.

        Args:
            hidden_states: noisy latents ``[B, in_channels, F, H, W]`` (``F = 1`` for images).
            timestep: ``[B]`` (or a scalar) in ``[0, 1000]``: ``sigma * 1000`` as diffusers' flow-matching
                schedulers produce it.
            encoder_hidden_states: text embeddings ``[B, L, text_embed_dim]``.
            encoder_attention_mask: ``[B, L]``, 1 for real tokens and 0 for padding; ``None``: no padding.
            pooled_projections: ``[B, pooled_projection_dim]``, required iff the model has a pooled projection.
            condition: ``[B, condition_channels, F, H, W]``; ``None`` with ``condition_channels > 0`` means all
                zeros (no conditioning frames).
            attention_kwargs: ``{"backend": "sdpa" | "flash" | "xformers" | "math", "scale": lora_scale}``.
            return_dict: return a :class:`Transformer2DModelOutput` instead of a tuple.

        Returns:
            ``Transformer2DModelOutput(sample=[B, out_channels, F, H, W])``.
        """
        backend, lora_scale = self._parse_attention_kwargs(attention_kwargs)
        if USE_PEFT_BACKEND:
            scale_lora_layers(self, lora_scale)
        try:
            output = self._forward(
                hidden_states,
                timestep,
                encoder_hidden_states,
                encoder_attention_mask,
                pooled_projections,
                condition,
                backend,
            )
        finally:
            if USE_PEFT_BACKEND:
                unscale_lora_layers(self, lora_scale)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    def _forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None,
        pooled_projections: torch.Tensor | None,
        condition: torch.Tensor | None,
        backend: str | None,
    ) -> torch.Tensor:
        if hidden_states.ndim != 5:
            raise ValueError(f"hidden_states must be [B, C, F, H, W], got shape {tuple(hidden_states.shape)}")
        self._check_pooled(pooled_projections)
        batch_size = hidden_states.shape[0]
        patch_size = tuple(self.config.patch_size)
        grid_size = self._grid_size(hidden_states.shape)
        num_text_tokens = encoder_hidden_states.shape[1]

        # 1. Condition channels and patch / text embeddings.
        hidden_states = self._concat_condition(hidden_states, condition)
        video_positions = video_position_ids(grid_size, device=hidden_states.device)
        video_hidden_states = self.patch_embedder(patchify(hidden_states, patch_size))
        video_hidden_states = self._mark_first_frame(video_hidden_states, video_positions[:, 0])
        video_hidden_states = self._add_grid_positions(video_hidden_states, [video_positions], [grid_size])
        text_hidden_states = self.text_embedder(encoder_hidden_states)

        # 2. Timestep (+ pooled text) conditioning.
        timestep = self._broadcast_timestep(timestep, batch_size, hidden_states.device)
        conditioning, modulation = self._timestep_modulation(timestep, pooled_projections)

        # 3. Rotary positions ([text, video]) and the padding mask over text keys.
        position_ids = self._rotary_position_ids(num_text_tokens, grid_size, video_positions)
        rotary_cos, rotary_sin = self.rotary_embedding(position_ids.unsqueeze(0))
        attention_mask = None
        if encoder_attention_mask is not None and not bool(encoder_attention_mask.bool().all()):
            # Only build a mask when some prompt is padded, so unpadded batches keep SDPA's mask-free fast path.
            video_keys = encoder_attention_mask.new_ones(batch_size, video_hidden_states.shape[1], dtype=torch.bool)
            attention_mask = torch.cat([encoder_attention_mask.bool(), video_keys], dim=1)[:, None, None, :]
        sequence = JointSequence(
            rotary_cos=rotary_cos,
            rotary_sin=rotary_sin,
            num_text_tokens=num_text_tokens,
            attention_mask=attention_mask,
            backend=backend,
        )

        # 4. Dual-stream then single-stream blocks.
        video_hidden_states = self._run_blocks(text_hidden_states, video_hidden_states, modulation, sequence)

        # 5. Output norm, projection and unpatchify.
        shift, scale = self.output_modulation(conditioning).unsqueeze(1).chunk(2, dim=-1)
        video_hidden_states = self.norm_out(video_hidden_states, shift, scale)
        video_hidden_states = self.proj_out(video_hidden_states)
        return unpatchify(video_hidden_states, grid_size, patch_size)

    def forward_packed(
        self,
        hidden_states: list[torch.Tensor],
        timestep: torch.Tensor,
        encoder_hidden_states: list[torch.Tensor],
        encoder_attention_mask: list[torch.Tensor] | None = None,
        pooled_projections: torch.Tensor | None = None,
        condition: list[torch.Tensor] | None = None,
        attention_kwargs: dict | None = None,
    ) -> list[torch.Tensor]:
        """Native-resolution packing: N samples of different sizes in one sequence, no cross-sample attention.

        Sample ``i`` becomes the segment ``[text_i, video_i]`` of one packed sequence; padded text tokens are
        dropped, each token is modulated by its own sample's timestep and positioned by its own sample's RoPE grid,
        and attention runs per segment (:func:`varlen_attention`). Output ``i`` equals ``forward`` on sample ``i``
        alone.

        Args:
            hidden_states: N latents ``[in_channels, F_i, H_i, W_i]``.
            timestep: ``[N]`` in ``[0, 1000]``.
            encoder_hidden_states: N text embeddings ``[L_i, text_embed_dim]``.
            encoder_attention_mask: N masks ``[L_i]`` (1 keep, 0 pad) or ``None``.
            pooled_projections: ``[N, pooled_projection_dim]`` or ``None``.
            condition: N tensors ``[condition_channels, F_i, H_i, W_i]`` or ``None``.
            attention_kwargs: as in :meth:`forward`.

        Returns:
            N velocities ``[out_channels, F_i, H_i, W_i]``.
        """
        num_samples = len(hidden_states)
        if len(encoder_hidden_states) != num_samples:
            raise ValueError(
                f"got {num_samples} latents but {len(encoder_hidden_states)} encoder_hidden_states; pass one per sample"
            )
        for name, values in (("encoder_attention_mask", encoder_attention_mask), ("condition", condition)):
            if values is not None and len(values) != num_samples:
                raise ValueError(f"got {num_samples} latents but {len(values)} {name}; pass one per sample or None")
        self._check_pooled(pooled_projections)
        backend, lora_scale = self._parse_attention_kwargs(attention_kwargs)
        if USE_PEFT_BACKEND:
            scale_lora_layers(self, lora_scale)
        try:
            return self._forward_packed(
                hidden_states, timestep, encoder_hidden_states, encoder_attention_mask, pooled_projections, condition,
                backend,
            )
        finally:
            if USE_PEFT_BACKEND:
                unscale_lora_layers(self, lora_scale)

    def _forward_packed(
        self,
        hidden_states: list[torch.Tensor],
        timestep: torch.Tensor,
        encoder_hidden_states: list[torch.Tensor],
        encoder_attention_mask: list[torch.Tensor] | None,
        pooled_projections: torch.Tensor | None,
        condition: list[torch.Tensor] | None,
        backend: str | None,
    ) -> list[torch.Tensor]:
        num_samples = len(hidden_states)
        device = hidden_states[0].device
        patch_size = tuple(self.config.patch_size)

        # 1. Per-sample patchify and text selection, then one embedding call over all tokens.
        grid_sizes, video_patches, text_embeddings, position_ids, video_positions_list = [], [], [], [], []
        for index, latents in enumerate(hidden_states):
            sample_condition = None if condition is None else condition[index].unsqueeze(0)
            latents = self._concat_condition(latents.unsqueeze(0), sample_condition)
            grid_size = self._grid_size(latents.shape)
            grid_sizes.append(grid_size)
            video_patches.append(patchify(latents, patch_size)[0])
            text = encoder_hidden_states[index]
            if encoder_attention_mask is not None:
                text = text[encoder_attention_mask[index].bool()]
            text_embeddings.append(text)
            video_positions = video_position_ids(grid_size, device=device)
            position_ids.append(self._rotary_position_ids(text.shape[0], grid_size, video_positions))
            video_positions_list.append(video_positions)
        text_lengths = torch.tensor([text.shape[0] for text in text_embeddings], device=device)
        video_lengths = torch.tensor([patches.shape[0] for patches in video_patches], device=device)
        video_hidden_states = self.patch_embedder(torch.cat(video_patches))
        video_hidden_states = self._mark_first_frame(video_hidden_states, torch.cat(video_positions_list)[:, 0])
        video_hidden_states = self._add_grid_positions(video_hidden_states, video_positions_list, grid_sizes)
        video_hidden_states = video_hidden_states.unsqueeze(0)
        text_hidden_states = self.text_embedder(torch.cat(text_embeddings)).unsqueeze(0)

        # 2. Per-sample conditioning; tokens pick their sample's row through the *_sample_index tensors.
        timestep = self._broadcast_timestep(timestep, num_samples, device)
        conditioning, modulation = self._timestep_modulation(timestep, pooled_projections)
        sample_ids = torch.arange(num_samples, device=device)
        segment_lengths = text_lengths + video_lengths

        # 3. Segment layout [text_0, video_0, text_1, video_1, ...] as a permutation of [all text, all video].
        total_text = int(text_lengths.sum())
        text_starts = torch.cumsum(text_lengths, 0) - text_lengths
        video_starts = torch.cumsum(video_lengths, 0) - video_lengths + total_text
        join_index = torch.cat(
            [
                torch.cat(
                    [
                        torch.arange(int(text_starts[i]), int(text_starts[i] + text_lengths[i]), device=device),
                        torch.arange(int(video_starts[i]), int(video_starts[i] + video_lengths[i]), device=device),
                    ]
                )
                for i in range(num_samples)
            ]
        )
        cu_seqlens = torch.zeros(num_samples + 1, dtype=torch.int32, device=device)
        cu_seqlens[1:] = torch.cumsum(segment_lengths, 0)
        rotary_cos, rotary_sin = self.rotary_embedding(torch.cat(position_ids).unsqueeze(0))
        sequence = JointSequence(
            rotary_cos=rotary_cos,
            rotary_sin=rotary_sin,
            num_text_tokens=total_text,
            backend=backend,
            join_index=join_index,
            split_index=torch.argsort(join_index),
            cu_seqlens=cu_seqlens,
            max_seqlen=int(segment_lengths.max()),
            text_sample_index=torch.repeat_interleave(sample_ids, text_lengths),
            video_sample_index=torch.repeat_interleave(sample_ids, video_lengths),
            joint_sample_index=torch.repeat_interleave(sample_ids, segment_lengths),
        )

        # 4. Dual-stream then single-stream blocks.
        video_hidden_states = self._run_blocks(text_hidden_states, video_hidden_states, modulation, sequence)

        # 5. Per-token output modulation, projection, then split and unpatchify per sample.
        shift, scale = self.output_modulation(conditioning).chunk(2, dim=-1)
        shift = sequence.per_token(shift, "video")
        scale = sequence.per_token(scale, "video")
        video_hidden_states = self.norm_out(video_hidden_states, shift, scale)
        video_hidden_states = self.proj_out(video_hidden_states)[0]
        outputs = video_hidden_states.split(video_lengths.tolist(), dim=0)
        return [
            unpatchify(tokens.unsqueeze(0), grid_size, patch_size)[0]
            for tokens, grid_size in zip(outputs, grid_sizes)
        ]
