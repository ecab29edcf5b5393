"""Audio analysis for ShapesBench: tone onsets from the energy envelope, pitch from the spectrum peak.

ShapesWorld emits a short tone on every wall bounce; its pitch names the bouncing object's colour (the palette's
frequencies are a whole tone apart, about 12 %, so the nearest palette frequency is unambiguous once the peak is
known to a few Hz).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AudioEvent:
    """One detected tone.

    Attributes:
        time_s: onset time in seconds from the start of the track.
        frequency_hz: spectral peak of the tone (parabolically interpolated).
        color: nearest palette colour by frequency, or ``None`` when no palette tone is within ``max_cents``.
    """

    time_s: float
    frequency_hz: float
    color: str | None


def to_mono(audio: np.ndarray) -> np.ndarray:
    """``[channels, samples]`` or ``[samples]`` float audio to a float64 ``[samples]`` mono track."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim == 2:
        return audio.mean(axis=0)
    if audio.ndim != 1:
        raise ValueError(f"audio must be [channels, samples] or [samples], got shape {audio.shape}")
    return audio


def detect_onsets(
    audio: np.ndarray,
    sample_rate: int,
    hop_s: float = 0.002,
    window_s: float = 0.004,
    threshold: float = 0.02,
    min_gap_s: float = 0.04,
) -> list[float]:
    """Onset times (s) where the short-time RMS envelope rises through ``threshold`` (absolute, audio in [-1, 1]).

    The onset is refined to the first sample of the rising window whose magnitude exceeds a quarter of the
    threshold, so the estimate does not depend on the hop. Two onsets closer than ``min_gap_s`` are one tone.
    A relative threshold would turn a silent track's noise floor into onsets, hence the absolute level.
    """
    mono = to_mono(audio)
    hop = max(1, int(round(hop_s * sample_rate)))
    window = max(hop, int(round(window_s * sample_rate)))
    if mono.size < window:
        return []
    num_windows = 1 + (mono.size - window) // hop
    index = np.arange(window)[None, :] + hop * np.arange(num_windows)[:, None]
    envelope = np.sqrt(np.mean(mono[index] ** 2, axis=1))
    loud = envelope > threshold
    rising = np.flatnonzero(loud & ~np.concatenate([[False], loud[:-1]]))
    onsets: list[float] = []
    for window_index in rising:
        # Search from one window before the crossing for the first sample that carries the tone.
        start = max(0, (window_index - 1) * hop)
        segment = np.abs(mono[start : window_index * hop + window])
        above = np.flatnonzero(segment > threshold * 0.25)
        sample = start + (int(above[0]) if above.size else 0)
        time_s = sample / sample_rate
        if onsets and time_s - onsets[-1] < min_gap_s:
            continue
        onsets.append(time_s)
    return onsets


def spectral_peaks(
    segment: np.ndarray, sample_rate: int, candidates_hz: np.ndarray, max_cents: float = 150.0, relative: float = 0.3
) -> list[float]:
    """Peak frequencies (Hz) of ``segment`` near any of ``candidates_hz``: the strongest, plus any other candidate
    whose local peak is at least ``relative`` times as strong (two objects bouncing at once sound together)."""
    if segment.size < 16:
        return []
    size = 1 << int(np.ceil(np.log2(max(segment.size, 4096))))
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(segment.size), n=size))
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate)
    found: list[tuple[float, float]] = []
    ratio = 2.0 ** (max_cents / 1200.0)
    for candidate in candidates_hz:
        band = np.flatnonzero((freqs >= candidate / ratio) & (freqs <= candidate * ratio))
        if band.size == 0:
            continue
        peak = band[np.argmax(spectrum[band])]
        found.append((float(spectrum[peak]), _interpolate_peak(spectrum, freqs, peak)))
    if not found:
        return []
    strongest = max(power for power, _ in found)
    if strongest <= 0:
        return []
    peaks = [(power, freq) for power, freq in found if power >= relative * strongest]
    # A real tone leaks into neighbouring candidate bands: keep only local maxima among the candidates.
    peaks.sort(key=lambda item: -item[0])
    kept: list[float] = []
    for power, freq in peaks:
        if all(abs(1200 * np.log2(freq / other)) > max_cents for other in kept):
            kept.append(freq)
    return kept


def _interpolate_peak(spectrum: np.ndarray, freqs: np.ndarray, peak: int) -> float:
    if 0 < peak < spectrum.size - 1:
        left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = left - 2 * centre + right
        offset = 0.5 * (left - right) / denominator if denominator != 0 else 0.0
        return float(freqs[peak] + offset * (freqs[1] - freqs[0]))
    return float(freqs[peak])


def nearest_color(frequency_hz: float, palette_tones: dict[str, float], max_cents: float = 100.0) -> str | None:
    """Palette colour whose tone is nearest ``frequency_hz`` in cents, or ``None`` if none is within ``max_cents``."""
    best_name, best_cents = None, float("inf")
    for name, tone in palette_tones.items():
        cents = abs(1200.0 * np.log2(frequency_hz / tone))
        if cents < best_cents:
            best_name, best_cents = name, cents
    return best_name if best_cents <= max_cents else None


def detect_audio_events(
    audio: np.ndarray,
    sample_rate: int,
    palette_tones: dict[str, float],
    tone_window_s: float = 0.05,
    threshold: float = 0.02,
) -> list[AudioEvent]:
    """Onsets plus the pitch (and colour) of every tone that starts there, in time order.

    Args:
        audio: float ``[channels, samples]`` in [-1, 1].
        sample_rate: Hz.
        palette_tones: colour name -> tone frequency in Hz.
        tone_window_s: length of the spectrum window after each onset.
    """
    if sample_rate is None or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
    mono = to_mono(audio)
    candidates = np.array(sorted(palette_tones.values()), dtype=np.float64)
    onsets = detect_onsets(mono, sample_rate, threshold=threshold)
    events: list[AudioEvent] = []
    length = int(round(tone_window_s * sample_rate))
    for index, onset in enumerate(onsets):
        start = int(round(onset * sample_rate))
        stop = start + length
        if index + 1 < len(onsets):
            stop = min(stop, int(round(onsets[index + 1] * sample_rate)))
        for frequency in spectral_peaks(mono[start:stop], sample_rate, candidates):
            events.append(AudioEvent(onset, frequency, nearest_color(frequency, palette_tones)))
    return events
