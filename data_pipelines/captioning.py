"""Dense video captions with a vision-language model, and audio descriptions.

:class:`VideoCaptioner` samples ``num_frames`` frames per clip, shows them to a Qwen2-VL / Qwen2.5-VL model
(``Qwen2VLForConditionalGeneration`` / ``Qwen2_5_VLForConditionalGeneration`` from transformers, loaded from a local
directory; nothing is downloaded) as a timestamped frame sequence, and asks for a dense caption in the Seedance
style: subjects and their appearance, actions in order, camera (shot size, angle, movement), setting, lighting and
style. When a clip holds several shots it also captions each shot on its own (``shot_captions``). Requests of many
clips are generated together in left-padded batches with greedy decoding by default, so captions are
deterministic. Prompts are templates users change through the config.

Frames are given to the model as a list of images (Qwen-VL's multi-image input) rather than as its video input,
because the transformers video processor needs torchvision, which this project does not install; each frame is
labelled with its time so the order and pacing stay explicit.

Audio: when the clip has sound, ``audio="model"`` captions it with an audio-language model
(``Qwen2AudioForConditionalGeneration`` from ``audio_model_path``); ``audio="acoustic_summary"`` (default) writes a
description measured from the signal (loudness, silence, onsets, dominant frequency), prefixed with
``[acoustic summary]`` so nobody mistakes it for a model caption.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_pipelines.stages import ClipSample, ClipStage

DEFAULT_SYSTEM_PROMPT = "You are a meticulous video annotator. You describe only what is visible or audible."

DEFAULT_PROMPT_TEMPLATE = (
    "The images are {num_frames} frames, in order, of a {duration:.1f}-second video clip. Write one dense paragraph "
    "describing the clip for training a video generation model. Cover: the main subjects and their appearance; "
    "what they do, in order; the camera (shot size, angle, and movement such as static, pan, tilt, zoom, dolly or "
    "tracking); the setting and lighting; and the visual style (live action, animation, colour grading)."
)

DEFAULT_SHOT_PROMPT_TEMPLATE = (
    "The images are {num_frames} frames of shot {shot_number} of {num_shots} of a video, {duration:.1f} seconds "
    "long. Describe this shot in two or three sentences: subjects, actions, camera framing and movement, setting."
)

DEFAULT_AUDIO_PROMPT = (
    "Describe the audio of this clip in one or two sentences: speech, music, sound effects and ambience."
)

# Placeholders a prompt template may use.
TEMPLATE_FIELDS = ("duration", "num_frames", "fps", "shot_number", "num_shots")

SUPPORTED_MODEL_CLASSES = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")
SUPPORTED_AUDIO_MODEL_CLASSES = ("Qwen2AudioForConditionalGeneration",)
AUDIO_MODES = ("acoustic_summary", "model", "none")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class CaptionerConfig:
    """Captioning settings.

    Attributes:
        model_path: local directory with the VLM's weights (safetensors), tokenizer and image processor config.
        model_class: transformers class of the VLM; one of ``SUPPORTED_MODEL_CLASSES``.
        num_frames: frames sampled per clip (and per shot), evenly over its length.
        batch_size: generation requests per forward batch.
        max_new_tokens: longest caption, in tokens.
        prompt_template: user prompt for a whole clip; placeholders ``{duration}``, ``{num_frames}``, ``{fps}``,
            ``{shot_number}``, ``{num_shots}`` (Python ``str.format`` syntax).
        shot_prompt_template: user prompt for one shot of a multi-shot clip.
        system_prompt: system message, or ``None`` for none.
        caption_shots: caption each shot of a multi-shot clip separately as well.
        frame_min_pixels, frame_max_pixels: bounds on each frame's area after the processor's resize (Qwen-VL
            resizes to multiples of 28; fewer pixels is fewer visual tokens).
        do_sample, temperature, top_p: sampling instead of greedy decoding.
        dtype: weights dtype (``float32``, ``bfloat16``, ``float16``).
        device: torch device.
        audio: ``"acoustic_summary"``, ``"model"`` (needs ``audio_model_path``) or ``"none"``.
        audio_model_path, audio_model_class: the audio-language model for ``audio="model"``.
        audio_prompt: instruction given with the audio.
        audio_max_new_tokens: longest audio caption, in tokens.
    """

    model_path: str | None = None
    model_class: str = "Qwen2VLForConditionalGeneration"
    num_frames: int = 8
    batch_size: int = 4
    max_new_tokens: int = 256
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    shot_prompt_template: str = DEFAULT_SHOT_PROMPT_TEMPLATE
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    caption_shots: bool = True
    frame_min_pixels: int = 28 * 28 * 4
    frame_max_pixels: int = 28 * 28 * 256
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    dtype: str = "float32"
    device: str = "cpu"
    audio: str = "acoustic_summary"
    audio_model_path: str | None = None
    audio_model_class: str = "Qwen2AudioForConditionalGeneration"
    audio_prompt: str = DEFAULT_AUDIO_PROMPT
    audio_max_new_tokens: int = 96

    def __post_init__(self) -> None:
        if self.model_class not in SUPPORTED_MODEL_CLASSES:
            raise ValueError(f"unknown model_class {self.model_class!r}; valid: {', '.join(SUPPORTED_MODEL_CLASSES)}")
        if self.audio not in AUDIO_MODES:
            raise ValueError(f"unknown audio mode {self.audio!r}; valid: {', '.join(AUDIO_MODES)}")
        if self.audio == "model" and self.audio_model_class not in SUPPORTED_AUDIO_MODEL_CLASSES:
            raise ValueError(
                f"unknown audio_model_class {self.audio_model_class!r}; "
                f"valid: {', '.join(SUPPORTED_AUDIO_MODEL_CLASSES)}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        if self.num_frames < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("num_frames, batch_size and max_new_tokens must be >= 1")
        for template in (self.prompt_template, self.shot_prompt_template):
            check_template(template)


def check_template(template: str) -> None:
    """Raise if ``template`` uses a placeholder other than ``TEMPLATE_FIELDS``."""
    for _, field_name, _, _ in string.Formatter().parse(template):
        if field_name is not None and field_name.split(".")[0].split("[")[0] not in TEMPLATE_FIELDS:
            raise ValueError(
                f"prompt template placeholder {{{field_name}}} is unknown; valid: "
                + ", ".join(f"{{{name}}}" for name in TEMPLATE_FIELDS)
            )


@dataclass
class CaptionRequest:
    """One generation: a prompt and its frames (``uint8 [N, H, W, 3]``) with their times in seconds."""

    clip_index: int
    shot_index: int | None  # None: the whole clip
    prompt: str
    frames: np.ndarray
    times: np.ndarray


def _resolve_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _shot_ranges(sample: ClipSample) -> list[tuple[int, int]]:
    """Shots of ``sample`` as ``[start, end)`` ranges of ``sample.frames``.

    ``sample.metadata["shot_boundaries"]`` lists the first frame of every shot after the first, in source frames
    relative to ``start_frame`` (the convention of ``ClipRecord.shot_boundaries``); they are mapped onto the
    analysis frames with ``metadata["frame_stride"]``.
    """
    count = len(sample.frames)
    stride = int(sample.metadata.get("frame_stride", 1))
    cuts = sorted({
        int(np.ceil(boundary / stride))
        for boundary in sample.metadata.get("shot_boundaries") or ()
        if 0 < boundary < sample.num_frames
    })
    edges = [0] + [cut for cut in cuts if 0 < cut < count] + [count]
    return [(start, end) for start, end in zip(edges[:-1], edges[1:]) if end > start]


class VideoCaptioner(ClipStage):
    """Dense captions for clips with a Qwen2-VL-family model.

    Args:
        config: the captioner's settings; the model is loaded from ``config.model_path`` unless given.
        model, tokenizer, image_processor: already loaded components (all three, or none).

    ``caption_batch(samples)`` returns one dict per sample with ``"caption"`` (str), ``"shot_captions"``
    (list[str], empty for single-shot clips) and ``"audio_caption"`` (str or ``None``) and also stores it in
    ``sample.captions``. As a stage, ``captioner(sample)`` captions one clip.
    """

    name = "caption"

    def __init__(
        self,
        config: CaptionerConfig | None = None,
        model: Any = None,
        tokenizer: Any = None,
        image_processor: Any = None,
    ) -> None:
        self.config = config if config is not None else CaptionerConfig()
        components = (model, tokenizer, image_processor)
        if any(component is not None for component in components) and None in components:
            raise ValueError("pass model, tokenizer and image_processor together, or none to load from model_path")
        if model is None:
            model, tokenizer, image_processor = self._load(self.config)
        self.model = model.eval()
        self.tokenizer = tokenizer
        # Decoder-only batched generation needs the prompts aligned on the right.
        self.tokenizer.padding_side = "left"
        self.image_processor = image_processor
        self._audio_captioner: AudioCaptioner | None = None

    @staticmethod
    def _load(config: CaptionerConfig):
        import transformers
        from transformers import AutoImageProcessor, AutoTokenizer

        if config.model_path is None:
            raise ValueError("CaptionerConfig.model_path is not set; give the local directory of a Qwen2-VL model")
        path = Path(config.model_path)
        if not path.is_dir():
            raise FileNotFoundError(f"captioning model directory {path} does not exist (models are never downloaded)")
        model_class = getattr(transformers, config.model_class)
        model = model_class.from_pretrained(
            path, local_files_only=True, use_safetensors=True, dtype=_resolve_dtype(config.dtype)
        ).to(config.device)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        image_processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        return model, tokenizer, image_processor

    # ------------------------------------------------------------------------------------------------------------
    # Prompts
    # ------------------------------------------------------------------------------------------------------------

    def _visual_tokens(self, grid_thw) -> int:
        merge_size = getattr(self.image_processor, "merge_size", 2)
        return int(grid_thw.prod()) // merge_size**2

    def build_prompt(self, prompt: str, times: np.ndarray, grids) -> str:
        """The chat-formatted prompt: system message, the timestamped frames (each expanded to its number of
        visual tokens, from the image processor's patch grids ``[N, 3]``), then ``prompt``."""
        parts = []
        if self.config.system_prompt:
            parts.append(f"<|im_start|>system\n{self.config.system_prompt}<|im_end|>\n")
        parts.append("<|im_start|>user\n")
        for index, (time, grid) in enumerate(zip(times, grids)):
            placeholder = "<|image_pad|>" * self._visual_tokens(grid)
            parts.append(f"Frame {index + 1} at {time:.1f}s: <|vision_start|>{placeholder}<|vision_end|>\n")
        parts.append(f"{prompt}<|im_end|>\n<|im_start|>assistant\n")
        return "".join(parts)

    def requests_for(self, sample: ClipSample, clip_index: int = 0) -> list[CaptionRequest]:
        """The generation requests of one clip: the whole clip, then each shot when it has several."""
        if len(sample.frames) == 0:
            raise ValueError(f"clip {sample.clip_id} has no frames to caption")
        stride = int(sample.metadata.get("frame_stride", 1))
        seconds_per_frame = stride / sample.fps if sample.fps > 0 else 0.0
        shots = _shot_ranges(sample)
        spans = [(None, 0, len(sample.frames))]
        if self.config.caption_shots and len(shots) > 1:
            spans += [(index, start, end) for index, (start, end) in enumerate(shots)]
        requests = []
        for shot_index, start, end in spans:
            count = min(self.config.num_frames, end - start)
            # Centres of equal segments: representative frames, away from cut-adjacent first / last frames.
            indices = start + np.minimum(
                ((np.arange(count) + 0.5) * (end - start) / count).astype(int), end - start - 1
            )
            template = self.config.prompt_template if shot_index is None else self.config.shot_prompt_template
            prompt = template.format(
                duration=(end - start) * seconds_per_frame, num_frames=count, fps=sample.fps,
                shot_number=1 if shot_index is None else shot_index + 1, num_shots=len(shots),
            )
            requests.append(CaptionRequest(clip_index, shot_index, prompt, np.asarray(sample.frames)[indices],
                                           indices * seconds_per_frame))
        return requests

    # ------------------------------------------------------------------------------------------------------------
    # Generation
    # ------------------------------------------------------------------------------------------------------------

    def generate(self, requests: list[CaptionRequest]) -> list[str]:
        """Generate the text of ``requests`` in batches of ``batch_size``; returns one string per request."""
        import torch
        from tqdm.auto import tqdm

        texts: list[str] = []
        starts = range(0, len(requests), self.config.batch_size)
        for start in tqdm(starts, desc="caption", unit="batch", disable=len(starts) <= 1):
            batch = requests[start : start + self.config.batch_size]
            # 1. frames -> patches and patch grids (all frames of the batch, request by request, in order)
            images = [frame for request in batch for frame in request.frames]
            visual = self.image_processor(
                images=images, return_tensors="pt",
                size={"shortest_edge": self.config.frame_min_pixels, "longest_edge": self.config.frame_max_pixels},
            )
            grids = visual["image_grid_thw"]
            # 2. prompts with one placeholder token per visual token, tokenised with left padding
            prompts, offset = [], 0
            for request in batch:
                count = len(request.frames)
                prompts.append(self.build_prompt(request.prompt, request.times, grids[offset : offset + count]))
                offset += count
            encoded = self.tokenizer(prompts, return_tensors="pt", padding=True)
            image_token_id = self.model.config.image_token_id
            mm_token_type_ids = (encoded["input_ids"] == image_token_id).to(torch.int32)
            # 3. generation; only the new tokens are decoded
            device = self.model.device
            generation_kwargs: dict[str, Any] = {"max_new_tokens": self.config.max_new_tokens,
                                                 "do_sample": self.config.do_sample}
            if self.config.do_sample:
                generation_kwargs.update(temperature=self.config.temperature, top_p=self.config.top_p)
            pad_token_id = self.tokenizer.pad_token_id
            if pad_token_id is None:
                pad_token_id = self.tokenizer.eos_token_id
            with torch.inference_mode():
                output = self.model.generate(
                    input_ids=encoded["input_ids"].to(device),
                    attention_mask=encoded["attention_mask"].to(device),
                    mm_token_type_ids=mm_token_type_ids.to(device),
                    pixel_values=visual["pixel_values"].to(device, self.model.dtype),
                    image_grid_thw=grids.to(device),
                    pad_token_id=pad_token_id,
                    **generation_kwargs,
                )
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            texts.extend(text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        return texts

    @property
    def audio_captioner(self) -> "AudioCaptioner | None":
        if self._audio_captioner is None and self.config.audio == "model":
            self._audio_captioner = AudioCaptioner.from_config(self.config)
        return self._audio_captioner

    def caption_batch(self, samples: list[ClipSample]) -> list[dict[str, Any]]:
        """Caption ``samples`` (requests of all clips batched together); see the class docstring."""
        requests = [request for index, sample in enumerate(samples) for request in self.requests_for(sample, index)]
        texts = self.generate(requests)
        results: list[dict[str, Any]] = [{"caption": "", "shot_captions": [], "audio_caption": None} for _ in samples]
        for request, text in zip(requests, texts):
            if request.shot_index is None:
                results[request.clip_index]["caption"] = text
            else:
                results[request.clip_index]["shot_captions"].append(text)
        with_audio = [index for index, sample in enumerate(samples) if sample.audio is not None and sample.audio.size]
        if with_audio and self.config.audio == "model":
            audio_texts = self.audio_captioner.caption([samples[index] for index in with_audio])
            for index, text in zip(with_audio, audio_texts):
                results[index]["audio_caption"] = text
        elif with_audio and self.config.audio == "acoustic_summary":
            for index in with_audio:
                results[index]["audio_caption"] = describe_audio(samples[index].audio, samples[index].sample_rate)
        for sample, result in zip(samples, results):
            sample.captions.update(result)
        return results

    def __call__(self, sample: ClipSample) -> ClipSample:
        self.caption_batch([sample])
        return sample


# ----------------------------------------------------------------------------------------------------------------
# Audio
# ----------------------------------------------------------------------------------------------------------------


def _mono(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise ValueError(f"audio must be float32 [channels, samples], got shape {audio.shape}")
    return audio.mean(axis=0)


def _note_name(frequency: float) -> str:
    names = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
    midi = int(round(69 + 12 * np.log2(frequency / 440.0)))
    return f"{names[midi % 12]}{midi // 12 - 1}"


def acoustic_summary(
    audio: np.ndarray,
    sample_rate: int,
    frame_seconds: float = 0.02,
    silence_dbfs: float = -50.0,
    onset_rise_db: float = 10.0,
) -> dict[str, float]:
    """Signal measurements of ``audio`` (``float32 [C, S]`` in [-1, 1]).

    Returns ``loudness_dbfs`` (RMS level), ``peak_dbfs``, ``silence_fraction`` (share of ``frame_seconds`` frames
    below ``silence_dbfs``), ``onsets`` and ``onset_rate`` (per second; jumps of the frame level by at least
    ``onset_rise_db`` over the preceding 100 ms), ``dominant_frequency`` (Hz, peak of the average power spectrum of
    non-silent frames between 50 Hz and 5 kHz; 0 when silent) and ``duration`` (seconds).
    """
    if not sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    signal = _mono(audio)
    duration = len(signal) / sample_rate
    hop = max(1, int(round(frame_seconds * sample_rate)))
    num_frames = len(signal) // hop
    eps = 1e-10
    if num_frames == 0:
        return {"loudness_dbfs": -120.0, "peak_dbfs": -120.0, "silence_fraction": 1.0, "onsets": 0.0,
                "onset_rate": 0.0, "dominant_frequency": 0.0, "duration": duration}
    frames = signal[: num_frames * hop].reshape(num_frames, hop)
    frame_dbfs = 10 * np.log10((frames**2).mean(axis=1) + eps)
    voiced = frame_dbfs >= silence_dbfs

    window = np.hanning(hop).astype(np.float32)
    spectra = np.abs(np.fft.rfft(frames * window, axis=1))
    frequencies = np.fft.rfftfreq(hop, 1.0 / sample_rate)
    # Onsets: the level jumps by at least onset_rise_db over the quietest of the preceding 100 ms (a note, a hit,
    # a word after a pause); at least 100 ms apart. Pitch changes at constant loudness are not counted.
    lookback = max(1, int(round(0.1 / frame_seconds)))
    onsets, last = 0, -np.inf
    for index in range(num_frames):
        before = frame_dbfs[max(0, index - lookback) : index] if index > 0 else np.array([-120.0])
        if voiced[index] and frame_dbfs[index] - before.min() >= onset_rise_db and index - last >= lookback:
            onsets += 1
            last = index
    dominant = 0.0
    if voiced.any():
        power = (spectra[voiced] ** 2).mean(axis=0)
        band = (frequencies >= 50) & (frequencies <= 5000)
        if band.any():
            peak = int(np.argmax(np.where(band, power, -1.0)))
            # Parabolic interpolation of the log power around the peak bin sharpens the coarse FFT grid.
            if 0 < peak < len(power) - 1:
                left, centre, right = np.log(power[peak - 1 : peak + 2] + eps)
                denominator = left - 2 * centre + right
                shift = 0.5 * (left - right) / denominator if denominator != 0 else 0.0
                dominant = float((peak + shift) * sample_rate / hop)
            else:
                dominant = float(frequencies[peak])
    return {
        "loudness_dbfs": float(10 * np.log10((signal**2).mean() + eps)),
        "peak_dbfs": float(20 * np.log10(np.abs(signal).max() + eps)),
        "silence_fraction": float(1.0 - voiced.mean()),
        "onsets": float(onsets),
        "onset_rate": float(onsets / duration) if duration > 0 else 0.0,
        "dominant_frequency": dominant,
        "duration": duration,
    }


def describe_audio(audio: np.ndarray, sample_rate: int) -> str:
    """A plain-language rendering of :func:`acoustic_summary`, prefixed with ``[acoustic summary]``."""
    summary = acoustic_summary(audio, sample_rate)
    if summary["silence_fraction"] >= 0.99:
        return "[acoustic summary] silent."
    parts = [
        f"average loudness {summary['loudness_dbfs']:.1f} dBFS (peak {summary['peak_dbfs']:.1f} dBFS)",
        f"{int(summary['onsets'])} onset{'' if summary['onsets'] == 1 else 's'} "
        f"({summary['onset_rate']:.1f} per second)",
    ]
    if summary["dominant_frequency"] > 0:
        frequency = summary["dominant_frequency"]
        parts.append(f"dominant frequency {frequency:.0f} Hz ({_note_name(frequency)})")
    parts.append(f"silent {100 * summary['silence_fraction']:.0f}% of the time")
    return "[acoustic summary] " + "; ".join(parts) + "."


class AudioCaptioner:
    """Audio captions with a Qwen2-Audio-style model (``Qwen2AudioForConditionalGeneration`` and its processor,
    a Whisper feature extractor plus the tokenizer), loaded from a local directory.

    Args:
        model, processor: loaded components.
        prompt: instruction after the audio.
        max_new_tokens: longest caption.
        batch_size: clips per generation batch.
    """

    def __init__(self, model: Any, processor: Any, prompt: str = DEFAULT_AUDIO_PROMPT, max_new_tokens: int = 96,
                 batch_size: int = 4) -> None:
        self.model = model.eval()
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    @classmethod
    def from_config(cls, config: CaptionerConfig) -> "AudioCaptioner":
        import transformers
        from transformers import AutoProcessor

        if config.audio_model_path is None or not Path(config.audio_model_path).is_dir():
            raise FileNotFoundError(
                f"audio='model' needs audio_model_path to be a local model directory, got {config.audio_model_path!r}"
            )
        model = getattr(transformers, config.audio_model_class).from_pretrained(
            config.audio_model_path, local_files_only=True, use_safetensors=True, dtype=_resolve_dtype(config.dtype)
        ).to(config.device)
        processor = AutoProcessor.from_pretrained(config.audio_model_path, local_files_only=True)
        return cls(model, processor, config.audio_prompt, config.audio_max_new_tokens, config.batch_size)

    def _resample(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono audio at the feature extractor's rate (linear interpolation: enough for a caption model's
        log-mel features, which discard phase and fine high-frequency detail)."""
        target = self.processor.feature_extractor.sampling_rate
        signal = _mono(audio)
        if sample_rate == target:
            return signal
        length = max(1, int(round(len(signal) * target / sample_rate)))
        return np.interp(np.arange(length) * sample_rate / target, np.arange(len(signal)), signal).astype(np.float32)

    def caption(self, samples: list[ClipSample]) -> list[str]:
        import torch

        texts: list[str] = []
        prompt = (
            "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
            f"{self.prompt}<|im_end|>\n<|im_start|>assistant\n"
        )
        for start in range(0, len(samples), self.batch_size):
            batch = samples[start : start + self.batch_size]
            audios = [self._resample(sample.audio, sample.sample_rate) for sample in batch]
            inputs = self.processor(
                text=[prompt] * len(batch), audio=audios, return_tensors="pt", padding=True,
                sampling_rate=self.processor.feature_extractor.sampling_rate,
            )
            inputs = {key: value.to(self.model.device) for key, value in inputs.items()}
            with torch.inference_mode():
                output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            texts.extend(text.strip() for text in self.processor.batch_decode(new_tokens, skip_special_tokens=True))
        return texts
