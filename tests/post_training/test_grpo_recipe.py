"""recipes/grpo.py end to end at tiny size: a saved debug pipeline post-trained with the ShapesBench reward, resumed,
and exported from its checkpoint."""

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "recipes"))

import grpo  # noqa: E402

from seedkit.pipelines import SeedkitTextToVideoPipeline  # noqa: E402


@pytest.fixture(scope="module")
def debug_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model") / "debug"
    pipe = SeedkitTextToVideoPipeline.from_flavor("debug", seed=0, default_height=32, default_width=32,
                                                  default_num_frames=5)
    pipe.save_pretrained(directory)
    return directory


RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("grpo-*.yaml")), ids=lambda p: p.name)
def test_shipped_grpo_recipes_parse(path):
    from seedkit.training.config import load_config

    config = load_config(path, cls=grpo.GRPORecipeConfig)
    assert config.grpo.group_size >= 2 and set(config.reward.metrics) <= set(grpo.REWARD_METRICS)
    assert config.grpo.height % 16 == 0 and config.grpo.width % 16 == 0


def test_prompts_keep_the_training_wording_and_their_own_seed():
    config = grpo.GRPORecipeConfig()
    config.prompts.num_items = 20
    items = grpo.prompt_items(config)
    assert len(items) == 10 and all(item.split == "train" for item in items)
    assert all(item.height == 64 and item.num_frames == 17 for item in items)
    source = grpo.make_prompt_source(items, seed=3)
    assert [item.id for item in source(5, 2)] == [item.id for item in source(5, 2)]
    with pytest.raises(ValueError, match="unknown reward metrics"):
        grpo.make_shapesbench_reward(["shape", "beauty"])


def test_reward_scores_ground_truth_clips_perfectly():
    """The reward is the detector's: a ShapesWorld render of the prompt's own scene gets 1."""
    import numpy as np
    import torch

    from evaluation.shapesbench.runner import oracle_generate_fn

    config = grpo.GRPORecipeConfig()
    config.prompts.num_items = 4
    items = grpo.prompt_items(config)
    frames = np.stack([oracle_generate_fn(item).frames for item in items])  # [B, F, H, W, 3] uint8
    videos = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    rewards, metrics = grpo.make_shapesbench_reward(list(grpo.REWARD_METRICS))(items, videos)
    assert rewards.tolist() == [1.0] * len(items) and metrics[0]["shape"] == 1.0
    blank = torch.full_like(videos, -1.0)
    assert grpo.make_shapesbench_reward(["shape"])(items, blank)[0].tolist() == [0.0] * len(items)


def test_recipe_trains_resumes_and_exports(tmp_path, debug_model):
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": str(debug_model),
        "prompts": {"num_items": 8},
        "grpo": {"output_dir": str(tmp_path / "run"), "height": 32, "width": 32, "num_frames": 5, "num_steps": 2,
                 "group_size": 2, "prompts_per_iteration": 1, "iterations": 1, "checkpoint_every": 1},
    }))
    assert grpo.main([str(recipe), "--no-progress"]) == 0
    assert grpo.main([str(recipe), "--no-progress", "--set", "grpo.iterations=2"]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [record["iteration"] for record in records] == [0, 1]
    assert {"metric/color", "metric/shape", "metric/motion"} <= set(records[0])
    assert (tmp_path / "run" / "final" / "model_index.json").is_file()
    assert grpo.main([str(recipe), "--export-only", str(tmp_path / "exported")]) == 0
    SeedkitTextToVideoPipeline.from_pretrained(tmp_path / "exported")
