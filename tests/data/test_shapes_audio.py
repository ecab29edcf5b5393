"""ShapesWorld audio: one tone per bounce, at the bounce frame's time, pitched by the object's colour."""

import numpy as np
import pytest

from seedkit.data.shapes import PALETTE, AudioEvent, render_scene, sample_scene, scene_from_prompt_spec
from seedkit.data.shapes_audio import TONE_DURATION_S, render_audio, tone


def _peak_frequency(samples: np.ndarray, sample_rate: int) -> float:
    padded = np.zeros(sample_rate)  # 1 Hz bins
    padded[: samples.shape[0]] = samples * np.hanning(samples.shape[0])
    spectrum = np.abs(np.fft.rfft(padded))
    return float(np.argmax(spectrum))


def test_bounces_emit_tones_at_their_frames_with_their_colour_pitch():
    spec = {"objects": [{"color": "red", "motion": "bouncing", "size": "small"},
                        {"color": "purple", "motion": "bouncing", "size": "small"}], "background": "black"}
    sample_rate = 16000
    scene = scene_from_prompt_spec(spec, 4, 64, 64, 49, fps=8.0, sample_rate=sample_rate)
    clip = render_scene(scene)
    audio = clip.audio[0]
    assert clip.audio.shape == (1, round(49 / 8.0 * sample_rate)) and clip.audio.dtype == np.float32
    bounces = sorted((frame, obj.color) for obj in scene.shots[0].objects for frame in obj.bounce_frames)
    assert len(bounces) >= 2
    assert [(event.frame, event.color) for event in scene.audio_events] == bounces
    tone_length = int(TONE_DURATION_S * sample_rate)
    active = np.zeros(audio.shape[0], dtype=bool)
    checked = 0
    for event in scene.audio_events:
        start = round(event.frame / scene.fps * sample_rate)
        assert event.time_s == pytest.approx(event.frame / scene.fps)
        assert event.frequency_hz == PALETTE[event.color][1]
        overlapping = any(
            other is not event and abs(other.time_s - event.time_s) < TONE_DURATION_S for other in scene.audio_events
        )
        # Onset: loud within the 3 ms attack; when the tone is alone, silent just before and at its colour's pitch.
        assert np.abs(audio[start : start + 96]).max() > 0.2
        if not overlapping:
            assert np.abs(audio[start - 20 : start]).max() == 0
            assert _peak_frequency(audio[start : start + tone_length], sample_rate) == pytest.approx(
                PALETTE[event.color][1], abs=3
            )
            checked += 1
        active[start : start + tone_length] = True
    assert checked >= 2
    assert np.abs(audio[~active]).max() == 0, "silent between bounces"


def test_clip_without_bounces_is_silent_and_no_sample_rate_means_no_audio():
    spec = {"objects": [{"motion": "left"}, {"motion": "still"}]}
    silent = render_scene(scene_from_prompt_spec(spec, 0, 32, 32, 17, sample_rate=16000))
    assert silent.audio is not None and np.abs(silent.audio).max() == 0
    assert silent.sample_rate == 16000
    assert render_scene(scene_from_prompt_spec(spec, 0, 32, 32, 17)).audio is None


def test_every_palette_pitch_is_recoverable_and_distinct():
    pitches = []
    for name, (_, frequency) in PALETTE.items():
        pitches.append(_peak_frequency(tone(frequency, 16000), 16000))
        assert pitches[-1] == pytest.approx(frequency, abs=3)
    assert np.min(np.diff(pitches)) > 50


def test_overlapping_tones_never_clip():
    events = [AudioEvent(time_s=0.1, frequency_hz=523.25, color="red", subject_id=i, frame=1) for i in range(4)]
    audio = render_audio(events, 9, 8.0, 16000)
    assert np.abs(audio).max() <= 0.99 + 1e-6 and np.abs(audio).max() > 0.9


def test_audio_is_deterministic_and_sample_rate_is_recorded():
    first = sample_scene(np.random.default_rng(11), 32, 32, 33, sample_rate=22050)
    assert first.to_dict()["sample_rate"] == 22050
    np.testing.assert_array_equal(render_scene(first).audio, render_scene(first).audio)
