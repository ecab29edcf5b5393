"""Online RL of a seedkit text-to-video pipeline with Flow-GRPO (see :mod:`seedkit.post_training.flow_grpo`).

One iteration: pick prompts, roll out ``group_size`` SDE samples per prompt with the pipeline's guided velocity,
decode and score them with a reward function, turn rewards into group-relative advantages, and take one optimizer
step on the clipped policy objective summed over (a random subset of) the rollout's transitions. Every transformer
of the pipeline (both experts of a two-expert model) is trained.

Checkpoints use :mod:`seedkit.training.checkpoint` (atomic, verified, falling back past a corrupt newest one).
Rollout noise, prompt choice and the trained timesteps are drawn from generators seeded by ``(seed, iteration)``,
so a resumed run repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from seedkit.models.text_encoders import TextEmbeddings
from seedkit.post_training.flow_grpo import (
    Trajectory,
    group_advantages,
    grpo_step_loss,
    sample_trajectory,
)
from seedkit.training.checkpoint import (
    CheckpointPayload,
    load_latest_checkpoint,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

RewardFn = Callable[[Sequence[Any], torch.Tensor], tuple[torch.Tensor, list[dict[str, float]]]]
"""``reward_fn(prompt_items, videos) -> (rewards [B], per-sample metric dicts)``; videos ``[B, 3, F, H, W]`` in
[-1, 1], one prompt item per sample (each item has a ``prompt`` attribute)."""


@dataclass
class GRPOConfig:
    """Settings of a Flow-GRPO run (defaults: Flow-GRPO's, scaled to a CPU)."""

    output_dir: str = "runs/grpo"
    height: int = 64
    width: int = 64
    num_frames: int = 17
    num_steps: int = 10  # SDE steps per rollout (the paper trains with 10 and samples with the usual ODE count)
    guidance_scale: float = 5.0
    guidance_scale_2: float | None = None  # a two-expert model's low-noise steps; None: guidance_scale
    noise_level: float = 0.7  # `a` in g(t) = a * sqrt(t / (1 - t))
    group_size: int = 8  # samples per prompt: the group whose rewards set each other's advantages
    prompts_per_iteration: int = 2
    iterations: int = 100
    lr: float = 2e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    clip_range: float = 1e-4  # small because log-probabilities are per-element means
    kl_coef: float = 0.0  # > 0 keeps a frozen copy of the transformers as the reference policy
    timestep_fraction: float = 1.0  # share of each rollout's transitions trained on (DanceGRPO uses < 1)
    sde_window: list[float] | None = None  # [low, high]: SDE (and training) only on steps from sigmas in it
    train_batch_size: int = 8  # samples per forward/backward (memory); gradients accumulate to one step
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(
                f"group_size must be >= 2 (advantages compare samples of one prompt); got {self.group_size}"
            )
        if self.sde_window is not None and (len(self.sde_window) != 2 or self.sde_window[0] > self.sde_window[1]):
            raise ValueError(f"sde_window must be [low, high] with low <= high; got {self.sde_window}")
        if not 0.0 < self.timestep_fraction <= 1.0:
            raise ValueError(f"timestep_fraction must be in (0, 1]; got {self.timestep_fraction}")


class FlowGRPOTrainer:
    """Flow-GRPO over a seedkit pipeline; ``prompt_source(iteration, count)`` returns that iteration's prompt items."""

    def __init__(
        self,
        pipeline,
        config: GRPOConfig,
        prompt_source: Callable[[int, int], Sequence[Any]],
        reward_fn: RewardFn,
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.prompt_source = prompt_source
        self.reward_fn = reward_fn
        self.output_dir = Path(config.output_dir)
        self.policies = [model for model in (pipeline.transformer, pipeline.transformer_2) if model is not None]
        for model in self.policies:
            model.float().requires_grad_(True).train()
        pipeline.vae.requires_grad_(False).eval()
        if pipeline.text_encoder is not None:
            pipeline.text_encoder.requires_grad_(False).eval()
        pipeline._attention_kwargs = None  # set per call by __call__, which the trainer bypasses
        self.parameters = [parameter for model in self.policies for parameter in model.parameters()]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.lr, weight_decay=config.weight_decay)
        self.references = None
        if config.kl_coef > 0:
            self.references = [self._frozen_copy(model) for model in self.policies]
        self.iteration = 0
        self.history: list[dict[str, float]] = []

    @staticmethod
    def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
        return copy.deepcopy(model).requires_grad_(False).eval()

    # -- policy ---------------------------------------------------------------------------------------------------

    def velocity_fn(
        self,
        prompt_embeds: TextEmbeddings,
        negative_prompt_embeds: TextEmbeddings | None,
        experts: Sequence[torch.nn.Module] | None = None,
    ):
        """The guided velocity of ``experts`` (default: the trained ones, in :attr:`policies` order) as a
        :data:`VelocityFn` over sigma."""
        pipeline, config = self.pipeline, self.config

        def velocity(latents: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            timestep = sigma * pipeline.scheduler.config.num_train_timesteps
            scale = pipeline.guidance_for(timestep, config.guidance_scale, config.guidance_scale_2)
            transformer = None
            if experts is not None:
                transformer = experts[self.policies.index(pipeline.transformer_for(timestep))]
            return pipeline.predict_velocity(
                latents, timestep, prompt_embeds, negative_prompt_embeds, scale, transformer=transformer
            )

        return velocity

    def sigmas(self, latent_shape: tuple[int, ...]) -> torch.Tensor:
        """The pipeline scheduler's schedule for ``num_steps`` (so rollouts sample where the ODE sampler does)."""
        self.pipeline.set_scheduler_timesteps(self.config.num_steps, latent_shape, torch.device("cpu"))
        return self.pipeline.scheduler.sigmas.detach().float().cpu()

    # -- one iteration --------------------------------------------------------------------------------------------

    def _generator(self, iteration: int, stream: int) -> torch.Generator:
        seed = np.random.SeedSequence([self.config.seed, iteration, stream]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(seed))

    def run_iteration(self, iteration: int) -> dict[str, float]:
        config, pipeline = self.config, self.pipeline
        items = list(self.prompt_source(iteration, config.prompts_per_iteration))
        batch = len(items) * config.group_size
        with torch.no_grad():
            prompt_embeds, negative_embeds = pipeline.encode_prompt(
                [item.prompt for item in items], None, config.guidance_scale > 1.0,
                num_videos_per_prompt=config.group_size, device=torch.device("cpu"),
            )
        shape = pipeline.latent_shape(batch, config.num_frames, config.height, config.width)
        noise = torch.randn(shape, generator=self._generator(iteration, 0))
        sigmas = self.sigmas(shape)

        # 1. Roll out the SDE with the current policy.
        for model in self.policies:
            model.eval()
        trajectory = sample_trajectory(
            self.velocity_fn(prompt_embeds, negative_embeds), noise, sigmas, config.noise_level,
            generator=self._generator(iteration, 1),
            sde_window=None if config.sde_window is None else tuple(config.sde_window),
        )

        # 2. Decode and score.
        with torch.no_grad():
            videos = torch.cat([pipeline.decode_latents(chunk) for chunk in trajectory.samples.split(8)]).float()
        sample_items = [item for item in items for _ in range(config.group_size)]
        rewards, sample_metrics = self.reward_fn(sample_items, videos)
        advantages = group_advantages(rewards, config.group_size)

        # 3. Policy gradient over the chosen transitions, one optimizer step.
        for model in self.policies:
            model.train()
        losses = self._accumulate_gradients(trajectory, advantages, prompt_embeds, negative_embeds, iteration)
        gradient_norm = torch.nn.utils.clip_grad_norm_(
            self.parameters, config.max_grad_norm if config.max_grad_norm > 0 else float("inf")
        )
        if torch.isfinite(gradient_norm):
            self.optimizer.step()
        else:
            logger.warning("iteration %d: non-finite gradient norm, step skipped", iteration)
        self.optimizer.zero_grad(set_to_none=True)

        record = {
            "iteration": iteration,
            "reward": float(rewards.mean()),
            "reward_std_within_groups": float(rewards.view(-1, config.group_size).std(dim=1, unbiased=False).mean()),
            "grad_norm": float(gradient_norm),
            **losses,
        }
        for name in sorted({key for metrics in sample_metrics for key in metrics}):
            values = [metrics[name] for metrics in sample_metrics if metrics.get(name) is not None]
            if values:
                record[f"metric/{name}"] = float(np.mean(values))
        return record

    def _accumulate_gradients(
        self,
        trajectory: Trajectory,
        advantages: torch.Tensor,
        prompt_embeds: TextEmbeddings,
        negative_embeds: TextEmbeddings | None,
        iteration: int,
    ) -> dict[str, float]:
        config = self.config
        trainable = trajectory.trainable_steps
        count = max(1, round(config.timestep_fraction * len(trainable)))
        order = torch.randperm(len(trainable), generator=self._generator(iteration, 2))[:count].sort().values
        chosen = [trainable[index] for index in order.tolist()]
        batch = advantages.shape[0]
        totals = {"loss": 0.0, "policy_loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
        for start in range(0, batch, config.train_batch_size):
            rows = slice(start, min(batch, start + config.train_batch_size))
            share = (rows.stop - rows.start) / batch
            sub = Trajectory(
                trajectory.states[:, rows], trajectory.log_probs[:, rows], trajectory.sigmas, trajectory.stochastic
            )
            negative = None if negative_embeds is None else negative_embeds[rows]
            embeds = prompt_embeds[rows]
            policy = self.velocity_fn(embeds, negative)
            reference = None if self.references is None else self.velocity_fn(embeds, negative, self.references)
            for step_index in chosen:
                output = grpo_step_loss(
                    policy, sub, step_index, advantages[rows], config.clip_range, config.noise_level,
                    config.kl_coef, reference,
                )
                (output.loss * share / len(chosen)).backward()
                for name in totals:
                    totals[name] += float(getattr(output, name).detach()) * share / len(chosen)
        return totals

    # -- loop, checkpoints, export --------------------------------------------------------------------------------

    def _payload(self) -> CheckpointPayload:
        tensors = {f"policy_{index}": dict(model.state_dict()) for index, model in enumerate(self.policies)}
        return CheckpointPayload(
            tensors=tensors,
            objects={"optimizer": self.optimizer.state_dict()},
            json={"state": {"iteration": self.iteration, "config": asdict(self.config)}},
        )

    def save(self) -> Path:
        root = self.output_dir / "checkpoints"
        return save_checkpoint(root, self.iteration, self._payload(), keep=self.config.keep_checkpoints)

    def resume(self) -> bool:
        """Load the newest valid checkpoint of this run, if any; True when one was loaded."""
        found = load_latest_checkpoint(self.output_dir / "checkpoints")
        if found is None:
            return False
        path, payload = found
        for index, model in enumerate(self.policies):
            model.load_state_dict(payload.tensors[f"policy_{index}"])
        self.optimizer.load_state_dict(payload.objects["optimizer"])
        self.iteration = int(payload.json["state"]["iteration"])
        logger.info("resumed from %s (iteration %d)", path, self.iteration)
        return True

    def train(self, progress: bool = True) -> list[dict[str, float]]:
        """Run until ``config.iterations``; appends one JSON line per iteration to ``<output_dir>/log.jsonl``."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.output_dir / "log.jsonl"
        bar = tqdm(total=self.config.iterations, initial=self.iteration, desc="flow-grpo", disable=not progress)
        while self.iteration < self.config.iterations:
            record = self.run_iteration(self.iteration)
            self.iteration += 1
            self.history.append(record)
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            bar.set_postfix(reward=f"{record['reward']:.3f}", loss=f"{record['loss']:.2e}")
            bar.update()
            if self.iteration % self.config.checkpoint_every == 0 or self.iteration == self.config.iterations:
                self.save()
        bar.close()
        return self.history

    def export(self, out_dir: str | os.PathLike, transformer_dtype: torch.dtype = torch.float32) -> Path:
        """Write the pipeline with the trained transformers (diffusers layout), atomically."""
        for model in self.policies:
            model.to(transformer_dtype)
        try:
            return self.pipeline.save_model_directory(out_dir)
        finally:
            for model in self.policies:
                model.float()
