"""ShapesWorld audio: a short tone for every bounce, pitched by the bouncing object's colour; silence otherwise.

A tone is a sine at the colour's ``PALETTE`` frequency under an envelope with a 3 ms linear attack (a sharp, easily
located onset) and a raised-cosine decay to zero at ``TONE_DURATION_S``. Overlapping tones add; the sum is scaled
down only if it would clip.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

TONE_DURATION_S = 0.08
TONE_ATTACK_S = 0.003
TONE_AMPLITUDE = 0.5


def tone(frequency_hz: float, sample_rate: int, duration_s: float = TONE_DURATION_S) -> np.ndarray:
    """One bounce tone, ``float32 [round(duration_s * sample_rate)]``, starting at phase zero."""
    length = int(round(duration_s * sample_rate))
    times = np.arange(length, dtype=np.float64) / sample_rate
    attack = max(1, int(round(TONE_ATTACK_S * sample_rate)))
    envelope = np.ones(length)
    envelope[:attack] = np.arange(attack) / attack
    decay = length - attack
    envelope[attack:] = 0.5 * (1.0 + np.cos(np.pi * np.arange(decay) / max(decay, 1)))
    return (TONE_AMPLITUDE * envelope * np.sin(2.0 * math.pi * frequency_hz * times)).astype(np.float32)


def num_audio_samples(num_frames: int, fps: float, sample_rate: int) -> int:
    """Samples spanning ``num_frames`` frames: the clip lasts ``num_frames / fps`` seconds."""
    return int(round(num_frames / fps * sample_rate))


def render_audio(
    events: Iterable, num_frames: int, fps: float, sample_rate: int, duration_s: float = TONE_DURATION_S
) -> np.ndarray:
    """Mix one tone per event (objects with ``time_s`` and ``frequency_hz``) into ``float32 [1, S]``.

    ``S = round(num_frames / fps * sample_rate)``; a tone that starts near the end is cut at the clip's end.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    total = num_audio_samples(num_frames, fps, sample_rate)
    audio = np.zeros(total, dtype=np.float32)
    for event in events:
        start = int(round(event.time_s * sample_rate))
        if start >= total:
            continue
        samples = tone(event.frequency_hz, sample_rate, duration_s)[: total - start]
        audio[start : start + samples.shape[0]] += samples
    peak = float(np.abs(audio).max()) if total else 0.0
    if peak > 0.99:
        audio *= 0.99 / peak
    return audio[None]
