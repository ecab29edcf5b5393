"""Schedulers for seedkit pipelines beyond diffusers' own.

:class:`FlowMatchSDEScheduler` samples a rectified flow with the reverse-time SDE that has the flow's marginals
(:mod:`seedkit.flow.sde`) instead of the probability-flow ODE, on a window of noise levels. It is a
`FlowMatchEulerDiscreteScheduler` in every other respect (timesteps, shift, dynamic shifting), so a pipeline swaps it
in with the usual diffusers call:

    pipe.scheduler = FlowMatchSDEScheduler.from_config(pipe.scheduler.config, sde_noise_level=0.5)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
# SchedulerMixin is imported for diffusers' loader: it finds a component's load method among the base classes that
# the component's module (the library named in model_index.json) exposes by name.
from diffusers import FlowMatchEulerDiscreteScheduler, SchedulerMixin  # noqa: F401
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

from seedkit.flow.sde import flow_sde_step, max_sigma_for

__all__ = ["SDE_PASSES", "FlowMatchSDEScheduler", "SDESampling", "check_sde_settings"]


def check_sde_settings(noise_level: float, min_sigma: float, max_sigma: float) -> None:
    """Raise a ValueError that says what is valid for a bad SDE noise level or window."""
    if noise_level < 0:
        raise ValueError(f"sde_noise_level must be >= 0 (0: the ODE); got {noise_level}")
    if not 0.0 <= min_sigma <= max_sigma <= 1.0:
        raise ValueError(
            f"the SDE window needs 0 <= sde_min_sigma <= sde_max_sigma <= 1; got [{min_sigma}, {max_sigma}]"
        )


class FlowMatchSDEScheduler(FlowMatchEulerDiscreteScheduler):
    r"""Euler-Maruyama steps of the marginal-preserving flow SDE where sigma is in a window, Euler ODE steps elsewhere.

    A step from `sigma` to `sigma_next` with `sde_min_sigma <= sigma <= sde_max_sigma` is the Gaussian step of
    :func:`seedkit.flow.sde.flow_sde_step` (noise scale `g(t) = sde_noise_level * sqrt(t / (1 - t))`, the form
    Flow-GRPO rolls out with); other steps, and always the last one into sigma 0, are the plain Euler step. The noise
    re-enters what earlier steps fixed, so a model's early mistakes (a blurred edge) can be redrawn rather than carried
    to the end (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models", section 4,
    for diffusion models). A window at low noise keeps the layout and motion that the high-noise steps decide.

    `sde_noise_level = 0` makes every step the Euler step, so this scheduler then samples exactly as
    `FlowMatchEulerDiscreteScheduler` does. Pass `generator` to :meth:`step` for reproducible samples; seedkit's
    pipelines pass the call's generator.

    Args:
        sde_noise_level: `a` in `g(t)`; 0 disables the SDE. Flow-GRPO's rollouts use 0.7.
        sde_min_sigma, sde_max_sigma: the window of starting noise levels whose steps are stochastic.
        Others: as `FlowMatchEulerDiscreteScheduler` (`stochastic_sampling` is its own, different scheme, and is
            refused together with `sde_noise_level > 0`).
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        shift: float = 1.0,
        use_dynamic_shifting: bool = False,
        base_shift: float | None = 0.5,
        max_shift: float | None = 1.15,
        base_image_seq_len: int = 256,
        max_image_seq_len: int = 4096,
        invert_sigmas: bool = False,
        shift_terminal: float | None = None,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        time_shift_type: Literal["exponential", "linear"] = "exponential",
        stochastic_sampling: bool = False,
        sde_noise_level: float = 0.0,
        sde_min_sigma: float = 0.0,
        sde_max_sigma: float = 1.0,
    ) -> None:
        check_sde_settings(sde_noise_level, sde_min_sigma, sde_max_sigma)
        if stochastic_sampling and sde_noise_level > 0:
            raise ValueError(
                "stochastic_sampling (diffusers' re-noising of the clean prediction) and sde_noise_level > 0 are two "
                "different samplers; set one of them"
            )
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            shift=shift,
            use_dynamic_shifting=use_dynamic_shifting,
            base_shift=base_shift,
            max_shift=max_shift,
            base_image_seq_len=base_image_seq_len,
            max_image_seq_len=max_image_seq_len,
            invert_sigmas=invert_sigmas,
            shift_terminal=shift_terminal,
            use_karras_sigmas=use_karras_sigmas,
            use_exponential_sigmas=use_exponential_sigmas,
            use_beta_sigmas=use_beta_sigmas,
            time_shift_type=time_shift_type,
            stochastic_sampling=stochastic_sampling,
        )

    def is_stochastic_step(self, sigma: float, sigma_next: float) -> bool:
        """Whether the step from `sigma` to `sigma_next` takes the SDE (never the last step into sigma 0)."""
        config = self.config
        return config.sde_noise_level > 0 and sigma_next > 0 and config.sde_min_sigma <= sigma <= config.sde_max_sigma

    def step(
        self,
        model_output: torch.FloatTensor,
        timestep: float | torch.FloatTensor,
        sample: torch.FloatTensor,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        per_token_timesteps: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> FlowMatchEulerDiscreteSchedulerOutput | tuple:
        """One step from `sample` (`[B, ...]`) at `timestep` with the model's velocity `model_output` (`[B, ...]`).

        `generator` (one, or one per sample) draws the SDE step's noise; the other arguments are diffusers'.
        """
        if self.step_index is None:
            self._init_step_index(timestep)
        sigma = self.sigmas[self.step_index]
        sigma_next = self.sigmas[self.step_index + 1]
        stochastic = self.is_stochastic_step(float(sigma), float(sigma_next))
        if stochastic and per_token_timesteps is not None:
            raise ValueError(
                "SDE steps take one noise level per sample, not per_token_timesteps; use sde_noise_level=0 (or a "
                "window without this step) for per-token timesteps"
            )
        if not stochastic:
            return super().step(
                model_output,
                timestep,
                sample,
                s_churn=s_churn,
                s_tmin=s_tmin,
                s_tmax=s_tmax,
                s_noise=s_noise,
                generator=generator,
                per_token_timesteps=per_token_timesteps,
                return_dict=return_dict,
            )
        noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=torch.float32)
        # g(t) diverges at t = 1: cap it at the schedule's largest sigma below 1, as Flow-GRPO does.
        max_sigma = max_sigma_for(self.sigmas)
        prev_sample = flow_sde_step(
            model_output, sample, sigma, sigma_next, self.config.sde_noise_level, max_sigma, noise=noise
        ).prev_sample.to(model_output.dtype)
        self._step_index += 1
        if not return_dict:
            return (prev_sample,)
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev_sample)


SDE_PASSES = ("all", "images", "videos")


@dataclass(frozen=True)
class SDESampling:
    """Which of a pipeline's sampling loops take :class:`FlowMatchSDEScheduler` steps, and how noisy they are.

    Attributes:
        noise_level: the scheduler's `sde_noise_level` (0: the ODE).
        window: `(sde_min_sigma, sde_max_sigma)`, the starting noise levels of the stochastic steps.
        passes: "all", "images" (text-to-image and the image pass of image first, through the `image_scheduler`;
            videos keep the ODE) or "videos" (the `scheduler`; images get an ODE `image_scheduler`).
    """

    noise_level: float
    window: tuple[float, float] = (0.0, 1.0)
    passes: str = "all"

    def __post_init__(self) -> None:
        if self.passes not in SDE_PASSES:
            raise ValueError(f"passes must be one of {', '.join(SDE_PASSES)}; got {self.passes!r}")
        check_sde_settings(self.noise_level, *self.window)

    def scheduler(self, config, noise_level: float | None = None) -> FlowMatchSDEScheduler:
        """An SDE scheduler over `config` (any `FlowMatchEulerDiscreteScheduler` config: timesteps, shift)."""
        low, high = self.window
        level = self.noise_level if noise_level is None else noise_level
        return FlowMatchSDEScheduler.from_config(config, sde_noise_level=level, sde_min_sigma=low, sde_max_sigma=high)

    def schedulers(self, config) -> tuple[FlowMatchSDEScheduler, FlowMatchSDEScheduler | None]:
        """`(scheduler, image_scheduler)` over a base scheduler `config`; image_scheduler None: images step with
        `scheduler`."""
        images = {"all": None, "images": self.scheduler(config), "videos": self.scheduler(config, 0.0)}[self.passes]
        return self.scheduler(config, 0.0 if self.passes == "images" else None), images

    def apply(self, pipeline) -> None:
        """Rebuild a seedkit pipeline's schedulers from its `scheduler` config, in place. A pipeline saved afterwards
        stores them, so the setting travels with the model directory."""
        scheduler, image_scheduler = self.schedulers(pipeline.scheduler.config)
        # register_modules, not attribute assignment: diffusers keeps a component that was None recorded as None in
        # the config (and so out of save_pretrained) when it is assigned.
        pipeline.register_modules(scheduler=scheduler, image_scheduler=image_scheduler)

    def write(self, model_dir: str | os.PathLike) -> None:
        """Store these schedulers in a saved model directory (its `scheduler/`, `image_scheduler/` and
        `model_index.json`), leaving every other file as it is: the sampler of a published model changes without
        rewriting its weights."""
        model_dir = Path(model_dir)
        index_path = model_dir / "model_index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"{model_dir} is not a model directory (no model_index.json)")
        base = FlowMatchEulerDiscreteScheduler.load_config(model_dir / "scheduler")
        scheduler, image_scheduler = self.schedulers(base)
        index = json.loads(index_path.read_text(encoding="utf-8"))
        scheduler.save_pretrained(model_dir / "scheduler")
        index["scheduler"] = [__name__, type(scheduler).__name__]
        if image_scheduler is None:
            shutil.rmtree(model_dir / "image_scheduler", ignore_errors=True)
            index["image_scheduler"] = [None, None]
        else:
            image_scheduler.save_pretrained(model_dir / "image_scheduler")
            index["image_scheduler"] = [__name__, type(image_scheduler).__name__]
        temporary = index_path.with_name(".model_index.json.partial")
        temporary.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(temporary, index_path)
