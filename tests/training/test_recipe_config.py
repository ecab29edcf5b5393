"""Recipe configs: YAML + --set overrides, strict keys, every shipped recipe parses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from seedkit.models import flavors
from seedkit.training.config import RecipeConfig, VAERecipeConfig, from_flat_dict, load_config, to_flat_dict

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_overrides_are_parsed_as_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\noptim:\n  lr: 1.0e-4\ntrain:\n  max_steps: 5\n")
    overrides = ["train.max_steps=20", "optim.betas=[0.8, 0.9]", "data.sizes=[[16, 16]]", "optim.eps=1e-6"]
    config = load_config(path, overrides)
    assert config.train.max_steps == 20 and config.optim.lr == 1e-4
    assert config.optim.betas == (0.8, 0.9) and config.data.sizes == [[16, 16]] and config.optim.eps == 1e-6
    assert to_flat_dict(config)["train.max_steps"] == 20


def test_a_bare_yaml_no_for_a_string_setting_asks_for_quotes():
    # `--set train.mixed_precision=no` parses as False, which accelerate rejects deep inside the trainer
    with pytest.raises(ValueError, match="train.mixed_precision must be a string.*quote"):
        load_config(None, ["train.mixed_precision=no"])
    assert load_config(None, ["train.mixed_precision='no'"]).train.mixed_precision == "no"


def test_unknown_keys_name_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config keys \['max_step'\].*valid keys"):
        load_config(None, ["train.max_step=3"])
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(None, ["train.max_steps"])


@pytest.mark.parametrize(
    "path", sorted(p for p in RECIPES.glob("*.yaml") if not p.name.startswith("grpo-")), ids=lambda p: p.name
)
def test_shipped_recipes_parse(path):
    """Training recipes (the post-training grpo-*.yaml ones are parsed by tests/post_training)."""
    cls = VAERecipeConfig if path.name.startswith("vae-") else RecipeConfig
    config = load_config(path, cls=cls)
    assert config.model.flavor in flavors.names()
    assert config.name == path.stem


@pytest.mark.parametrize("path", sorted((RECIPES / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_are_valid_yaml(path):
    data = yaml.safe_load(path.read_text())
    assert data["distributed_type"] in ("NO", "MULTI_GPU", "FSDP") and data["num_processes"] >= 1


def test_flat_dict_round_trips_lists_dicts_none_and_paths():
    config = load_config(
        RECIPES / "shapes-tiny.yaml",
        [
            "model.transformer={num_dual_layers: 2}",
            "model.transformer_path=runs/base/transformer",
            "data.sizes=[[96, 96], [64, 96]]",
            "data.frames=[9, 17]",
        ],
    )
    flat = to_flat_dict(config)
    assert flat["model.text_encoder"] == "None" and flat["data.sizes"] == "[[96, 96], [64, 96]]"
    assert from_flat_dict(RecipeConfig, flat) == config
    assert from_flat_dict(VAERecipeConfig, to_flat_dict(VAERecipeConfig())) == VAERecipeConfig()
    with pytest.raises(ValueError, match="data.sizes"):
        from_flat_dict(RecipeConfig, {**flat, "data.sizes": "[[96, 96"})
