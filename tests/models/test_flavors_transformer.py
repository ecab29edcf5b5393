"""Transformer flavors: paper-scale parameter counts (meta device) and runnable small flavors."""

from __future__ import annotations

import pytest
import torch

from seedkit.models import flavors
from seedkit.models.transformer_mmdit import SeedTransformer3DModel


@pytest.mark.parametrize("name, target", [("2b", 2e9), ("7b", 7e9), ("13b", 13e9)])
def test_paper_flavor_parameter_counts(name, target):
    config = flavors.get(name).transformer
    with torch.device("meta"):
        model = SeedTransformer3DModel(**config)
    count = sum(parameter.numel() for parameter in model.parameters())
    assert abs(count - target) / target < 0.10, f"{name}: {count / 1e9:.2f}B parameters"
    assert config["text_embed_dim"] == 4096 and config["in_channels"] == 16
    assert config["condition_channels"] == config["in_channels"] + 1


def test_shapes_tiny_is_a_few_million_parameters():
    with torch.device("meta"):
        model = SeedTransformer3DModel(**flavors.get("shapes-tiny").transformer)
    count = sum(parameter.numel() for parameter in model.parameters())
    assert 1e6 < count < 2e7


@pytest.mark.parametrize("name", ["debug", "shapes-tiny"])
def test_small_flavors_match_their_vae_and_text_encoder(name):
    flavor = flavors.get(name)
    config = flavor.transformer
    if flavor.vae:
        assert config["in_channels"] == flavor.vae["latent_channels"]
    assert config["condition_channels"] == config["in_channels"] + 1
    assert config["text_embed_dim"] == {"t5-tiny": 32, "minilm": 384}[flavor.text_encoder]


@pytest.mark.parametrize("name", ["debug", "shapes-tiny"])
def test_small_flavors_run(name):
    config = flavors.get(name).transformer
    torch.manual_seed(0)
    model = SeedTransformer3DModel(**config).eval()
    latents = torch.randn(1, config["in_channels"], 2, 4, 4)
    text = torch.randn(1, 3, config["text_embed_dim"])
    pooled = None if config["pooled_projection_dim"] is None else torch.randn(1, config["pooled_projection_dim"])
    with torch.no_grad():
        sample = model(latents, torch.tensor([500.0]), text, pooled_projections=pooled).sample
    assert sample.shape == latents.shape


def test_flavor_configs_are_copies():
    first = flavors.get("debug").transformer
    first["num_dual_layers"] = 99
    assert flavors.get("debug").transformer["num_dual_layers"] == 1
