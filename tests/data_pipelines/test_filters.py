"""Filters on crafted clips whose answer is known, on real footage, and the aesthetic scorers."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from data_pipelines.aesthetic import HeuristicAestheticScorer, MLPAestheticScorer, load_aesthetic_head
from data_pipelines.filters import (
    FILTERS,
    AestheticFilter,
    BrightnessFilter,
    MotionFilter,
    SharpnessFilter,
    StaticFilter,
    TextFilter,
    TextFilterConfig,
    build_filter,
    lucas_kanade_flow,
    text_block_mask,
    to_grey,
)
from data_pipelines.stages import ClipSample, DropClip


def _clip(frames: np.ndarray, **metadata) -> ClipSample:
    return ClipSample(source="synthetic.mp4", clip_id="synthetic-0-1", start_frame=0, end_frame=len(frames),
                      fps=24.0, frames=np.ascontiguousarray(frames), metadata=dict(metadata))


def _texture(height: int, width: int, feature: int = 6, seed: int = 0) -> np.ndarray:
    """Smooth random colour texture (blobs of about ``feature`` pixels)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (height // feature + 1, width // feature + 1, 3)).astype(np.uint8)
    return np.asarray(
        Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC).crop((0, 0, width, height))
    )


def _panning(dx: int, dy: int, num_frames: int = 9, size: int = 128) -> np.ndarray:
    """A window of ``size`` pixels sliding over a larger texture by ``(dx, dy)`` pixels per frame."""
    world = _texture(size + abs(dy) * num_frames + 2, size + abs(dx) * num_frames + 2, feature=8)
    return np.stack([world[i * dy : i * dy + size, i * dx : i * dx + size] for i in range(num_frames)])


# ----------------------------------------------------------------------------------------------------------------
# Brightness and black frames
# ----------------------------------------------------------------------------------------------------------------


def test_black_frames_are_dropped_with_reason():
    frames = np.concatenate([np.zeros((12, 32, 32, 3), np.uint8), np.stack([_texture(32, 32)] * 4)])
    sample = _clip(frames)
    with pytest.raises(DropClip) as raised:
        BrightnessFilter()(sample)
    assert raised.value.reason == "black_frames"
    assert sample.scores["black_fraction"] == pytest.approx(12 / 16)
    assert sample.scores["brightness"] < 64


def test_bright_clip_is_kept_and_dark_clip_is_too_dark():
    normal = _clip(np.stack([_texture(32, 32)] * 4))
    assert BrightnessFilter()(normal) is normal
    assert normal.scores["black_fraction"] == 0.0
    keep, reason = BrightnessFilter(max_black_fraction=None).keep({"brightness": 18.0, "black_fraction": 0.0})
    assert (keep, reason) == (False, "too_dark")


# ----------------------------------------------------------------------------------------------------------------
# Static clips and slideshows
# ----------------------------------------------------------------------------------------------------------------


def test_static_clip_is_static_and_slideshow_is_slideshow():
    rng = np.random.default_rng(1)
    still = _texture(192, 256)  # analysed at 64 pixels: like real footage, noise averages out when downscaled
    noisy_still = np.stack([np.clip(still.astype(np.int16) + rng.integers(-1, 2, still.shape), 0, 255)
                            for _ in range(20)]).astype(np.uint8)
    with pytest.raises(DropClip) as raised:
        StaticFilter()(_clip(noisy_still))
    assert raised.value.reason == "static"

    slides = np.concatenate([np.stack([_texture(48, 64, seed=seed)] * 8) for seed in range(3)])
    sample = _clip(slides)
    with pytest.raises(DropClip) as raised:
        StaticFilter()(sample)
    assert raised.value.reason == "slideshow"
    assert sample.scores["static_change_points"] == 2

    moving = _clip(_panning(2, 0, num_frames=12))
    StaticFilter()(moving)
    assert moving.scores["static_fraction"] == 0.0


# ----------------------------------------------------------------------------------------------------------------
# Motion
# ----------------------------------------------------------------------------------------------------------------


def test_box_sum_matches_explicit_windows():
    from data_pipelines.filters import _box_sum

    images = np.random.default_rng(0).normal(size=(2, 7, 9)).astype(np.float32)
    radius = 2
    padded = np.pad(images, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    expected = np.array([[[padded[batch, row : row + 5, column : column + 5].sum() for column in range(9)]
                          for row in range(7)] for batch in range(2)])
    np.testing.assert_allclose(_box_sum(images, radius), expected, atol=1e-4)


@pytest.mark.parametrize("dx, dy", [(2, 1), (5, 0), (0, 3)])
def test_flow_recovers_known_translation(dx, dy):
    frames = _panning(dx, dy)
    grey = to_grey(frames[:2])
    flow, reliable = lucas_kanade_flow(grey[0], grey[1])
    # Content moves by -dx in the window as the window slides by +dx over the world.
    assert reliable.mean() > 0.3
    assert np.median(flow[0][reliable]) == pytest.approx(-dx, abs=0.25)
    assert np.median(flow[1][reliable]) == pytest.approx(-dy, abs=0.25)


def test_motion_score_has_the_right_magnitude_and_respects_the_frame_stride():
    sample = _clip(_panning(2, 1))
    MotionFilter()(sample)
    expected = 100.0 * np.hypot(2, 1) / 128  # percent of the frame width per frame
    assert sample.scores["motion_flow"] == pytest.approx(expected, rel=0.12)
    assert sample.scores["motion_flow"] > MotionFilter().config.min_flow

    # The same displacement between analysed frames taken 2 source frames apart is half the speed.
    strided = _clip(_panning(2, 1), frame_stride=2)
    MotionFilter()(strided)
    assert strided.scores["motion_flow"] == pytest.approx(sample.scores["motion_flow"] / 2, rel=1e-5)

    faster = _clip(_panning(5, 0))
    MotionFilter()(faster)
    assert faster.scores["motion_flow"] == pytest.approx(100.0 * 5 / 128, rel=0.12)
    assert faster.scores["motion_frame_difference"] > sample.scores["motion_frame_difference"]


def test_still_clip_is_low_motion_for_both_methods():
    frames = np.stack([_texture(64, 64)] * 6)
    for method in ("flow", "frame_difference"):
        sample = _clip(frames)
        with pytest.raises(DropClip) as raised:
            MotionFilter(method=method)(sample)
        assert raised.value.reason == "low_motion"
        assert sample.scores["motion_frame_difference"] == 0.0
    with pytest.raises(ValueError, match="valid: flow, frame_difference"):
        MotionFilter(method="farneback")


# ----------------------------------------------------------------------------------------------------------------
# Sharpness
# ----------------------------------------------------------------------------------------------------------------


def test_blurred_clip_is_less_sharp_and_dropped():
    sharp_frame = _texture(128, 128, feature=2)
    blurred_frame = np.asarray(Image.fromarray(sharp_frame).filter(ImageFilter.GaussianBlur(4)))
    sharp, blurred = _clip(np.stack([sharp_frame] * 3)), _clip(np.stack([blurred_frame] * 3))
    SharpnessFilter()(sharp)
    with pytest.raises(DropClip) as raised:
        SharpnessFilter()(blurred)
    assert raised.value.reason == "blurry"
    assert sharp.scores["sharpness"] > 20 * blurred.scores["sharpness"]


# ----------------------------------------------------------------------------------------------------------------
# On-screen text
# ----------------------------------------------------------------------------------------------------------------


def _background(seed: int, height: int = 216, width: int = 384) -> np.ndarray:
    """A photo-like background: smooth colour blobs and a gradient, plus mild noise."""
    rng = np.random.default_rng(seed)
    base = _texture(height, width, feature=48, seed=seed).astype(np.float32)
    gradient = np.linspace(-30, 30, width, dtype=np.float32)[None, :, None]
    return np.clip(base * 0.7 + gradient + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)


def _with_text(frame: np.ndarray, lines: list[str], size: int = 22) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=size)  # Pillow's bundled font: nothing is downloaded
    top = frame.shape[0] - 20 - (size + 6) * len(lines)
    box = [frame.shape[1], top, 0, top]
    for index, line in enumerate(lines):
        position = (20, top + index * (size + 6))
        draw.text(position, line, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
        left, upper, right, lower = draw.textbbox(position, line, font=font, stroke_width=2)
        box = [min(box[0], left), min(box[1], upper), max(box[2], right), max(box[3], lower)]
    return np.asarray(image), tuple(box)


def test_text_detector_separates_rendered_subtitles_from_plain_backgrounds():
    coverages_with, coverages_without = [], []
    config = TextFilterConfig()
    for seed in range(4):
        background = _background(seed)
        with_text, (left, upper, right, lower) = _with_text(
            background, ["The quick brown fox jumps over", "the lazy dog, again and again."]
        )
        mask = text_block_mask(to_grey(with_text[None])[0], config)
        # Detected blocks sit on the rendered text (block grid at full size since the frame is 384 wide).
        rows, columns = np.nonzero(mask)
        centres_y, centres_x = rows * 8 + 4, columns * 8 + 4
        inside = (
            (centres_x >= left - 8) & (centres_x <= right + 8) & (centres_y >= upper - 8) & (centres_y <= lower + 8)
        )
        assert len(rows) > 0 and inside.mean() > 0.95
        text_area = (right - left) * (lower - upper) / (with_text.shape[0] * with_text.shape[1])
        coverage = mask.mean()
        assert coverage > 0.3 * text_area

        coverages_with.append(TextFilter(enforce=False)(_clip(np.stack([with_text] * 2))).scores["text_coverage"])
        coverages_without.append(TextFilter()(_clip(np.stack([background] * 2))).scores["text_coverage"])
    assert min(coverages_with) > 0.05
    assert max(coverages_without) < 0.005
    with pytest.raises(DropClip) as raised:
        TextFilter()(_clip(np.stack([with_text] * 2)))
    assert raised.value.reason == "text"


# ----------------------------------------------------------------------------------------------------------------
# Registry, config plumbing
# ----------------------------------------------------------------------------------------------------------------


def test_registry_build_disable_and_score_only():
    assert set(FILTERS) == {"motion", "sharpness", "brightness", "static", "text", "aesthetic"}
    motion = build_filter("motion", {"method": "frame_difference", "min_frame_difference": 50.0})
    assert isinstance(motion, MotionFilter) and motion.config.min_frame_difference == 50.0
    with pytest.raises(ValueError, match="valid: motion, sharpness"):
        build_filter("blur")
    with pytest.raises(ValueError, match="min_sharpness"):
        build_filter("sharpness", {"min_sharp": 3})

    # Worker processes receive the stages pickled: every filter survives the round trip with its config.
    for name, filter_class in FILTERS.items():
        restored = pickle.loads(pickle.dumps(build_filter(name, {"enforce": False})))
        assert type(restored) is filter_class and restored.config.enforce is False

    black = _clip(np.zeros((4, 16, 16, 3), np.uint8))
    assert build_filter("brightness", {"enabled": False})(black).scores == {}
    build_filter("brightness", {"enforce": False})(black)
    assert black.scores["black_fraction"] == 1.0
    assert build_filter("brightness").keep(black.scores) == (False, "black_frames")


# ----------------------------------------------------------------------------------------------------------------
# Aesthetic scorers
# ----------------------------------------------------------------------------------------------------------------


def test_heuristic_aesthetic_prefers_crisp_colourful_frames():
    crisp = _texture(96, 96, feature=3)
    dull = np.asarray(Image.fromarray(crisp).convert("L").convert("RGB").filter(ImageFilter.GaussianBlur(5)))
    dull = (dull.astype(np.float32) * 0.2 + 200).astype(np.uint8)  # washed out
    scores = HeuristicAestheticScorer().score(np.stack([crisp, dull]))
    assert scores.shape == (2,) and 0 <= scores.min() and scores.max() <= 10
    assert scores[0] > scores[1] + 3

    sample = _clip(np.stack([dull] * 3))
    with pytest.raises(DropClip) as raised:
        AestheticFilter(min_aesthetic=5.0)(sample)
    assert raised.value.reason == "low_aesthetic"
    restored = pickle.loads(pickle.dumps(AestheticFilter()))
    assert restored._scorer is None and restored.config.scorer == "heuristic"


def _tiny_clip_dir(tmp_path: Path) -> tuple[Path, Path]:
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=16, patch_size=8, projection_dim=12)
    model_dir = tmp_path / "clip"
    CLIPVisionModelWithProjection(config).save_pretrained(model_dir)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(model_dir)
    # LAION-style layer naming: Linear layers at indices 0, 2, 4 of a Sequential (dropouts in between).
    head = {"layers.0.weight": torch.randn(8, 12), "layers.0.bias": torch.randn(8),
            "layers.2.weight": torch.randn(4, 8), "layers.2.bias": torch.randn(4),
            "layers.4.weight": torch.randn(1, 4), "layers.4.bias": torch.randn(1)}
    head_path = tmp_path / "head.safetensors"
    save_file(head, str(head_path))
    return model_dir, head_path


def test_mlp_aesthetic_scorer_runs_clip_embeddings_through_the_head(tmp_path):
    model_dir, head_path = _tiny_clip_dir(tmp_path)
    scorer = MLPAestheticScorer(model_dir, head_path, batch_size=2)
    frames = np.stack([_texture(40, 56, seed=seed) for seed in range(3)])
    scores = scorer.score(frames)
    assert scores.shape == (3,) and np.isfinite(scores).all()
    assert len(np.unique(np.round(scores, 6))) == 3
    np.testing.assert_allclose(scorer.score(frames), scores, rtol=1e-6)

    # Same numbers by hand: normalised embedding -> three linear layers, no activation.
    from safetensors.torch import load_file

    weights = load_file(str(head_path))
    embeddings = scorer.embed(frames)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(3), atol=1e-5)
    hidden = embeddings
    for index in (0, 2, 4):
        hidden = hidden @ weights[f"layers.{index}.weight"].T + weights[f"layers.{index}.bias"]
    np.testing.assert_allclose(scores, hidden.squeeze(-1).numpy(), rtol=1e-5, atol=1e-6)

    sample = _clip(frames)
    AestheticFilter(scorer="mlp", model_path=str(model_dir), head_path=str(head_path), min_aesthetic=None)(sample)
    assert sample.scores["aesthetic"] == pytest.approx(float(scores.mean()), rel=1e-5)


def test_aesthetic_head_rejects_broken_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"a.weight": torch.randn(4, 12), "b.weight": torch.randn(1, 5)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="takes 5 features"):
        load_aesthetic_head(tmp_path / "bad.safetensors")
    save_file({"weight": torch.randn(1, 12), "bias": torch.zeros(1)}, str(tmp_path / "linear.safetensors"))
    assert len(load_aesthetic_head(tmp_path / "linear.safetensors").layers) == 1


# ----------------------------------------------------------------------------------------------------------------
# Real footage
# ----------------------------------------------------------------------------------------------------------------


def test_filters_on_real_clips(shared_videos):
    videos = shared_videos
    from seedkit.data.video_io import read_video

    # Sintel: a moving, sharp, normally exposed shot without text: every default filter keeps it.
    sintel = read_video(videos / "sintel_example3.mp4", with_audio=False, max_frames=24)
    sample = _clip(sintel.frames)
    for name in ("motion", "sharpness", "brightness", "static", "text", "aesthetic"):
        build_filter(name)(sample)
    assert sample.scores["motion_flow"] > 0.2
    assert sample.scores["static_fraction"] < 0.2
    assert sample.scores["text_coverage"] < 0.01

    # Subtitles rendered over natural frames are found; the same frames without them are not.
    bunny = read_video(videos / "bbb_0_30.webm", with_audio=False, max_frames=160).frames[150]
    for frame in (sintel.frames[12], bunny):
        natural = np.asarray(Image.fromarray(frame).resize((384, 216), Image.Resampling.BOX))
        subtitled, _ = _with_text(natural, ["- Where did you find it?", "- Out there, in the snow."], size=18)
        assert TextFilter()(_clip(natural[None])).scores["text_coverage"] < 0.01
        assert TextFilter(enforce=False)(_clip(subtitled[None])).scores["text_coverage"] > 0.03

    # Big Buck Bunny opens on a fade from black; PySceneDetect's test video starts with black frames.
    for name, reason in (("bbb_0_30.webm", "black_frames"), ("psd/testvideo.mp4", "black_frames")):
        opening = _clip(read_video(videos / name, with_audio=False, max_frames=24).frames)
        with pytest.raises(DropClip) as raised:
            BrightnessFilter()(opening)
        assert raised.value.reason == reason

    # SMPTE colour bars with a burned-in counter: frozen apart from the digits, and the digits read as text.
    bars = _clip(read_video(videos / "smpte_2997.mp4", with_audio=False, max_frames=24).frames)
    with pytest.raises(DropClip) as raised:
        StaticFilter()(bars)
    assert raised.value.reason == "static"
    TextFilter(enforce=False)(bars)
    assert bars.scores["text_coverage"] > 0.02
