import pytest
import torch

from seedkit.models import flavors
from seedkit.models.autoencoder_causal import CausalVideoAutoencoder


def _parameter_count(config: dict) -> int:
    with torch.device("meta"):
        model = CausalVideoAutoencoder(**config)
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize(
    "name, low, high",
    [
        ("debug", 0.1e6, 0.5e6),
        ("shapes-tiny", 1e6, 3e6),
        ("2b", 100e6, 250e6),
        ("7b", 100e6, 250e6),
        ("13b", 100e6, 250e6),
        ("16x", 100e6, 250e6),
    ],
)
def test_vae_flavor_parameter_counts(name, low, high):
    assert low <= _parameter_count(flavors.VAE_CONFIGS[name]) <= high


@pytest.mark.parametrize("name", ["debug", "shapes-tiny", "2b", "7b", "13b"])
def test_flavor_vae_compression_and_latent_channels(name):
    config = flavors.get(name).vae
    assert config["spatial_compression_ratio"] == 8 and config["temporal_compression_ratio"] == 4
    expected_latent_channels = 8 if name in ("debug", "shapes-tiny") else 16
    assert config["latent_channels"] == expected_latent_channels


def test_sixteen_x_flavor_config():
    config = flavors.VAE_CONFIGS["16x"]
    assert config["spatial_compression_ratio"] == 16 and config["temporal_compression_ratio"] == 4
    with torch.device("meta"):
        model = CausalVideoAutoencoder(**config)
    assert model.patch_size == 2


def test_vae_only_configs_are_reachable_by_name():
    assert flavors.vae_config("16x")["spatial_compression_ratio"] == 16
    assert flavors.vae_config("shapes-tiny") == flavors.get("shapes-tiny").vae
    with pytest.raises(KeyError, match="valid"):
        flavors.vae_config("32x")
