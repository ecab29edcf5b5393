"""Run a generator over ShapesBench suites and write ``report.json`` and ``report.html``.

``generate_fn(item) -> clip`` may be any callable: a seedkit pipeline wrapped in :class:`PipelineGenerator`, the
ground-truth :func:`oracle_generate_fn` (a sanity baseline that must score about 1.0), or anything else that maps a
:class:`~evaluation.shapesbench.suites.SuiteItem` to frames. A clip may be returned as a :class:`GeneratedClip`, a
``[F, H, W, 3]`` array (``uint8``, or float in [0, 1]), a ``[H, W, 3]`` image, a dict with ``frames`` / ``audio`` /
``sample_rate``, or a path to a video or image file.

Every item is scored on its own: a generator that raises, returns an unreadable file, the wrong size or no audio
for an audio task produces a *failed* record with the reason, and the run goes on. Failed items count as 0 in the
accuracy means (a model is not rewarded for crashing) and are left out of PSNR and offset means.

The summary and every suite's entry carry the means ``by_split`` (training wording / held-out paraphrases) and
``by_attribute``: per asked-for shape, size and motion, how often it was drawn and what was drawn instead (over the
scored items), the table that says which value a mean accuracy is losing.
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from seedkit.data.shapes import render_scene

from .detector import detect_scene
from .metrics import ACCURACY_METRICS, METRIC_NAMES, attribute_confusion, bootstrap_interval, score_item
from .suites import SuiteItem, available_suites, load_suite

if TYPE_CHECKING:
    from seedkit.pipelines.schedulers import SDESampling


class ClipError(ValueError):
    """A generated clip that cannot be scored (wrong size, unreadable, missing audio); the message says why."""


@dataclass
class GeneratedClip:
    """A generated sample: ``frames`` ``uint8 [F, H, W, 3]``; ``audio`` float ``[channels, samples]`` or ``None``."""

    frames: np.ndarray
    audio: np.ndarray | None = None
    sample_rate: int | None = None


@dataclass
class ItemRecord:
    """The outcome for one suite item."""

    id: str
    suite: str
    task: str
    split: str
    prompt: str
    status: str  # "ok" or "failed"
    reason: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    sample_image: str | None = None
    seconds: float = 0.0


@dataclass
class BenchReport:
    """Everything ``report.json`` holds; ``summary`` and ``suites`` carry per-metric means."""

    settings: dict[str, Any]
    summary: dict[str, Any]
    suites: dict[str, Any]
    items: list[ItemRecord]

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "summary": self.summary,
            "suites": self.suites,
            "items": [asdict(item) for item in self.items],
        }


GenerateFn = Callable[[SuiteItem], Any]


def oracle_generate_fn(item: SuiteItem) -> GeneratedClip:
    """Render the item's ground truth with ShapesWorld itself: what a perfect model would produce."""
    clip = render_scene(item.truth())
    return GeneratedClip(frames=clip.frames, audio=clip.audio, sample_rate=clip.sample_rate)


class VAEReconstructionGenerator:
    """``generate_fn`` that passes each item's ground truth through a video VAE (encode, then decode the mean).

    Its scores are the ceiling the VAE puts on any generator built on its latents: a diffusion model can do no
    better than the decoder renders a perfect latent. Run it before training a transformer on a new VAE.

    Args:
        vae_dir: a directory saved by ``CausalVideoAutoencoder.save_pretrained`` (or a pipeline's ``vae`` folder).
        device: torch device; ``None`` picks CUDA when available, else the CPU.
    """

    def __init__(self, vae_dir: str | os.PathLike, device: str | None = None) -> None:
        import torch

        from seedkit.models.autoencoder_causal import CausalVideoAutoencoder

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.vae = CausalVideoAutoencoder.from_pretrained(vae_dir).to(self.device).eval()

    def __call__(self, item: SuiteItem) -> GeneratedClip:
        import torch

        from seedkit.data.video_io import frames_to_tensor, tensor_to_frames

        truth = render_scene(item.truth())
        video = frames_to_tensor(truth.frames).unsqueeze(0).to(self.device)  # [1, 3, F, H, W] in [-1, 1]
        with torch.no_grad():
            latents = self.vae.encode(video).latent_dist.mode()
            reconstruction = self.vae.decode(latents).sample
        return GeneratedClip(tensor_to_frames(reconstruction[0]), audio=truth.audio, sample_rate=truth.sample_rate)


class PipelineGenerator:
    """``generate_fn`` over a seedkit model directory: loads it once (lazily) and picks the pipeline by item task.

    Args:
        model_dir: a directory written by a seedkit pipeline's ``save_pretrained`` (diffusers layout).
        num_inference_steps, guidance_scale: sampling settings for every item.
        guidance_scale_2: the scale of a two-expert model's low-noise steps (None: ``guidance_scale`` throughout).
        device: torch device; ``None`` picks CUDA when available, else the CPU.
        renoise: ``None`` to generate from pure noise; a strength in ``(0, 1]`` to start text-to-video items from
            their own ground truth, VAE-encoded and noised to that strength, and denoise it (SDEdit, Meng et al.
            2021, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential Equations"). The last
            ``round(strength * steps)`` of the steps run. Near 0 the score approaches the VAE's ceiling
            (``--reconstruct``), at 1 it is generation from noise; the curve in between shows at which noise
            levels a model loses what its latents could hold (layout and motion are settled at high noise, texture
            at low noise). An image-first model runs both of its passes from the noised ground truth (the image pass
            from its first latent frame).
        image_first: text-to-video items sample the first frame as an image, then the clip from it (None: the
            model's ``image_first``), to compare a model's one-pass and image-first samples on the same prompts.
        sde: a :class:`~seedkit.pipelines.schedulers.SDESampling` to sample with in place of the model's schedulers
            (None: the model's own).
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        device: str | None = None,
        renoise: float | None = None,
        guidance_scale_2: float | None = None,
        image_first: bool | None = None,
        sde: SDESampling | None = None,
    ) -> None:
        if renoise is not None and not 0.0 < renoise <= 1.0:
            raise ValueError(f"renoise is a strength in (0, 1] (1: generate from pure noise); got {renoise}")
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "model_index.json").is_file():
            raise FileNotFoundError(
                f"{self.model_dir} is not a seedkit model directory (no model_index.json); pass a directory written "
                "by a seedkit pipeline's save_pretrained"
            )
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.guidance_scale_2 = guidance_scale_2
        self.device = device
        self.renoise = renoise
        self.image_first = image_first
        self.sde = sde
        self._pipelines: dict[str, Any] = {}

    def pipeline(self, task: str):
        import torch

        from seedkit.pipelines import PIPELINES_BY_TASK, SeedkitTextToVideoPipeline

        if task not in self._pipelines:
            if "t2v" not in self._pipelines:
                device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
                base = SeedkitTextToVideoPipeline.from_pretrained(self.model_dir).to(device)
                if self.sde is not None:
                    self.sde.apply(base)
                base.set_progress_bar_config(disable=True)
                self._pipelines["t2v"] = base
            if task not in PIPELINES_BY_TASK:
                raise ValueError(
                    f"seedkit has no pipeline for task {task!r}; available: {', '.join(PIPELINES_BY_TASK)}"
                )
            if task != "t2v":
                base = self._pipelines["t2v"]
                pipeline = PIPELINES_BY_TASK[task](**base.components, **base.pipeline_kwargs())
                pipeline.set_progress_bar_config(disable=True)
                self._pipelines[task] = pipeline
        return self._pipelines[task]

    def __call__(self, item: SuiteItem) -> np.ndarray:
        """Frames ``float [F, H, W, 3]`` in [0, 1] for ``item`` (seeded by the item's seed)."""
        import torch
        from PIL import Image

        if self.renoise is not None and item.task != "t2v":
            raise ValueError(f"renoise starts text-to-video items from their ground truth; {item.id} is {item.task}")
        pipeline = self.pipeline(item.task)
        kwargs = dict(
            prompt=item.prompt,
            height=item.height,
            width=item.width,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            guidance_scale_2=self.guidance_scale_2,
            generator=torch.Generator(device="cpu").manual_seed(item.seed),
            output_type="np",
        )
        if item.task == "t2i":
            return np.asarray(pipeline(**kwargs).images[0])[None]
        if item.task == "i2v":
            kwargs["image"] = Image.fromarray(item.conditioning_image())
        else:
            kwargs["image_first"] = self.image_first
        if self.renoise is not None:
            kwargs["latents"], kwargs["sigmas"] = self.renoised_start(pipeline, item, kwargs["generator"])
            kwargs["num_inference_steps"] = len(kwargs["sigmas"])
        return np.asarray(pipeline(**kwargs, num_frames=item.num_frames).frames[0])

    def renoised_start(self, pipeline: Any, item: SuiteItem, generator: Any) -> tuple[Any, list[float]]:
        """``(latents, sigmas)``: the item's ground truth noised to the first of the last ``renoise`` share of an
        unshifted ``linspace(1, 1 / steps, steps)`` schedule, and that share of the schedule (the pipeline shifts it
        as its scheduler is configured, as it does for any ``sigmas``)."""
        import torch

        from seedkit.data.video_io import frames_to_tensor

        device = pipeline._execution_device
        video = frames_to_tensor(render_scene(item.truth()).frames).unsqueeze(0).to(device)  # [1, 3, F, H, W]
        with torch.no_grad():
            clean = pipeline.normalize_latents(pipeline.vae.encode(video).latent_dist.mode()).float()
        noise = pipeline.prepare_latents(1, item.num_frames, item.height, item.width, device, generator)
        steps = self.num_inference_steps
        sigmas = np.linspace(1.0, 1.0 / steps, steps)[steps - max(1, round(self.renoise * steps)) :].tolist()
        pipeline.set_scheduler_timesteps(len(sigmas), tuple(clean.shape), device, sigmas)
        start = float(pipeline.scheduler.sigmas[0])  # after the scheduler's shift
        return (1.0 - start) * clean + start * noise, sigmas


def to_clip(output: Any) -> GeneratedClip:
    """Normalise whatever a generator returned into a :class:`GeneratedClip`; :class:`ClipError` if impossible."""
    if isinstance(output, GeneratedClip):
        clip = output
    elif isinstance(output, (str, os.PathLike)):
        from seedkit.data.video_io import read_video

        try:
            decoded = read_video(output)
        except Exception as error:  # any decoder failure makes the sample unreadable, not the run
            raise ClipError(f"unreadable clip {os.fspath(output)!r}: {type(error).__name__}: {error}") from error
        clip = GeneratedClip(decoded.frames, decoded.audio, decoded.sample_rate)
    elif isinstance(output, dict):
        if "frames" not in output:
            raise ClipError(f"a clip dict needs 'frames' (and optionally 'audio', 'sample_rate'); got {sorted(output)}")
        clip = GeneratedClip(output["frames"], output.get("audio"), output.get("sample_rate"))
    elif hasattr(output, "frames") and not isinstance(output, np.ndarray):
        clip = GeneratedClip(output.frames, getattr(output, "audio", None), getattr(output, "sample_rate", None))
    else:
        clip = GeneratedClip(output)
    frames = np.asarray(clip.frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ClipError(f"frames must be [F, H, W, 3] (or [H, W, 3] for an image), got shape {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.floating):
            raise ClipError(f"frames must be uint8 or float in [0, 1], got dtype {frames.dtype}")
        if not np.isfinite(frames).all():
            raise ClipError("frames contain NaN or infinite values")
        frames = np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)
    clip.frames = frames
    if clip.audio is not None:
        audio = np.asarray(clip.audio, dtype=np.float32)
        clip.audio = audio[None] if audio.ndim == 1 else audio
    return clip


def check_clip(clip: GeneratedClip, item: SuiteItem) -> None:
    """Raise :class:`ClipError` unless the clip has the item's geometry (and audio for ``t2av``)."""
    expected = (item.num_frames, item.height, item.width)
    if tuple(clip.frames.shape[:3]) != expected:
        raise ClipError(
            f"wrong size: got frames of shape {tuple(clip.frames.shape)}, expected "
            f"[{item.num_frames}, {item.height}, {item.width}, 3] (num_frames, height, width of the item)"
        )
    if item.task == "t2av":
        if clip.audio is None:
            raise ClipError("missing audio: a t2av item needs an audio track to score pitch and audio-video offset")
        if not clip.sample_rate or clip.sample_rate <= 0:
            raise ClipError(f"audio without a valid sample_rate (got {clip.sample_rate!r})")
        if clip.audio.ndim != 2 or clip.audio.shape[1] == 0:
            raise ClipError(f"audio must be [channels, samples] with samples > 0, got shape {clip.audio.shape}")


def score_generated(item: SuiteItem, clip: GeneratedClip) -> tuple[dict[str, float | None], dict[str, Any]]:
    """Detect and score one checked clip against the item's ground truth."""
    truth = item.truth()
    with_audio = item.task == "t2av"
    detected = detect_scene(
        clip.frames,
        clip.audio if with_audio else None,
        clip.sample_rate if with_audio else None,
        shot_starts=[shot.start_frame for shot in truth.shots],
        zooms=[shot.zoom for shot in truth.shots],
    )
    conditioning = item.conditioning_image() if item.task == "i2v" else None
    score = score_item(detected, truth, item.task, conditioning_image=conditioning, first_frame=clip.frames[0])
    details = dict(score.details)
    details["detected_cuts"] = detected.cut_frames
    return score.metrics, details


def _contact_strip(frames: np.ndarray, height: int = 128):
    """First, middle and last frame side by side as a PIL image, upscaled (nearest) to about ``height`` pixels."""
    from PIL import Image

    picks = sorted({0, frames.shape[0] // 2, frames.shape[0] - 1})
    scale = max(1, height // frames.shape[1])
    tiles = [
        Image.fromarray(frames[index]).resize((frames.shape[2] * scale, frames.shape[1] * scale), Image.NEAREST)
        for index in picks
    ]
    gap = 4
    strip = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), tiles[0].height), (255, 255, 255))
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width + gap
    return strip


def aggregate(records: Sequence[ItemRecord]) -> dict[str, Any]:
    """Per-metric means over records (failed records count 0 on the accuracies that apply to their task), and the
    accuracies' 95% bootstrap intervals over the items (a few dozen items leave a mean uncertain by a tenth)."""
    metrics: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    intervals: dict[str, list[float]] = {}
    for name in METRIC_NAMES:
        values = []
        for record in records:
            if record.status == "ok":
                value = record.metrics.get(name)
                if value is not None:
                    values.append(float(value))
            elif name in ACCURACY_METRICS and name in _applicable(record.task):
                values.append(0.0)
        metrics[name] = float(np.mean(values)) if values else None
        counts[name] = len(values)
        if values and name in ACCURACY_METRICS:
            intervals[name] = list(bootstrap_interval(values))
    failed = sum(record.status != "ok" for record in records)
    return {"metrics": metrics, "counts": counts, "intervals": intervals, "items": len(records), "failed": failed}


def _confusion(records: list[ItemRecord]) -> dict[str, Any]:
    """:func:`~.metrics.attribute_confusion` over the objects of the scored items (failed items have none)."""
    return attribute_confusion([obj for record in records for obj in record.details.get("objects", [])])


def _applicable(task: str) -> set[str]:
    names = {"color", "shape", "size", "count"}
    if task != "t2i":
        names |= {"motion", "persistence", "continuity", "consistency"}
    if task == "t2av":
        names |= {"pitch_color"}
    return names


def run_shapesbench(
    generate_fn: GenerateFn,
    suites: str | Sequence[str] | Sequence[SuiteItem] | None,
    out_dir: str | os.PathLike,
    *,
    limit: int | None = None,
    settings: dict[str, Any] | None = None,
    progress: bool = True,
    write_html: bool = True,
) -> BenchReport:
    """Generate every item of ``suites`` with ``generate_fn``, score it, and write the report to ``out_dir``.

    Args:
        generate_fn: maps a :class:`SuiteItem` to a clip (see the module docstring for accepted return types).
        suites: a suite name, a list of names, a list of items, or ``None`` for every committed suite.
        out_dir: receives ``report.json``, ``report.html`` and ``samples/<id>.png`` contact strips.
        limit: at most this many items per suite.
        settings: recorded verbatim in the report (model, steps, guidance, ...).
    """
    out_dir = Path(out_dir)
    (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    items = _resolve_items(suites, limit)
    records: list[ItemRecord] = []
    for item in tqdm(items, desc="shapesbench", disable=not progress):
        records.append(_run_item(generate_fn, item, out_dir))
    by_suite: dict[str, list[ItemRecord]] = {}
    for record in records:
        by_suite.setdefault(record.suite, []).append(record)
    suites_summary = {}
    for name, suite_records in by_suite.items():
        entry = aggregate(suite_records)
        entry["by_split"] = {
            split: aggregate([r for r in suite_records if r.split == split])
            for split in sorted({r.split for r in suite_records})
        }
        entry["by_attribute"] = _confusion(suite_records)
        suites_summary[name] = entry
    summary = aggregate(records)
    summary["by_split"] = {
        split: aggregate([r for r in records if r.split == split]) for split in sorted({r.split for r in records})
    }
    summary["by_attribute"] = _confusion(records)
    report = BenchReport(
        settings={"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "limit": limit} | (settings or {}),
        summary=summary,
        suites=suites_summary,
        items=records,
    )
    _write_json(report.to_dict(), out_dir / "report.json")
    if write_html:
        from .report import write_html_report

        write_html_report(report, out_dir / "report.html")
    return report


def _resolve_items(suites, limit: int | None) -> list[SuiteItem]:
    if suites is None:
        suites = available_suites()
    if isinstance(suites, str):
        suites = [suites]
    items: list[SuiteItem] = []
    names: dict[str, int] = {}
    for entry in suites:
        suite_items = [entry] if isinstance(entry, SuiteItem) else load_suite(entry)
        for item in suite_items:
            if limit is not None and names.get(item.suite, 0) >= limit:
                continue
            names[item.suite] = names.get(item.suite, 0) + 1
            items.append(item)
    return items


def _run_item(generate_fn: GenerateFn, item: SuiteItem, out_dir: Path) -> ItemRecord:
    record = ItemRecord(id=item.id, suite=item.suite, task=item.task, split=item.split, prompt=item.prompt, status="ok")
    start = time.perf_counter()
    try:
        try:
            output = generate_fn(item)
        except Exception as error:  # the generator's failure on one prompt is recorded, not fatal
            raise ClipError(f"generation failed: {type(error).__name__}: {error}") from error
        clip = to_clip(output)
        check_clip(clip, item)
        try:
            strip = _contact_strip(clip.frames)
            path = out_dir / "samples" / f"{item.id}.png"
            strip.save(path)
            record.sample_image = f"samples/{path.name}"
        except Exception as error:  # a contact sheet is a convenience; its failure must not lose the scores
            record.details["sample_image_error"] = f"{type(error).__name__}: {error}"
        record.metrics, details = score_generated(item, clip)
        record.details.update(details)
    except ClipError as error:
        record.status, record.reason = "failed", str(error)
    except Exception as error:  # a detector or metric bug on one clip must not end the run either
        record.status = "failed"
        record.reason = f"scoring failed: {type(error).__name__}: {error}"
        record.details["traceback"] = traceback.format_exc(limit=5)
    record.seconds = round(time.perf_counter() - start, 3)
    return record


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _write_json(data: dict[str, Any], path: Path) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False))
    os.replace(temporary, path)
