"""Exponential moving average of model weights, kept in float32 and keyed by parameter name.

Keys are the names of ``model.named_parameters()``, so the EMA state saves to safetensors next to the model and
loads into a freshly built model with :meth:`ExponentialMovingAverage.copy_to`. Under FSDP the shadow tensors
are DTensor shards like the parameters they follow; :meth:`state_dict` gathers them to full tensors.
"""

from __future__ import annotations

import torch
from torch import nn


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


class ExponentialMovingAverage:
    """``shadow = decay * shadow + (1 - decay) * param`` after each optimizer step.

    Args:
        model: the (possibly wrapped) model whose trainable parameters are tracked.
        decay: the target decay.
        warmup: use ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the average leaves the random
            initialisation quickly in short runs.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: param.detach().clone().float() for name, param in model.named_parameters() if param.requires_grad
        }

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        for name, param in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach().float(), 1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (cast to each parameter's dtype)."""
        parameters = dict(model.named_parameters())
        missing = sorted(set(self.shadow) - set(parameters))
        if missing:
            raise KeyError(f"EMA tracks parameters the model does not have: {missing[:5]}")
        for name, shadow in self.shadow.items():
            parameters[name].copy_(shadow.to(parameters[name].dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full (gathered) float32 tensors by parameter name."""
        return {name: _full(tensor).detach().cpu().contiguous() for name, tensor in self.shadow.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.shadow):
            raise KeyError(
                f"EMA state keys differ from the model's: missing {sorted(set(self.shadow) - set(state))[:5]}, "
                f"unexpected {sorted(set(state) - set(self.shadow))[:5]}"
            )
        for name, tensor in state.items():
            target = self.shadow[name]
            if hasattr(target, "device_mesh"):  # a DTensor shard: take our slice of the full tensor
                from torch.distributed.tensor import distribute_tensor

                target.copy_(distribute_tensor(tensor.to(target.device), target.device_mesh, target.placements))
            else:
                target.copy_(tensor)
