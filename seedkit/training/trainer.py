"""The training loop shared by every seedkit recipe: accelerate, exact resume, EMA, non-finite guard.

What is trained is decided by an *objective*: a callable ``objective(model, batch, generator) -> StepOutput``
(flow matching for the transformer, reconstruction + KL for the VAE). The :class:`Trainer` owns everything else:

* one code path on CPU and GPU, single process, DDP or FSDP2 (accelerate decides from its config file);
* gradient accumulation with ``no_sync`` on all but the last micro-batch, clipping, a diffusers LR schedule;
* an EMA of the weights;
* a non-finite loss or gradient norm skips the optimizer step; ``max_consecutive_nonfinite`` skips in a row
  raise :class:`NonFiniteLossError`;
* atomic checkpoints (see :mod:`seedkit.training.checkpoint`) holding weights, optimizer, scheduler, EMA, the
  data position and every RNG, so that ``k`` steps + resume + ``N - k`` steps equal ``N`` steps bit for bit.

Exactness rests on three rules: the data order is a pure function of ``(seed, epoch)`` with a mid-epoch start
(the batch samplers in :mod:`seedkit.data`), dataset items are pure functions of their key (no worker RNG), and all
training randomness (noise, timesteps, dropout of the prompt) comes from :attr:`Trainer.generator` or the global
torch RNG, both saved.
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, send_to_device
from diffusers.optimization import get_scheduler
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .checkpoint import CheckpointPayload, load_latest_checkpoint, save_checkpoint
from .config import EMAConfig, OptimConfig, TrainConfig
from .ema import ExponentialMovingAverage


class NonFiniteLossError(RuntimeError):
    """Too many consecutive optimizer steps had a NaN/Inf loss or gradient norm."""


@dataclass
class StepOutput:
    """What an objective returns for one micro-batch.

    ``loss``: scalar tensor to minimise. ``logs``: scalars to log. ``num_samples`` / ``num_tokens``: for throughput.
    """

    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)
    num_samples: int = 0
    num_tokens: int = 0


class Objective(Protocol):
    def __call__(self, model: nn.Module, batch: Any, generator: torch.Generator) -> StepOutput: ...


@dataclass
class TrainState:
    step: int = 0  # optimizer steps attempted (skipped ones included)
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed
    consecutive_nonfinite: int = 0
    skipped_steps: int = 0
    ema_updates: int = 0


def make_accelerator(config: TrainConfig, cpu: bool | None = None) -> Accelerator:
    """An Accelerator logging to ``<output_dir>/logs`` with the configured trackers and precision.

    ``cpu=None`` picks the CPU when no GPU is present; accelerate needs that flag to run several CPU processes
    (``torchrun --nproc_per_node 2 recipes/train.py ...``, gloo backend).
    """
    if cpu is None:
        cpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    if cpu and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        # accelerate only shards on accelerators: on CPU it would quietly train unsharded replicas (MULTI_CPU).
        raise RuntimeError(
            "this run was launched with an FSDP accelerate config, but accelerate runs FSDP only on GPUs / XPUs and "
            "would train as plain DDP on this CPU-only machine; launch with recipes/accelerate/cpu.yaml (or ddp.yaml "
            "on GPUs) instead"
        )
    project = ProjectConfiguration(project_dir=config.output_dir, logging_dir=str(Path(config.output_dir) / "logs"))
    return Accelerator(
        mixed_precision=config.mixed_precision,
        log_with=list(config.trackers) or None,
        project_config=project,
        cpu=cpu,
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG state, split into tensors (safetensors) and JSON-able values."""
    tensors = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{index}"] = state
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    values = {
        "python": [version, list(python_state), gauss],
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
    }
    return tensors, values


def restore_rng(generator: torch.Generator, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    generator.set_state(tensors["generator"])
    cuda_states = [tensors[key] for key in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    version, python_state, gauss = values["python"]
    random.setstate((version, tuple(python_state), gauss))
    kind, keys, position, has_gauss, cached = values["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))


def build_lr_scheduler(
    optim: OptimConfig, optimizer: torch.optim.Optimizer, max_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The recipe's LR schedule over ``max_steps`` optimizer steps.

    ``warmup_stable_decay`` is the warmup-stable-decay schedule with a 1 - sqrt cooldown (Hägele et al. 2024,
    "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations"); every other name goes to
    diffusers' ``get_scheduler``.
    """
    if optim.lr_scheduler != "warmup_stable_decay":
        return get_scheduler(
            optim.lr_scheduler, optimizer, num_warmup_steps=optim.warmup_steps, num_training_steps=max_steps
        )
    if not 0 < optim.decay_steps <= max_steps - optim.warmup_steps:
        raise ValueError(
            f"optim.decay_steps={optim.decay_steps} must be in (0, max_steps - warmup_steps = "
            f"{max_steps - optim.warmup_steps}] for lr_scheduler warmup_stable_decay"
        )
    from transformers.optimization import get_wsd_schedule  # imported here: transformers adds ~0.4 s to import

    return get_wsd_schedule(
        optimizer,
        num_warmup_steps=optim.warmup_steps,
        num_decay_steps=optim.decay_steps,
        num_training_steps=max_steps,
        decay_type="1-sqrt",
    )


class Trainer:
    """Runs an objective over a dataset; see the module docstring.

    Args:
        config, optim, ema: the recipe's ``train``, ``optim`` and ``ema`` sections.
        model: the module to train (not yet prepared).
        objective: ``objective(model, batch, generator) -> StepOutput``.
        dataset: a map-style dataset indexed by the keys the batch sampler yields.
        batch_sampler: yields lists of keys; must have ``set_epoch(epoch, start_batch)`` (see seedkit.data.buckets).
        accelerator: from :func:`make_accelerator`; the batch sampler must already be split for its rank.
        collate_fn: the DataLoader collate function.
        run_config: the whole recipe config, logged as hyper-parameters.
        step_hooks: called with the trainer on every process after each optimizer step (and its checkpoint), for
            work such as validation sampling that must not change the training RNG streams.
    """

    def __init__(
        self,
        config: TrainConfig,
        optim: OptimConfig,
        ema: EMAConfig,
        model: nn.Module,
        objective: Objective,
        dataset: Dataset,
        batch_sampler: Any,
        accelerator: Accelerator,
        collate_fn: Callable | None = None,
        run_config: dict[str, Any] | None = None,
        step_hooks: Sequence[Callable[["Trainer"], None]] = (),
    ) -> None:
        self.config = config
        self.optim_config = optim
        self.accelerator = accelerator
        self.objective = objective
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.collate_fn = collate_fn
        self.state = TrainState()
        self.run_config = dict(run_config or {})
        self.step_hooks = list(step_hooks)
        self.losses: list[float] = []  # mean loss of every attempted step, in order (used by the resume tests)
        self.checkpoint_root = Path(config.output_dir) / "checkpoints"

        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            parameters, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps, weight_decay=optim.weight_decay
        )
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        # Not prepared: accelerate would step a prepared scheduler once per process, changing the schedule with
        # the world size.
        self.scheduler = build_lr_scheduler(optim, optimizer, config.max_steps)
        self.ema = (
            ExponentialMovingAverage(self.unwrapped_model, decay=ema.decay, warmup=ema.warmup) if ema.enabled else None
        )
        self.ema_every = ema.update_every
        self.generator = torch.Generator(device=accelerator.device)
        self.generator.manual_seed(config.seed * 1009 + accelerator.process_index)
        if accelerator.is_main_process and config.trackers:
            accelerator.init_trackers(Path(config.output_dir).name or "seedkit", config=run_config or {})

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    # --- data -----------------------------------------------------------------------------------------------
    def _batches(self) -> Iterator[Any]:
        """Micro-batches forever, epoch after epoch, starting at the saved position."""
        while True:
            self.batch_sampler.set_epoch(self.state.epoch, self.state.batch_in_epoch)
            # A dedicated generator: creating the loader must not consume the global torch RNG, and the worker
            # seeds must be the same after a resume.
            loader_generator = torch.Generator().manual_seed(self.config.seed * 7919 + self.state.epoch)
            loader = DataLoader(
                self.dataset,
                batch_sampler=self.batch_sampler,
                num_workers=self.config.num_workers,
                collate_fn=self.collate_fn,
                generator=loader_generator,
                pin_memory=self.accelerator.device.type == "cuda",
            )
            for batch in loader:
                self.state.batch_in_epoch += 1
                yield send_to_device(batch, self.accelerator.device)
            self.state.epoch += 1
            self.state.batch_in_epoch = 0

    # --- one optimizer step ---------------------------------------------------------------------------------
    def train_step(self, batches: Iterator[Any]) -> dict[str, float]:
        accum = self.config.grad_accum_steps
        losses, logs, samples, tokens = [], {}, 0, 0
        for micro in range(accum):
            batch = next(batches)
            sync = self.accelerator.no_sync(self.model) if micro < accum - 1 else _null_context()
            with sync:
                with self.accelerator.autocast():
                    output = self.objective(self.model, batch, self.generator)
                self.accelerator.backward(output.loss / accum)
            losses.append(output.loss.detach().float())
            for key, value in output.logs.items():
                logs[key] = logs.get(key, 0.0) + float(value) / accum
            samples += output.num_samples
            tokens += output.num_tokens
        loss = torch.stack(losses).mean()
        max_norm = self.optim_config.max_grad_norm if self.optim_config.max_grad_norm > 0 else math.inf
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
        finite = torch.isfinite(loss)
        if self.accelerator.scaler is None:
            # With fp16 loss scaling an overflowing gradient is normal while the scale calibrates; the scaler skips
            # that step itself. Otherwise a non-finite gradient norm is as bad as a non-finite loss.
            finite &= torch.isfinite(torch.as_tensor(grad_norm, device=loss.device))
        # Every process must take the same decision, or DDP/FSDP would deadlock on the next collective.
        finite = bool(self.accelerator.reduce(finite.float(), reduction="sum").item() == self.accelerator.num_processes)
        if finite:
            self.optimizer.step()
            self.scheduler.step()
            self.state.consecutive_nonfinite = 0
            if self.ema is not None and (self.state.step + 1) % self.ema_every == 0:
                self.ema.update(self.unwrapped_model)
                self.state.ema_updates = self.ema.num_updates
        else:
            self.state.consecutive_nonfinite += 1
            self.state.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        if not finite and self.state.consecutive_nonfinite >= self.config.max_consecutive_nonfinite:
            raise NonFiniteLossError(
                f"{self.state.consecutive_nonfinite} consecutive steps had a non-finite loss or gradient norm "
                f"(last loss {loss.item()}, step {self.state.step}); stopping. Lower optim.lr, check the data, or "
                f"raise train.max_consecutive_nonfinite (now {self.config.max_consecutive_nonfinite})."
            )
        return {
            "loss": loss.item(),
            "grad_norm": float(grad_norm),
            "lr": self.scheduler.get_last_lr()[0],
            "skipped": float(not finite),
            "samples": float(samples),
            "tokens": float(tokens),
            **logs,
        }

    # --- the loop -------------------------------------------------------------------------------------------
    def train(self, stop_at_step: int | None = None) -> TrainState:
        """Train until ``train.max_steps`` (or ``stop_at_step``, to simulate an interruption in tests)."""
        if self.config.resume:
            self.resume()
        last_step = min(self.config.max_steps, stop_at_step or self.config.max_steps)
        batches = self._batches()
        progress = tqdm(
            total=self.config.max_steps,
            initial=self.state.step,
            desc="train",
            disable=not (self.config.progress_bar and self.accelerator.is_main_process),
        )
        self.model.train()
        start = time.perf_counter()
        while self.state.step < last_step:
            metrics = self.train_step(batches)
            self.losses.append(metrics["loss"])
            elapsed = max(time.perf_counter() - start, 1e-9)
            start = time.perf_counter()
            metrics["samples_per_second"] = metrics["samples"] / elapsed
            metrics["tokens_per_second"] = metrics["tokens"] / elapsed
            progress.update(1)
            progress.set_postfix(
                loss=f"{metrics['loss']:.4f}",
                lr=f"{metrics['lr']:.2e}",
                samples_s=f"{metrics['samples_per_second']:.1f}",
                tokens_s=f"{metrics['tokens_per_second']:.0f}",
            )
            if self.config.trackers and self.state.step % self.config.log_every == 0:
                self.accelerator.log(metrics, step=self.state.step)
            if self.state.step % self.config.checkpoint_every == 0 or self.state.step == self.config.max_steps:
                self.save()
            for hook in self.step_hooks:
                hook(self)
        progress.close()
        self.accelerator.wait_for_everyone()
        return self.state

    def end(self) -> None:
        """Flush and close the trackers."""
        if self.config.trackers:
            self.accelerator.end_training()

    # --- checkpoints ----------------------------------------------------------------------------------------
    def model_state_dict(self) -> dict[str, torch.Tensor]:
        if self.accelerator.is_fsdp2:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_model_state_dict(self.model, options=options)
        return {name: tensor.detach().cpu() for name, tensor in self.unwrapped_model.state_dict().items()}

    def export_state(self, use_ema: bool = True) -> dict[str, torch.Tensor]:
        """The weights to export or sample from: the EMA's when ``use_ema`` and EMA is on, else the model's. Call
        on every process: under FSDP the full state dict is a collective."""
        return self.ema.state_dict() if use_ema and self.ema is not None else self.model_state_dict()

    def _optimizer_state(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        # Keyed by parameter name rather than position, so the state reloads under another sharding.
        options = StateDictOptions(full_state_dict=self.accelerator.is_fsdp2, cpu_offload=True)
        return get_optimizer_state_dict(self.unwrapped_model, self.optimizer.optimizer, options=options)

    def save(self) -> Path:
        rng_tensors, rng_values = capture_rng(self.generator)
        payload = CheckpointPayload(
            tensors={"model": self.model_state_dict(), "rng": rng_tensors},
            objects={"optimizer": self._optimizer_state()},
            json={
                "trainer_state": asdict(self.state),
                "scheduler": _jsonable(self.scheduler.state_dict()),
                "rng_values": rng_values,
                "run_config": _jsonable(self.run_config),
            },
            rank_local={"rng", "rng_values"},
        )
        if self.ema is not None:
            payload.tensors["ema"] = self.ema.state_dict()
        if not self.accelerator.is_main_process:  # only rank 0 writes shared files; skip their host copies
            payload.tensors.pop("model")
            payload.tensors.pop("ema", None)
        return save_checkpoint(
            self.checkpoint_root,
            self.state.step,
            payload,
            keep=self.config.keep_checkpoints,
            rank=self.accelerator.process_index,
            is_main_process=self.accelerator.is_main_process,
            barrier=self.accelerator.wait_for_everyone,
        )

    def summary(self) -> str:
        """``"N steps (k skipped), final loss X"`` for the end of a run script."""
        # A run re-started at its last step only exports; it has no new loss to report.
        loss = f"final loss {self.losses[-1]:.4f}" if self.losses else "no new steps"
        return f"{self.state.step} steps ({self.state.skipped_steps} skipped), {loss}"

    def _check_run_config(self, path: Path, saved: dict[str, Any] | None) -> None:
        """Refuse a checkpoint written with other ``model.*`` settings; report other changed settings.

        Weights of another model can have the same shapes (another VAE, another latent scale), so a re-used
        ``output_dir`` would otherwise continue the wrong model without a word. Data, optimiser and schedule
        settings may change on purpose (a longer schedule, a new dataset) and are only listed.
        """
        if not saved or not self.run_config:  # checkpoints from before run configs were saved
            return
        keys = sorted(set(saved) | set(self.run_config))
        changed = {key: (saved.get(key), self.run_config.get(key)) for key in keys
                   if saved.get(key) != self.run_config.get(key)}
        model_changes = {key: values for key, values in changed.items() if key.startswith("model.")}
        if model_changes:
            listing = "; ".join(
                f"{key}: {old!r} in the checkpoint, {new!r} now" for key, (old, new) in model_changes.items()
            )
            raise ValueError(
                f"{path} was written by a run with other model settings ({listing}); resume with the same model "
                f"settings, or use another train.output_dir to start a new run"
            )
        if changed and self.accelerator.is_main_process:
            listing = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
            tqdm.write(f"resuming {path} with changed settings: {listing}")

    def resume(self) -> Path | None:
        """Load the newest valid checkpoint, if any; returns its path."""
        found = load_latest_checkpoint(self.checkpoint_root, rank=self.accelerator.process_index)
        if found is None:
            return None
        path, payload = found
        self._check_run_config(path, payload.json.get("run_config"))
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        if self.accelerator.is_fsdp2:
            options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
            set_model_state_dict(self.model, payload.tensors["model"], options=options)
        else:
            self.unwrapped_model.load_state_dict(payload.tensors["model"])
        # Not strict: a parameter that never received a gradient (the temporal layers of a VAE trained on images
        # only) has no optimizer state to save, and a fresh optimizer has none for it either, so resume stays exact.
        options = StateDictOptions(full_state_dict=self.accelerator.is_fsdp2, strict=False)
        set_optimizer_state_dict(
            self.unwrapped_model, self.optimizer.optimizer, payload.objects["optimizer"], options=options
        )
        self.scheduler.load_state_dict(payload.json["scheduler"])
        self.state = TrainState(**payload.json["trainer_state"])
        if self.ema is not None:
            self.ema.load_state_dict(payload.tensors["ema"])
            self.ema.num_updates = self.state.ema_updates
        if "rng" in payload.tensors and "rng_values" in payload.json:
            restore_rng(self.generator, payload.tensors["rng"], payload.json["rng_values"])
        else:  # written by fewer processes: this rank has no saved RNG, so the resume is not bit-exact
            warnings.warn(
                f"{path} has no RNG state for process {self.accelerator.process_index} (saved with fewer processes); "
                "reseeding it, so this resume is not bit-exact",
                RuntimeWarning,
                stacklevel=2,
            )
            seed = self.config.seed * 1009 + self.accelerator.process_index + 7 * self.state.step
            self.generator.manual_seed(seed)
            seed_everything(seed)
        if self.accelerator.is_main_process:
            tqdm.write(f"resumed from {path} at step {self.state.step}")
        return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a JSON checkpoint file")


class _null_context:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None
