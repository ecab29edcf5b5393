"""T2V / T2I / I2V pipelines on the debug flavor: outputs, CFG, schedules, callbacks, errors, save and reload."""

import io

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from seedkit.flow import classifier_free_guidance, flow_sigmas, resolution_shift_mu, sample_euler
from seedkit.pipelines import (
    SeedkitImageToVideoPipeline,
    SeedkitTextToImagePipeline,
    SeedkitTextToVideoPipeline,
    SeedkitVideoPipelineOutput,
)

SIZES = {"default_height": 16, "default_width": 16, "default_num_frames": 5, "max_sequence_length": 16}


def make_pipeline(cls=SeedkitTextToVideoPipeline, **kwargs):
    """The debug flavor with its zero-initialised (adaLN-zero) layers randomised, so outputs depend on the inputs."""
    pipe = cls.from_flavor("debug", seed=0, **SIZES, **kwargs)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in pipe.transformer.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline()


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_video_output_types(pipe):
    kwargs = dict(prompt="a red circle moving left", num_inference_steps=2, guidance_scale=3.0)
    frames_np = pipe(**kwargs, generator=seeded(), output_type="np").frames
    assert frames_np.shape == (1, 5, 16, 16, 3) and frames_np.min() >= 0 and frames_np.max() <= 1
    frames_pt = pipe(**kwargs, generator=seeded(), output_type="pt").frames
    assert frames_pt.shape == (1, 5, 3, 16, 16)
    np.testing.assert_allclose(frames_pt.permute(0, 1, 3, 4, 2).numpy(), frames_np, atol=1e-6)
    frames_pil = pipe(**kwargs, generator=seeded(), output_type="pil").frames
    assert len(frames_pil) == 1 and len(frames_pil[0]) == 5 and isinstance(frames_pil[0][0], PIL.Image.Image)
    latents = pipe(**kwargs, generator=seeded(), output_type="latent").frames
    assert latents.shape == (1, 8, 2, 2, 2)
    as_tuple = pipe(**kwargs, generator=seeded(), return_dict=False)
    assert isinstance(as_tuple, tuple) and np.array_equal(as_tuple[0], frames_np)
    # more frames, batch of prompts, several videos per prompt
    output = pipe(["a", "b"], num_frames=9, num_videos_per_prompt=2, num_inference_steps=1, output_type="latent")
    assert isinstance(output, SeedkitVideoPipelineOutput) and output.frames.shape == (4, 8, 3, 2, 2)


def test_seed_prompt_and_negative_prompt_change_the_output(pipe):
    def run(**kwargs):
        arguments = dict(prompt="a red circle", num_inference_steps=2, guidance_scale=4.0, output_type="latent")
        arguments.update(kwargs)
        return pipe(**arguments).frames

    reference = run(generator=seeded(0))
    torch.testing.assert_close(run(generator=seeded(0)), reference, atol=0, rtol=0)
    assert not torch.allclose(run(generator=seeded(1)), reference)
    assert not torch.allclose(run(generator=seeded(0), prompt="a blue square"), reference)
    assert not torch.allclose(run(generator=seeded(0), negative_prompt="blurry"), reference)


def test_cfg_batch_equals_separate_passes_and_our_euler_solver(pipe):
    """The pipeline (batched CFG, diffusers scheduler) equals sample_euler over separately guided velocities."""
    prompt, negative = ["a red circle", "two blue squares"], "green"
    noise = torch.randn(2, 8, 2, 2, 2, generator=seeded(5))
    result = pipe(prompt, negative_prompt=negative, latents=noise.clone(), num_inference_steps=3,
                  guidance_scale=4.5, output_type="latent").frames
    encoder = pipe.prompt_encoder(SIZES["max_sequence_length"])
    cond, uncond = encoder.encode(prompt), encoder.encode([negative] * 2)

    def velocity(x, sigma):
        def transformer(embeddings):
            return pipe.transformer(x, sigma * 1000, embeddings.hidden_states, embeddings.attention_mask).sample
        return classifier_free_guidance(transformer(cond), transformer(uncond), 4.5)

    scheduler = FlowMatchEulerDiscreteScheduler()
    sigmas = flow_sigmas(3, sigma_max=float(scheduler.sigma_max), sigma_min=float(scheduler.sigma_min))
    torch.testing.assert_close(result, sample_euler(velocity, noise, sigmas), atol=1e-5, rtol=1e-4)


def test_dynamic_shifting_uses_the_token_count():
    pipe = make_pipeline(scheduler_kwargs={"use_dynamic_shifting": True, "base_image_seq_len": 2,
                                           "max_image_seq_len": 64, "base_shift": 0.5, "max_shift": 1.5})
    for frames, tokens in ((5, 2), (17, 5)):
        pipe("a red circle", num_frames=frames, num_inference_steps=4, output_type="latent")
        mu = resolution_shift_mu(tokens, base_seq_len=2, max_seq_len=64, base_shift=0.5, max_shift=1.5)
        expected = flow_sigmas(4, mu=mu, sigma_min=float(pipe.scheduler.sigma_min))
        torch.testing.assert_close(pipe.scheduler.sigmas, expected, atol=1e-6, rtol=1e-6)


def test_callback_on_step_end(pipe):
    seen = []

    def callback(pipeline, step, timestep, callback_kwargs):
        seen.append((step, float(timestep), tuple(callback_kwargs["latents"].shape),
                     tuple(callback_kwargs["prompt_embeds"].shape)))
        return {"latents": torch.zeros_like(callback_kwargs["latents"])}

    output = pipe("a red circle", num_inference_steps=3, output_type="latent", callback_on_step_end=callback,
                  callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
    assert [item[0] for item in seen] == [0, 1, 2] and seen[0][1] == 1000.0
    assert seen[0][2] == (1, 8, 2, 2, 2) and seen[0][3] == (1, 16, 32)
    assert torch.count_nonzero(output.frames) == 0  # the callback's replacement was used
    assert pipe.num_timesteps == 3


def test_text_to_image(pipe):
    t2i = SeedkitTextToImagePipeline(**pipe.components, **SIZES)
    images = t2i(["a red circle", "a blue square"], num_inference_steps=2, generator=seeded()).images
    assert len(images) == 2 and images[0].size == (16, 16)
    array = t2i("a red circle", height=32, width=48, num_inference_steps=2, output_type="np").images
    assert array.shape == (1, 32, 48, 3)
    latent = t2i("a red circle", num_inference_steps=2, output_type="latent", generator=seeded()).images
    video_latent = pipe("a red circle", num_frames=1, num_inference_steps=2, output_type="latent",
                        generator=seeded()).frames
    torch.testing.assert_close(latent, video_latent)  # an image is a one-frame video


def test_image_to_video_conditions_on_the_first_frame(pipe):
    i2v = SeedkitImageToVideoPipeline(**pipe.components, **SIZES)
    image = PIL.Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    captured = []
    handle = i2v.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: captured.append(kwargs["condition"]), with_kwargs=True
    )
    try:
        frames = i2v(image=image, prompt="a red circle", num_inference_steps=2, generator=seeded()).frames
    finally:
        handle.remove()
    assert frames.shape == (1, 5, 16, 16, 3)
    condition = captured[0]
    assert condition.shape == (2, 9, 2, 2, 2)  # CFG batch, latent channels + mask, latent frames
    expected_latents = i2v.encode_image(image, 16, 16, 1, torch.device("cpu"))[:, :, 0]
    torch.testing.assert_close(condition[1, :8, 0], expected_latents[0])
    assert torch.count_nonzero(condition[:, :8, 1]) == 0
    assert condition[:, 8, 0].eq(1).all() and condition[:, 8, 1].eq(0).all()
    other = i2v(image=PIL.Image.new("RGB", (16, 16), "red"), prompt="a red circle", num_inference_steps=2,
                generator=seeded()).frames
    assert not np.allclose(other, frames)
    with pytest.raises(ValueError, match="needs `image`"):
        i2v(prompt="a red circle")


def test_image_first_text_to_video_conditions_on_its_own_text_to_image_frame(pipe, tmp_path):
    noise = torch.randn(1, 8, 2, 2, 2, generator=seeded(5))
    t2i = SeedkitTextToImagePipeline(**pipe.components, **SIZES)
    image_latents = t2i("a red circle", num_inference_steps=3, latents=noise[:, :, :1], output_type="latent").images
    conditions = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: conditions.append(kwargs["condition"]), with_kwargs=True
    )
    try:
        video = pipe("a red circle", num_inference_steps=3, latents=noise, output_type="latent", image_first=True)
    finally:
        handle.remove()
    assert conditions[:3] == [None] * 3 and len(conditions) == 6  # three image steps, then three video steps
    for condition in conditions[3:]:
        torch.testing.assert_close(condition[1, :8, :1], image_latents[0])
        assert condition[:, 8, 0].eq(1).all() and condition[:, 8, 1].eq(0).all()
    one_stage = pipe("a red circle", num_inference_steps=3, latents=noise, output_type="latent").frames
    assert not torch.allclose(video.frames, one_stage)

    # The model directory carries the default; a call can still turn it off.
    image_first_model = SeedkitTextToVideoPipeline(**pipe.components, **dict(SIZES, image_first=True))
    image_first_model.save_pretrained(tmp_path)
    reloaded = SeedkitTextToVideoPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert reloaded.config.image_first
    kwargs = dict(prompt="a red circle", num_inference_steps=3, latents=noise, output_type="latent")
    torch.testing.assert_close(reloaded(**kwargs).frames, video.frames)
    torch.testing.assert_close(reloaded(**kwargs, image_first=False).frames, one_stage)

    no_condition = SeedkitTextToVideoPipeline.from_flavor("debug", transformer_overrides={"condition_channels": 0})
    with pytest.raises(ValueError, match="image_first needs a transformer trained for image-to-video"):
        no_condition("a red circle", height=16, width=16, num_frames=5, image_first=True)


def test_image_first_progress_bars_name_their_pass(pipe):
    image_first_model = SeedkitTextToVideoPipeline(**pipe.components, **dict(SIZES, image_first=True))
    bars = io.StringIO()
    image_first_model.set_progress_bar_config(file=bars, disable=False, ascii=True)
    image_first_model("a red circle", num_inference_steps=2, output_type="latent")
    assert "image pass: 100%" in bars.getvalue() and "video pass: 100%" in bars.getvalue()

    # A label the user configured wins, and a one-pass call stays unlabelled.
    labelled = io.StringIO()
    image_first_model.set_progress_bar_config(file=labelled, disable=False, ascii=True, desc="clip 3")
    image_first_model("a red circle", num_inference_steps=2, output_type="latent")
    assert labelled.getvalue().count("clip 3: 100%") == 2 and "pass" not in labelled.getvalue()
    one_pass = io.StringIO()
    image_first_model.set_progress_bar_config(file=one_pass, disable=False, ascii=True)
    image_first_model("a red circle", num_inference_steps=2, output_type="latent", image_first=False)
    assert "100%" in one_pass.getvalue() and "pass" not in one_pass.getvalue()


def test_bad_inputs_name_valid_values(pipe):
    with pytest.raises(ValueError, match=r"valid frame counts are 1, 5, 9, 13"):
        pipe("a red circle", num_frames=4)
    with pytest.raises(ValueError, match=r"multiple of 16"):
        pipe("a red circle", height=24)
    with pytest.raises(ValueError, match=r"give one negative prompt .* or exactly 2"):
        pipe(["a", "b"], negative_prompt=["x", "y", "z"])
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        pipe(["a red circle", "  "])
    with pytest.raises(ValueError, match="give either `prompt`"):
        pipe()
    with pytest.raises(ValueError, match="valid values: pil, np, pt, latent"):
        pipe("a red circle", output_type="gif")
    with pytest.raises(ValueError, match="valid names: latents, prompt_embeds"):
        pipe("a red circle", callback_on_step_end=lambda *args: {}, callback_on_step_end_tensor_inputs=["noise"])
    with pytest.raises(ValueError, match=r"must be \(1, 8, 2, 2, 2\)"):
        pipe("a red circle", latents=torch.zeros(1, 8, 1, 2, 2))
    no_condition = SeedkitImageToVideoPipeline.from_flavor("debug", transformer_overrides={"condition_channels": 0})
    with pytest.raises(ValueError, match="condition_channels = latent_channels \\+ 1 = 9"):
        no_condition(image=PIL.Image.new("RGB", (16, 16)), prompt="a", height=16, width=16, num_frames=5)


def test_save_and_reload_give_the_same_output(pipe, tmp_path):
    kwargs = dict(prompt="a red circle", negative_prompt="blue", num_inference_steps=2, guidance_scale=3.0,
                  output_type="np")
    reference = pipe(**kwargs, generator=seeded(7)).frames
    pipe.save_pretrained(tmp_path)
    assert {path.name for path in tmp_path.iterdir()} >= {"model_index.json", "transformer", "vae", "text_encoder",
                                                           "tokenizer", "scheduler"}
    assert not list(tmp_path.rglob("*.bin"))  # safetensors only
    reloaded = SeedkitTextToVideoPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert reloaded.config.default_num_frames == 5
    np.testing.assert_array_equal(reloaded(**kwargs, generator=seeded(7)).frames, reference)
    # the same directory serves the other tasks
    as_image = SeedkitTextToImagePipeline.from_pretrained(tmp_path)
    assert as_image("a red circle", num_inference_steps=1, output_type="np").images.shape == (1, 16, 16, 3)


def test_model_cpu_offload_and_vae_tiling_keep_the_output():
    pipe = make_pipeline()
    experts = {"transformer", "transformer_2", "image_transformer", "image_transformer_2"}
    assert set(pipe.model_cpu_offload_seq.split("->")) == {"text_encoder", "vae"} | experts
    assert set(pipe.components) == {"vae", "text_encoder", "tokenizer", "scheduler", "image_scheduler"} | experts
    kwargs = dict(prompt="a red circle", num_inference_steps=2, output_type="np")
    reference = pipe(**kwargs, generator=seeded(3)).frames
    pipe.enable_model_cpu_offload(device="cpu")  # accelerate hooks; "cpu" stands in for the accelerator here
    np.testing.assert_allclose(pipe(**kwargs, generator=seeded(3)).frames, reference, atol=1e-6)


def test_diffusers_pipeline_callback_objects(pipe):
    from diffusers.callbacks import PipelineCallback

    class ZeroLatentsAtStep(PipelineCallback):
        tensor_inputs = ["latents"]

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            self.seen = sorted(callback_kwargs)
            return {"latents": torch.zeros_like(callback_kwargs["latents"])}

    callback = ZeroLatentsAtStep(cutoff_step_ratio=None, cutoff_step_index=0)
    output = pipe("a red circle", num_inference_steps=2, output_type="latent", callback_on_step_end=callback)
    assert callback.seen == ["latents"] and torch.count_nonzero(output.frames) == 0


def test_minilm_text_encoder_saved_by_name_and_precomputed_embeddings(tmp_path):
    """shapes-tiny (MiniLM text, pooled vector), shrunk: the directory refers to the packaged MiniLM by name."""
    pipe = SeedkitTextToVideoPipeline.from_flavor(
        "shapes-tiny", **SIZES, transformer_overrides={"num_dual_layers": 1, "num_single_layers": 1},
        vae_overrides={"block_out_channels": (8, 8, 8, 8)},
    )
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.text_encoder_name == "minilm" and pipe.transformer.config.pooled_projection_dim == 384
    kwargs = dict(prompt="a red circle", num_inference_steps=2, output_type="latent")
    reference = pipe(**kwargs, generator=seeded(2)).frames
    pipe.save_pretrained(tmp_path, bundle_text_encoder=False)
    assert not (tmp_path / "text_encoder").exists() and pipe.text_encoder is not None
    reloaded = SeedkitTextToVideoPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert type(reloaded.text_encoder).__name__ == "BertModel"
    torch.testing.assert_close(reloaded(**kwargs, generator=seeded(2)).frames, reference)

    # without a text encoder, precomputed embeddings still drive the pipeline
    embeddings = pipe.prompt_encoder(SIZES["max_sequence_length"]).encode(["a red circle"])
    negative = pipe.prompt_encoder(SIZES["max_sequence_length"]).encode([""])
    bare = SeedkitTextToVideoPipeline(pipe.transformer, pipe.vae, None, None, pipe.scheduler, **SIZES)
    bare.set_progress_bar_config(disable=True)
    from_embeddings = bare(prompt_embeds=embeddings, negative_prompt_embeds=negative, num_inference_steps=2,
                           output_type="latent", generator=seeded(2)).frames
    torch.testing.assert_close(from_embeddings, reference)
    with pytest.raises(ValueError, match="pass `prompt_embeds`"):
        bare("a red circle")
    t5_pipe = SeedkitTextToVideoPipeline.from_flavor("debug")
    with pytest.raises(ValueError, match="ships .*minilm"):
        t5_pipe.save_pretrained(tmp_path / "t5", bundle_text_encoder=False)

    # save_model_directory makes that choice itself and replaces an older directory whole
    published = tmp_path / "published"
    (published / "stale").mkdir(parents=True)
    assert pipe.save_model_directory(published) == published
    assert not (published / "text_encoder").exists() and not (published / "stale").exists()
    assert not published.with_name("published.partial").exists()
    t5_pipe.save_model_directory(tmp_path / "t5")
    assert (tmp_path / "t5" / "text_encoder").is_dir()  # no package ships t5-tiny: bundled


def test_assemble_from_separately_saved_models(pipe, tmp_path):
    from seedkit.pipelines import assemble_components

    pipe.transformer.save_pretrained(tmp_path / "transformer")
    pipe.vae.save_pretrained(tmp_path / "vae")
    components = assemble_components(tmp_path / "transformer", tmp_path / "vae", "t5-tiny")
    assembled = SeedkitTextToVideoPipeline(**components, text_encoder_name="t5-tiny", **SIZES)
    assembled.set_progress_bar_config(disable=True)
    kwargs = dict(prompt="a red circle", num_inference_steps=2, output_type="latent")
    reference = pipe(**kwargs, generator=seeded(4)).frames
    torch.testing.assert_close(assembled(**kwargs, generator=seeded(4)).frames, reference)
    with pytest.raises(ValueError, match="takes 8 latent channels but the VAE makes 4"):
        from seedkit.models.autoencoder_causal import CausalVideoAutoencoder

        assemble_components(pipe.transformer, CausalVideoAutoencoder(latent_channels=4, block_out_channels=(8, 8, 8)),
                            "t5-tiny")


def perturbed_copy(transformer, seed):
    import copy

    other = copy.deepcopy(transformer)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=seeded(seed)))
    return other


def with_experts(pipe, transformer_2, boundary_ratio):
    return SeedkitTextToVideoPipeline(**pipe.components | {"transformer_2": transformer_2},
                                      **pipe.pipeline_kwargs() | {"boundary_ratio": boundary_ratio})


def test_two_noise_experts_split_the_steps_at_the_boundary(pipe, tmp_path):
    low_noise = perturbed_copy(pipe.transformer, 2)
    experts = with_experts(pipe, low_noise, 0.6)
    experts.set_progress_bar_config(disable=True)
    seen = {"high": [], "low": []}
    hooks = [
        model.register_forward_pre_hook(lambda _, args, kwargs, name=name: seen[name].append(
            float(kwargs["timestep"][0])), with_kwargs=True)
        for model, name in ((experts.transformer, "high"), (low_noise, "low"))
    ]
    sigmas = [1.0, 0.8, 0.6, 0.4, 0.2]
    video = experts("a red circle", sigmas=sigmas, generator=seeded(), output_type="np").frames
    for hook in hooks:
        hook.remove()
    assert seen == {"high": [1000.0, 800.0, 600.0], "low": [400.0, 200.0]}
    # The first steps equal the single-expert pipeline's, so only the low-noise steps make the difference.
    single = pipe("a red circle", sigmas=sigmas, generator=seeded(), output_type="np").frames
    assert not np.allclose(video, single)

    experts.save_pretrained(tmp_path / "experts")
    reloaded = SeedkitTextToVideoPipeline.from_pretrained(tmp_path / "experts")
    reloaded.set_progress_bar_config(disable=True)
    assert reloaded.config.boundary_ratio == 0.6 and reloaded.transformer_2 is not None
    again = reloaded("a red circle", sigmas=sigmas, generator=seeded(), output_type="np").frames
    np.testing.assert_allclose(again, video, atol=1e-5)
    image_pipe = SeedkitTextToImagePipeline(**reloaded.components, **reloaded.pipeline_kwargs())
    assert image_pipe.transformer_2 is not None  # another task's pipeline over the same components keeps both

    with pytest.raises(ValueError, match="boundary_ratio in"):
        with_experts(pipe, low_noise, None)
    with pytest.raises(ValueError, match="needs a second expert"):
        with_experts(pipe, None, 0.5)
    other = SeedkitTextToVideoPipeline.from_flavor("debug", transformer_overrides={"condition_channels": 0}).transformer
    with pytest.raises(ValueError, match="condition_channels"):
        with_experts(pipe, other, 0.5)
    # Patch sizes may differ: each expert cuts the same latents into its own tokens.
    finer = with_experts(pipe, pipe.transformer.with_patch_size((1, 1, 1)), 0.6)
    finer.set_progress_bar_config(disable=True)
    assert finer.size_multiple == pipe.size_multiple
    frames = finer("a red circle", sigmas=sigmas, generator=seeded(), output_type="np").frames
    assert frames.shape == video.shape and np.isfinite(frames).all()


def test_guidance_scale_2_guides_the_low_noise_expert_alone(pipe):
    """High-noise steps guided at `guidance_scale`, low-noise ones at `guidance_scale_2` (1: conditional only, one
    forward per step), equal to Euler over velocities guided that way by hand."""
    low_noise = perturbed_copy(pipe.transformer, 3)
    experts = with_experts(pipe, low_noise, 0.6)
    experts.set_progress_bar_config(disable=True)
    prompt, sigmas = "a red circle", [1.0, 0.8, 0.6, 0.4, 0.2]
    noise = torch.randn(1, 8, 2, 2, 2, generator=seeded(7))

    def run(**kwargs):
        return experts(prompt, latents=noise.clone(), sigmas=sigmas, guidance_scale=4.0, output_type="latent",
                       **kwargs).frames

    low_batch_sizes = []
    hook = low_noise.register_forward_pre_hook(
        lambda _, args, kwargs: low_batch_sizes.append(kwargs["hidden_states"].shape[0]), with_kwargs=True)
    unguided_low = run(guidance_scale_2=1.0)
    hook.remove()
    assert low_batch_sizes == [1, 1]  # no unconditional pass where the scale is 1

    encoder = experts.prompt_encoder(SIZES["max_sequence_length"])
    cond, uncond = encoder.encode([prompt]), encoder.encode([""])

    def velocity(x, sigma):
        def predict(transformer, embeddings):
            return transformer(x, sigma * 1000, embeddings.hidden_states, embeddings.attention_mask).sample
        if sigma >= 0.6:
            return classifier_free_guidance(predict(pipe.transformer, cond), predict(pipe.transformer, uncond), 4.0)
        return predict(low_noise, cond)

    torch.testing.assert_close(unguided_low, sample_euler(velocity, noise, torch.tensor(sigmas + [0.0])),
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(run(guidance_scale_2=4.0), run(), atol=0, rtol=0)
    assert not torch.allclose(run(guidance_scale_2=8.0), run())
    with pytest.raises(ValueError, match="one transformer"):
        pipe(prompt, num_inference_steps=2, guidance_scale_2=2.0)


def test_image_experts_take_the_image_steps(pipe, tmp_path):
    """Text-to-image and the image pass of image first run the image expert below the boundary; video steps never do.
    An image expert may cut finer patches and lack condition channels (it never sees a first frame)."""
    image_expert = SeedkitTextToVideoPipeline.from_flavor(
        "debug", seed=4, transformer_overrides={"condition_channels": 0}
    ).transformer.with_patch_size((1, 1, 1))
    experts = SeedkitTextToVideoPipeline(
        **pipe.components | {"transformer_2": perturbed_copy(pipe.transformer, 2), "image_transformer_2": image_expert},
        **pipe.pipeline_kwargs() | {"boundary_ratio": 0.6, "image_first": True},
    )
    experts.set_progress_bar_config(disable=True)
    calls = []
    hooks = [
        model.register_forward_pre_hook(
            lambda _, args, kwargs, name=name: calls.append((name, int(kwargs["timestep"][0]))), with_kwargs=True
        )
        for model, name in ((experts.transformer, "high"), (experts.transformer_2, "low"), (image_expert, "image low"))
    ]
    sigmas = [1.0, 0.8, 0.6, 0.4, 0.2]
    image_pass = [("high", 1000), ("high", 800), ("high", 600), ("image low", 400), ("image low", 200)]
    video_pass = [("high", 1000), ("high", 800), ("high", 600), ("low", 400), ("low", 200)]
    noise = torch.randn(1, 8, 2, 2, 2, generator=seeded(3))
    video = experts("a red circle", sigmas=sigmas, latents=noise, output_type="latent").frames
    assert calls == image_pass + video_pass
    calls.clear()
    experts("a red circle", sigmas=sigmas, latents=noise, output_type="latent", image_first=False)
    assert calls == video_pass
    calls.clear()
    t2i = SeedkitTextToImagePipeline(**experts.components, **experts.pipeline_kwargs())
    t2i.set_progress_bar_config(disable=True)
    image = t2i("a red circle", sigmas=sigmas, latents=noise[:, :, :1], output_type="latent").images
    assert calls == image_pass
    calls.clear()
    i2v = SeedkitImageToVideoPipeline(**experts.components, **experts.pipeline_kwargs())
    i2v.set_progress_bar_config(disable=True)
    i2v(image=PIL.Image.new("RGB", (16, 16)), prompt="a red circle", sigmas=sigmas, output_type="latent")
    assert calls == video_pass
    for hook in hooks:
        hook.remove()

    # The image pass's frame is the text-to-image pipeline's, and a save keeps the image expert in its slot.
    without_image_expert = SeedkitTextToImagePipeline(
        **experts.components | {"image_transformer_2": None}, **experts.pipeline_kwargs()
    )
    without_image_expert.set_progress_bar_config(disable=True)
    assert not torch.allclose(
        without_image_expert("a red circle", sigmas=sigmas, latents=noise[:, :, :1], output_type="latent").images,
        image,
    )
    experts.save_pretrained(tmp_path)
    reloaded = SeedkitTextToVideoPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert reloaded.image_transformer is None and reloaded.image_transformer_2.config.patch_size == [1, 1, 1]
    torch.testing.assert_close(
        reloaded("a red circle", sigmas=sigmas, latents=noise, output_type="latent").frames, video
    )

    with pytest.raises(ValueError, match="image_transformer_2 takes the image steps below boundary_ratio"):
        SeedkitTextToVideoPipeline(**pipe.components | {"image_transformer_2": image_expert}, **pipe.pipeline_kwargs())
    other_text = type(pipe.transformer).from_config({**pipe.transformer.config, "text_embed_dim": 48})
    with pytest.raises(ValueError, match="transformer and image_transformer must read the same latents"):
        SeedkitTextToVideoPipeline(**pipe.components | {"image_transformer": other_text}, **pipe.pipeline_kwargs())
