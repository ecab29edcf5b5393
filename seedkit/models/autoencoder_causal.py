"""Causal video VAE: ``1 + 4k`` frames to ``1 + k`` latent frames, 8x (or 16x) spatial compression.

The design follows the causal video autoencoders of Seaweed / Seedance / Wan: every temporal convolution looks only at
the current and past frames, so the first frame is coded on its own (an image is a one-frame video) and a long clip
can be processed chunk by chunk with a small cache of past frames, giving exactly the same result as the whole clip.

Two choices make chunked processing exact:

* Normalisation is per frame (GroupNorm over channel groups and pixels of one frame, :class:`FrameGroupNorm`). A
  GroupNorm over ``(C, F, H, W)`` would mix statistics of future frames into the past, breaking causality and chunk
  equivalence.
* The causal state is an explicit :class:`CausalConvCache` passed through ``forward``; modules hold no hidden state.

Temporal padding of the first frame is ``"replicate"`` (the first frame is repeated into the past, so a static clip
looks static to every layer) or ``"zeros"`` (as in Wan), chosen by the ``temporal_padding_mode`` config. Spatial
padding is zeros.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import AutoencoderMixin, DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook
from einops import rearrange

TEMPORAL_PADDING_MODES = ("replicate", "zeros")


@dataclass
class CausalConvCache:
    """The past frames every causal layer needs to continue a clip chunk by chunk.

    Create one empty cache per clip (and per direction: one for encoding, another for decoding), then pass it to
    :meth:`CausalVideoAutoencoder.encode_chunk` / :meth:`CausalVideoAutoencoder.decode_chunk` for each chunk in
    order. Each causal layer reads and replaces the entry under its own key (its module name); an absent entry means
    "this is the first chunk", so the layer pads the past with the first frame (or zeros).

    Attributes:
        frames: layer name -> the last input frames of that layer, ``[B, C, kernel_t - 1, H, W]``.
    """

    frames: dict[str, torch.Tensor] = field(default_factory=dict)

    def get(self, key: str) -> torch.Tensor | None:
        return self.frames.get(key)

    def update(self, key: str, past_frames: torch.Tensor) -> None:
        # A clone, so the cache does not keep the whole chunk's activation alive through a view.
        self.frames[key] = past_frames.detach().clone()

    @property
    def is_empty(self) -> bool:
        return not self.frames

    def clear(self) -> None:
        self.frames.clear()


# ---------------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------------


class CausalConv3d(nn.Conv3d):
    """A Conv3d that pads time only on the past (``kernel_t - 1`` frames) and pads space symmetrically with zeros.

    Input ``[B, C_in, F, H, W]``, output ``[B, C_out, F, H / stride, W / stride]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int] = 3,
        spatial_stride: int = 1,
        temporal_padding_mode: str = "replicate",
    ) -> None:
        if isinstance(kernel_size, int):
            kernel_size = (kernel_size, kernel_size, kernel_size)
        if temporal_padding_mode not in TEMPORAL_PADDING_MODES:
            raise ValueError(
                f"temporal_padding_mode must be one of {TEMPORAL_PADDING_MODES}, got {temporal_padding_mode!r}"
            )
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=(1, spatial_stride, spatial_stride),
            padding=(0, kernel_size[1] // 2, kernel_size[2] // 2),
        )
        self.temporal_padding = kernel_size[0] - 1
        self.temporal_padding_mode = temporal_padding_mode
        self.cache_key = ""  # set to the module name by CausalVideoAutoencoder

    def forward(self, hidden_states: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        if self.temporal_padding > 0:
            past_frames = cache.get(self.cache_key) if cache is not None else None
            if past_frames is None and hidden_states.shape[2] == 1:
                return self._single_frame(hidden_states, cache)
            if past_frames is None:
                first_frame = hidden_states[:, :, :1]
                if self.temporal_padding_mode == "replicate":
                    past_frames = first_frame.expand(-1, -1, self.temporal_padding, -1, -1)
                else:
                    past_frames = torch.zeros_like(first_frame).expand(-1, -1, self.temporal_padding, -1, -1)
            hidden_states = torch.cat([past_frames, hidden_states], dim=2)
            if cache is not None:
                cache.update(self.cache_key, hidden_states[:, :, -self.temporal_padding :])
        return super().forward(hidden_states)

    def _single_frame(self, frame: torch.Tensor, cache: CausalConvCache | None) -> torch.Tensor:
        """A lone frame (an image, or a clip's first chunk of one frame) as one 2D convolution.

        Its padded past is the frame itself (replicate) or zeros, so the temporal taps see one image: the 3D
        convolution equals a 2D one with the taps summed (replicate) or the last tap alone (zeros), in a third of
        the work for a 3-frame kernel. Gradients reach every tap as they would through the 3D convolution.
        """
        if self.temporal_padding_mode == "replicate":
            weight = self.weight.sum(dim=2)
            past_frames = frame.expand(-1, -1, self.temporal_padding, -1, -1)
        else:
            weight = self.weight[:, :, -1]
            past_frames = torch.zeros_like(frame).expand(-1, -1, self.temporal_padding, -1, -1)
        if cache is not None:
            cache.update(self.cache_key, torch.cat([past_frames, frame], dim=2)[:, :, -self.temporal_padding :])
        output = F.conv2d(frame[:, :, 0], weight, self.bias, stride=self.stride[1:], padding=self.padding[1:])
        return output.unsqueeze(2)


class FrameGroupNorm(nn.Module):
    """GroupNorm over the channels of a group and the pixels of each frame separately (causal and chunk-exact).

    Statistics never mix frames, so the first frame is coded alone and chunked processing equals the whole clip.
    They do mix pixels: a per-pixel RMSNorm over channels (as in Wan) cannot remove a component shared by all pixels,
    and with AdamW at ``lr ~1e-3`` such a component grows within a few steps (on a flat background every weight of a
    filter moves the same way), until every pixel normalises to the same vector and the decoder emits a flat frame
    it cannot recover from. Per-frame statistics over pixels subtract the part of it shared by a group's channels and
    scale by the spread across pixels, so pixels stay distinct. Spatial tiles use their own statistics.

    Input and output ``[B, C, F, H, W]``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, max_groups: int = 32, min_group_channels: int = 4) -> None:
        super().__init__()
        # Up to 32 groups as in diffusers, but at least 4 channels per group: a one-channel group on a 1x1 latent
        # frame would normalise every value to the bias.
        num_groups = math.gcd(num_channels, max_groups)
        while num_groups > 1 and num_channels // num_groups < min_group_channels:
            num_groups //= 2
        self.num_groups = num_groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        height, width = hidden_states.shape[-2:]
        grouped = rearrange(hidden_states.float(), "b (g c) f h w -> b f g (c h w)", g=self.num_groups)
        variance, mean = torch.var_mean(grouped, dim=-1, keepdim=True, correction=0)
        grouped = (grouped - mean) * torch.rsqrt(variance + self.eps)
        hidden_states = rearrange(
            grouped, "b f g (c h w) -> b (g c) f h w", g=self.num_groups, h=height, w=width
        ).to(input_dtype)
        weight = self.weight.view(1, -1, 1, 1, 1).to(input_dtype)
        bias = self.bias.view(1, -1, 1, 1, 1).to(input_dtype)
        return hidden_states * weight + bias


class ResnetBlock3d(nn.Module):
    """Pre-norm residual block of two causal 3x3x3 convolutions. ``[B, C_in, F, H, W] -> [B, C_out, F, H, W]``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dropout: float = 0.0,
        eps: float = 1e-6,
        temporal_padding_mode: str = "replicate",
    ) -> None:
        super().__init__()
        self.norm1 = FrameGroupNorm(in_channels, eps=eps)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, temporal_padding_mode=temporal_padding_mode)
        self.norm2 = FrameGroupNorm(out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, temporal_padding_mode=temporal_padding_mode)
        self.conv_shortcut = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, hidden_states: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        residual = self.conv_shortcut(hidden_states) if self.conv_shortcut is not None else hidden_states
        hidden_states = self.norm1(hidden_states)
        hidden_states = F.silu(hidden_states)
        hidden_states = self.conv1(hidden_states, cache)
        hidden_states = self.norm2(hidden_states)
        hidden_states = F.silu(hidden_states)
        hidden_states = self.dropout(hidden_states)
        hidden_states = self.conv2(hidden_states, cache)
        return hidden_states + residual


class FrameAttention(nn.Module):
    """Single-head self-attention over the pixels of each frame separately (so it stays causal).

    ``[B, C, F, H, W] -> [B, C, F, H, W]``. Quadratic in ``H * W``: skip it (``mid_attention=False``) for speed.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = FrameGroupNorm(channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch_size, _, num_frames, height, width = hidden_states.shape
        residual = hidden_states
        hidden_states = self.norm(hidden_states)
        hidden_states = rearrange(hidden_states, "b c f h w -> (b f) 1 (h w) c")
        query = self.to_q(hidden_states)
        key = self.to_k(hidden_states)
        value = self.to_v(hidden_states)
        hidden_states = F.scaled_dot_product_attention(query, key, value)
        hidden_states = self.to_out(hidden_states)
        hidden_states = rearrange(
            hidden_states, "(b f) 1 (h w) c -> b c f h w", b=batch_size, f=num_frames, h=height, w=width
        )
        return hidden_states + residual


class Downsample3d(nn.Module):
    """2x spatial downsampling (strided 3x3 conv per frame), then optionally causal 2x temporal downsampling.

    Temporal: the first frame passes alone; every later output frame ``j`` mixes input frames ``2j - 2 .. 2j`` with a
    stride-2 kernel-3 convolution, so ``1 + 2m`` frames become ``1 + m``. Chunks after the first must have an even
    number of frames; the cache holds the previous chunk's last frame.
    ``[B, C, F, H, W] -> [B, C, F', H / 2, W / 2]``.
    """

    def __init__(self, channels: int, temporal: bool) -> None:
        super().__init__()
        self.spatial_conv = nn.Conv3d(channels, channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.temporal_conv = nn.Conv3d(channels, channels, (3, 1, 1), stride=(2, 1, 1)) if temporal else None
        self.cache_key = ""

    def forward(self, hidden_states: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        hidden_states = self.spatial_conv(hidden_states)
        if self.temporal_conv is None:
            return hidden_states
        past_frame = cache.get(self.cache_key) if cache is not None else None
        if cache is not None:
            cache.update(self.cache_key, hidden_states[:, :, -1:])
        if past_frame is not None:
            return self.temporal_conv(torch.cat([past_frame, hidden_states], dim=2))
        # First chunk: the first frame is coded alone.
        first_frame = hidden_states[:, :, :1]
        if hidden_states.shape[2] == 1:
            return first_frame
        return torch.cat([first_frame, self.temporal_conv(hidden_states)], dim=2)


class Upsample3d(nn.Module):
    """Optionally causal 2x temporal upsampling, then 2x nearest spatial upsampling and a 3x3 conv per frame.

    Temporal: a causal conv predicts two frames per input frame (channels split in two); for the first frame of a clip
    only the second of the pair is kept, so ``1 + m`` frames become ``1 + 2m``.
    ``[B, C_in, F, H, W] -> [B, C_out, F', 2 H, 2 W]``.
    """

    def __init__(self, in_channels: int, out_channels: int, temporal: bool, temporal_padding_mode: str) -> None:
        super().__init__()
        self.temporal_conv = (
            CausalConv3d(in_channels, 2 * in_channels, (3, 1, 1), temporal_padding_mode=temporal_padding_mode)
            if temporal
            else None
        )
        self.spatial_conv = nn.Conv3d(in_channels, out_channels, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, hidden_states: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        if self.temporal_conv is not None:
            is_first_chunk = cache is None or cache.get(self.temporal_conv.cache_key) is None
            hidden_states = self.temporal_conv(hidden_states, cache)
            hidden_states = rearrange(hidden_states, "b (r c) f h w -> b c (f r) h w", r=2)
            if is_first_chunk:
                hidden_states = hidden_states[:, :, 1:]
        hidden_states = F.interpolate(hidden_states, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return self.spatial_conv(hidden_states)


class MidBlock3d(nn.Module):
    """ResNet block, optional per-frame attention, ResNet block. ``[B, C, F, H, W] -> [B, C, F, H, W]``."""

    def __init__(self, channels: int, attention: bool, dropout: float, eps: float, temporal_padding_mode: str):
        super().__init__()
        self.resnet_in = ResnetBlock3d(channels, channels, dropout, eps, temporal_padding_mode)
        self.attention = FrameAttention(channels, eps) if attention else None
        self.resnet_out = ResnetBlock3d(channels, channels, dropout, eps, temporal_padding_mode)

    def forward(self, hidden_states: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        hidden_states = self.resnet_in(hidden_states, cache)
        if self.attention is not None:
            hidden_states = self.attention(hidden_states)
        return self.resnet_out(hidden_states, cache)


class DownBlock3d(nn.Module):
    """``num_layers`` ResNet blocks then an optional :class:`Downsample3d`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        spatial_downsample: bool,
        temporal_downsample: bool,
        dropout: float,
        eps: float,
        temporal_padding_mode: str,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3d(in_channels if i == 0 else out_channels, out_channels, dropout, eps, temporal_padding_mode)
            for i in range(num_layers)
        )
        self.downsampler = Downsample3d(out_channels, temporal_downsample) if spatial_downsample else None

    def forward(self, hidden_states: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states, cache)
        if self.downsampler is not None:
            hidden_states = self.downsampler(hidden_states, cache)
        return hidden_states


class UpBlock3d(nn.Module):
    """``num_layers`` ResNet blocks then an optional :class:`Upsample3d` to the next block's channels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        upsample_channels: int | None,
        num_layers: int,
        temporal_upsample: bool,
        dropout: float,
        eps: float,
        temporal_padding_mode: str,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3d(in_channels if i == 0 else out_channels, out_channels, dropout, eps, temporal_padding_mode)
            for i in range(num_layers)
        )
        self.upsampler = (
            Upsample3d(out_channels, upsample_channels, temporal_upsample, temporal_padding_mode)
            if upsample_channels is not None
            else None
        )

    def forward(self, hidden_states: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states, cache)
        if self.upsampler is not None:
            hidden_states = self.upsampler(hidden_states, cache)
        return hidden_states


class CausalEncoder3d(nn.Module):
    """Pixels (patchified) to latent moments.

    ``[B, C_in, 1 + 4k, H, W] -> [B, 2 * latent, 1 + k, H / 2^n, W / 2^n]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block_out_channels: tuple[int, ...],
        layers_per_block: int,
        temporal_downsample: tuple[bool, ...],
        mid_attention: bool,
        dropout: float,
        eps: float,
        temporal_padding_mode: str,
        output_norm: bool = True,
    ) -> None:
        super().__init__()
        self.conv_in = CausalConv3d(in_channels, block_out_channels[0], 3, temporal_padding_mode=temporal_padding_mode)
        self.down_blocks = nn.ModuleList()
        for index, channels in enumerate(block_out_channels):
            is_last = index == len(block_out_channels) - 1
            self.down_blocks.append(
                DownBlock3d(
                    block_out_channels[max(index - 1, 0)],
                    channels,
                    layers_per_block,
                    spatial_downsample=not is_last,
                    temporal_downsample=not is_last and temporal_downsample[index],
                    dropout=dropout,
                    eps=eps,
                    temporal_padding_mode=temporal_padding_mode,
                )
            )
        self.mid_block = MidBlock3d(block_out_channels[-1], mid_attention, dropout, eps, temporal_padding_mode)
        self.norm_out = FrameGroupNorm(block_out_channels[-1], eps=eps) if output_norm else nn.Identity()
        self.conv_out = CausalConv3d(
            block_out_channels[-1], out_channels, 3, temporal_padding_mode=temporal_padding_mode
        )
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        # Checkpointing re-runs blocks in backward, which would update a cache twice: only the cache-free path uses it.
        checkpoint = self.gradient_checkpointing and torch.is_grad_enabled() and cache is None
        hidden_states = self.conv_in(hidden_states, cache)
        for down_block in self.down_blocks:
            if checkpoint:
                hidden_states = self._gradient_checkpointing_func(down_block, hidden_states)
            else:
                hidden_states = down_block(hidden_states, cache)
        if checkpoint:
            hidden_states = self._gradient_checkpointing_func(self.mid_block, hidden_states)
        else:
            hidden_states = self.mid_block(hidden_states, cache)
        hidden_states = self.norm_out(hidden_states)
        hidden_states = F.silu(hidden_states)
        return self.conv_out(hidden_states, cache)


class CausalDecoder3d(nn.Module):
    """Latents to pixels (patchified): ``[B, latent, 1 + k, h, w] -> [B, C_out, 1 + 4k, h * 2^n, w * 2^n]``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block_out_channels: tuple[int, ...],
        layers_per_block: int,
        temporal_upsample: tuple[bool, ...],
        mid_attention: bool,
        dropout: float,
        eps: float,
        temporal_padding_mode: str,
        output_norm: bool = True,
    ) -> None:
        super().__init__()
        reversed_channels = tuple(reversed(block_out_channels))
        self.conv_in = CausalConv3d(in_channels, reversed_channels[0], 3, temporal_padding_mode=temporal_padding_mode)
        self.mid_block = MidBlock3d(reversed_channels[0], mid_attention, dropout, eps, temporal_padding_mode)
        self.up_blocks = nn.ModuleList()
        for index, channels in enumerate(reversed_channels):
            is_last = index == len(reversed_channels) - 1
            self.up_blocks.append(
                UpBlock3d(
                    channels,
                    channels,
                    upsample_channels=None if is_last else reversed_channels[index + 1],
                    num_layers=layers_per_block + 1,
                    temporal_upsample=not is_last and temporal_upsample[index],
                    dropout=dropout,
                    eps=eps,
                    temporal_padding_mode=temporal_padding_mode,
                )
            )
        self.norm_out = FrameGroupNorm(reversed_channels[-1], eps=eps) if output_norm else nn.Identity()
        self.conv_out = CausalConv3d(
            reversed_channels[-1], out_channels, 3, temporal_padding_mode=temporal_padding_mode
        )
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        checkpoint = self.gradient_checkpointing and torch.is_grad_enabled() and cache is None
        hidden_states = self.conv_in(hidden_states, cache)
        if checkpoint:
            hidden_states = self._gradient_checkpointing_func(self.mid_block, hidden_states)
        else:
            hidden_states = self.mid_block(hidden_states, cache)
        for up_block in self.up_blocks:
            if checkpoint:
                hidden_states = self._gradient_checkpointing_func(up_block, hidden_states)
            else:
                hidden_states = up_block(hidden_states, cache)
        hidden_states = self.norm_out(hidden_states)
        hidden_states = F.silu(hidden_states)
        return self.conv_out(hidden_states, cache)


# ---------------------------------------------------------------------------------------------------------------
# The autoencoder
# ---------------------------------------------------------------------------------------------------------------


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)``; the last tile ends exactly at ``size``."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _feather(length: int, ramp: int, ramp_start: bool, ramp_end: bool, device, dtype) -> torch.Tensor:
    """Per-position blend weights of one tile: linear ramps (strictly positive) on the sides that have a neighbour."""
    weight = torch.ones(length, device=device, dtype=dtype)
    ramp = min(ramp, length)
    if ramp > 0:
        rising = (torch.arange(ramp, device=device, dtype=dtype) + 0.5) / ramp
        if ramp_start:
            weight[:ramp] = torch.minimum(weight[:ramp], rising)
        if ramp_end:
            weight[-ramp:] = torch.minimum(weight[-ramp:], rising.flip(0))
    return weight


class CausalVideoAutoencoder(ModelMixin, AutoencoderMixin, ConfigMixin):
    r"""Causal video VAE with a KL latent, following the diffusers ``AutoencoderKL`` API.

    Videos ``[B, 3, 1 + 4k, H, W]`` in ``[-1, 1]`` map to latents ``[B, latent_channels, 1 + k, H / s, W / s]``
    (``s = spatial_compression_ratio``); images are ``F = 1``. Pipelines normalise latents as
    ``(z - shift_factor) * scaling_factor``.

    Runtime switches (not part of the config): :meth:`enable_tiling` (blended spatial tiles),
    :meth:`enable_slicing` (one sample of the batch at a time), :meth:`enable_temporal_chunking` (on by default with
    16-frame chunks: a clip runs as its first frame, then 16-frame chunks, through a :class:`CausalConvCache`, so
    peak memory does not grow with clip length; results equal whole-clip processing).

    Args:
        in_channels / out_channels: pixel channels.
        latent_channels: channels of the latent (the encoder predicts mean and log-variance, twice as many).
        block_out_channels: channels of each resolution level, highest resolution first. Every level but the last
            halves the spatial size.
        layers_per_block: ResNet blocks per encoder level (the decoder uses one more, as in diffusers).
        temporal_compression_ratio: 1, 2, 4, ...; the last ``log2`` of it downsampling levels also halve time.
        spatial_compression_ratio: ``2 ** (len(block_out_channels) - 1)`` times a pixel-unshuffle patch size, so
            8 with four levels, or 16 (four levels plus a 2x2 patchify of the input).
        mid_attention: per-frame self-attention in the middle blocks; quadratic in latent pixels, skip for speed.
        temporal_padding_mode: how the first frame's past is padded, ``"replicate"`` or ``"zeros"``.
        output_norm: normalise before the encoder's and decoder's output convolutions (as diffusers does). It is
            the one norm no residual bypasses, so its per-frame statistics decide what amplitude information reaches
            the latent and the pixels; ``False`` hands the residual stream to the output convolutions unchanged.
        scaling_factor / shift_factor: latent normalisation for diffusion (``(z - shift) * scale``).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["ResnetBlock3d", "FrameAttention"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 16,
        block_out_channels: tuple[int, ...] = (96, 192, 384, 384),
        layers_per_block: int = 2,
        temporal_compression_ratio: int = 4,
        spatial_compression_ratio: int = 8,
        mid_attention: bool = True,
        dropout: float = 0.0,
        norm_eps: float = 1e-6,
        temporal_padding_mode: str = "replicate",
        output_norm: bool = True,
        scaling_factor: float = 1.0,
        shift_factor: float = 0.0,
    ) -> None:
        super().__init__()
        block_out_channels = tuple(block_out_channels)
        num_downsamples = len(block_out_channels) - 1
        patch_size, remainder = divmod(spatial_compression_ratio, 2**num_downsamples)
        if remainder or patch_size < 1 or patch_size & (patch_size - 1):
            valid = [2**num_downsamples * 2**i for i in range(3)]
            raise ValueError(
                f"spatial_compression_ratio must be 2^(len(block_out_channels) - 1) times a power of two; with "
                f"{len(block_out_channels)} levels the valid values are {valid}, got {spatial_compression_ratio}"
            )
        num_temporal_downsamples = int(math.log2(temporal_compression_ratio)) if temporal_compression_ratio > 0 else -1
        if 2**num_temporal_downsamples != temporal_compression_ratio or num_temporal_downsamples > num_downsamples:
            valid = [2**i for i in range(num_downsamples + 1)]
            raise ValueError(
                f"temporal_compression_ratio must be one of {valid} with {len(block_out_channels)} levels, "
                f"got {temporal_compression_ratio}"
            )
        if temporal_padding_mode not in TEMPORAL_PADDING_MODES:
            raise ValueError(
                f"temporal_padding_mode must be one of {TEMPORAL_PADDING_MODES}, got {temporal_padding_mode!r}"
            )
        self.patch_size = patch_size
        # Like Wan, time is halved at the coarsest levels: high-resolution levels see all frames.
        temporal_downsample = tuple(
            index >= num_downsamples - num_temporal_downsamples for index in range(num_downsamples)
        )

        self.encoder = CausalEncoder3d(
            in_channels * patch_size**2,
            2 * latent_channels,
            block_out_channels,
            layers_per_block,
            temporal_downsample,
            mid_attention,
            dropout,
            norm_eps,
            temporal_padding_mode,
            output_norm,
        )
        self.decoder = CausalDecoder3d(
            latent_channels,
            out_channels * patch_size**2,
            block_out_channels,
            layers_per_block,
            tuple(reversed(temporal_downsample)),
            mid_attention,
            dropout,
            norm_eps,
            temporal_padding_mode,
            output_norm,
        )
        for name, module in self.named_modules():
            if isinstance(module, (CausalConv3d, Downsample3d)):
                module.cache_key = name

        self.use_slicing = False
        self.use_tiling = False
        self.tile_sample_min_height = 256
        self.tile_sample_min_width = 256
        self.tile_sample_stride_height = 192
        self.tile_sample_stride_width = 192
        self.temporal_chunk_frames: int | None = 16

    # --- runtime switches ----------------------------------------------------------------------------------------

    def enable_tiling(
        self,
        tile_sample_min_height: int | None = None,
        tile_sample_min_width: int | None = None,
        tile_sample_stride_height: int | None = None,
        tile_sample_stride_width: int | None = None,
    ) -> None:
        """Encode / decode in overlapping spatial tiles blended with linear feathering.

        Sizes are in pixels and must be multiples of ``spatial_compression_ratio``; ``stride < tile`` gives an overlap
        of ``tile - stride`` pixels. Inputs no larger than one tile are processed whole. Each tile's norm statistics
        come from the tile alone, so larger tiles stay closer to whole-frame processing.
        """
        ratio = self.config.spatial_compression_ratio
        height = tile_sample_min_height or self.tile_sample_min_height
        width = tile_sample_min_width or self.tile_sample_min_width
        stride_height = tile_sample_stride_height or self.tile_sample_stride_height
        stride_width = tile_sample_stride_width or self.tile_sample_stride_width
        for name, value in [
            ("tile_sample_min_height", height),
            ("tile_sample_min_width", width),
            ("tile_sample_stride_height", stride_height),
            ("tile_sample_stride_width", stride_width),
        ]:
            if value <= 0 or value % ratio:
                raise ValueError(f"{name} must be a positive multiple of {ratio} pixels, got {value}")
        if stride_height > height or stride_width > width:
            raise ValueError(
                f"tile strides ({stride_height}, {stride_width}) must not exceed tile sizes ({height}, {width})"
            )
        self.use_tiling = True
        self.tile_sample_min_height, self.tile_sample_min_width = height, width
        self.tile_sample_stride_height, self.tile_sample_stride_width = stride_height, stride_width

    def enable_temporal_chunking(self, chunk_frames: int = 16) -> None:
        """Process clips as the first frame, then chunks of ``chunk_frames`` frames (a multiple of 4)."""
        ratio = self.config.temporal_compression_ratio
        if chunk_frames <= 0 or chunk_frames % ratio:
            raise ValueError(f"chunk_frames must be a positive multiple of {ratio}, got {chunk_frames}")
        self.temporal_chunk_frames = chunk_frames

    def disable_temporal_chunking(self) -> None:
        """Process whole clips at once (peak memory then grows with the number of frames)."""
        self.temporal_chunk_frames = None

    # --- validation ----------------------------------------------------------------------------------------------

    def valid_num_frames(self, count: int = 4) -> list[int]:
        """The first ``count`` valid pixel frame counts: ``1, 1 + r, 1 + 2r, ...`` with ``r`` the temporal ratio."""
        return [1 + self.config.temporal_compression_ratio * i for i in range(count)]

    def _check_video(self, sample: torch.Tensor) -> None:
        if sample.ndim != 5:
            raise ValueError(f"expected a video [B, C, F, H, W] (an image has F = 1), got shape {tuple(sample.shape)}")
        num_frames, height, width = sample.shape[2:]
        if (num_frames - 1) % self.config.temporal_compression_ratio:
            valid = ", ".join(map(str, self.valid_num_frames()))
            raise ValueError(
                f"num_frames must be 1 + {self.config.temporal_compression_ratio}k ({valid}, ...), got {num_frames}"
            )
        ratio = self.config.spatial_compression_ratio
        if height % ratio or width % ratio:
            raise ValueError(f"height and width must be multiples of {ratio}, got {height}x{width}")

    # --- chunk-level API -----------------------------------------------------------------------------------------

    def encode_chunk(self, sample: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        """Encode one temporal chunk; returns latent moments (mean and log-variance concatenated on channels).

        Args:
            sample: ``[B, C, F, H, W]``; the first chunk of a clip has ``1 + 4m`` frames, later chunks ``4m`` frames
                (``m >= 1``).
            cache: the clip's encode cache (``None``: the chunk is a whole clip).

        Returns:
            ``[B, 2 * latent_channels, F', H / s, W / s]`` with ``F' = 1 + m`` (first chunk) or ``m``.
        """
        ratio = self.config.temporal_compression_ratio
        num_frames = sample.shape[2]
        is_first_chunk = cache is None or cache.is_empty
        if is_first_chunk and (num_frames - 1) % ratio:
            valid = ", ".join(map(str, self.valid_num_frames()))
            raise ValueError(
                f"the first chunk of a clip must have 1 + {ratio}k frames ({valid}, ...), got {num_frames}"
            )
        if not is_first_chunk and (num_frames % ratio or num_frames == 0):
            raise ValueError(
                f"chunks after the first must have a positive multiple of {ratio} frames, got {num_frames}"
            )
        if self.patch_size > 1:
            sample = rearrange(sample, "b c f (h p) (w q) -> b (c p q) f h w", p=self.patch_size, q=self.patch_size)
        return self.encoder(sample, cache)

    def decode_chunk(self, latents: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        """Decode one temporal chunk of latents ``[B, latent, f, h, w]`` (any ``f >= 1``).

        Returns ``[B, C, F, h * s, w * s]`` with ``F = 1 + 4(f - 1)`` for the first chunk of a clip, ``4f`` after.
        """
        sample = self.decoder(latents, cache)
        if self.patch_size > 1:
            sample = rearrange(sample, "b (c p q) f h w -> b c f (h p) (w q)", p=self.patch_size, q=self.patch_size)
        return sample

    # --- whole clips (temporal chunking) -------------------------------------------------------------------------

    def _encode_frames(self, sample: torch.Tensor) -> torch.Tensor:
        # The first frame is one chunk (it is coded alone anyway), then chunks of `temporal_chunk_frames`: every
        # clip longer than one frame has the same peak (one chunk plus the cache), whatever its length.
        chunk_frames = self.temporal_chunk_frames
        num_frames = sample.shape[2]
        if chunk_frames is None or num_frames == 1:
            return self.encode_chunk(sample)
        cache = CausalConvCache()
        moments = [self.encode_chunk(sample[:, :, :1], cache)]
        for start in range(1, num_frames, chunk_frames):
            moments.append(self.encode_chunk(sample[:, :, start : start + chunk_frames], cache))
        return torch.cat(moments, dim=2)

    def _decode_frames(self, latents: torch.Tensor) -> torch.Tensor:
        ratio = self.config.temporal_compression_ratio
        num_latent_frames = latents.shape[2]
        if self.temporal_chunk_frames is None or num_latent_frames == 1:
            return self.decode_chunk(latents)
        latent_chunk = self.temporal_chunk_frames // ratio
        # Chunks are written into one preallocated output, so peak memory is one chunk's activations plus the cache
        # plus the output, instead of growing with the clip.
        cache = CausalConvCache()
        first = self.decode_chunk(latents[:, :, :1], cache)
        batch_size, channels, _, height, width = first.shape
        output = first.new_empty(batch_size, channels, 1 + ratio * (num_latent_frames - 1), height, width)
        output[:, :, :1] = first
        for start in range(1, num_latent_frames, latent_chunk):
            chunk = self.decode_chunk(latents[:, :, start : start + latent_chunk], cache)
            frame = 1 + ratio * (start - 1)
            output[:, :, frame : frame + chunk.shape[2]] = chunk
        return output

    # --- tiling --------------------------------------------------------------------------------------------------

    def _run_tiled(
        self,
        inputs: torch.Tensor,
        process: Callable[[torch.Tensor], torch.Tensor],
        tile_size: tuple[int, int],
        tile_stride: tuple[int, int],
        to_output: Callable[[int], int],
        ramp: tuple[int, int],
    ) -> torch.Tensor:
        """Run ``process`` on overlapping spatial tiles of ``inputs [B, C, F, H, W]`` and blend the results.

        ``to_output`` maps an input coordinate to an output coordinate (``// s`` to encode, ``* s`` to decode). Each
        tile's weight ramps linearly over ``ramp`` output pixels on the sides that have a neighbour; dividing by the
        summed weights makes the blend a partition of unity, so a seam is a smooth crossfade. Tiles are accumulated as
        they come, so only one tile's result is alive at a time.
        """
        height, width = inputs.shape[-2:]
        starts_h = _tile_starts(height, tile_size[0], tile_stride[0])
        starts_w = _tile_starts(width, tile_size[1], tile_stride[1])
        output = weight_sum = None
        for top in starts_h:
            for left in starts_w:
                tile = process(inputs[..., top : top + tile_size[0], left : left + tile_size[1]])
                if output is None:
                    output = tile.new_zeros(*tile.shape[:3], to_output(height), to_output(width))
                    weight_sum = tile.new_zeros(to_output(height), to_output(width))
                weight_h = _feather(
                    tile.shape[-2], ramp[0], top != starts_h[0], top != starts_h[-1], tile.device, tile.dtype
                )
                weight_w = _feather(
                    tile.shape[-1], ramp[1], left != starts_w[0], left != starts_w[-1], tile.device, tile.dtype
                )
                weight = weight_h[:, None] * weight_w[None, :]
                out_top, out_left = to_output(top), to_output(left)
                region = (slice(out_top, out_top + tile.shape[-2]), slice(out_left, out_left + tile.shape[-1]))
                output[..., region[0], region[1]] += tile * weight
                weight_sum[region[0], region[1]] += weight
        return output.div_(weight_sum)

    def _tiled_encode(self, sample: torch.Tensor) -> torch.Tensor:
        ratio = self.config.spatial_compression_ratio
        return self._run_tiled(
            sample,
            self._encode_frames,
            (self.tile_sample_min_height, self.tile_sample_min_width),
            (self.tile_sample_stride_height, self.tile_sample_stride_width),
            lambda coordinate: coordinate // ratio,
            (
                (self.tile_sample_min_height - self.tile_sample_stride_height) // ratio,
                (self.tile_sample_min_width - self.tile_sample_stride_width) // ratio,
            ),
        )

    def _tiled_decode(self, latents: torch.Tensor) -> torch.Tensor:
        ratio = self.config.spatial_compression_ratio
        return self._run_tiled(
            latents,
            self._decode_frames,
            (self.tile_sample_min_height // ratio, self.tile_sample_min_width // ratio),
            (self.tile_sample_stride_height // ratio, self.tile_sample_stride_width // ratio),
            lambda coordinate: coordinate * ratio,
            (
                self.tile_sample_min_height - self.tile_sample_stride_height,
                self.tile_sample_min_width - self.tile_sample_stride_width,
            ),
        )

    # --- AutoencoderKL API ---------------------------------------------------------------------------------------

    def _encode(self, sample: torch.Tensor) -> torch.Tensor:
        height, width = sample.shape[-2:]
        if self.use_tiling and (height > self.tile_sample_min_height or width > self.tile_sample_min_width):
            return self._tiled_encode(sample)
        return self._encode_frames(sample)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        ratio = self.config.spatial_compression_ratio
        height, width = latents.shape[-2:]
        if self.use_tiling and (
            height > self.tile_sample_min_height // ratio or width > self.tile_sample_min_width // ratio
        ):
            return self._tiled_decode(latents)
        return self._decode_frames(latents)

    @apply_forward_hook
    def encode(
        self, x: torch.Tensor, return_dict: bool = True
    ) -> AutoencoderKLOutput | tuple[DiagonalGaussianDistribution]:
        """Encode videos ``[B, C, 1 + 4k, H, W]`` in ``[-1, 1]``.

        Returns:
            ``AutoencoderKLOutput(latent_dist)``, a ``DiagonalGaussianDistribution`` over
            ``[B, latent_channels, 1 + k, H / s, W / s]``.
        """
        self._check_video(x)
        if self.use_slicing and x.shape[0] > 1:
            moments = torch.cat([self._encode(x_slice) for x_slice in x.split(1)])
        else:
            moments = self._encode(x)
        posterior = DiagonalGaussianDistribution(moments)
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    @apply_forward_hook
    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        """Decode latents ``[B, latent_channels, 1 + k, h, w]``.

        Returns:
            ``DecoderOutput(sample=[B, C, 1 + 4k, h * s, w * s])`` (not clamped).
        """
        if z.ndim != 5:
            raise ValueError(f"expected latents [B, C, F, H, W], got shape {tuple(z.shape)}")
        if z.shape[1] != self.config.latent_channels:
            raise ValueError(f"expected {self.config.latent_channels} latent channels, got {z.shape[1]}")
        if self.use_slicing and z.shape[0] > 1:
            decoded = torch.cat([self._decode(z_slice) for z_slice in z.split(1)])
        else:
            decoded = self._decode(z)
        if not return_dict:
            return (decoded,)
        return DecoderOutput(sample=decoded)

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
    ) -> DecoderOutput | tuple[torch.Tensor]:
        """Encode then decode ``sample`` (the posterior mode, or a sample of it with ``sample_posterior``)."""
        posterior = self.encode(sample).latent_dist
        latents = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        decoded = self.decode(latents).sample
        if not return_dict:
            return (decoded,)
        return DecoderOutput(sample=decoded)
