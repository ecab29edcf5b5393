"""Probe and decode source videos with PyAV (decord as an optional faster reader).

Frame indices are *constant-frame-rate* indices: frame ``i`` is the picture on screen at time ``i / fps`` from the
first frame. For a constant-rate file they equal the decode order; for a variable-frame-rate file (dropped or
repeated frames) every decoded frame is placed by its presentation timestamp, ``index = round((pts - pts_0) * fps)``,
and gaps are filled by repeating the previous picture, which is what a constant-rate re-encode would show. That
makes a cut found at frame ``i`` and a clip ``[start, end)`` mean the same instants for every reader and writer.

Everything is streamed: only frames inside the requested range are converted, at the requested (usually small)
size, so analysing a long 4K file never holds full-resolution frames in memory.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

# Frame-rate spread (max/min of frame durations) above which a stream is reported as variable frame rate.
_VFR_SPREAD = 1.5


class DecodeError(Exception):
    """A source video cannot be probed or decoded. ``reason`` is a short key for run summaries."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class VideoProbe:
    """What a container says about itself, checked by decoding when the header is silent.

    Attributes:
        path: the probed file.
        container: container format name (``"mov,mp4,m4a,3gp,3g2,mj2"``, ``"matroska,webm"``, ...).
        video_codec, width, height: first video stream.
        fps: average frame rate (frames per second) of the first video stream.
        num_frames: constant-frame-rate frame count (``duration * fps``), or the decoded count when counted.
        duration: seconds; ``None`` when the container declares none and frames were not counted.
        has_audio, audio_codec, sample_rate, audio_channels: first audio stream, if any.
        variable_frame_rate: ``True`` when frame durations differ (only known when frames were counted).
        counted: ``True`` when ``num_frames`` and ``duration`` come from walking the packets.
    """

    path: str
    container: str
    video_codec: str
    width: int
    height: int
    fps: float
    num_frames: int | None
    duration: float | None
    has_audio: bool = False
    audio_codec: str | None = None
    sample_rate: int | None = None
    audio_channels: int | None = None
    variable_frame_rate: bool | None = None
    counted: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class DecodedVideo:
    """Frames of ``[start_frame, end_frame)`` of a source, at the analysis size.

    Attributes:
        frames: ``uint8 [F, H, W, 3]`` RGB, one per constant-frame-rate index in the range (``F = end - start``
            divided by ``stride``, rounded up).
        thumbnails: ``uint8 [F, h, w, 3]`` at ``thumbnail_size`` (TransNetV2 wants 48x27) or ``None``.
        frame_indices: ``int64 [F]`` constant-frame-rate index of each row of ``frames``.
        timestamps: ``float64 [F]`` presentation time in seconds (from the first frame) of the picture shown.
        repeated: ``bool [F]`` ``True`` where the picture is a repeat filling a variable-frame-rate gap.
        fps: frame rate the indices are counted in.
        start_frame, end_frame: the range actually decoded (``end_frame`` clipped to the end of the stream).
        audio: ``float32 [C, S]`` of the same time range, or ``None``; ``audio_error`` says why when it failed.
    """

    frames: np.ndarray
    thumbnails: np.ndarray | None
    frame_indices: np.ndarray
    timestamps: np.ndarray
    repeated: np.ndarray
    fps: float
    start_frame: int
    end_frame: int
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    audio_error: str | None = None
    metadata: dict = field(default_factory=dict)


def _open(path: str | os.PathLike):
    import av

    path = Path(path)
    if not path.exists():
        raise DecodeError("missing_file", f"{path} does not exist")
    if not path.is_file():
        raise DecodeError("not_a_file", f"{path} is not a regular file")
    if path.stat().st_size == 0:
        raise DecodeError("empty_file", f"{path.name} is 0 bytes")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.InvalidDataError as error:
        raise DecodeError("not_a_video", f"{path.name}: container not recognised ({error})") from error
    except av.error.FFmpegError as error:
        raise DecodeError("open_failed", f"{path.name}: {error}") from error


def _stream_fps(stream) -> float:
    """The rate of the frame grid: the stream's nominal rate (``r_frame_rate``), which for a file with dropped frames
    is the rate it was shot at, not the lower average; the average when the nominal rate is implausible (a container
    time base such as 1000 fps)."""
    average = float(stream.average_rate or 0)
    nominal = float(stream.guessed_rate or stream.base_rate or 0)
    rate = nominal if nominal > 0 and (average <= 0 or nominal <= 2 * average) else average
    if rate <= 0:
        raise DecodeError("no_frame_rate", f"video stream declares no frame rate (codec {stream.codec_context.name})")
    return rate


def probe_video(path: str | os.PathLike, count_frames: bool = False) -> VideoProbe:
    """Read the container header; with ``count_frames`` (or when the header has no duration) walk the video packets
    to measure duration, frame count and whether the frame rate varies.

    Raises:
        DecodeError: empty, unreadable, no video stream, or no frame rate.
    """
    import av

    with _open(path) as container:
        if not container.streams.video:
            raise DecodeError("no_video_stream", f"{Path(path).name} has no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context
        if not codec.width or not codec.height:
            raise DecodeError("no_video_size", f"{Path(path).name}: video stream declares no picture size")
        fps = _stream_fps(stream)
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        probe = VideoProbe(
            path=str(path),
            container=container.format.name,
            video_codec=codec.name,
            width=int(codec.width),
            height=int(codec.height),
            fps=fps,
            num_frames=int(round(duration * fps)) if duration else None,
            duration=duration,
            has_audio=audio_stream is not None,
            audio_codec=audio_stream.codec_context.name if audio_stream is not None else None,
            sample_rate=int(audio_stream.codec_context.sample_rate or 0) or None if audio_stream is not None else None,
            audio_channels=audio_stream.codec_context.channels if audio_stream is not None else None,
        )
        if count_frames or duration is None:
            _count_packets(container, stream, probe)
    return probe


def _count_packets(container, stream, probe: VideoProbe) -> None:
    import av

    timestamps = []
    try:
        for packet in container.demux(stream):
            if packet.pts is not None and packet.size > 0:
                timestamps.append(packet.pts)
    except av.error.FFmpegError as error:
        if not timestamps:
            raise DecodeError("demux_failed", f"{Path(probe.path).name}: {error}") from error
    if not timestamps:
        raise DecodeError("no_frames", f"{Path(probe.path).name}: the video stream holds no packets")
    timestamps = np.sort(np.asarray(timestamps, dtype=np.float64)) * float(stream.time_base)
    durations = np.diff(timestamps)
    frame_duration = float(np.median(durations)) if durations.size else 1.0 / probe.fps
    probe.duration = float(timestamps[-1] - timestamps[0]) + frame_duration
    probe.num_frames = int(round(probe.duration * probe.fps))
    positive = durations[durations > 0]
    probe.variable_frame_rate = bool(positive.size and positive.max() / positive.min() > _VFR_SPREAD)
    probe.counted = True


def target_size(width: int, height: int, size: int | tuple[int, int] | None) -> tuple[int, int]:
    """``size`` is ``(width, height)``, a longer-side length in pixels (aspect kept, even sides, never upscaled), or
    ``None`` (source size)."""
    if size is None:
        return width, height
    if isinstance(size, int):
        scale = size / max(width, height)
        if scale >= 1:
            return width, height
        return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)
    return int(size[0]), int(size[1])


def decode_video(
    path: str | os.PathLike,
    size: int | tuple[int, int] | None = None,
    thumbnail_size: tuple[int, int] | None = None,
    start_frame: int = 0,
    end_frame: int | None = None,
    stride: int = 1,
    with_audio: bool = False,
    max_frames: int | None = None,
) -> DecodedVideo:
    """Decode constant-frame-rate frames ``[start_frame, end_frame)`` (every ``stride``-th) with PyAV.

    Args:
        size: analysis size: ``(width, height)``, the longer side in pixels (keeps the aspect ratio), or ``None``.
        thumbnail_size: a second ``(width, height)`` rendered in the same pass, e.g. ``(48, 27)`` for TransNetV2.
        start_frame, end_frame: range in constant-frame-rate indices (see the module docstring).
        stride: keep one frame in ``stride`` (analysis of long shots needs few frames).
        with_audio: also decode the audio of the same time range; a failing audio track is recorded in
            ``audio_error`` and never fails the call.
        max_frames: stop after this many output frames.

    Returns:
        DecodedVideo with ``frames`` ``uint8 [F, H, W, 3]``.

    Raises:
        DecodeError: the file cannot be opened, has no video, or not a single frame decodes in the range.
    """
    chunks = list(
        iter_video_chunks(path, size, thumbnail_size, start_frame, end_frame, stride, max_frames, chunk_frames=None)
    )
    decoded = chunks[0] if len(chunks) == 1 else _concatenate(chunks)
    if with_audio:
        decoded.audio, decoded.sample_rate, decoded.audio_error = decode_audio(
            path, start_frame / decoded.fps, decoded.end_frame / decoded.fps
        )
    return decoded


def _concatenate(chunks: list[DecodedVideo]) -> DecodedVideo:
    metadata = {key: value for chunk in chunks for key, value in chunk.metadata.items()}
    return DecodedVideo(
        frames=np.concatenate([chunk.frames for chunk in chunks]),
        thumbnails=None if chunks[0].thumbnails is None else np.concatenate([chunk.thumbnails for chunk in chunks]),
        frame_indices=np.concatenate([chunk.frame_indices for chunk in chunks]),
        timestamps=np.concatenate([chunk.timestamps for chunk in chunks]),
        repeated=np.concatenate([chunk.repeated for chunk in chunks]),
        fps=chunks[0].fps,
        start_frame=chunks[0].start_frame,
        end_frame=chunks[-1].end_frame,
        metadata=metadata,
    )


def iter_video_chunks(
    path: str | os.PathLike,
    size: int | tuple[int, int] | None = None,
    thumbnail_size: tuple[int, int] | None = None,
    start_frame: int = 0,
    end_frame: int | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    chunk_frames: int | None = 256,
) -> Iterator[DecodedVideo]:
    """Stream :func:`decode_video`'s output in pieces of ``chunk_frames`` frames (``None``: one piece), so a long
    source is analysed without holding all its frames. Each chunk's ``start_frame`` / ``end_frame`` is its own range;
    a decode error after the first frame ends the stream with ``metadata["decode_error"]`` on the last chunk."""
    import av

    if start_frame < 0 or (end_frame is not None and end_frame <= start_frame):
        raise ValueError(f"need 0 <= start_frame < end_frame, got start_frame={start_frame}, end_frame={end_frame}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    name = Path(path).name
    frames, thumbnails, indices, times, repeated = [], [], [], [], []
    emitted = 0
    with _open(path) as container:
        if not container.streams.video:
            raise DecodeError("no_video_stream", f"{name} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = _stream_fps(stream)
        time_base = float(stream.time_base)
        width, height = target_size(stream.codec_context.width, stream.codec_context.height, size)
        first_pts = _first_pts(container, stream)
        if start_frame > 0 and first_pts is not None:
            # Seek to the keyframe at or before the start, then decode forward: exact, and skips most of a long file.
            target = first_pts + int(math.floor((start_frame - 0.5) / fps / time_base))
            container.seek(max(target, first_pts), stream=stream, backward=True, any_frame=False)
        previous = None  # (index, frame, timestamp) of the last decoded frame before the next index
        next_index = start_frame

        def emit(index: int, frame, timestamp: float, is_repeat: bool) -> None:
            nonlocal emitted
            if (index - start_frame) % stride:
                return
            frames.append(frame.to_ndarray(format="rgb24", width=width, height=height))
            if thumbnail_size is not None:
                thumbnails.append(frame.to_ndarray(format="rgb24", width=thumbnail_size[0], height=thumbnail_size[1]))
            indices.append(index)
            times.append(timestamp)
            repeated.append(is_repeat)
            emitted += 1

        def done() -> bool:
            return (
                (end_frame is not None and next_index >= end_frame)
                or (max_frames is not None and emitted >= max_frames)
            )

        def flush(metadata: dict | None = None) -> DecodedVideo:
            chunk = DecodedVideo(
                frames=np.stack(frames),
                thumbnails=np.stack(thumbnails) if thumbnail_size is not None else None,
                frame_indices=np.asarray(indices, dtype=np.int64),
                timestamps=np.asarray(times, dtype=np.float64),
                repeated=np.asarray(repeated, dtype=bool),
                fps=fps,
                start_frame=indices[0],
                end_frame=indices[-1] + 1,
                metadata=metadata or {},
            )
            for buffer in (frames, thumbnails, indices, times, repeated):
                buffer.clear()
            return chunk

        decode_error = None
        frame_iterator = container.decode(stream)
        while not done():
            try:
                frame = next(frame_iterator)
            except StopIteration:
                break
            except av.error.FFmpegError as error:
                # A truncated or corrupt tail: keep what decoded, record where it stopped.
                if not emitted:
                    raise DecodeError("decode_failed", f"{name}: {error}") from error
                decode_error = f"{type(error).__name__}: {error}"
                break
            if frame.pts is None:
                continue
            if first_pts is None:
                first_pts = frame.pts
            timestamp = (frame.pts - first_pts) * time_base
            index = int(round(timestamp * fps))
            if index < next_index:
                # Before the range (after a seek), or a frame squeezed into a slot already filled: keep the newest
                # picture so a gap after it repeats the right frame.
                previous = (index, frame, timestamp)
                continue
            # Fill a variable-frame-rate gap [next_index, index) with the picture that was on screen.
            while next_index < index and previous is not None and not done():
                emit(next_index, previous[1], previous[2], True)
                next_index += 1
            if done():
                break
            next_index = max(next_index, index)
            emit(next_index, frame, timestamp, False)
            next_index += 1
            previous = (index, frame, timestamp)
            if chunk_frames is not None and len(frames) >= chunk_frames:
                yield flush()
    if not emitted:
        raise DecodeError("no_frames", f"{name}: no frame decoded in [{start_frame}, {end_frame})")
    if frames:
        yield flush({"decode_error": decode_error} if decode_error else None)
    elif decode_error:
        # The error came right after a full chunk: report it on an empty closing chunk.
        yield DecodedVideo(
            frames=np.zeros((0, height, width, 3), np.uint8),
            thumbnails=(
                None if thumbnail_size is None else np.zeros((0, thumbnail_size[1], thumbnail_size[0], 3), np.uint8)
            ),
            frame_indices=np.zeros(0, np.int64), timestamps=np.zeros(0), repeated=np.zeros(0, bool), fps=fps,
            start_frame=next_index, end_frame=next_index, metadata={"decode_error": decode_error},
        )


def _first_pts(container, stream) -> int | None:
    """Presentation timestamp of the first frame; frame 0 is defined relative to it."""
    if stream.start_time is not None:
        return int(stream.start_time)
    return None


def decode_audio(
    path: str | os.PathLike, start: float = 0.0, end: float | None = None, sample_rate: int | None = None
) -> tuple[np.ndarray | None, int | None, str | None]:
    """Decode the first audio stream between ``start`` and ``end`` seconds to ``float32 [C, S]``.

    Returns:
        ``(audio, sample_rate, error)``: ``(None, None, None)`` without an audio stream, ``(None, None, reason)``
        when the track fails to decode (the video is still usable), else the samples and their rate.
    """
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                return None, None, None
            stream = container.streams.audio[0]
            rate = int(sample_rate or stream.codec_context.sample_rate or 0)
            if rate <= 0:
                return None, None, "audio stream declares no sample rate"
            channels = stream.codec_context.channels or 1
            layout = "mono" if channels == 1 else "stereo"
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
            if start > 0:
                container.seek(int(start / float(stream.time_base)), stream=stream, backward=True)
            chunks, first_sample = [], None
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                frame_start = float(frame.pts * stream.time_base)
                if end is not None and frame_start >= end:
                    break
                for converted in resampler.resample(frame):
                    if first_sample is None:
                        first_sample = frame_start
                    chunks.append(converted.to_ndarray())
            for converted in resampler.resample(None):
                chunks.append(converted.to_ndarray())
    except Exception as error:  # noqa: BLE001 - any audio failure is recorded, the video is still usable
        return None, None, f"{type(error).__name__}: {error}"
    if not chunks:
        return None, None, "audio stream holds no decodable samples in range"
    audio = np.concatenate(chunks, axis=1).astype(np.float32)
    offset = int(round((start - first_sample) * rate))
    if offset > 0:
        audio = audio[:, offset:]
    if end is not None:
        audio = audio[:, : int(round((end - start) * rate))]
    return np.ascontiguousarray(audio), rate, None


def decode_video_decord(
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    start_frame: int = 0,
    end_frame: int | None = None,
    stride: int = 1,
) -> np.ndarray:
    """Faster random-access reader through decord (optional: ``pip install decord``), for constant-frame-rate files.

    Returns ``uint8 [F, H, W, 3]``; decord counts frames in decode order, so use PyAV for variable-frame-rate sources.
    """
    try:
        import decord
    except ImportError as error:
        raise ImportError(
            "the decord reader needs decord: pip install 'seedkit[decord]' (or use reader='pyav')"
        ) from error
    width, height = size if size is not None else (-1, -1)
    try:
        reader = decord.VideoReader(str(path), width=width, height=height, num_threads=1)
    except decord.DECORDError as error:
        raise DecodeError("decord_open_failed", f"{Path(path).name}: {error}") from error
    end_frame = len(reader) if end_frame is None else min(end_frame, len(reader))
    indices = list(range(start_frame, end_frame, stride))
    if not indices:
        raise DecodeError("no_frames", f"{Path(path).name}: no frame in [{start_frame}, {end_frame})")
    return reader.get_batch(indices).asnumpy()
