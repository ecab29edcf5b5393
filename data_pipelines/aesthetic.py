"""Pluggable aesthetic scorers for the aesthetic filter.

An :class:`AestheticScorer` maps RGB frames to one score each, higher is better, on a 0-10 scale by convention
(the LAION aesthetic predictors' range). Two implementations:

* :class:`HeuristicAestheticScorer` (default, no model): a hand-made combination of colourfulness, contrast,
  sharpness and exposure. It is a heuristic, not a learned judgement of beauty: it separates washed-out, grey,
  blurry or badly exposed frames from crisp, colourful, well exposed ones, and nothing more.
* :class:`MLPAestheticScorer`: a CLIP-style image embedding model (any ``CLIPVisionModelWithProjection``
  checkpoint directory the user has) followed by a linear or MLP head from a safetensors file, in the style of
  the LAION aesthetic predictors (L2-normalised image embedding -> linear layers -> score).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image
from torch import nn

from data_pipelines.filters import laplacian


def _downscale(frames: np.ndarray, analysis_size: int) -> np.ndarray:
    """``uint8 [N, H, W, 3]`` box-downscaled so the longer side is at most ``analysis_size``."""
    height, width = frames.shape[1:3]
    scale = min(1.0, analysis_size / max(height, width))
    if scale == 1.0:
        return frames
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize(size, Image.Resampling.BOX))
                     for frame in frames])


@runtime_checkable
class AestheticScorer(Protocol):
    """Scores frames: ``uint8 [N, H, W, 3]`` RGB -> ``float [N]``, higher is better."""

    def score(self, frames: np.ndarray) -> np.ndarray: ...


class HeuristicAestheticScorer:
    """Colourfulness + contrast + sharpness + exposure, each mapped to [0, 1] and mixed into a 0-10 score.

    * colourfulness: Hasler and Suesstrunk's metric on the opponent channels ``R - G`` and ``(R + G) / 2 - B``
      (about 33 is "moderately colourful", 59 "highly"); saturates at ``colourfulness_scale``.
    * contrast: RMS contrast (standard deviation of luma, 0-255); saturates at ``contrast_scale``.
    * sharpness: log variance of the Laplacian at ``analysis_size``, saturating at ``sharpness_scale``.
    * exposure: 1 at mid-grey mean luma, falling linearly to 0 at pure black or white.

    Args:
        weights: mixing weights of (colourfulness, contrast, sharpness, exposure); they are normalised to sum 1.
        analysis_size: longer side of the frames the measurements run on.
    """

    def __init__(
        self,
        weights: tuple[float, float, float, float] = (0.3, 0.25, 0.3, 0.15),
        analysis_size: int = 256,
        colourfulness_scale: float = 80.0,
        contrast_scale: float = 64.0,
        sharpness_scale: float = 500.0,
    ) -> None:
        if len(weights) != 4 or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights must be 4 non-negative numbers with a positive sum, got {weights}")
        total = float(sum(weights))
        self.weights = tuple(weight / total for weight in weights)
        self.analysis_size = analysis_size
        self.colourfulness_scale = colourfulness_scale
        self.contrast_scale = contrast_scale
        self.sharpness_scale = sharpness_scale

    def components(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """The four normalised components, each ``float [N]`` in [0, 1]."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        rgb = _downscale(frames, self.analysis_size).astype(np.float32)
        grey = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        red_green = rgb[..., 0] - rgb[..., 1]
        yellow_blue = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
        colourfulness = np.sqrt(red_green.std(axis=(1, 2)) ** 2 + yellow_blue.std(axis=(1, 2)) ** 2) + 0.3 * np.sqrt(
            red_green.mean(axis=(1, 2)) ** 2 + yellow_blue.mean(axis=(1, 2)) ** 2
        )
        sharpness = laplacian(grey).var(axis=(1, 2)) if min(grey.shape[1:]) >= 3 else np.zeros(len(grey))
        return {
            "colourfulness": np.clip(colourfulness / self.colourfulness_scale, 0.0, 1.0),
            "contrast": np.clip(grey.std(axis=(1, 2)) / self.contrast_scale, 0.0, 1.0),
            "sharpness": np.clip(np.log1p(sharpness) / np.log1p(self.sharpness_scale), 0.0, 1.0),
            "exposure": 1.0 - np.abs(grey.mean(axis=(1, 2)) - 127.5) / 127.5,
        }

    def score(self, frames: np.ndarray) -> np.ndarray:
        parts = self.components(frames)
        mixed = sum(weight * parts[key] for weight, key in zip(self.weights, parts))
        return (10.0 * mixed).astype(np.float32)


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class AestheticHead(nn.Module):
    """A stack of linear layers mapping an image embedding ``[N, D]`` to a score ``[N, 1]``.

    Args:
        layer_sizes: ``(in_features, out_features)`` of each linear layer.
        activation: ``None`` (plain linear stack, as in LAION's predictor), ``"relu"`` or ``"gelu"`` between layers.
    """

    def __init__(self, layer_sizes: list[tuple[int, int]], activation: str | None = None) -> None:
        super().__init__()
        if activation is not None and activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: None, {', '.join(_ACTIVATIONS)}")
        self.layers = nn.ModuleList([nn.Linear(in_features, out_features) for in_features, out_features in layer_sizes])
        self.activation = _ACTIVATIONS[activation]() if activation is not None else nn.Identity()

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        hidden = embeddings
        for index, layer in enumerate(self.layers):
            hidden = layer(hidden)
            if index < len(self.layers) - 1:
                hidden = self.activation(hidden)
        return hidden


def _natural_key(name: str) -> list:
    return [int(token) if token.isdigit() else token for token in re.split(r"(\d+)", name)]


def load_aesthetic_head(head_path: str | Path, activation: str | None = None):
    """Build the scoring head from a safetensors file of linear layers.

    The file holds ``<prefix>.weight`` ``[out, in]`` and ``<prefix>.bias`` ``[out]`` pairs (LAION's predictor uses
    ``layers.0``, ``layers.2``, ``layers.4``, ``layers.6``, ``layers.7``; a plain linear head uses ``weight`` and
    ``bias``). Layers run in natural order of their prefixes; their sizes must chain and end in one output.
    """
    from safetensors.torch import load_file

    state = load_file(str(head_path))
    prefixes = sorted({key.rsplit(".", 1)[0] if "." in key else "" for key in state if key.endswith("weight")},
                      key=_natural_key)
    if not prefixes:
        raise ValueError(f"{head_path}: no '<prefix>.weight' tensors; expected the linear layers of an aesthetic head")
    weights, biases = [], []
    for prefix in prefixes:
        dot = f"{prefix}." if prefix else ""
        weight = state[f"{dot}weight"]
        if weight.ndim != 2:
            raise ValueError(f"{head_path}: {dot}weight has shape {tuple(weight.shape)}; linear layers are 2-D")
        weights.append(weight)
        biases.append(state.get(f"{dot}bias", torch.zeros(weight.shape[0])))
    for index in range(1, len(weights)):
        if weights[index].shape[1] != weights[index - 1].shape[0]:
            raise ValueError(
                f"{head_path}: layer {prefixes[index]!r} takes {weights[index].shape[1]} features but "
                f"{prefixes[index - 1]!r} gives {weights[index - 1].shape[0]}"
            )
    if weights[-1].shape[0] != 1:
        raise ValueError(f"{head_path}: the last layer must give one score, it gives {weights[-1].shape[0]}")
    head = AestheticHead([tuple(weight.shape[::-1]) for weight in weights], activation=activation)
    with torch.no_grad():
        for layer, weight, bias in zip(head.layers, weights, biases):
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
    return head.eval()


class MLPAestheticScorer:
    """CLIP-style image embeddings scored by a LAION-style head.

    Args:
        model_path: local directory of a ``CLIPVisionModelWithProjection`` checkpoint and its image processor
            (``preprocessor_config.json``); nothing is downloaded.
        head_path: safetensors file of the head (see :func:`load_aesthetic_head`).
        device: torch device.
        normalize_embeddings: L2-normalise the image embedding before the head, as the LAION predictors expect.
        activation: nonlinearity between head layers (``None`` for the LAION predictors, which have none).
        batch_size: frames per forward pass.
    """

    def __init__(
        self,
        model_path: str | Path,
        head_path: str | Path,
        device: str = "cpu",
        normalize_embeddings: bool = True,
        activation: str | None = None,
        batch_size: int = 16,
    ) -> None:
        from transformers import AutoImageProcessor, CLIPVisionModelWithProjection

        model_path = Path(model_path)
        if not model_path.is_dir():
            raise FileNotFoundError(f"aesthetic model directory {model_path} does not exist; give a local checkpoint")
        self.image_processor = AutoImageProcessor.from_pretrained(model_path, local_files_only=True)
        self.model = CLIPVisionModelWithProjection.from_pretrained(model_path, local_files_only=True).to(device).eval()
        self.head = load_aesthetic_head(head_path, activation=activation).to(device)
        self.device = device
        self.normalize_embeddings = normalize_embeddings
        self.batch_size = batch_size

    def embed(self, frames: np.ndarray):
        """Image embeddings ``float [N, projection_dim]`` (normalised when ``normalize_embeddings``)."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        embeddings = []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_size):
                batch = [frame for frame in frames[start : start + self.batch_size]]
                pixel_values = self.image_processor(images=batch, return_tensors="pt")["pixel_values"]
                image_embeds = self.model(pixel_values=pixel_values.to(self.device, self.model.dtype)).image_embeds
                if self.normalize_embeddings:
                    image_embeds = torch.nn.functional.normalize(image_embeds.float(), dim=-1)
                embeddings.append(image_embeds.float())
        return torch.cat(embeddings)

    def score(self, frames: np.ndarray) -> np.ndarray:
        embeddings = self.embed(frames)
        with torch.inference_mode():
            return self.head(embeddings).squeeze(-1).cpu().numpy().astype(np.float32)


AESTHETIC_SCORERS = ("heuristic", "mlp")


def build_aesthetic_scorer(
    name: str, model_path: str | None = None, head_path: str | None = None, device: str = "cpu"
) -> AestheticScorer:
    """The scorer named ``name`` (``"heuristic"`` or ``"mlp"``; ``"mlp"`` needs ``model_path`` and ``head_path``)."""
    if name == "heuristic":
        return HeuristicAestheticScorer()
    if name == "mlp":
        if model_path is None or head_path is None:
            raise ValueError("the 'mlp' aesthetic scorer needs model_path (CLIP vision checkpoint) and head_path")
        return MLPAestheticScorer(model_path, head_path, device=device)
    raise ValueError(f"unknown aesthetic scorer {name!r}; valid: {', '.join(AESTHETIC_SCORERS)}")
