"""Transformer training on a latent cache: bucketed and packed batches, T2I/T2V/I2V conditioning, export, resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME as WEIGHTS_NAME
from safetensors.torch import load_file

from seedkit.flow import sample_path
from seedkit.training.checkpoint import checkpoint_dir
from seedkit.training.config import RecipeConfig, TaskConfig, load_config
from seedkit.training.objectives import (
    DecodedFrameLoss,
    FlowMatchingObjective,
    SelfPlayDPOObjective,
    ShapeWordContrast,
    TransformerTrainingWrapper,
    first_frame_condition,
    foreground_loss_weight,
)
from seedkit.training.recipes import (
    GROWABLE_TRANSFORMER_KEYS,
    SELF_PLAY_PAIRS,
    build_transformer,
    build_transformer_trainer,
    build_vae,
    export_checkpoint,
    export_model,
)


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2v")
    return root / "shapes", root / "cache"


def recipe(tmp_path, data_dirs, *overrides: str) -> RecipeConfig:
    shapes_dir, cache_dir = data_dirs
    return load_config(
        None,
        [
            "model.flavor=debug",
            f"data.data_dir={shapes_dir}",
            f"data.cache_dir={cache_dir}",
            "data.num_clips=8",
            "data.frames=[5]",
            "data.sizes=[[16, 16], [16, 32]]",
            "data.image_fraction=0.25",
            f"train.output_dir={tmp_path}",
            "train.max_steps=4",
            "train.batch_size=2",
            "train.trackers=[]",
            "train.progress_bar=false",
            "train.checkpoint_every=2",
            "task.i2v_probability=0.5",
            "task.text_dropout=0.3",
            "optim.warmup_steps=1",
            *overrides,
        ],
    )


def test_bucketed_training_exports_ema_transformer(tmp_path, data_dirs):
    trainer = build_transformer_trainer(recipe(tmp_path, data_dirs))
    assert len(trainer.dataset) == 8
    trainer.train()
    assert len(trainer.losses) == 4 and all(0 < loss < 10 for loss in trainer.losses)
    final = export_model(trainer, trainer_config := recipe(tmp_path, data_dirs), tmp_path / "final")
    from seedkit.models.transformer_mmdit import SeedTransformer3DModel
    from seedkit.pipelines.base import assemble_components
    from seedkit.pipelines.text_to_video import SeedkitTextToVideoPipeline

    reloaded = SeedTransformer3DModel.from_pretrained(final / "transformer")
    for name, tensor in trainer.ema.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name.removeprefix("transformer.")], tensor)
    # the exported pair loads into the text-to-video pipeline, and the VAE is the one the cache was built with
    name = (final / "text_encoder_name.txt").read_text().strip()
    pipe = SeedkitTextToVideoPipeline(
        **assemble_components(final / "transformer", final / "vae", name), text_encoder_name=name
    )
    for key, tensor in build_vae(trainer_config).state_dict().items():
        assert torch.equal(pipe.vae.state_dict()[key], tensor), key
    video = pipe("a red circle", height=16, width=16, num_frames=5, num_inference_steps=2, output_type="pt").frames
    assert video.shape == (1, 5, 3, 16, 16) and torch.isfinite(video).all()
    # the last checkpoint, exported on its own, is the run's own export
    from_checkpoint = export_checkpoint(checkpoint_dir(trainer.checkpoint_root, 4), tmp_path / "from-checkpoint")
    for component in ("transformer", "vae"):
        ours, theirs = (load_file(root / component / WEIGHTS_NAME) for root in (final, from_checkpoint))
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours), component
    assert (from_checkpoint / "text_encoder_name.txt").read_text() == (final / "text_encoder_name.txt").read_text()


def train_straight_and_resumed(tmp_path, data_dirs, *overrides: str):
    """``(straight, resumed)`` trainers of 4 steps in one go and 2 + resume + 2, whose losses must be equal."""
    straight = build_transformer_trainer(recipe(tmp_path / "a", data_dirs, *overrides))
    straight.train()
    first = build_transformer_trainer(recipe(tmp_path / "b", data_dirs, *overrides))
    first.train(stop_at_step=2)
    second = build_transformer_trainer(recipe(tmp_path / "b", data_dirs, *overrides))
    second.train()
    assert first.losses + second.losses == straight.losses and all(math.isfinite(x) for x in straight.losses)
    return straight, second


def test_packed_training_runs_and_resumes_exactly(tmp_path, data_dirs):
    straight, second = train_straight_and_resumed(tmp_path, data_dirs, "data.batching=pack", "data.token_budget=12")
    for (name, a), b in zip(straight.unwrapped_model.named_parameters(), second.unwrapped_model.parameters()):
        assert torch.equal(a, b), name


def test_first_frame_condition():
    latents = torch.randn(3, 4, 3, 2, 2)
    condition = first_frame_condition(latents, torch.tensor([True, False, True]))
    assert condition.shape == (3, 5, 3, 2, 2)
    assert torch.equal(condition[0, :4, 0], latents[0, :, 0]) and condition[0, 4, 0].eq(1).all()
    assert condition[1].eq(0).all() and condition[:, :, 1:].eq(0).all()
    from seedkit.flow.conditioning import first_frame_condition as pipeline_condition

    # the image-to-video pipeline builds the same tensor at sampling time
    assert torch.equal(condition[[0, 2]], pipeline_condition(latents[[0, 2], :, :1], num_latent_frames=3))


def test_packed_objective_matches_padded_objective():
    """One sample through forward_packed (text without padding) and forward (padded text + mask) give one loss."""
    torch.manual_seed(0)
    config = load_config(None, ["model.flavor=debug"])
    model = TransformerTrainingWrapper(build_transformer(config)).eval()
    with torch.no_grad():  # adaLN-zero starts at zero output; perturb so the prediction depends on the inputs
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    empty = {"text": torch.randn(1, 32)}
    objective = FlowMatchingObjective(TaskConfig(i2v_probability=1.0, text_dropout=0.0), empty, condition_channels=9)
    latents, text = torch.randn(8, 3, 2, 4), torch.randn(5, 32)
    padded_text = torch.cat([text, torch.zeros(3, 32)]).unsqueeze(0)
    padded = {"latents": latents.unsqueeze(0), "text": padded_text, "text_mask": torch.tensor([[1] * 5 + [0] * 3])}
    packed = {"latents": [latents], "text": [text]}
    with torch.no_grad():
        loss_padded = objective(model, padded, torch.Generator().manual_seed(1)).loss
        loss_packed = objective(model, packed, torch.Generator().manual_seed(1)).loss
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # and the first-frame condition matters
        no_i2v = FlowMatchingObjective(TaskConfig(i2v_probability=0.0, text_dropout=0.0), empty, 9)
        assert not torch.equal(no_i2v(model, padded, torch.Generator().manual_seed(1)).loss, loss_padded)


def test_foreground_weight_is_one_on_flat_background_and_peaks_on_the_object():
    latents = torch.full((1, 4, 2, 6, 6), 0.3)
    latents[0, :, 0, 1:3, 1:3] = 1.3  # a 2x2 object in frame 0, a half-strength one in frame 1
    latents[0, :, 1, 4, 4] = 0.8
    weight = foreground_loss_weight(latents, strength=4.0)
    assert weight.shape == (1, 1, 2, 6, 6)
    expected = torch.ones(1, 1, 2, 6, 6)
    expected[0, 0, 0, 1:3, 1:3] = 5.0
    expected[0, 0, 1, 4, 4] = 5.0  # relative to its own frame's farthest position
    torch.testing.assert_close(weight, expected)
    torch.testing.assert_close(foreground_loss_weight(torch.zeros(1, 4, 1, 3, 3), 4.0), torch.ones(1, 1, 1, 3, 3))


@pytest.mark.parametrize(
    "loss_terms",
    [
        {"foreground_weight": 4.0},
        {"temporal_difference_weight": 2.0},
        {"foreground_weight": 4.0, "temporal_difference_weight": 2.0},
    ],
)
def test_weighted_objectives_packed_match_padded_and_change_the_loss(loss_terms):
    torch.manual_seed(0)
    model = TransformerTrainingWrapper(build_transformer(load_config(None, ["model.flavor=debug"]))).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    empty = {"text": torch.randn(1, 32)}
    latents, text = torch.zeros(8, 3, 2, 4), torch.randn(5, 32)
    latents[:, :, 0, 1] = 2.0
    padded = {"latents": latents.unsqueeze(0), "text": text.unsqueeze(0), "text_mask": torch.ones(1, 5)}
    packed = {"latents": [latents], "text": [text]}
    weighted = FlowMatchingObjective(TaskConfig(text_dropout=0.0, **loss_terms), empty, 9)
    plain = FlowMatchingObjective(TaskConfig(text_dropout=0.0), empty, 9)
    with torch.no_grad():
        loss_padded = weighted(model, padded, torch.Generator().manual_seed(1)).loss
        loss_packed = weighted(model, packed, torch.Generator().manual_seed(1)).loss
        loss_plain = plain(model, padded, torch.Generator().manual_seed(1)).loss
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(loss_padded, loss_plain)


class WordEncoder:
    """A text encoder stand-in: one fixed random vector per word, and the words it was asked for."""

    def __init__(self, dim: int = 32) -> None:
        self.dim, self.seen = dim, []

    def encode(self, captions, device=None):
        from seedkit.models.text_encoders import TextEmbeddings

        self.seen.extend(captions)
        rows = [[torch.Generator().manual_seed(sum(map(ord, w))) for w in c.split()] for c in captions]
        length = max(len(row) for row in rows)
        states = torch.zeros(len(rows), length, self.dim)
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for index, row in enumerate(rows):
            for position, generator in enumerate(row):
                states[index, position] = torch.randn(self.dim, generator=generator)
            mask[index, : len(row)] = 1
        return TextEmbeddings(states, mask, None)


class CaptionBlindModel(torch.nn.Module):
    """Predicts from the noisy input alone, so every caption gives the same loss."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, hidden_states, **kwargs):
        return self.scale * hidden_states


def contrast_batch(captions):
    latents = torch.zeros(len(captions), 8, 3, 2, 4)
    latents[:, :, :, 1, 1] = 2.0  # an object on a flat background, so the foreground weights are not all zero
    text = WordEncoder().encode(captions)
    return {"latents": latents, "text": text.hidden_states, "text_mask": text.attention_mask, "caption": captions}


def test_shape_contrast_adds_the_margin_for_a_model_blind_to_captions():
    captions = ["a red circle moving left", "a blue square", "a person walking"]
    task = TaskConfig(text_dropout=0.0, shape_contrast_weight=2.0, shape_contrast_margin=0.1)
    encoder = WordEncoder()
    objective = FlowMatchingObjective(task, {"text": torch.zeros(1, 32)}, 0, shape_contrast=ShapeWordContrast(encoder))
    plain = FlowMatchingObjective(TaskConfig(text_dropout=0.0), {"text": torch.zeros(1, 32)}, 0)
    model = CaptionBlindModel()
    output = objective(model, contrast_batch(captions), torch.Generator().manual_seed(0))
    reference = plain(model, contrast_batch(captions), torch.Generator().manual_seed(0))
    # the gap is 0 for a blind model, so the hinge is the whole margin; the caption without a shape has no edit
    assert output.logs["shape_gap"] == 0.0 and output.logs["shape_hinge"] == pytest.approx(0.1)
    torch.testing.assert_close(output.loss, reference.loss + 2.0 * 0.1)
    assert len(encoder.seen) == 2 and encoder.seen[0].startswith("a red ") and "circle" not in encoder.seen[0]
    output.loss.backward()  # the hinge is differentiable through both passes
    assert model.scale.grad is not None


def test_shape_contrast_measures_the_gap_of_a_model_that_reads_captions():
    torch.manual_seed(0)
    model = TransformerTrainingWrapper(build_transformer(load_config(None, ["model.flavor=debug"]))).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    task = TaskConfig(text_dropout=0.0, shape_contrast_weight=1.0, shape_contrast_margin=10.0)
    contrast = ShapeWordContrast(WordEncoder())
    objective = FlowMatchingObjective(task, {"text": torch.zeros(1, 32)}, 9, shape_contrast=contrast)
    output = objective(model, contrast_batch(["a red circle moving left", "a small blue square"]), torch.Generator())
    # a model that reads the caption gives edited captions another loss: the gap is not 0, the hinge margin - gap
    assert output.logs["shape_gap"] != 0.0
    assert output.logs["shape_hinge"] == pytest.approx(10.0 - output.logs["shape_gap"], rel=1e-5)
    with pytest.raises(ValueError, match="bucket"):  # packed batches have no contrast pass
        objective(model, {"latents": [torch.zeros(8, 3, 2, 4)], "text": [torch.zeros(2, 32)]}, torch.Generator())


def debug_vae():
    torch.manual_seed(0)
    return build_vae(load_config(None, ["model.flavor=debug"]))


def test_decoded_frame_loss_compares_first_frames_in_pixels():
    decoder_loss = DecodedFrameLoss(debug_vae())
    clean = torch.randn(2, decoder_loss.vae.config.latent_channels, 3, 4, 4)
    assert decoder_loss(clean, clean).item() == 0.0
    later = clean.clone()
    later[:, :, 1:] += 1.0  # only the first latent frame is decoded
    assert decoder_loss(later, clean).item() == 0.0
    predicted = clean.clone().requires_grad_(True)
    moved = predicted + torch.nn.functional.pad(torch.ones(2, clean.shape[1], 1, 4, 4), (0, 0, 0, 0, 0, 2))
    loss = decoder_loss(moved, clean)
    loss.backward()
    assert loss.item() > 0 and predicted.grad[:, :, 0].abs().sum() > 0 and predicted.grad[:, :, 1:].abs().sum() == 0
    assert not any(parameter.requires_grad for parameter in decoder_loss.vae.parameters())


def test_decoder_loss_adds_its_weighted_term_on_text_to_video_rows():
    vae = debug_vae()
    channels = vae.config.latent_channels
    batch = {"latents": torch.randn(4, channels, 3, 4, 4), "text": torch.randn(4, 2, 32), "text_mask": torch.ones(4, 2)}
    model = CaptionBlindModel()
    empty = {"text": torch.zeros(1, 32)}
    plain = FlowMatchingObjective(TaskConfig(text_dropout=0.0, i2v_probability=0.5), empty, 0)
    task = TaskConfig(text_dropout=0.0, i2v_probability=0.5, decoder_loss_weight=3.0)
    objective = FlowMatchingObjective(task, empty, 0, decoder_loss=DecodedFrameLoss(vae))
    output = objective(model, batch, torch.Generator().manual_seed(1))
    reference = plain(model, batch, torch.Generator().manual_seed(1))
    # the same draws (the term takes none), so the difference is the term on the rows that are not image-to-video
    sigma, _, use_i2v = plain._draws([batch["latents"].shape[1:]] * 4, torch.Generator().manual_seed(1), "cpu")
    rows = (~use_i2v).nonzero().flatten()
    assert 0 < len(rows) < 4
    torch.testing.assert_close(output.loss, reference.loss + 3.0 * output.logs["decoder_loss"] * len(rows) / 4)
    output.loss.backward()
    assert model.scale.grad is not None
    with pytest.raises(ValueError, match="DecodedFrameLoss"):
        FlowMatchingObjective(task, empty, 0)
    with pytest.raises(ValueError, match="bucket"):
        objective(model, {"latents": [torch.zeros(channels, 3, 4, 4)], "text": [torch.zeros(2, 32)]}, torch.Generator())


class PointMassVelocity(torch.nn.Module):
    """The exact velocity field of data that is one point ``x_0``: ``(x - x_0) / sigma``, whatever the caption."""

    def __init__(self, x_0: torch.Tensor) -> None:
        super().__init__()
        self.x_0 = x_0

    def forward(self, hidden_states, timestep, **kwargs):
        return (hidden_states - self.x_0) / (timestep / 1000.0).view(-1, 1, 1, 1, 1)


def rollout_inputs(objective, sigma, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x_0, noise = torch.randn(len(sigma), 8, 3, 2, 4, generator=generator), torch.randn(len(sigma), 8, 3, 2, 4)
    batch = {"text": torch.randn(len(sigma), 2, 32), "text_mask": torch.ones(len(sigma), 2)}
    prompts = objective.prompt_inputs(batch, torch.zeros(len(sigma), dtype=torch.bool))
    return sample_path(x_0, noise, sigma), prompts


def test_rollout_of_a_model_that_stands_still_starts_each_row_higher_up_its_path():
    task = TaskConfig(rollout_probability=1.0, rollout_span=0.2, rollout_steps=3, sigma_range=[0.0, 0.6])
    objective = FlowMatchingObjective(task, {"text": torch.zeros(1, 32)}, 0)
    sigma = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.5, 0.59])
    path, prompts = rollout_inputs(objective, sigma)
    still = CaptionBlindModel()
    still.scale.data.zero_()
    rolled, logs = objective._rollout(still, path, prompts, None, torch.Generator().manual_seed(0))
    # zero velocity: the rows stay where they were noised to, the start level, and the target points from there to
    # the clean sample in the time sigma that is left
    direction = (path.noise - path.x_0).flatten(1)
    start = ((rolled.x_t - path.x_0).flatten(1) * direction).sum(1) / direction.square().sum(1)
    torch.testing.assert_close(rolled.x_t, sample_path(path.x_0, path.noise, start).x_t)
    torch.testing.assert_close(rolled.target, (rolled.x_t - path.x_0) / sigma.view(-1, 1, 1, 1, 1))
    assert (start > sigma).all() and (start - sigma <= sigma.clamp(max=0.2) + 1e-5).all()
    assert (start <= 0.6 + 1e-5).all() and logs["rollout_fraction"] == 1.0 and logs["rollout_drift"] > 0


def test_rollout_of_the_exact_velocity_field_stays_on_the_forward_path():
    task = TaskConfig(rollout_probability=0.5, rollout_steps=4, rollout_guidance=5.0)
    objective = FlowMatchingObjective(task, {"text": torch.zeros(1, 32)}, 0)
    sigma = torch.linspace(0.05, 0.95, 16)
    path, prompts = rollout_inputs(objective, sigma)
    path.x_0[:] = path.x_0[:1]  # one data point, so the exact field is known in closed form
    path = sample_path(path.x_0, path.noise, sigma)
    rolled, logs = objective._rollout(PointMassVelocity(path.x_0[:1]), path, prompts, None, torch.Generator())
    # Euler steps along a straight path are exact: the rolled-out rows land on the forward path, targets unchanged
    torch.testing.assert_close(rolled.x_t, path.x_t, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rolled.target, path.target, rtol=1e-4, atol=1e-4)
    assert 0 < logs["rollout_fraction"] < 1 and logs["rollout_drift"] < 1e-4


def test_rollout_targets_train_a_model_that_drifts():
    torch.manual_seed(0)
    model = TransformerTrainingWrapper(build_transformer(load_config(None, ["model.flavor=debug"]))).eval()
    task = TaskConfig(text_dropout=0.2, i2v_probability=0.5, rollout_probability=0.5)
    objective = FlowMatchingObjective(task, {"text": torch.randn(1, 32)}, 9)
    plain = FlowMatchingObjective(TaskConfig(text_dropout=0.2, i2v_probability=0.5), {"text": torch.randn(1, 32)}, 9)
    batch = {"latents": torch.randn(4, 8, 3, 2, 4), "text": torch.randn(4, 5, 32), "text_mask": torch.ones(4, 5)}
    output = objective(model, batch, torch.Generator().manual_seed(3))
    reference = plain(model, batch, torch.Generator().manual_seed(3))
    assert output.logs["rollout_fraction"] > 0 and output.logs["rollout_drift"] > 0
    assert not torch.allclose(output.loss, reference.loss)
    output.loss.backward()  # the rollout itself takes no gradients; the step on its result does
    assert all(parameter.grad is not None for parameter in model.parameters() if parameter.requires_grad)
    with pytest.raises(ValueError, match="bucket"):
        objective(model, {"latents": [torch.zeros(8, 3, 2, 4)], "text": [torch.zeros(2, 32)]}, torch.Generator())


DPO_OVERRIDES = ("task.dpo_beta=100.0", "task.dpo_pairs=6", "task.dpo_sample_steps=2")


def test_self_play_dpo_pairs_items_once_trains_and_resumes_exactly(tmp_path, data_dirs):
    straight, resumed = train_straight_and_resumed(tmp_path, data_dirs, *DPO_OVERRIDES)
    assert len(straight.dataset) == 6  # only the paired items of the 8 in the cache
    pairs = load_file(tmp_path / "a" / SELF_PLAY_PAIRS)
    item = straight.dataset[0]
    record_id = straight.dataset.dataset.record_ids()[0]
    assert len(pairs) == 6 and torch.equal(item["dispreferred"], pairs[record_id])
    assert item["dispreferred"].shape == item["latents"].shape
    assert not torch.equal(item["dispreferred"], item["latents"])
    # the resumed run read the pairs its first half wrote instead of sampling new ones
    assert load_file(tmp_path / "b" / SELF_PLAY_PAIRS).keys() == pairs.keys()
    for (name, a), b in zip(straight.unwrapped_model.named_parameters(), resumed.unwrapped_model.parameters()):
        assert torch.equal(a, b), name
    # the reference stays the starting weights while the trained model moves away from them
    reference = straight.objective.reference.state_dict()
    start = build_transformer_trainer(recipe(tmp_path / "c", data_dirs, *DPO_OVERRIDES)).unwrapped_model.state_dict()
    assert all(torch.equal(reference[name], start[name]) for name in reference)
    trained = straight.unwrapped_model.state_dict()
    assert any(not torch.equal(reference[name], trained[name]) for name in reference)
    with pytest.raises(ValueError, match="another run's settings"):  # the pairs on disk are of 6 items, not 7
        build_transformer_trainer(recipe(tmp_path / "a", data_dirs, *DPO_OVERRIDES, "task.dpo_pairs=7"))
    with pytest.raises(ValueError, match="does not combine"):
        build_transformer_trainer(recipe(tmp_path / "d", data_dirs, *DPO_OVERRIDES, "task.rollout_probability=0.5"))
    with pytest.raises(ValueError, match="bucket"):
        build_transformer_trainer(recipe(tmp_path / "e", data_dirs, *DPO_OVERRIDES, "data.batching=pack"))


def test_self_play_dpo_objective_starts_at_log_two_and_adds_the_data_fit():
    torch.manual_seed(0)
    model = TransformerTrainingWrapper(build_transformer(load_config(None, ["model.flavor=debug"])))
    reference = TransformerTrainingWrapper(build_transformer(load_config(None, ["model.flavor=debug"])))
    reference.load_state_dict(model.state_dict())
    task = TaskConfig(dpo_beta=50.0, dpo_sft_weight=2.0)
    objective = SelfPlayDPOObjective(task, {"text": torch.randn(1, 32)}, 9, reference)
    latents = torch.randn(3, 8, 3, 2, 4)
    batch = {"latents": latents, "dispreferred": latents + 0.3 * torch.randn_like(latents),
             "text": torch.randn(3, 5, 32), "text_mask": torch.ones(3, 5)}
    output = objective(model, batch, torch.Generator().manual_seed(0))
    # a policy equal to its reference has margin 0: the DPO term is log 2 and the rest is the weighted data fit
    assert output.logs["dpo_loss"] == pytest.approx(math.log(2.0)) and output.logs["dpo_accuracy"] == 0.0
    assert output.loss.item() == pytest.approx(math.log(2.0) + 2.0 * output.logs["preferred_error"], rel=1e-5)
    output.loss.backward()
    assert all(parameter.grad is None for parameter in reference.parameters())


def test_resolution_shift_draws_noisier_levels_for_longer_sequences():
    objective = FlowMatchingObjective(TaskConfig(resolution_shift=True), {"text": torch.zeros(1, 4)}, 0)
    small, large = torch.Size([8, 1, 2, 2]), torch.Size([8, 9, 64, 64])
    sigma_small, _, _ = objective._draws([small] * 256, torch.Generator().manual_seed(0), "cpu")
    sigma_large, _, _ = objective._draws([large] * 256, torch.Generator().manual_seed(0), "cpu")
    assert (sigma_large >= sigma_small).all() and sigma_large.mean() > sigma_small.mean() + 0.1
    mixed, _, _ = objective._draws([small] * 16 + [large] * 16, torch.Generator().manual_seed(0), "cpu")
    only_small, _, _ = objective._draws([small] * 32, torch.Generator().manual_seed(0), "cpu")
    only_large, _, _ = objective._draws([large] * 32, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(mixed, torch.cat([only_small[:16], only_large[16:]]))  # each sample gets its own shift
    task = TaskConfig(resolution_shift=True, sigma_range=[0.8, 1.0])
    expert = FlowMatchingObjective(task, {"text": torch.zeros(1, 4)}, 0)
    ranged, _, _ = expert._draws([small] * 16 + [large] * 16, torch.Generator().manual_seed(0), "cpu")
    torch.testing.assert_close(ranged, 0.8 + 0.2 * mixed)


def test_resume_refuses_a_checkpoint_of_other_model_settings(tmp_path, data_dirs, capsys):
    first = build_transformer_trainer(recipe(tmp_path, data_dirs))
    first.train(stop_at_step=2)
    # Same weight shapes, another latent scale: continuing would silently train the wrong model.
    other_vae = recipe(tmp_path, data_dirs, "model.vae={scaling_factor: 3.0}", f"data.cache_dir={tmp_path / 'cache'}")
    with pytest.raises(ValueError, match=r"model\.vae.*another train\.output_dir"):
        build_transformer_trainer(other_vae).train()
    # A longer schedule is a change made on purpose: it resumes and says what changed.
    longer = build_transformer_trainer(recipe(tmp_path, data_dirs, "train.max_steps=5"))
    longer.train()
    assert longer.state.step == 5 and len(longer.losses) == 3
    assert "train.max_steps 4 -> 5" in capsys.readouterr().out


def test_fine_tune_starts_from_the_given_transformer_weights(tmp_path, data_dirs):
    base = build_transformer(load_config(None, ["model.flavor=debug"]))
    with torch.no_grad():  # weights no random init would give, so a silent fresh init cannot pass
        for parameter in base.parameters():
            parameter.fill_(0.01)
    base.save_pretrained(tmp_path / "base")
    tuned = recipe(tmp_path / "run", data_dirs, f"model.transformer_path={tmp_path / 'base'}")
    trainer = build_transformer_trainer(tuned)
    for name, tensor in trainer.unwrapped_model.transformer.state_dict().items():
        assert torch.equal(tensor, base.state_dict()[name]), name
    trainer.train()
    assert len(trainer.losses) == 4


@pytest.mark.parametrize("switch", sorted(GROWABLE_TRANSFORMER_KEYS))
def test_fine_tune_can_switch_on_a_zero_initialised_embedding(tmp_path, switch):
    base = build_transformer(load_config(None, ["model.flavor=debug"]))
    with torch.no_grad():
        for parameter in base.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    base.save_pretrained(tmp_path / "base")
    # as weights saved before the switch existed (the bundled v5) have it: not in config.json at all
    config_path = tmp_path / "base" / "config.json"
    saved = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({key: value for key, value in saved.items() if key != switch}))
    overrides = ["model.flavor=debug", f"model.transformer_path={tmp_path / 'base'}"]
    grown = build_transformer(load_config(None, [*overrides, f"model.transformer={{{switch}: true}}"]))
    added = {name: tensor for name, tensor in grown.state_dict().items() if name in GROWABLE_TRANSFORMER_KEYS[switch]}
    assert grown.config[switch] and set(added) == GROWABLE_TRANSFORMER_KEYS[switch]
    assert not any(tensor.any() for tensor in added.values())
    generator = torch.Generator().manual_seed(0)
    latents, text = torch.randn(1, 8, 3, 4, 4, generator=generator), torch.randn(1, 5, 32, generator=generator)
    timestep = torch.tensor([500.0])
    with torch.no_grad():
        torch.testing.assert_close(grown(latents, timestep, text).sample, base(latents, timestep, text).sample)
    # switching it off again would drop trained weights: refused like any other architecture change
    grown.save_pretrained(tmp_path / "grown")
    with pytest.raises(ValueError, match=switch):
        overrides = ["model.flavor=debug", f"model.transformer_path={tmp_path / 'grown'}"]
        build_transformer(load_config(None, [*overrides, f"model.transformer={{{switch}: false}}"]))


def test_fine_tune_refuses_weights_of_another_architecture(tmp_path):
    wider = build_transformer(load_config(None, ["model.flavor=debug", "model.transformer={num_dual_layers: 2}"]))
    wider.save_pretrained(tmp_path / "base")
    with pytest.raises(ValueError, match="num_dual_layers"):
        build_transformer(load_config(None, ["model.flavor=debug", f"model.transformer_path={tmp_path / 'base'}"]))


def test_validation_caption_sensitivity_is_logged_without_changing_training(tmp_path, data_dirs):
    plain = build_transformer_trainer(recipe(tmp_path / "plain", data_dirs))
    plain.train()
    probe = [
        "validation.every=2", "validation.sensitivity_clips=2", "validation.height=32", "validation.width=32",
        "validation.num_frames=5", "train.trackers=[tensorboard]",
    ]
    probed = build_transformer_trainer(recipe(tmp_path / "probed", data_dirs, *probe))  # no prompts: probe only
    probed.train()
    probed.end()
    assert probed.losses == plain.losses
    for step in (2, 4):
        step_dir = tmp_path / "probed" / "samples" / f"step-{step:08d}"
        assert sorted(path.name for path in step_dir.iterdir()) == ["sensitivity.json"]
        report = json.loads((step_dir / "sensitivity.json").read_text())
        assert sorted(report) == ["color", "motion", "shape", "size"]
        for result in report.values():
            assert result["clips"] == 2 and 0.0 <= result["preference"] <= 1.0
            assert result["gap"] == pytest.approx(result["loss_edited"] - result["loss_true"])
            assert result["example"][0] != result["example"][1]
    # the step-4 probe is what the exported EMA weights give under the standalone probe
    from evaluation.shapesbench.sensitivity import caption_sensitivity
    from seedkit.pipelines.base import assemble_components
    from seedkit.pipelines.text_to_video import SeedkitTextToVideoPipeline

    final = export_model(probed, recipe(tmp_path / "probed", data_dirs, *probe), tmp_path / "final")
    name = (final / "text_encoder_name.txt").read_text().strip()
    components = assemble_components(final / "transformer", final / "vae", name)
    pipe = SeedkitTextToVideoPipeline(**components, text_encoder_name=name)
    again = caption_sensitivity(pipe, num_clips=2, progress=False, height=32, width=32, num_frames=5)
    logged = json.loads((tmp_path / "probed" / "samples" / "step-00000004" / "sensitivity.json").read_text())
    for attribute, result in again.items():
        assert result.loss_true == pytest.approx(logged[attribute]["loss_true"], rel=1e-4)
    with pytest.raises(ValueError, match="sensitivity_clips"):
        build_transformer_trainer(recipe(tmp_path / "none", data_dirs, "validation.every=2"))


def test_validation_samples_the_ema_weights_without_changing_training(tmp_path, data_dirs):
    from seedkit.data.video_io import read_video
    from seedkit.pipelines.base import assemble_components
    from seedkit.pipelines.text_to_video import SeedkitTextToVideoPipeline

    plain = build_transformer_trainer(recipe(tmp_path / "plain", data_dirs))
    plain.train()
    prompts = ["a red circle", "a blue square moving left"]
    validation = [
        f"validation.prompts={prompts}", "validation.every=2", "validation.num_inference_steps=2",
        "validation.height=16", "validation.width=32", "validation.num_frames=5", "validation.seed=7",
        "train.trackers=[tensorboard]",
    ]
    sampled = build_transformer_trainer(recipe(tmp_path / "sampled", data_dirs, *validation))
    sampled.train()
    sampled.end()
    assert sampled.losses == plain.losses
    for name, tensor in plain.unwrapped_model.state_dict().items():
        assert torch.equal(sampled.unwrapped_model.state_dict()[name], tensor), name
    for step in (2, 4):
        step_dir = tmp_path / "sampled" / "samples" / f"step-{step:08d}"
        names = sorted(path.name for path in step_dir.iterdir())
        assert names == ["00-a-red-circle.mp4", "01-a-blue-square-moving-left.mp4", "contact_sheet.png"]
        assert read_video(step_dir / names[1], with_audio=False).frames.shape == (5, 16, 32, 3)
    assert list((tmp_path / "sampled" / "logs").rglob("events.out.tfevents.*"))
    # the step-4 contact sheet (both prompts, all 5 frames) is what the run's exported EMA weights draw
    final = export_model(sampled, recipe(tmp_path / "sampled", data_dirs, *validation), tmp_path / "final")
    name = (final / "text_encoder_name.txt").read_text().strip()
    components = assemble_components(final / "transformer", final / "vae", name)
    pipe = SeedkitTextToVideoPipeline(**components, text_encoder_name=name)
    sheet = read_video(tmp_path / "sampled" / "samples" / "step-00000004" / "contact_sheet.png").frames[0]
    assert sheet.shape == (2 * 16 + 2, 5 * 32 + 4 * 2, 3)
    for row, prompt in enumerate(prompts):
        frames = pipe(
            prompt, height=16, width=32, num_frames=5, num_inference_steps=2,
            generator=torch.Generator().manual_seed(7 + row), output_type="np",
        ).frames[0]
        expected = (frames.clip(0, 1) * 255).round().astype("uint8")
        for column in range(5):
            tile = sheet[row * 18 : row * 18 + 16, column * 34 : column * 34 + 32]
            assert (tile == expected[column]).all(), (prompt, column)


def test_recipe_max_objects_makes_a_single_object_dataset(tmp_path, data_dirs):
    from seedkit.data.manifest import Manifest
    from seedkit.training.recipes import prepare_clip_manifest

    counts = {}
    for max_objects in (1, 3):
        config = recipe(
            tmp_path,
            data_dirs,
            f"data.data_dir={tmp_path / f'shapes{max_objects}'}",
            f"data.max_objects={max_objects}",
            "data.num_clips=12",
            "data.image_fraction=0",
        )
        manifest = Manifest.read(prepare_clip_manifest(config))
        counts[max_objects] = [len(record.metadata["scene"]["shots"][0]["objects"]) for record in manifest]
    assert counts[1] == [1] * 12
    assert max(counts[3]) > 1  # the default world has several objects in some of 12 clips


def test_recipe_motions_trains_on_the_matching_cache_items_only(tmp_path, data_dirs):
    moving = ["left", "right", "up", "down", "bouncing"]
    trainer = build_transformer_trainer(recipe(tmp_path / "moving", data_dirs, f"data.motions={moving}"))
    everything = build_transformer_trainer(recipe(tmp_path / "all", data_dirs))
    manifest = trainer.dataset.cache.manifest
    motions = {
        index: {obj["motion"] for shot in manifest[index].metadata["scene"]["shots"] for obj in shot["objects"]}
        for index in range(len(manifest))
    }
    expected = [index for index, names in motions.items() if names <= set(moving)]
    assert trainer.dataset.indices == expected
    assert 0 < len(trainer.dataset) < len(everything.dataset)  # the 8-clip set has images, which are still
    trainer.train()
    assert len(trainer.losses) == 4 and all(math.isfinite(loss) for loss in trainer.losses)
    with pytest.raises(ValueError, match="unknown motions"):
        build_transformer_trainer(recipe(tmp_path / "bad", data_dirs, "data.motions=[sideways]"))


def test_recipe_shapes_and_motions_filter_together(tmp_path, data_dirs):
    everything = build_transformer_trainer(recipe(tmp_path / "all", data_dirs))
    manifest = everything.dataset.cache.manifest
    objects = {
        index: [obj for shot in manifest[index].metadata["scene"]["shots"] for obj in shot["objects"]]
        for index in range(len(manifest))
    }
    single = next(objs[0] for objs in objects.values() if len(objs) == 1)
    shape, motion = single["shape"], single["motion"]
    only_shape = build_transformer_trainer(recipe(tmp_path / "shape", data_dirs, f"data.shapes=[{shape}]"))
    assert only_shape.dataset.indices == [i for i, objs in objects.items() if all(o["shape"] == shape for o in objs)]
    assert 0 < len(only_shape.dataset) < len(everything.dataset)
    both = build_transformer_trainer(
        recipe(tmp_path / "both", data_dirs, f"data.shapes=[{shape}]", f"data.motions=[{motion}]")
    )
    assert both.dataset.indices == [
        i for i, objs in objects.items() if all(o["shape"] == shape and o["motion"] == motion for o in objs)
    ]
    with pytest.raises(ValueError, match="unknown shapes"):
        build_transformer_trainer(recipe(tmp_path / "bad", data_dirs, "data.shapes=[hexagon]"))


@pytest.mark.parametrize(
    "term, setup",
    [
        # the contrast pass needs the captions' text; give it two per clip so the edits vary between epochs
        ("task.shape_contrast_weight=1.0", ("data.captions_per_clip=2", "data.data_dir={tmp}/shapes",
                                             "data.cache_dir={tmp}/cache")),
        ("task.decoder_loss_weight=2.0", ()),
        ("task.rollout_probability=0.5", ()),
    ],
)
def test_extra_loss_terms_train_and_resume_exactly(tmp_path, data_dirs, term, setup):
    setup = tuple(override.format(tmp=tmp_path) for override in setup)
    straight, _ = train_straight_and_resumed(tmp_path, data_dirs, term, *setup)
    assert straight.dataset.with_captions == term.startswith("task.shape_contrast")
    plain = build_transformer_trainer(recipe(tmp_path / "c", data_dirs, *setup))
    plain.train()
    assert plain.losses != straight.losses
    with pytest.raises(ValueError, match="bucket"):
        build_transformer_trainer(recipe(tmp_path / "d", data_dirs, term, *setup, "data.batching=pack"))


def test_validation_samples_a_noise_interval_expert_with_its_partner(tmp_path, data_dirs):
    from seedkit.data.video_io import read_video
    from seedkit.models.transformer_mmdit import SeedTransformer3DModel
    from seedkit.pipelines.base import assemble_components
    from seedkit.pipelines.text_to_video import SeedkitTextToVideoPipeline

    partner_dir = tmp_path / "partner"
    torch.manual_seed(3)
    build_transformer(recipe(tmp_path / "unused", data_dirs)).save_pretrained(partner_dir)
    validation = [
        "validation.prompts=['a red circle moving up']", "validation.every=4", "validation.num_inference_steps=4",
        "validation.height=16", "validation.width=16", "validation.num_frames=5", "validation.seed=5",
        f"validation.partner_transformer_path={partner_dir}", "validation.boundary_ratio=0.5",
    ]
    high = recipe(tmp_path / "high", data_dirs, "task.sigma_range=[0.5, 1.0]", *validation)
    trainer = build_transformer_trainer(high)
    trainer.train()
    final = export_model(trainer, high, tmp_path / "final")
    sheet = read_video(tmp_path / "high" / "samples" / "step-00000004" / "contact_sheet.png").frames[0]
    # the sheet is the exported expert above the boundary and the partner below it, not either one alone
    name = (final / "text_encoder_name.txt").read_text().strip()
    components = assemble_components(final / "transformer", final / "vae", name)
    partner = SeedTransformer3DModel.from_pretrained(partner_dir)
    pair = SeedkitTextToVideoPipeline(**components, transformer_2=partner, boundary_ratio=0.5, text_encoder_name=name)
    alone = SeedkitTextToVideoPipeline(**components, text_encoder_name=name)
    for pipe, matches in ((pair, True), (alone, False)):
        frames = pipe(
            "a red circle moving up", height=16, width=16, num_frames=5, num_inference_steps=4,
            generator=torch.Generator().manual_seed(5), output_type="np",
        ).frames[0]
        expected = (frames.clip(0, 1) * 255).round().astype("uint8")
        tiles = [sheet[0:16, column * 18 : column * 18 + 16] for column in range(5)]
        assert all((tile == expected[column]).all() for column, tile in enumerate(tiles)) == matches
    with pytest.raises(ValueError, match="straddles"):
        build_transformer_trainer(recipe(tmp_path / "both", data_dirs, *validation))
    with pytest.raises(ValueError, match="come together"):
        build_transformer_trainer(recipe(tmp_path / "half", data_dirs, *validation[:-1]))


def test_fine_tune_with_more_blocks_grows_the_given_weights(tmp_path):
    base = build_transformer(load_config(None, ["model.flavor=debug", "model.transformer={num_single_layers: 2}"]))
    with torch.no_grad():
        for parameter in base.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    base.save_pretrained(tmp_path / "base")
    overrides = ["model.flavor=debug", f"model.transformer_path={tmp_path / 'base'}"]
    deeper = "model.transformer={num_dual_layers: 2, num_single_layers: 4}"
    grown = build_transformer(load_config(None, [*overrides, deeper]))
    expected = base.with_depth(2, 4)
    assert (grown.config.num_dual_layers, grown.config.num_single_layers) == (2, 4)
    for name, tensor in expected.state_dict().items():
        assert torch.equal(grown.state_dict()[name], tensor), name
    # Fewer blocks than the weights have is another architecture, not growth: the flavor check names it.
    with pytest.raises(ValueError, match="num_single_layers: recipe 1 vs weights 2"):
        build_transformer(load_config(None, overrides))
    with pytest.raises(ValueError, match="num_single_layers: recipe 3 vs weights 2"):
        build_transformer(load_config(None, [*overrides, "model.transformer={num_single_layers: 3}"]))


def test_fine_tune_with_another_patch_size_recuts_the_given_weights(tmp_path):
    base = build_transformer(load_config(None, ["model.flavor=debug"]))
    with torch.no_grad():
        for parameter in base.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    base.save_pretrained(tmp_path / "base")
    overrides = ["model.flavor=debug", f"model.transformer_path={tmp_path / 'base'}"]
    with pytest.raises(ValueError, match=r"add rope_position_scale: \[1.0, 0.5, 0.5\] to model.transformer"):
        build_transformer(load_config(None, [*overrides, "model.transformer={patch_size: [1, 1, 1]}"]))
    finer = "model.transformer={patch_size: [1, 1, 1], rope_position_scale: [1.0, 0.5, 0.5]}"
    recut = build_transformer(load_config(None, [*overrides, finer]))
    expected = base.with_patch_size((1, 1, 1))
    assert list(recut.config.patch_size) == [1, 1, 1]
    for name, tensor in expected.state_dict().items():
        assert torch.equal(recut.state_dict()[name], tensor), name
    # the export path builds the architecture from the recipe alone: the same model
    from_recipe = build_transformer(load_config(None, ["model.flavor=debug", finer]))
    def architecture(model):
        return {
            key: list(value) if isinstance(value, (list, tuple)) else value
            for key, value in model.config.items()
            if not key.startswith("_")
        }

    assert architecture(from_recipe) == architecture(recut)
