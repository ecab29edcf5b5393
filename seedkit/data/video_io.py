"""Reading and writing clips with PyAV: mp4 (H.264 + AAC audio), gif, webm, and png for single images.

Frames are ``uint8`` arrays ``[F, H, W, 3]`` (RGB); audio is ``float32`` ``[channels, samples]`` in [-1, 1].
Tensors in the model convention (``[C, F, H, W]`` in [-1, 1]) convert with :func:`tensor_to_frames` and
:func:`frames_to_tensor`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".mkv", ".mov", ".avi")


@dataclass
class DecodedClip:
    """A decoded clip. ``audio`` is ``None`` when the file has no audio stream (or it failed to decode and
    ``audio_error`` says why)."""

    frames: np.ndarray  # uint8 [F, H, W, 3]
    fps: float
    audio: np.ndarray | None = None  # float32 [channels, samples]
    sample_rate: int | None = None
    audio_error: str | None = None


def tensor_to_frames(video) -> np.ndarray:
    """``[C, F, H, W]`` float tensor in [-1, 1] to ``uint8 [F, H, W, C]``."""
    array = video.detach().float().clamp(-1, 1).cpu().numpy()
    array = ((array + 1.0) * 127.5).round().astype(np.uint8)
    return np.ascontiguousarray(array.transpose(1, 2, 3, 0))


def unit_frames_to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] (a pipeline's ``output_type="np"``) to ``uint8``, same shape."""
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def frames_to_tensor(frames: np.ndarray):
    """``uint8 [F, H, W, C]`` to a ``[C, F, H, W]`` float32 tensor in [-1, 1]."""
    import torch

    tensor = torch.from_numpy(np.array(frames, dtype=np.uint8, copy=True)).permute(3, 0, 1, 2).float()
    return tensor / 127.5 - 1.0


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float = 8.0,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    crf: int = 18,
    pix_fmt: str | None = None,
) -> Path:
    """Write ``frames`` (``uint8 [F, H, W, 3]``) to ``path``; the suffix picks the format.

    ``.mp4`` is H.264 (yuv444p when a side is odd, so small ShapesWorld sizes survive) with optional AAC audio;
    ``.gif`` loops forever; a single frame may be written to an image suffix. ``pix_fmt`` overrides the H.264 pixel
    format: pass ``"yuv444p"`` where exact colours at sharp edges matter (ShapesWorld, ShapesBench), since 4:2:0
    chroma subsampling smears colour across object boundaries. The file is written to a temporary
    name and renamed, so an interrupted write never leaves a partial file behind.
    """
    import av

    path = Path(path)
    frames = _check_frames(frames)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.partial{suffix}")
    if suffix in IMAGE_SUFFIXES:
        from PIL import Image

        if frames.shape[0] != 1:
            raise ValueError(f"{path.name}: an image file holds one frame, got {frames.shape[0]}; use .mp4 or .gif")
        Image.fromarray(frames[0]).save(temporary, format=_pil_format(suffix))
        os.replace(temporary, path)
        return path
    if suffix not in (".mp4", ".gif", ".webm", ".mkv", ".mov"):
        raise ValueError(f"unsupported output suffix {suffix!r}; valid: .mp4, .gif, .webm, .mkv, .mov, or an image")
    if audio is not None and suffix == ".gif":
        raise ValueError("a .gif cannot hold audio; write .mp4 to keep the audio track")
    if audio is not None and not sample_rate:
        raise ValueError("audio given without sample_rate")

    rate = Fraction(fps).limit_denominator(1001)
    height, width = frames.shape[1:3]
    with av.open(str(temporary), mode="w") as container:
        if suffix == ".gif":
            stream = container.add_stream("gif", rate=rate)
            stream.pix_fmt = "rgb8"
        elif suffix == ".webm":
            stream = container.add_stream("libvpx-vp9", rate=rate)
            stream.pix_fmt = "yuv420p"
        else:
            stream = container.add_stream("libx264", rate=rate)
            even = height % 2 == 0 and width % 2 == 0
            # yuv420p plays everywhere; 4:4:4 keeps odd sizes and thin coloured edges intact.
            stream.pix_fmt = pix_fmt or ("yuv420p" if even else "yuv444p")
            stream.options = {"crf": str(crf), "preset": "medium"}
        stream.width, stream.height = width, height
        audio_stream = None
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32)
            if audio.ndim == 1:
                audio = audio[None]
            audio_stream = container.add_stream("aac" if suffix != ".webm" else "libopus", rate=int(sample_rate))
            audio_stream.layout = "mono" if audio.shape[0] == 1 else "stereo"
        for frame_array in frames:
            frame = av.VideoFrame.from_ndarray(frame_array, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            _encode_audio(container, audio_stream, audio, int(sample_rate))
    os.replace(temporary, path)
    return path


def _encode_audio(container, audio_stream, audio: np.ndarray, sample_rate: int) -> None:
    import av

    layout = "mono" if audio.shape[0] == 1 else "stereo"
    frame_size = audio_stream.codec_context.frame_size or 1024
    planar = np.ascontiguousarray(np.clip(audio, -1, 1).astype(np.float32))
    for start in range(0, planar.shape[1], frame_size):
        chunk = np.ascontiguousarray(planar[:, start : start + frame_size])
        if chunk.shape[1] < frame_size:
            chunk = np.pad(chunk, ((0, 0), (0, frame_size - chunk.shape[1])))
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = start
        for packet in audio_stream.encode(frame):
            container.mux(packet)
    for packet in audio_stream.encode():
        container.mux(packet)


def read_video(path: str | os.PathLike, with_audio: bool = True, max_frames: int | None = None) -> DecodedClip:
    """Decode every frame (or the first ``max_frames``) of a video or image file to RGB ``uint8``.

    A failing audio stream does not fail the read: ``audio`` is ``None`` and ``audio_error`` holds the reason.
    """
    import av

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such clip: {path}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        from PIL import Image

        with Image.open(path) as image:
            return DecodedClip(frames=np.asarray(image.convert("RGB"))[None], fps=0.0)
    frames = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path.name}: no frames could be decoded")
    clip = DecodedClip(frames=np.stack(frames), fps=fps)
    if with_audio:
        try:
            clip.audio, clip.sample_rate = read_audio(path)
        except Exception as error:  # a broken audio track must not lose the frames
            clip.audio_error = f"{type(error).__name__}: {error}"
    return clip


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray | None, int | None]:
    """Decode the first audio stream to float32 ``[channels, samples]``; ``(None, None)`` if there is none."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None, None
        stream = container.streams.audio[0]
        chunks = []
        sample_rate = stream.codec_context.sample_rate or stream.rate
        for frame in container.decode(stream):
            array = frame.to_ndarray()
            if not frame.format.is_planar:  # packed: [1, samples * channels]
                array = array.reshape(-1, len(frame.layout.channels)).T
            if array.dtype.kind == "i":
                array = array.astype(np.float32) / np.iinfo(array.dtype).max
            chunks.append(array.astype(np.float32))
    if not chunks:
        return None, None
    return np.concatenate(chunks, axis=1), int(sample_rate)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}; see tensor_to_frames for model outputs")
    return np.ascontiguousarray(frames)


def _pil_format(suffix: str) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG"}.get(suffix, suffix.lstrip(".").upper())
