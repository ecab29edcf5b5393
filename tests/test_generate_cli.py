"""`seedkit generate` end to end on a tiny random debug-flavor model saved to a temporary directory."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

import seedkit.generate as generate_module
from seedkit.cli import main
from seedkit.data.video_io import read_video
from seedkit.pipelines import SeedkitTextToVideoPipeline

FAST = ["--steps", "2", "--guidance", "3.0"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    pipe = SeedkitTextToVideoPipeline.from_flavor(
        "debug", seed=0, default_height=16, default_width=16, default_num_frames=5, max_sequence_length=16
    )
    with torch.no_grad():  # randomise the adaLN-zero layers so outputs depend on prompt and seed
        generator = torch.Generator().manual_seed(1)
        for parameter in pipe.transformer.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    directory = tmp_path_factory.mktemp("model")
    pipe.save_pretrained(directory)
    return directory


def png(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_single_prompt_video_image_and_i2v(model_dir, tmp_path):
    video = tmp_path / "clip.mp4"
    assert main(["generate", "a red circle bouncing", "--model", str(model_dir), "--out", str(video), *FAST]) == 0
    clip = read_video(video, with_audio=False)
    assert clip.frames.shape == (5, 16, 16, 3)
    gif = tmp_path / "clip.gif"
    assert main(["generate", "a red circle", "--model", str(model_dir), "--out", str(gif), "--frames", "9", *FAST]) == 0
    assert read_video(gif, with_audio=False).frames.shape[0] == 9
    image = tmp_path / "image.png"  # an image suffix selects t2i
    arguments = ["generate", "a blue square", "--model", str(model_dir), "--out", str(image), "--width", "32"]
    assert main([*arguments, *FAST]) == 0
    assert png(image).shape == (16, 32, 3)
    i2v = tmp_path / "i2v.mp4"
    assert main(["generate", "it moves right", "--model", str(model_dir), "--task", "i2v", "--image", str(image),
                 "--out", str(i2v), "--width", "32", *FAST]) == 0
    assert read_video(i2v, with_audio=False).frames.shape == (5, 16, 32, 3)
    assert not list(tmp_path.glob(".*partial*"))


def test_seed_makes_output_reproducible(model_dir, tmp_path):
    def run(name, seed):
        out = tmp_path / name
        assert main(["generate", "a red circle", "--model", str(model_dir), "--out", str(out), "--seed", str(seed),
                     *FAST]) == 0
        return png(out)

    first, again, other = run("a.png", 3), run("b.png", 3), run("c.png", 4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_bulk_jsonl_resumes_and_reports_failures(model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    lines = [
        {"id": "red", "prompt": "a red circle", "seed": 5},
        {"id": "blue-image", "prompt": "a blue square", "task": "t2i", "width": 32},
        {"id": "bad-frames", "prompt": "a green triangle", "frames": 4},
        {"id": "gif", "prompt": "two circles", "format": "gif"},
        {"prompt": "no id here"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n{not json\n" + json.dumps({"prompt": "x", "colour": 1})
    prompts.write_text(text + "\n")
    out_dir = tmp_path / "out"
    arguments = ["generate", "--model", str(model_dir), "--prompts", str(prompts), "--out-dir", str(out_dir), *FAST]
    assert main(arguments) == 1  # some items failed
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["counts"] == {"done": 4, "skipped": 0, "failed": 3}
    assert sorted(item["id"] for item in summary["done"]) == ["00004", "blue-image", "gif", "red"]
    failed = {item["id"]: item["error"] for item in summary["failed"]}
    assert "1, 5, 9" in failed["bad-frames"]  # the pipeline's ValueError, naming valid frame counts
    assert "invalid JSON" in failed["00005"] and "unknown keys ['colour']" in failed["00006"]
    assert {item["id"]: item["line"] for item in summary["failed"]} == {"bad-frames": 3, "00005": 6, "00006": 7}
    assert {path.name for path in out_dir.iterdir()} == {"red.mp4", "blue-image.png", "gif.gif", "00004.mp4",
                                                          "summary.json"}
    assert png(out_dir / "blue-image.png").shape == (16, 32, 3)
    assert "failed bad-frames" in capsys.readouterr().err

    # item seeds: "red" has seed 5; a single-prompt run with --seed 5 gives the same video
    single = tmp_path / "single.mp4"
    single_run = ["generate", "a red circle", "--model", str(model_dir), "--out", str(single), "--seed", "5"]
    assert main([*single_run, *FAST]) == 0
    np.testing.assert_array_equal(read_video(single, with_audio=False).frames,
                                  read_video(out_dir / "red.mp4", with_audio=False).frames)

    # resume: finished items are skipped, the failures are tried again and reported again
    before = (out_dir / "red.mp4").stat().st_mtime_ns
    assert main(arguments) == 1
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["counts"] == {"done": 0, "skipped": 4, "failed": 3}
    assert (out_dir / "red.mp4").stat().st_mtime_ns == before


def test_bulk_txt_with_shards(model_dir, tmp_path, monkeypatch):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\n# a comment\na blue square\na green triangle\n")
    out_dir = tmp_path / "out"
    common = ["generate", "--model", str(model_dir), "--prompts", str(prompts), "--out-dir", str(out_dir), *FAST]
    assert main([*common, "--num-shards", "2", "--shard-index", "0"]) == 0
    assert sorted(path.name for path in out_dir.glob("*.mp4")) == ["00000.mp4", "00002.mp4"]
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun / accelerate launch set them
    monkeypatch.setenv("RANK", "1")
    assert main(common) == 0
    assert sorted(path.name for path in out_dir.glob("*.mp4")) == ["00000.mp4", "00001.mp4", "00002.mp4"]
    shard0 = json.loads((out_dir / "summary-0-of-2.json").read_text())
    assert sorted(item["id"] for item in shard0["done"]) == ["00000", "00002"]


def test_usage_errors(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(generate_module, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    assert main(["generate", "a red circle", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "pass --model DIR" in capsys.readouterr().err
    assert main(["generate", "a", "--model", str(model_dir), "--out", str(tmp_path / "x.png"), "--task", "t2v"]) == 2
    assert "task t2v writes .mp4, .gif, .webm files, not .png" in capsys.readouterr().err
    assert main(["generate", "a", "--model", str(model_dir), "--out", str(tmp_path / "x.mp4"), "--task", "i2v"]) == 2
    assert "needs an image" in capsys.readouterr().err
    assert main(["generate", "--model", str(model_dir)]) == 2
    assert main(["generate", "a", "--model", str(tmp_path), "--out", str(tmp_path / "x.mp4")]) == 2
    assert "no model_index.json" in capsys.readouterr().err


def test_guidance_2_sets_the_low_noise_experts_scale(model_dir, tmp_path, capsys):
    pipe = SeedkitTextToVideoPipeline.from_pretrained(model_dir)
    low_noise = copy.deepcopy(pipe.transformer)
    with torch.no_grad():
        for parameter in low_noise.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(2)))
    experts = SeedkitTextToVideoPipeline(**pipe.components | {"transformer_2": low_noise},
                                         **pipe.pipeline_kwargs() | {"boundary_ratio": 0.5})
    experts.save_pretrained(tmp_path / "experts")

    def run(name, *extra, model=tmp_path / "experts"):
        out = tmp_path / name
        code = main(["generate", "a red circle", "--model", str(model), "--out", str(out), *FAST, *extra])
        return png(out) if code == 0 else code

    same, default = run("same.png", "--guidance-2", "3.0"), run("default.png")
    np.testing.assert_array_equal(same, default)  # FAST's --guidance is 3.0
    low = run("low.png", "--guidance-2", "1.0")
    assert not np.array_equal(low, default)

    # a prompts file's per-item "guidance_2" does the same
    prompts = tmp_path / "prompts.jsonl"
    item = {"id": "low", "prompt": "a red circle", "seed": 0, "guidance_2": 1.0, "task": "t2i", "format": "png"}
    prompts.write_text(json.dumps(item) + "\n")
    out_dir = tmp_path / "bulk"
    assert main(["generate", "--model", str(tmp_path / "experts"), "--prompts", str(prompts), "--out-dir",
                 str(out_dir), *FAST]) == 0
    np.testing.assert_array_equal(png(out_dir / "low.png"), low)
    assert run("single.png", "--guidance-2", "1.0", model=model_dir) == 1  # one transformer: an error
    assert "one transformer" in capsys.readouterr().err


def test_image_first_flag_overrides_the_models_default(model_dir, tmp_path):
    pipe = SeedkitTextToVideoPipeline.from_pretrained(model_dir)
    SeedkitTextToVideoPipeline(**pipe.components, **pipe.pipeline_kwargs() | {"image_first": True}).save_pretrained(
        tmp_path / "image_first"
    )

    def frames(name, model, *extra):
        out = tmp_path / name
        assert main(["generate", "a red circle", "--model", str(model), "--out", str(out), *FAST, *extra]) == 0
        return read_video(out, with_audio=False).frames

    one_stage, image_first = frames("a.mp4", model_dir), frames("b.mp4", tmp_path / "image_first")
    assert not np.array_equal(one_stage, image_first)
    np.testing.assert_array_equal(frames("c.mp4", model_dir, "--image-first"), image_first)
    np.testing.assert_array_equal(frames("d.mp4", tmp_path / "image_first", "--no-image-first"), one_stage)


def test_sde_flags_sample_the_asked_passes_with_sde_steps(model_dir, tmp_path, capsys):
    def run(name, *extra):
        out = tmp_path / name
        assert main(["generate", "a red circle", "--model", str(model_dir), "--out", str(out), *FAST, *extra]) == 0
        return png(out) if name.endswith(".png") else read_video(out, with_audio=False).frames

    ode_image, ode_video = run("ode.png"), run("ode.mp4")
    sde = ["--sde-noise", "0.9", "--sde-window", "0", "1"]
    image, again = run("sde.png", *sde, "--sde-passes", "images"), run("again.png", *sde, "--sde-passes", "images")
    np.testing.assert_array_equal(image, again)  # the seed draws the SDE's noise too
    assert not np.array_equal(image, ode_image)
    np.testing.assert_array_equal(run("videos.png", *sde, "--sde-passes", "videos"), ode_image)
    np.testing.assert_array_equal(run("images.mp4", *sde, "--sde-passes", "images"), ode_video)
    assert main(["generate", "a red circle", "--model", str(model_dir), "--out", str(tmp_path / "x.png"),
                 "--sde-noise", "0.5", "--sde-passes", "frames"]) == 2
    assert "passes must be one of all, images, videos" in capsys.readouterr().err
    assert main(["generate", "a red circle", "--model", str(model_dir), "--out", str(tmp_path / "x.png"),
                 "--sde-noise", "0.5", "--sde-window", "0.7", "0.6"]) == 2
    assert "0 <= sde_min_sigma <= sde_max_sigma <= 1" in capsys.readouterr().err
