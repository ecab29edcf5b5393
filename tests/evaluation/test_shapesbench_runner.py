"""ShapesBench runner: the oracle scores ~1.0 end to end (report.json + report.html), bad samples become recorded
failures, the committed suites are well-formed and reproducible, and `seedkit eval shapesbench --oracle` works."""

import json

import numpy as np
import pytest

from evaluation.shapesbench.runner import GeneratedClip, oracle_generate_fn, run_shapesbench
from evaluation.shapesbench.suites import SUITES, available_suites, build_suite, load_suite


def test_committed_suites_are_complete_and_reproducible():
    assert set(available_suites()) == set(SUITES)
    for name, definition in SUITES.items():
        items = load_suite(name)
        assert len(items) >= 16
        assert {item.task for item in items} == {definition.task}
        assert {item.split for item in items} == {"train", "heldout"}
        assert all(item.prompt and item.truth().num_frames == item.num_frames for item in items)
    rebuilt = build_suite("multi_shot", num_items=3)
    committed = load_suite("multi_shot")[:3]
    assert [item.to_dict() for item in rebuilt] == [item.to_dict() for item in committed]
    assert all(len(item.truth().shots) == 2 for item in committed)


def test_oracle_scores_one_and_writes_reports(tmp_path):
    report = run_shapesbench(oracle_generate_fn, None, tmp_path, limit=2, progress=False)
    assert report.summary["items"] == 2 * len(SUITES) and report.summary["failed"] == 0
    metrics = report.summary["metrics"]
    for name in ("color", "shape", "size", "count", "motion", "consistency", "pitch_color"):
        assert metrics[name] >= 0.99, (name, metrics)
    assert metrics["first_frame_psnr"] == 100.0
    assert metrics["av_offset_ms"] < 2.0
    data = json.loads((tmp_path / "report.json").read_text())
    assert set(data["suites"]) == set(SUITES)
    assert data["suites"]["multi_shot"]["metrics"]["consistency"] == 1.0
    assert {"train", "heldout"} <= set(data["summary"]["by_split"])
    by_shape = data["summary"]["by_attribute"]["shape"]
    assert by_shape and all(entry["accuracy"] == 1.0 for entry in by_shape.values())
    assert sum(entry["objects"] for entry in by_shape.values()) >= 2 * len(SUITES)
    assert data["suites"]["single_object"]["by_attribute"]["size"]
    html = (tmp_path / "report.html").read_text()
    assert html.count("<svg") >= 7 and "samples/motion-000.png" in html
    assert "By asked-for value" in html
    assert data["summary"]["intervals"]["shape"] == [1.0, 1.0]  # every item right: no doubt left
    assert "1.00-1.00" in html
    assert (tmp_path / "samples" / "motion-000.png").is_file()


def test_bad_samples_are_recorded_failures_not_crashes(tmp_path):
    items = load_suite("single_object")[:2] + load_suite("audio_video")[:2] + load_suite("image")[:1]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video")

    def generate(item):
        if item.id == "single_object-000":
            raise RuntimeError("out of memory")
        if item.id == "single_object-001":
            return np.zeros((item.num_frames, item.height // 2, item.width, 3), np.uint8)  # wrong size
        if item.id == "audio_video-000":
            return GeneratedClip(oracle_generate_fn(item).frames)  # audio missing for a t2av item
        if item.id == "image-000":
            return str(broken)  # unreadable file
        return oracle_generate_fn(item)

    report = run_shapesbench(generate, items, tmp_path / "report", progress=False)
    by_id = {record.id: record for record in report.items}
    assert by_id["single_object-000"].status == "failed" and "out of memory" in by_id["single_object-000"].reason
    assert "wrong size" in by_id["single_object-001"].reason
    assert "missing audio" in by_id["audio_video-000"].reason
    assert "unreadable" in by_id["image-000"].reason
    assert by_id["audio_video-001"].status == "ok" and by_id["audio_video-001"].metrics["color"] == 1.0
    # Failed items count 0 on accuracies: 1 good item out of 5.
    assert report.summary["failed"] == 4
    assert report.summary["metrics"]["color"] == pytest.approx(1 / 5)
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [item["status"] for item in data["items"]].count("failed") == 4
    assert "failed: " in (tmp_path / "report" / "report.html").read_text()


def test_float_frames_and_images_are_accepted(tmp_path):
    items = load_suite("image")[:1] + load_suite("motion")[:1]

    def generate(item):
        frames = oracle_generate_fn(item).frames.astype(np.float32) / 255.0
        return frames[0] if item.task == "t2i" else frames  # an image may come back as [H, W, 3]

    report = run_shapesbench(generate, items, tmp_path, progress=False, write_html=False)
    assert report.summary["failed"] == 0 and report.summary["metrics"]["shape"] == 1.0


def test_cli_oracle(tmp_path, capsys):
    from seedkit.cli import main

    code = main(["eval", "shapesbench", "--oracle", "--out", str(tmp_path), "--suite", "motion", "--limit", "2",
                 "--height", "40", "--width", "56", "--no-progress"])
    assert code == 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["summary"]["items"] == 2 and data["summary"]["metrics"]["motion"] == 1.0
    assert data["settings"]["height"] == 40 and data["settings"]["limit"] == 2
    with pytest.raises(SystemExit):
        main(["eval", "shapesbench", "--out", str(tmp_path)])  # neither --model nor --oracle
    # A suite file written elsewhere (a larger suite, for less noisy model selection) runs by path.
    from evaluation.shapesbench import suites

    assert suites.main(["--out", str(tmp_path / "dev"), "--items", "3", "--height", "32", "--width", "32",
                        "--suite", "single_object", "--base-seed", "1"]) == 0
    path = suites.suite_path("single_object", tmp_path / "dev")
    canonical_seeds = {item.seed for item in suites.build_suite("single_object", 3, 32, 32)}
    assert canonical_seeds.isdisjoint(item.seed for item in suites.load_suite(path))  # a dev suite, not a copy
    assert main(["eval", "shapesbench", "--oracle", "--out", str(tmp_path / "dev_report"), "--suite", str(path),
                 "--no-progress"]) == 0
    data = json.loads((tmp_path / "dev_report" / "report.json").read_text())
    assert data["summary"]["items"] == 3 and data["summary"]["metrics"]["color"] == 1.0


def test_pipeline_generator_runs_a_saved_seedkit_model(tmp_path):
    import torch

    from evaluation.shapesbench.runner import PipelineGenerator
    from seedkit.pipelines import SeedkitTextToVideoPipeline

    pipe = SeedkitTextToVideoPipeline.from_flavor(
        "debug", seed=0, default_height=16, default_width=16, default_num_frames=5, max_sequence_length=16
    )
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():  # randomise the adaLN-zero layers so outputs depend on the first-frame condition
        for parameter in pipe.transformer.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=noise))
    pipe.save_pretrained(tmp_path / "model")
    pipe.set_progress_bar_config(disable=True)
    generate = PipelineGenerator(tmp_path / "model", num_inference_steps=2, guidance_scale=3.0)
    items = [
        load_suite(name)[0].with_geometry(16, 16, None if name == "image" else 5)
        for name in ("motion", "image", "image_to_video", "audio_video")
    ]
    report = run_shapesbench(generate, items, tmp_path / "report", progress=False, write_html=False)
    status = {record.id: record for record in report.items}
    for item_id in ("motion-000", "image-000", "image_to_video-000"):
        assert status[item_id].status == "ok", status[item_id].reason
        assert status[item_id].metrics["color"] is not None
    assert status["image_to_video-000"].metrics["first_frame_psnr"] is not None
    # No audio-video pipeline in this model: a recorded failure, not a crash.
    assert status["audio_video-000"].status == "failed" and "t2av" in status["audio_video-000"].reason
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        PipelineGenerator(tmp_path)
    # the low-noise expert's scale reaches the pipeline, which refuses it for a model with one transformer
    with pytest.raises(ValueError, match="one transformer"):
        PipelineGenerator(tmp_path / "model", num_inference_steps=2, guidance_scale_2=2.0)(items[0])
    # image first on request (this model's default is one pass), the same sample the pipeline gives
    image_first = PipelineGenerator(tmp_path / "model", num_inference_steps=2, image_first=True)(items[0])
    one_pass = PipelineGenerator(tmp_path / "model", num_inference_steps=2)(items[0])
    expected = pipe(items[0].prompt, height=16, width=16, num_frames=5, num_inference_steps=2, image_first=True,
                    generator=torch.Generator().manual_seed(items[0].seed), output_type="np").frames[0]
    np.testing.assert_array_equal(image_first, expected)
    assert not np.array_equal(image_first, one_pass)


def test_oracle_through_mp4_files_still_scores_one(tmp_path):
    from seedkit.data.video_io import write_video

    items = load_suite("motion")[:1] + load_suite("audio_video")[1:2]

    def generate(item):
        clip = oracle_generate_fn(item)
        path = tmp_path / f"{item.id}.mp4"
        write_video(path, clip.frames, fps=item.fps, audio=clip.audio, sample_rate=clip.sample_rate)
        return str(path)  # H.264 yuv420p + AAC, read back by the runner

    report = run_shapesbench(generate, items, tmp_path / "report", progress=False, write_html=False)
    metrics = report.summary["metrics"]
    assert report.summary["failed"] == 0
    assert metrics["color"] == metrics["shape"] == metrics["motion"] == metrics["pitch_color"] == 1.0
    assert metrics["av_offset_ms"] < 5.0


def test_cli_reconstruct_runs_ground_truth_through_a_saved_vae(tmp_path, capsys):
    import torch

    from seedkit.cli import main
    from seedkit.models.autoencoder_causal import CausalVideoAutoencoder
    from seedkit.models.flavors import vae_config

    torch.manual_seed(0)
    CausalVideoAutoencoder(**vae_config("debug")).save_pretrained(tmp_path / "vae")
    code = main(["eval", "shapesbench", "--reconstruct", str(tmp_path / "vae"), "--out", str(tmp_path / "report"),
                 "--suite", "single_object", "--limit", "2", "--height", "16", "--width", "16", "--frames", "5",
                 "--no-progress"])
    assert code == 0
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["summary"]["items"] == 2 and data["summary"]["failed"] == 0  # right geometry, so scored
    assert "reconstructed" in data["settings"]["model"]
    # An untrained VAE scrambles the scene: the ceiling it reports is far below the oracle's 1.0.
    assert data["summary"]["metrics"]["color"] < 1.0


def test_renoise_starts_from_the_noised_ground_truth(tmp_path):
    import torch

    from evaluation.shapesbench.runner import PipelineGenerator
    from seedkit.cli import main
    from seedkit.data.shapes import render_scene
    from seedkit.data.video_io import frames_to_tensor
    from seedkit.pipelines import SeedkitTextToVideoPipeline

    pipe = SeedkitTextToVideoPipeline.from_flavor(
        "debug", seed=0, default_height=16, default_width=16, default_num_frames=5, max_sequence_length=16
    )
    pipe.save_pretrained(tmp_path / "model")
    item = load_suite("single_object")[0].with_geometry(16, 16, 5)
    video = frames_to_tensor(render_scene(item.truth()).frames).unsqueeze(0)
    clean = pipe.normalize_latents(pipe.vae.encode(video).latent_dist.mode())
    noise = pipe.prepare_latents(1, 5, 16, 16, torch.device("cpu"), torch.Generator().manual_seed(item.seed))

    def start(renoise):
        generator = PipelineGenerator(tmp_path / "model", num_inference_steps=10, renoise=renoise, device="cpu")
        return generator.renoised_start(pipe, item, torch.Generator().manual_seed(item.seed))

    latents, sigmas = start(0.3)
    assert sigmas == pytest.approx([0.3, 0.2, 0.1])  # the last 3 of 10 steps (scheduler shift 1)
    torch.testing.assert_close(latents, 0.7 * clean + 0.3 * noise)
    latents, sigmas = start(1.0)
    assert len(sigmas) == 10 and sigmas[0] == 1.0
    torch.testing.assert_close(latents, noise)  # strength 1: plain generation's seeded noise

    with pytest.raises(ValueError, match="strength in"):
        PipelineGenerator(tmp_path / "model", renoise=1.5)
    image_item = load_suite("image")[0].with_geometry(16, 16, None)
    with pytest.raises(ValueError, match="text-to-video"):
        PipelineGenerator(tmp_path / "model", num_inference_steps=2, renoise=0.5, device="cpu")(image_item)
    with pytest.raises(SystemExit, match="--renoise"):
        main(["eval", "shapesbench", "--oracle", "--renoise", "0.5", "--out", str(tmp_path / "r")])
    assert main(["eval", "shapesbench", "--model", str(tmp_path / "model"), "--renoise", "0.3", "--steps", "4",
                 "--suite", "single_object", "--limit", "1", "--height", "16", "--width", "16", "--frames", "5",
                 "--out", str(tmp_path / "report"), "--no-progress"]) == 0
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["settings"]["renoise"] == 0.3 and data["summary"]["failed"] == 0


def test_sde_flags_reach_the_pipeline_and_the_report(tmp_path):
    from evaluation.shapesbench.runner import PipelineGenerator
    from seedkit.cli import main
    from seedkit.pipelines import SeedkitTextToVideoPipeline
    from seedkit.pipelines.schedulers import FlowMatchSDEScheduler, SDESampling

    pipe = SeedkitTextToVideoPipeline.from_flavor(
        "debug", seed=0, default_height=16, default_width=16, default_num_frames=5, max_sequence_length=16
    )
    pipe.save_pretrained(tmp_path / "model")
    generator = PipelineGenerator(tmp_path / "model", device="cpu", sde=SDESampling(0.4, (0.0, 0.6), "images"))
    loaded = generator.pipeline("t2i")
    assert isinstance(loaded.image_scheduler, FlowMatchSDEScheduler)
    assert loaded.image_scheduler.config.sde_noise_level == 0.4
    assert main(["eval", "shapesbench", "--model", str(tmp_path / "model"), "--steps", "2", "--sde-noise", "0.4",
                 "--sde-window", "0", "0.6", "--sde-passes", "images", "--suite", "single_object", "--limit", "1",
                 "--height", "16", "--width", "16", "--frames", "5", "--out", str(tmp_path / "report"),
                 "--no-progress"]) == 0
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["settings"]["sde"] == {"noise_level": 0.4, "window": [0.0, 0.6], "passes": "images"}
    with pytest.raises(SystemExit, match="--sde-noise changes how a model samples"):
        main(["eval", "shapesbench", "--oracle", "--sde-noise", "0.5", "--out", str(tmp_path / "r")])
    assert data["summary"]["failed"] == 0

def test_video_prompts_as_images_keep_the_prompt_and_score_one_with_the_oracle(tmp_path):
    from evaluation.shapesbench import suites

    assert suites.main(["--out", str(tmp_path), "--items", "4", "--height", "32", "--width", "32",
                        "--suite", "single_object", "--as-images"]) == 0
    images = suites.load_suite(tmp_path / "shapes_single_object_images.jsonl")
    videos = suites.build_suite("single_object", 4, 32, 32)
    assert [item.prompt for item in images] == [item.prompt for item in videos]
    assert {item.task for item in images} == {"t2i"} and {item.num_frames for item in images} == {1}
    for image, video in zip(images, videos):
        truth = image.truth()
        assert truth.num_frames == 1
        assert [(obj.shape, obj.color, obj.size, obj.motion) for obj in truth.shots[0].objects] == [
            (obj.shape, obj.color, obj.size, "still") for obj in video.truth().shots[0].objects
        ]
    report = run_shapesbench(oracle_generate_fn, images, tmp_path / "report", progress=False, write_html=False)
    metrics = report.summary["metrics"]
    assert metrics["shape"] == 1.0 and metrics["color"] == 1.0 and metrics["motion"] is None
    with pytest.raises(ValueError, match="only single-shot t2v items"):
        suites.build_suite("multi_shot", 1, 32, 32)[0].as_image()
