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
TRANSFORMER_CONFIGS: dict[str, dict[str, Any]] = {}

# --- VAE configs: kwargs of CausalVideoAutoencoder ---------------------------------------------------------------
VAE_CONFIGS: dict[str, dict[str, Any]] = {}

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
