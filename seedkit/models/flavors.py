"""Named model configurations ("flavors"), torchtitan style.

``get(name)`` returns a :class:`Flavor` bundling the transformer config, the VAE config and the text encoder the
flavor is meant to run with. ``debug`` is the smallest thing that exercises every code path (tests shrink it or use
it directly); ``shapes-tiny`` is the bundled default model; ``2b`` / ``7b`` / ``13b`` match the parameter counts of the
paper-scale systems (checked on the meta device in the tests).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Flavor:
    name: str
    transformer: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: str  # a key of seedkit.models.text_encoders (e.g. "minilm", "t5-tiny", "umt5-xxl")
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --- transformer configs: kwargs of SeedTransformer3DModel ------------------------------------------------------
TRANSFORMER_CONFIGS: dict[str, dict[str, Any]] = {
    # Smallest model that runs every code path (dual + single blocks, RoPE on all three axes, condition channels);
    # text from the tiny T5 (d_model 32), no pooled vector. ~61k parameters.
    "debug": {
        "in_channels": 8,
        "patch_size": (1, 2, 2),
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "num_dual_layers": 1,
        "num_single_layers": 1,
        "mlp_ratio": 4.0,
        "text_embed_dim": 32,
        "pooled_projection_dim": None,
        "condition_channels": 9,  # I2V: 8 latent channels + 1 mask channel
        "qk_norm": "rms_norm",
        "rope_axes_dim": (4, 6, 6),
    },
    # The bundled ShapesWorld model: MiniLM token states (384) and its mean-pooled sentence vector. ~7.3M parameters.
    "shapes-tiny": {
        "in_channels": 8,
        "patch_size": (1, 2, 2),
        "num_attention_heads": 4,
        "attention_head_dim": 64,
        "num_dual_layers": 2,
        "num_single_layers": 4,
        "mlp_ratio": 4.0,
        "text_embed_dim": 384,
        "pooled_projection_dim": 384,
        "condition_channels": 9,
        "qk_norm": "rms_norm",
        "rope_axes_dim": (16, 24, 24),
    },
    # Paper scale, UMT5-XXL text (4096), 16-channel latents, I2V condition = 16 latent + 1 mask channels.
    # Parameter counts (meta device): 2b 2.07e9, 7b 7.24e9, 13b 13.28e9.
    "2b": {
        "in_channels": 16,
        "patch_size": (1, 2, 2),
        "num_attention_heads": 16,
        "attention_head_dim": 128,
        "num_dual_layers": 12,
        "num_single_layers": 16,
        "mlp_ratio": 4.0,
        "text_embed_dim": 4096,
        "pooled_projection_dim": None,
        "condition_channels": 17,
        "qk_norm": "rms_norm",
        "rope_axes_dim": (16, 56, 56),
    },
    "7b": {
        "in_channels": 16,
        "patch_size": (1, 2, 2),
        "num_attention_heads": 28,
        "attention_head_dim": 128,
        "num_dual_layers": 12,
        "num_single_layers": 22,
        "mlp_ratio": 4.0,
        "text_embed_dim": 4096,
        "pooled_projection_dim": None,
        "condition_channels": 17,
        "qk_norm": "rms_norm",
        "rope_axes_dim": (16, 56, 56),
    },
    "13b": {
        "in_channels": 16,
        "patch_size": (1, 2, 2),
        "num_attention_heads": 32,
        "attention_head_dim": 128,
        "num_dual_layers": 20,
        "num_single_layers": 25,
        "mlp_ratio": 4.0,
        "text_embed_dim": 4096,
        "pooled_projection_dim": None,
        "condition_channels": 17,
        "qk_norm": "rms_norm",
        "rope_axes_dim": (16, 56, 56),
    },
}

# --- VAE configs: kwargs of CausalVideoAutoencoder ---------------------------------------------------------------
VAE_CONFIGS: dict[str, dict[str, Any]] = {
    # ~0.22M parameters: the smallest VAE that runs every code path (mid attention, 4x time, 8x space).
    "debug": {
        "latent_channels": 8,
        "block_out_channels": (8, 16, 16, 16),
        "layers_per_block": 1,
        "temporal_compression_ratio": 4,
        "spatial_compression_ratio": 8,
        "mid_attention": True,
    },
    # ~2.6M parameters: the bundled ShapesWorld default. Three levels behind a 2x2 pixel-unshuffle (8x in all)
    # rather than four full-resolution levels: about twice as fast to train on a CPU, and flat-coloured
    # ShapesWorld frames lose nothing to the patchified first layer.
    "shapes-tiny": {
        "latent_channels": 8,
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 1,
        "temporal_compression_ratio": 4,
        "spatial_compression_ratio": 8,
        "mid_attention": True,
        # ShapesWorld frames are a flat backdrop and a few small objects. With the output norms this VAE decoded
        # every object as grey (output/input chroma correlation -0.10 after 1400 steps); without them, and with a
        # foreground-weighted loss (both changed at once), 0.65 after 1600 steps.
        "output_norm": False,
    },
    # ~129M parameters, the channel layout of the Wan 2.1 VAE (base 96, multipliers 1, 2, 4, 4): shared by the
    # paper-scale flavors.
    "2b": {
        "latent_channels": 16,
        "block_out_channels": (96, 192, 384, 384),
        "layers_per_block": 2,
        "temporal_compression_ratio": 4,
        "spatial_compression_ratio": 8,
        "mid_attention": True,
    },
}
VAE_CONFIGS["7b"] = copy.deepcopy(VAE_CONFIGS["2b"])
VAE_CONFIGS["13b"] = copy.deepcopy(VAE_CONFIGS["2b"])
# ~131M parameters: 16x spatial compression (the 8x network plus a 2x2 pixel-unshuffle of the input) with 48 latent
# channels, as in the Wan 2.2 VAE, for high-resolution generation with 4x fewer latent tokens.
VAE_CONFIGS["16x"] = {**copy.deepcopy(VAE_CONFIGS["2b"]), "latent_channels": 48, "spatial_compression_ratio": 16}

# --- which text encoder each flavor uses -------------------------------------------------------------------------
TEXT_ENCODERS: dict[str, str] = {
    "debug": "t5-tiny",
    "shapes-tiny": "minilm",
    "2b": "umt5-xxl",
    "7b": "umt5-xxl",
    "13b": "umt5-xxl",
}


def names() -> list[str]:
    return list(TEXT_ENCODERS)


def vae_config(name: str) -> dict[str, Any]:
    """A VAE config by name, including VAE-only variants such as ``"16x"`` that have no transformer flavor."""
    if name not in VAE_CONFIGS:
        raise KeyError(f"unknown VAE config {name!r}; valid: {', '.join(VAE_CONFIGS)}")
    return copy.deepcopy(VAE_CONFIGS[name])


def get(name: str) -> Flavor:
    """The flavor called ``name``; configs are deep copies, so callers may edit them freely."""
    if name not in TEXT_ENCODERS:
        raise KeyError(f"unknown flavor {name!r}; valid flavors: {', '.join(names())}")
    return Flavor(
        name=name,
        transformer=copy.deepcopy(TRANSFORMER_CONFIGS.get(name, {})),
        vae=copy.deepcopy(VAE_CONFIGS.get(name, {})),
        text_encoder=TEXT_ENCODERS[name],
    )
