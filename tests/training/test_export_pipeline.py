"""recipes/export_pipeline.py: a training run's export becomes a loadable pipeline directory with the asked defaults
and no trace of the run's local paths."""

import json
import sys
from pathlib import Path

import pytest
import torch

from seedkit.pipelines.base import build_components

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "recipes"))
from export_pipeline import export_pipeline  # noqa: E402

from seedkit.models.transformer_mmdit import SeedTransformer3DModel  # noqa: E402
from seedkit.pipelines import SeedkitTextToVideoPipeline  # noqa: E402


@pytest.fixture
def run_dir(tmp_path):
    """What recipes/train.py exports to <output_dir>/final, for the debug flavor."""
    final = tmp_path / "run" / "final"
    components = build_components("debug")
    components["transformer"].save_pretrained(final / "transformer")
    components["vae"].save_pretrained(final / "vae")
    (final / "text_encoder_name.txt").write_text("t5-tiny\n")
    return final


def test_export_writes_a_pipeline_with_defaults_and_without_local_paths(run_dir, tmp_path):
    out = export_pipeline(run_dir, tmp_path / "model", height=32, width=48, num_frames=9, shift=2.0)
    for component in ("transformer", "vae"):
        config = json.loads((out / component / "config.json").read_text())
        assert str(tmp_path) not in json.dumps(config)
        assert config["_name_or_path"] == component
    pipe = SeedkitTextToVideoPipeline.from_pretrained(out)
    assert (pipe.config.default_height, pipe.config.default_width, pipe.config.default_num_frames) == (32, 48, 9)
    assert pipe.scheduler.config.shift == 2.0
    generator = torch.Generator().manual_seed(0)
    frames = pipe("a red circle", num_inference_steps=1, output_type="latent", generator=generator)
    assert frames.frames.shape[2:] == (3, 4, 6)  # 9 frames -> 3 latent frames; 32 x 48 px -> 4 x 6 latents


def test_export_image_first_needs_an_image_to_video_transformer(run_dir, tmp_path):
    out = export_pipeline(run_dir, tmp_path / "model", height=32, width=32, num_frames=9, image_first=True)
    assert SeedkitTextToVideoPipeline.from_pretrained(out).config.image_first
    assert not SeedkitTextToVideoPipeline.from_pretrained(export_pipeline(run_dir, tmp_path / "plain", 32, 32, 9)
                                                           ).config.image_first
    text_only = tmp_path / "text_only"
    components = build_components("debug", transformer_overrides={"condition_channels": 0})
    components["transformer"].save_pretrained(text_only / "transformer")
    components["vae"].save_pretrained(text_only / "vae")
    (text_only / "text_encoder_name.txt").write_text("t5-tiny\n")
    with pytest.raises(ValueError, match="--image-first needs a transformer trained for image-to-video"):
        export_pipeline(text_only, tmp_path / "refused", 32, 32, 9, image_first=True)
    assert not (tmp_path / "refused").exists()


def test_export_refuses_defaults_the_model_cannot_generate(run_dir, tmp_path):
    with pytest.raises(ValueError, match="multiple of 16"):
        export_pipeline(run_dir, tmp_path / "model", height=24, width=32, num_frames=9)
    with pytest.raises(ValueError, match="num_frames=8 is not 1 \\+ 4k"):
        export_pipeline(run_dir, tmp_path / "model", height=32, width=32, num_frames=8)
    assert not (tmp_path / "model").exists()


def test_a_checkpoint_exports_its_ema_weights(tmp_path):
    from seedkit.training.checkpoint import CheckpointPayload, save_checkpoint
    from seedkit.training.config import load_config, to_flat_dict
    from seedkit.training.recipes import build_transformer

    config = load_config(None, ["model.flavor=debug", "train.seed=3"])
    raw = build_transformer(config)
    ema = {f"transformer.{name}": tensor + 1.0 for name, tensor in raw.state_dict().items()}
    payload = CheckpointPayload(
        tensors={"model": {f"transformer.{name}": t for name, t in raw.state_dict().items()}, "ema": ema},
        json={"run_config": to_flat_dict(config)},
    )
    checkpoint = save_checkpoint(tmp_path / "run" / "checkpoints", 7, payload)
    out = export_pipeline(checkpoint, tmp_path / "model", height=32, width=32, num_frames=9)
    pipe = SeedkitTextToVideoPipeline.from_pretrained(out)
    for name, tensor in pipe.transformer.state_dict().items():
        assert torch.equal(tensor, ema[f"transformer.{name}"]), name
    assert pipe.config.text_encoder_name == "t5-tiny"
    # the debug VAE at random init is rebuilt from the run's seed, as the run built it
    from seedkit.training.recipes import build_vae

    for name, tensor in build_vae(config).state_dict().items():
        assert torch.equal(pipe.vae.state_dict()[name], tensor), name


@pytest.mark.parametrize("partner_flag, partner_slot, run_slot", [
    ("--low-noise-transformer", "transformer_2", "transformer"),  # the run trained above the boundary
    ("--high-noise-transformer", "transformer", "transformer_2"),  # the run trained below it
])
def test_export_two_noise_experts(run_dir, tmp_path, partner_flag, partner_slot, run_slot):
    from export_pipeline import main

    partner = build_components("debug", seed=5)["transformer"]
    partner.save_pretrained(tmp_path / "partner")
    assert main([str(run_dir), "--out", str(tmp_path / "model"), "--height", "32", "--width", "32", "--frames", "9",
                 partner_flag, str(tmp_path / "partner"), "--boundary-ratio", "0.8"]) == 0
    pipe = SeedkitTextToVideoPipeline.from_pretrained(tmp_path / "model")
    assert pipe.config.boundary_ratio == 0.8
    assert json.loads((tmp_path / "model" / "transformer_2" / "config.json").read_text())["_name_or_path"] == (
        "transformer_2"
    )
    run_transformer = SeedTransformer3DModel.from_pretrained(run_dir / "transformer")
    for expected, slot in ((partner, partner_slot), (run_transformer, run_slot)):
        stored = getattr(pipe, slot).state_dict()
        for name, tensor in expected.state_dict().items():
            assert torch.equal(stored[name], tensor), f"{slot}: {name}"
    with pytest.raises(SystemExit):  # a boundary needs a partner
        main([str(run_dir), "--out", str(tmp_path / "other"), "--boundary-ratio", "0.8"])
    with pytest.raises(SystemExit):  # one partner, not two
        main([str(run_dir), "--out", str(tmp_path / "other"), "--boundary-ratio", "0.8",
              "--high-noise-transformer", str(tmp_path / "partner"),
              "--low-noise-transformer", str(tmp_path / "partner")])


def test_half_precision_storage_halves_the_transformer_files_and_loads_as_float32(run_dir, tmp_path):
    from export_pipeline import main

    sizes = {}
    for dtype in ("float32", "float16"):
        out = tmp_path / dtype
        assert main([str(run_dir), "--out", str(out), "--height", "32", "--width", "32", "--frames", "9",
                     "--low-noise-transformer", str(run_dir / "transformer"), "--boundary-ratio", "0.8",
                     "--transformer-dtype", dtype]) == 0
        sizes[dtype] = {name: sum(f.stat().st_size for f in (out / name).rglob("*.safetensors"))
                        for name in ("transformer", "transformer_2", "vae")}
    for name in ("transformer", "transformer_2"):
        assert sizes["float16"][name] == pytest.approx(sizes["float32"][name] / 2, rel=0.05), name
    assert sizes["float16"]["vae"] == sizes["float32"]["vae"]
    full = SeedkitTextToVideoPipeline.from_pretrained(tmp_path / "float32")
    half = SeedkitTextToVideoPipeline.from_pretrained(tmp_path / "float16")
    for name, tensor in half.transformer.state_dict().items():
        assert tensor.dtype == torch.float32, name
        torch.testing.assert_close(tensor, full.transformer.state_dict()[name].half().float(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="transformer_dtype must be one of"):
        export_pipeline(run_dir, tmp_path / "bad", height=32, width=32, num_frames=9, transformer_dtype="int8")


def test_export_image_experts(run_dir, tmp_path):
    from export_pipeline import main

    image_expert = build_components("debug", seed=6)["transformer"].with_patch_size((1, 1, 1))
    image_expert.save_pretrained(tmp_path / "image_low")
    args = [str(run_dir), "--out", str(tmp_path / "model"), "--height", "32", "--width", "32", "--frames", "9",
            "--low-noise-transformer", str(run_dir / "transformer"), "--boundary-ratio", "0.6",
            "--image-low-noise-transformer", str(tmp_path / "image_low"), "--transformer-dtype", "float16"]
    assert main(args) == 0
    config = json.loads((tmp_path / "model" / "image_transformer_2" / "config.json").read_text())
    assert config["_name_or_path"] == "image_transformer_2" and config["patch_size"] == [1, 1, 1]
    pipe = SeedkitTextToVideoPipeline.from_pretrained(tmp_path / "model")
    assert pipe.image_transformer is None
    for name, tensor in image_expert.state_dict().items():  # stored in half precision like the video experts
        torch.testing.assert_close(pipe.image_transformer_2.state_dict()[name], tensor.half().float(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="image_transformer_2 takes the image steps below boundary_ratio"):
        export_pipeline(run_dir, tmp_path / "bad", height=32, width=32, num_frames=9,
                        image_low_noise_transformer=tmp_path / "image_low")


def test_export_stores_sde_schedulers(run_dir, tmp_path):
    from seedkit.pipelines.schedulers import FlowMatchSDEScheduler, SDESampling

    sde = SDESampling(0.5, window=(0.0, 0.6), passes="images")
    out = export_pipeline(run_dir, tmp_path / "model", height=16, width=16, num_frames=5, shift=2.0, sde=sde)
    pipe = SeedkitTextToVideoPipeline.from_pretrained(out)
    assert isinstance(pipe.image_scheduler, FlowMatchSDEScheduler) and isinstance(pipe.scheduler, FlowMatchSDEScheduler)
    assert (pipe.image_scheduler.config.sde_noise_level, pipe.image_scheduler.config.sde_max_sigma) == (0.5, 0.6)
    assert pipe.scheduler.config.sde_noise_level == 0.0  # videos keep the ODE
    assert pipe.image_scheduler.config.shift == pipe.scheduler.config.shift == 2.0
