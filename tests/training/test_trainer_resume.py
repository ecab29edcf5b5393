"""Exact resume, non-finite handling and checkpoint fallback of seedkit.training.Trainer on a tiny stand-in model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from seedkit.data.buckets import BucketBatchSampler
from seedkit.training.checkpoint import NonFiniteWeightsError, list_checkpoints
from seedkit.training.config import EMAConfig, OptimConfig, TrainConfig
from seedkit.training.trainer import NonFiniteLossError, StepOutput, Trainer, make_accelerator


class KeyedDataset(torch.utils.data.Dataset):
    """Items are pure functions of their index; two shapes, so batches come from two buckets."""

    def __init__(self, size: int = 24) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def shape(self, index: int) -> tuple[int, int, int]:
        return (1, 2, 4) if index % 3 == 0 else (1, 4, 2)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        return {"x": torch.randn(8, generator=generator), "index": torch.tensor(index)}


class TinyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Dropout(0.2), nn.Linear(16, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DenoiseObjective:
    """Predict the clean input from a noisy one; noise from the trainer's generator, dropout from the global RNG."""

    def __init__(self, nan_at_calls: set[int] | None = None) -> None:
        self.calls = 0
        self.nan_at_calls = nan_at_calls or set()

    def __call__(self, model, batch, generator) -> StepOutput:
        x = batch["x"]
        noise = torch.randn(x.shape, generator=generator, device=x.device)
        loss = torch.nn.functional.mse_loss(model(x + 0.5 * noise), x)
        if self.calls in self.nan_at_calls:
            loss = loss * float("nan")
        self.calls += 1
        return StepOutput(loss=loss, num_samples=x.shape[0])


def make_trainer(tmp_path, objective=None, optim=None, **train_overrides) -> Trainer:
    settings = dict(max_steps=8, batch_size=3, seed=3, trackers=[], progress_bar=False, checkpoint_every=100)
    train = TrainConfig(output_dir=str(tmp_path), **{**settings, **train_overrides})
    torch.manual_seed(0)
    model = TinyModel()
    dataset = KeyedDataset()
    sampler = BucketBatchSampler([dataset.shape(i) for i in range(len(dataset))], batch_size=train.batch_size, seed=1)
    accelerator = make_accelerator(train, cpu=True)
    return Trainer(
        train,
        optim or OptimConfig(lr=1e-2, warmup_steps=2, lr_scheduler="cosine", max_grad_norm=1.0),
        EMAConfig(decay=0.9),
        model,
        objective or DenoiseObjective(),
        dataset,
        sampler,
        accelerator,
    )


def parameters_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.unwrapped_model.named_parameters()}


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"num_workers": 2},
        {"grad_accum_steps": 2},
    ],
    ids=["plain", "workers", "accumulation"],
)
def test_resume_is_bit_identical(tmp_path, overrides):
    # 8 micro-batches per epoch (24 samples: 8 + 16 in two buckets of batch 3 -> 3 + 6 batches = 9); stopping
    # at step 5 (x accumulation) lands mid-epoch.
    straight = make_trainer(tmp_path / "straight", **overrides)
    straight.train()
    reference_losses, reference_parameters = straight.losses, parameters_of(straight)
    reference_ema = straight.ema.state_dict()

    first = make_trainer(tmp_path / "resumed", checkpoint_every=5, **overrides)
    first.train(stop_at_step=5)
    assert first.state.step == 5 and first.state.batch_in_epoch > 0  # stopped mid-epoch
    second = make_trainer(tmp_path / "resumed", checkpoint_every=5, **overrides)
    second.train()
    assert second.state.step == 8
    assert first.losses + second.losses == reference_losses
    assert len(set(reference_losses)) == len(reference_losses)  # the losses actually vary step to step
    for name, tensor in parameters_of(second).items():
        assert torch.equal(tensor, reference_parameters[name]), name
    for name, tensor in second.ema.state_dict().items():
        assert torch.equal(tensor, reference_ema[name]), name
    assert second.scheduler.get_last_lr() == straight.scheduler.get_last_lr()


def learning_rates(trainer: Trainer, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(trainer.scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.scheduler.step()
    return rates


def test_warmup_stable_decay_holds_then_cools_down_to_zero(tmp_path):
    optim = OptimConfig(lr=1e-2, warmup_steps=2, lr_scheduler="warmup_stable_decay", decay_steps=4)
    rates = learning_rates(make_trainer(tmp_path, optim=optim, max_steps=10), 11)
    assert rates[0] == 0.0 and rates[1] == pytest.approx(5e-3)  # linear warmup
    assert rates[2:6] == [pytest.approx(1e-2)] * 4  # stable until the last decay_steps
    # 1 - sqrt(progress) over the last 4 steps, 0 at max_steps
    assert rates[6:] == [pytest.approx(1e-2 * (1 - math.sqrt(k / 4))) for k in range(5)]


def test_a_constant_run_resumed_with_warmup_stable_decay_cools_down_without_a_jump(tmp_path):
    constant = OptimConfig(lr=1e-2, warmup_steps=2, lr_scheduler="constant_with_warmup")
    first = make_trainer(tmp_path, optim=constant, max_steps=6, checkpoint_every=6)
    first.train()
    cooldown = OptimConfig(lr=1e-2, warmup_steps=2, lr_scheduler="warmup_stable_decay", decay_steps=4)
    second = make_trainer(tmp_path, optim=cooldown, max_steps=10, checkpoint_every=100)
    assert second.resume() is not None and second.state.step == 6
    assert learning_rates(second, 5) == [pytest.approx(1e-2 * (1 - math.sqrt(k / 4))) for k in range(5)]


def test_warmup_stable_decay_needs_decay_steps_that_fit(tmp_path):
    optim = OptimConfig(lr=1e-2, warmup_steps=2, lr_scheduler="warmup_stable_decay", decay_steps=0)
    with pytest.raises(ValueError, match="decay_steps"):
        make_trainer(tmp_path, optim=optim, max_steps=10)


def test_nonfinite_loss_skips_the_step(tmp_path):
    trainer = make_trainer(tmp_path, objective=DenoiseObjective(nan_at_calls={2}), max_steps=4)
    before = {}

    original_step = trainer.train_step

    def recording_step(batches):
        before[trainer.state.step] = parameters_of(trainer)
        return original_step(batches)

    trainer.train_step = recording_step
    trainer.train()
    assert trainer.state.skipped_steps == 1
    assert math.isnan(trainer.losses[2])
    # step index 2 made no update: parameters after it equal those before it
    after_skip = before[3]
    for name, tensor in before[2].items():
        assert torch.equal(tensor, after_skip[name])
    for name, tensor in before[1].items():  # while a normal step changed them
        if name.endswith("weight"):
            assert not torch.equal(tensor, before[2][name])
    for tensor in trainer.unwrapped_model.parameters():
        assert torch.isfinite(tensor).all()


def test_consecutive_nonfinite_losses_stop_the_run(tmp_path):
    trainer = make_trainer(
        tmp_path, objective=DenoiseObjective(nan_at_calls={1, 2, 3}), max_consecutive_nonfinite=3, checkpoint_every=1
    )
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps"):
        trainer.train()
    assert trainer.state.step == 4 and trainer.state.skipped_steps == 3
    # checkpoints of the skipped steps still hold the last finite weights
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")][-1] == "step-00000003"


def test_nonfinite_weights_are_never_saved(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=1)
    with torch.no_grad():
        trainer.unwrapped_model.net[0].weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match="net.0.weight"):
        trainer.save()
    assert list_checkpoints(tmp_path / "checkpoints") == []


def test_corrupt_newest_checkpoint_falls_back_with_warning(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=4, checkpoint_every=2)
    trainer.train()
    newest = list_checkpoints(tmp_path / "checkpoints")[-1]
    assert newest.name == "step-00000004"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated file

    resumed = make_trainer(tmp_path, max_steps=4, checkpoint_every=2)
    with pytest.warns(RuntimeWarning, match="step-00000004 is unusable"):
        path = resumed.resume()
    assert path.name == "step-00000002" and resumed.state.step == 2


def test_partial_checkpoint_without_checksums_is_ignored(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=2, checkpoint_every=2)
    trainer.train()
    partial = tmp_path / "checkpoints" / "step-00000009"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"garbage")
    resumed = make_trainer(tmp_path, max_steps=2)
    with pytest.warns(RuntimeWarning, match="no checksums.json"):
        assert resumed.resume().name == "step-00000002"


def test_tensorboard_logs_loss_and_throughput(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=3, trackers=["tensorboard"])
    trainer.train()
    trainer.end()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert events
    scalars = {}
    for path in events:
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars[tag] = [event.value for event in accumulator.Scalars(tag)]
    assert scalars["loss"] == pytest.approx(trainer.losses)
    assert {"lr", "grad_norm", "samples_per_second"} <= set(scalars)


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    """Two micro-batches of 3 with accumulation equal one batch of 6 (no dropout, deterministic noise)."""

    class NoDropout(DenoiseObjective):
        def __call__(self, model, batch, generator):
            model.eval()
            return super().__call__(model, batch, generator)

    big = make_trainer(tmp_path / "big", objective=NoDropout(), max_steps=1, batch_size=6)
    big.batch_sampler = BucketBatchSampler([(1, 1, 1)] * 24, batch_size=6, seed=1)
    small = make_trainer(tmp_path / "small", objective=NoDropout(), max_steps=1, batch_size=3, grad_accum_steps=2)
    small.batch_sampler = BucketBatchSampler([(1, 1, 1)] * 24, batch_size=3, seed=1)
    # same samples in the same order: the 6-batch is the two 3-batches concatenated when the order matches
    assert big.batch_sampler.epoch_batches(0)[0] != []
    big_batch = big.batch_sampler.epoch_batches(0)[0]
    small.batch_sampler.epoch_batches = lambda epoch: [big_batch[:3], big_batch[3:]]
    big.generator.manual_seed(0)
    small.generator.manual_seed(0)
    big.config.resume = small.config.resume = False
    big.train()
    small.train()
    for a, b in zip(big.unwrapped_model.parameters(), small.unwrapped_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_an_fsdp_launch_on_cpu_fails_instead_of_training_unsharded(tmp_path, monkeypatch):
    # what `accelerate launch --config_file recipes/accelerate/fsdp2.yaml` sets for the processes it starts
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(RuntimeError, match="FSDP only on GPUs"):
        make_accelerator(TrainConfig(output_dir=str(tmp_path), trackers=[]), cpu=True)
