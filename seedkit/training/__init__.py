"""Training: the accelerate :class:`~seedkit.training.trainer.Trainer` (exact resume, EMA, non-finite guard),
atomic checkpoints, recipe configs, the flow-matching objective and VAE training.

Entry points: ``recipes/train.py`` and ``recipes/train_vae.py``.
"""

from seedkit.training.checkpoint import (
    CheckpointPayload,
    CorruptCheckpointError,
    NonFiniteWeightsError,
    load_latest_checkpoint,
    save_checkpoint,
)
from seedkit.training.config import RecipeConfig, VAERecipeConfig, load_config
from seedkit.training.ema import ExponentialMovingAverage
from seedkit.training.trainer import NonFiniteLossError, StepOutput, Trainer, TrainState, make_accelerator

__all__ = [
    "CheckpointPayload",
    "CorruptCheckpointError",
    "ExponentialMovingAverage",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "RecipeConfig",
    "StepOutput",
    "TrainState",
    "Trainer",
    "VAERecipeConfig",
    "load_config",
    "load_latest_checkpoint",
    "make_accelerator",
    "save_checkpoint",
]
