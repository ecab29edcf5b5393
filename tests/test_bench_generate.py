"""bench/generate.py's stage split: every transformer call is timed as the transformer, also with two experts and
with an image-first model's image pass."""

import importlib.util
import sys
from pathlib import Path

import torch

from seedkit.pipelines import SeedkitTextToVideoPipeline

BENCH = Path(__file__).resolve().parents[1] / "bench" / "generate.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_generate", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_stage_timers_count_both_experts_of_a_pair_as_the_transformer():
    bench = load_bench()
    single = SeedkitTextToVideoPipeline.from_flavor("debug", seed=0)
    second = SeedkitTextToVideoPipeline.from_flavor("debug", seed=1).transformer
    pair = SeedkitTextToVideoPipeline(
        **dict(single.components, transformer_2=second), **dict(single.pipeline_kwargs(), boundary_ratio=0.5)
    )
    for pipeline in (single, pair):
        pipeline.set_progress_bar_config(disable=True)
        with bench.stage_timers(pipeline) as times:
            pipeline("a red circle", height=16, width=16, num_frames=5, num_inference_steps=4, guidance_scale=1.0,
                     generator=torch.Generator().manual_seed(0), output_type="np")
        assert sum(times.transformer_calls.values()) == 4  # one per step, whichever expert made it
        assert times.seconds["transformer"] > 0
    assert times.transformer_calls == {("transformer", (1, 8, 2, 2, 2)): 2, ("transformer_2", (1, 8, 2, 2, 2)): 2}


def test_image_first_calls_are_counted_by_shape_and_the_video_pass_is_the_reference():
    bench = load_bench()
    pipeline = SeedkitTextToVideoPipeline.from_flavor("debug", seed=0, image_first=True)
    pipeline.set_progress_bar_config(disable=True)
    with bench.stage_timers(pipeline) as times:
        pipeline("a red circle", height=16, width=16, num_frames=5, num_inference_steps=3, guidance_scale=1.0,
                 generator=torch.Generator().manual_seed(0), output_type="np")
    assert times.transformer_calls == {("transformer", (1, 8, 1, 2, 2)): 3, ("transformer", (1, 8, 2, 2, 2)): 3}
    assert tuple(times.video_inputs[1]["hidden_states"].shape) == (1, 8, 2, 2, 2)


def test_flops_are_counted_with_the_expert_that_made_each_call():
    """An image expert with (1, 1, 1) patches has four times the visual tokens of the (1, 2, 2) video expert on the
    same latent frame, so its calls must be counted on it, not on `transformer`."""
    bench = load_bench()
    base = SeedkitTextToVideoPipeline.from_flavor("debug", seed=0, image_first=True)
    pipeline = SeedkitTextToVideoPipeline(
        **dict(base.components, transformer_2=base.transformer,
               image_transformer=base.transformer.with_patch_size((1, 1, 1))),
        **dict(base.pipeline_kwargs(), boundary_ratio=0.5),
    )
    pipeline.set_progress_bar_config(disable=True)
    with bench.stage_timers(pipeline) as times:
        pipeline("a red circle", height=16, width=16, num_frames=5, num_inference_steps=4, guidance_scale=1.0,
                 generator=torch.Generator().manual_seed(0), output_type="np")
    # transformer_2 is the same module as transformer: hooked once, its calls counted under "transformer"
    image_key, video_key = ("image_transformer", (1, 8, 1, 2, 2)), ("transformer", (1, 8, 2, 2, 2))
    assert times.transformer_calls == {image_key: 2, ("transformer", (1, 8, 1, 2, 2)): 2, video_key: 4}
    image_flops = bench.count_transformer_flops(pipeline, "image_transformer", times.transformer_inputs[image_key])
    coarse_flops = bench.count_transformer_flops(
        pipeline, "transformer", times.transformer_inputs[("transformer", (1, 8, 1, 2, 2))]
    )
    assert image_flops > coarse_flops  # equal if the image calls were counted on `transformer`
