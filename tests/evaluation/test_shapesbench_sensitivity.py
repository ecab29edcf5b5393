"""Caption-sensitivity probe: controlled caption edits, closed-form behaviour of a text-blind model, and the CLI."""

from __future__ import annotations

import difflib
import json

import numpy as np
import pytest

from evaluation.shapesbench.sensitivity import ATTRIBUTES, ProbeClip, caption_losses, caption_sensitivity, edit_scene
from seedkit.data.shapes import SHAPES, sample_scene
from seedkit.data.shapes_captions import COLOR_WORDS, MOTION_PHRASES, SIZE_WORDS, caption_for

ATTRIBUTE_VOCABULARY = {
    "color": {word for words in COLOR_WORDS.values() for word in words},
    "shape": set(SHAPES),
    "size": {word for words in SIZE_WORDS.values() for word in words},
    "motion": {
        word.strip(".,")
        for motion in ("left", "right", "up", "down")
        for phrases in MOTION_PHRASES[motion]
        for phrase in phrases
        for word in phrase.split()
    },
}


def _changed_words(before: str, after: str) -> set[str]:
    a, b = before.lower().replace(".", "").split(), after.lower().replace(".", "").split()
    changed = set()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b).get_opcodes():
        if tag != "equal":
            changed |= set(a[i1:i2]) | set(b[j1:j2])
    return changed


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_edited_captions_differ_only_in_the_attribute_words(attribute):
    rng = np.random.default_rng(3)
    edited_count = 0
    for _ in range(40):
        scene = sample_scene(rng, 32, 32, 9, max_objects=1)
        edited = edit_scene(scene, attribute, rng)
        if edited is None:
            assert attribute == "motion" and scene.shots[0].objects[0].motion in ("still", "bouncing")
            continue
        edited_count += 1
        before = scene.shots[0].objects[0]
        after = edited.shots[0].objects[0]
        assert getattr(after, attribute) != getattr(before, attribute)
        others = [name for name in ATTRIBUTES if name != attribute]
        assert [getattr(after, name) for name in others] == [getattr(before, name) for name in others]
        caption = caption_for(scene, np.random.default_rng(7))
        edited_caption = caption_for(edited, np.random.default_rng(7))
        changed = _changed_words(caption, edited_caption)
        assert changed, (caption, edited_caption)
        assert changed <= ATTRIBUTE_VOCABULARY[attribute], (caption, edited_caption)
    assert edited_count >= 10


def test_multi_object_scenes_are_refused():
    scene = sample_scene(np.random.default_rng(0), 32, 32, 9, min_objects=2, max_objects=2)
    with pytest.raises(ValueError, match="exactly one object"):
        edit_scene(scene, "color", np.random.default_rng(0))


def _debug_pipeline():
    from seedkit.pipelines import SeedkitTextToVideoPipeline

    pipe = SeedkitTextToVideoPipeline.from_flavor(
        # the debug tokenizer spends about one token per character: keep whole captions
        "debug", seed=0, default_height=16, default_width=16, default_num_frames=5, max_sequence_length=128
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_a_text_blind_model_has_no_preference():
    pipe = _debug_pipeline()
    encode_prompt = pipe.encode_prompt

    def same_embedding_for_every_caption(prompt, *args, **kwargs):
        return encode_prompt(["a fixed caption"], *args, **kwargs)

    pipe.encode_prompt = same_embedding_for_every_caption
    results = caption_sensitivity(pipe, num_clips=2, sigmas=(0.9,), progress=False, height=16, width=16, num_frames=5)
    for result in results.values():
        assert result.preference == 0.5
        assert result.loss_true == result.loss_edited
        assert result.gap == 0.0 and result.gap_stderr == 0.0


def test_a_model_that_reads_the_caption_has_wins_and_losses_not_ties():
    import torch

    pipe = _debug_pipeline()
    # adaLN-zero: a fresh model outputs zeros whatever the caption; wake the zero-initialised layers up
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in pipe.transformer.parameters():
            if not parameter.any():
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    results = caption_sensitivity(pipe, num_clips=2, sigmas=(0.9,), progress=False, height=16, width=16, num_frames=5)
    for result in results.values():
        assert result.loss_true != result.loss_edited
        assert result.preference in (0.0, 0.5, 1.0)  # two clips, each a win or a loss
        assert result.gap == pytest.approx(result.loss_edited - result.loss_true)
        assert result.gap_stderr > 0.0
        assert result.per_sigma[0.9]["gap"] == pytest.approx(result.gap)



def _perturb_(model, generator, scale: float = 0.05):
    """Add seeded noise to every weight in place, so two copies of a model predict apart."""
    import torch

    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return model


def test_a_two_expert_model_is_probed_with_the_expert_of_each_noise_level():
    import copy

    import torch

    from seedkit.training.objectives import foreground_score

    pipe = _debug_pipeline()
    generator = torch.Generator().manual_seed(0)
    high_noise = _perturb_(pipe.transformer, generator)
    low_noise = _perturb_(copy.deepcopy(high_noise), generator)
    latents = torch.randn(1, high_noise.config.in_channels, 2, 4, 4, generator=generator)
    clip = ProbeClip(latents, "a red circle", "a blue circle", foreground_score(latents))

    def losses(sigma):
        return caption_losses(pipe, clip, sigma, torch.Generator().manual_seed(1))

    alone = {sigma: losses(sigma) for sigma in (0.3, 0.9)}
    pipe.register_modules(transformer_2=low_noise)
    pipe.register_to_config(boundary_ratio=0.6)
    assert losses(0.9) == alone[0.9]  # above the boundary: the high-noise expert, as before
    paired_low = losses(0.3)
    assert paired_low != alone[0.3]
    pipe.register_modules(transformer=low_noise, transformer_2=None)
    pipe.register_to_config(boundary_ratio=None)
    assert losses(0.3) == paired_low  # below it: exactly the low-noise expert's losses


def test_an_image_is_probed_with_the_image_expert_of_its_noise_level():
    import copy

    import torch

    from seedkit.training.objectives import foreground_score

    pipe = _debug_pipeline()
    generator = torch.Generator().manual_seed(0)
    image_expert = _perturb_(copy.deepcopy(pipe.transformer), generator)

    def losses(num_latent_frames, sigma):
        latents = torch.randn(1, pipe.transformer.config.in_channels, num_latent_frames, 4, 4, generator=generator)
        clip = ProbeClip(latents, "a red circle", "a blue circle", foreground_score(latents))
        return caption_losses(pipe, clip, sigma, torch.Generator().manual_seed(1))

    generator.manual_seed(1)
    video_expert_losses = losses(1, 0.9), losses(2, 0.9)
    pipe.register_modules(image_transformer=image_expert)
    generator.manual_seed(1)
    image_losses, clip_losses = losses(1, 0.9), losses(2, 0.9)
    assert image_losses != video_expert_losses[0]  # the image went to the image expert
    assert clip_losses == video_expert_losses[1]  # the clip still to the video expert
    pipe.register_modules(transformer=image_expert, image_transformer=None)
    generator.manual_seed(1)
    assert losses(1, 0.9) == image_losses  # exactly the image expert's losses


class _CaptionOffsetPipeline:
    """A stand-in pipeline whose velocity is 0 for the caption "true" and ``offset`` on ``where`` (a boolean latent
    mask) for any other caption, so the loss gap has a closed form."""

    def __init__(self, where, offset: float):
        import torch

        self.where, self.offset = where, offset
        self.dtype = torch.float32

    # caption_losses runs the model that samples at the timestep, and its dtype
    def transformer_for(self, timestep, image=False):
        return self

    def encode_prompt(self, prompt, negative_prompt, do_classifier_free_guidance):
        from types import SimpleNamespace

        import torch

        flag = torch.tensor([[[0.0 if prompt == ["true"] else 1.0]]])
        return SimpleNamespace(hidden_states=flag, attention_mask=None, pooled=None), None

    def __call__(self, hidden_states, encoder_hidden_states, **kwargs):
        velocity = encoder_hidden_states.flatten()[0] * self.offset * self.where.to(hidden_states.dtype)
        return (velocity.expand_as(hidden_states),)


def test_the_loss_gap_is_measured_on_the_object_not_the_background():
    import torch

    from seedkit.training.objectives import foreground_score

    # a flat background with a 2 x 2 object in every latent frame
    latents = torch.zeros(1, 4, 3, 8, 8)
    latents[..., 2:4, 5:7] = 1.0
    clip = ProbeClip(latents, "true", "edited", foreground_score(latents))
    on_object = torch.zeros(1, 1, 3, 8, 8, dtype=torch.bool)
    on_object[..., 2:4, 5:7] = True
    sigma, offset = 0.9, 0.5
    # a caption that changes only the background prediction does not move the foreground loss
    background_only = _CaptionOffsetPipeline(~on_object, offset)
    loss_true, loss_edited = caption_losses(background_only, clip, sigma, torch.Generator().manual_seed(0))
    assert loss_edited == pytest.approx(loss_true)
    # on the object: the same noise and an offset velocity; the weights are 1 on the object, 0 elsewhere, so the
    # gap is E[(v - target)^2] - E[target^2] = offset^2 - 2 * offset * mean(target) over the object
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(latents.shape, generator=generator)
    target = (noise - latents)[on_object.expand_as(latents)]
    expected_gap = offset**2 - 2 * offset * target.mean().item()
    object_only = _CaptionOffsetPipeline(on_object, offset)
    loss_true, loss_edited = caption_losses(object_only, clip, sigma, torch.Generator().manual_seed(0))
    assert loss_true == pytest.approx((target**2).mean().item(), rel=1e-5)
    assert loss_edited - loss_true == pytest.approx(expected_gap, rel=1e-4)


def test_cli_sensitivity_writes_a_report(tmp_path, capsys):
    from seedkit.cli import main

    _debug_pipeline().save_pretrained(tmp_path / "model")
    argv = ["eval", "sensitivity", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "report")]
    argv += ["--clips", "1", "--sigmas", "0.9", "--height", "16", "--width", "16", "--frames", "5", "--no-progress"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "report" / "sensitivity.json").read_text())
    assert set(report["attributes"]) == set(ATTRIBUTES)
    assert report["height"] == 16 and report["sigmas"] == [0.9]
    true_caption, edited_caption = report["attributes"]["motion"]["example"]
    assert true_caption != edited_caption
    assert report["attributes"]["motion"]["gap_stderr"] == 0.0  # one clip
    out = capsys.readouterr().out
    assert "preference" in out and "gap +- stderr" in out
