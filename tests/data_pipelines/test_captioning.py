"""Captioning end to end with a tiny random Qwen2-VL built offline, and the acoustic audio summary."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipelines.captioning import (
    CaptionerConfig,
    VideoCaptioner,
    acoustic_summary,
    check_template,
    describe_audio,
)
from data_pipelines.stages import ClipSample

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]


def _tokenizer():
    """A character-level tokenizer with the Qwen chat and vision special tokens, built without any download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocabulary = {token: index for index, token in enumerate(SPECIAL_TOKENS + [chr(code) for code in range(32, 127)]
                                                              + ["\n", "?"])}
    backend = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="?"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token="?")


def _save_tiny_vlm(directory: Path, model_class: str = "Qwen2VLForConditionalGeneration") -> Path:
    """A 2-layer Qwen2-VL (or Qwen2.5-VL) with a 1-block vision tower, its tokenizer and image processor."""
    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = _tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    vision_config = {"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "patch_size": 14,
                     "spatial_merge_size": 2, "temporal_patch_size": 2}
    config_class = transformers.Qwen2VLConfig
    if model_class == "Qwen2_5_VLForConditionalGeneration":
        config_class = transformers.Qwen2_5_VLConfig
        vision_config = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 14,
                         "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 32,
                         "window_size": 56, "fullatt_block_indexes": [0]}
    config = config_class(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"]},
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    getattr(transformers, model_class)(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    Qwen2VLImageProcessorPil().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory) -> Path:
    return _save_tiny_vlm(tmp_path_factory.mktemp("tiny_qwen2vl"))


def _sample(clip_id: str, seed: int, num_frames: int = 5, audio: np.ndarray | None = None, **metadata) -> ClipSample:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (num_frames, 16, 16, 3), dtype=np.uint8)
    return ClipSample(source=f"{clip_id}.mp4", clip_id=clip_id, start_frame=100, end_frame=100 + num_frames,
                      fps=8.0, frames=frames, audio=audio, sample_rate=None if audio is None else 16000,
                      metadata=dict(metadata))


def _config(path: Path, **overrides) -> CaptionerConfig:
    options = dict(model_path=str(path), num_frames=3, batch_size=2, max_new_tokens=6,
                   frame_min_pixels=28 * 28, frame_max_pixels=28 * 28)
    options.update(overrides)
    return CaptionerConfig(**options)


class _GenerateRecorder:
    """Wraps ``model.generate`` to record batch sizes, prompt texts and output lengths."""

    def __init__(self, captioner: VideoCaptioner) -> None:
        self.calls: list[dict] = []
        self._generate = captioner.model.generate
        self._tokenizer = captioner.tokenizer
        captioner.model.generate = self

    def __call__(self, **kwargs):
        output = self._generate(**kwargs)
        self.calls.append({
            "batch": kwargs["input_ids"].shape[0],
            "prompts": self._tokenizer.batch_decode(kwargs["input_ids"], skip_special_tokens=False),
            "new_tokens": output.shape[1] - kwargs["input_ids"].shape[1],
            "image_tokens": int((kwargs["mm_token_type_ids"] > 0).sum()),
            "grids": kwargs["image_grid_thw"].clone(),
        })
        return output


def test_batched_captions_one_per_clip_with_template_and_token_budget(tiny_vlm_dir):
    template = "Caption this {duration:.2f}s clip of {num_frames} frames."
    captioner = VideoCaptioner(_config(tiny_vlm_dir, prompt_template=template))
    recorder = _GenerateRecorder(captioner)
    samples = [_sample(f"clip{index}", seed=index) for index in range(3)]
    results = captioner.caption_batch(samples)

    assert len(results) == 3
    assert all(isinstance(result["caption"], str) and result["caption"] for result in results)
    assert [call["batch"] for call in recorder.calls] == [2, 1]
    assert all(0 < call["new_tokens"] <= 6 for call in recorder.calls)
    # Every prompt carries the user's template, filled in, and three timestamped frames.
    prompts = [prompt for call in recorder.calls for prompt in call["prompts"]]
    assert all("Caption this 0.62s clip of 3 frames." in prompt for prompt in prompts)
    assert all(prompt.count("<|vision_start|>") == 3 and "Frame 3 at 0.5s" in prompt for prompt in prompts)
    # One placeholder per merged visual token: 28x28 frames are 2x2 patches of 14, merged 2x2 -> 1 token each.
    assert all((call["grids"] == torch.tensor([1, 2, 2])).all() for call in recorder.calls)
    assert [call["image_tokens"] for call in recorder.calls] == [6, 3]
    # Captions land in the samples too, and without audio there is no audio caption.
    assert samples[1].captions["caption"] == results[1]["caption"]
    assert results[0]["shot_captions"] == [] and results[0]["audio_caption"] is None


def test_greedy_captions_are_deterministic_and_max_new_tokens_is_respected(tiny_vlm_dir):
    samples = [_sample("a", seed=0), _sample("b", seed=1)]
    first = VideoCaptioner(_config(tiny_vlm_dir)).caption_batch(samples)
    second = VideoCaptioner(_config(tiny_vlm_dir)).caption_batch([_sample("a", seed=0), _sample("b", seed=1)])
    assert [result["caption"] for result in first] == [result["caption"] for result in second]

    short = VideoCaptioner(_config(tiny_vlm_dir, max_new_tokens=2))
    recorder = _GenerateRecorder(short)
    results = short.caption_batch(samples)
    assert recorder.calls[0]["new_tokens"] <= 2
    # Character-level vocabulary: two tokens decode to at most two characters.
    assert all(len(result["caption"]) <= 2 for result in results)


def test_multi_shot_clip_gets_shot_captions_and_audio_summary(tiny_vlm_dir):
    rate = 16000
    time = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * time)).astype(np.float32)[None]
    # Source frames 100..108, cut 4 frames in (relative to start_frame, as in ClipRecord): two shots of four.
    sample = _sample("multishot", seed=3, num_frames=8, audio=tone, shot_boundaries=[4])
    captioner = VideoCaptioner(_config(tiny_vlm_dir, shot_prompt_template="Shot {shot_number} of {num_shots}."))
    recorder = _GenerateRecorder(captioner)
    [result] = captioner.caption_batch([sample])
    assert len(result["shot_captions"]) == 2 and result["caption"]
    prompts = [prompt for call in recorder.calls for prompt in call["prompts"]]
    assert sum("Shot 1 of 2." in prompt for prompt in prompts) == 1
    assert sum("Shot 2 of 2." in prompt for prompt in prompts) == 1
    assert result["audio_caption"].startswith("[acoustic summary]")
    frequency = float(re.search(r"dominant frequency (\d+) Hz \(A4\)", result["audio_caption"]).group(1))
    assert frequency == pytest.approx(440.0, abs=3.0)
    assert "1 onset (" in result["audio_caption"]  # a steady tone starts once

    silent = VideoCaptioner(_config(tiny_vlm_dir, audio="none")).caption_batch([_sample("s", 1, audio=tone)])
    assert silent[0]["audio_caption"] is None


def test_qwen2_5_vl_class_captions_too(tmp_path):
    directory = _save_tiny_vlm(tmp_path / "qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration")
    captioner = VideoCaptioner(_config(directory, model_class="Qwen2_5_VLForConditionalGeneration"))
    assert type(captioner.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    results = captioner.caption_batch([_sample("a", 0), _sample("b", 1)])
    assert len(results) == 2 and all(result["caption"] for result in results)


@pytest.fixture(scope="module")
def tiny_audio_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2-Audio (1 encoder layer, 2 decoder layers) and its processor, saved to disk."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]
    vocabulary = {token: index for index, token in enumerate(special + [chr(code) for code in range(32, 127)]
                                                              + ["\n", "?"])}
    backend = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="?"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(special)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        unk_token="?")
    config = Qwen2AudioConfig(
        audio_config={"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
                      "num_mel_bins": 128},
        text_config={"model_type": "qwen2", "vocab_size": len(vocabulary), "hidden_size": 32,
                     "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "bos_token_id": 0, "eos_token_id": vocabulary["<|im_end|>"],
                     "pad_token_id": 0},
        audio_token_index=vocabulary["<|AUDIO|>"],
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny_qwen2audio")
    Qwen2AudioForConditionalGeneration(config).save_pretrained(directory)
    Qwen2AudioProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer
    ).save_pretrained(directory)
    return directory


def test_audio_model_captions_clips_with_sound(tiny_vlm_dir, tiny_audio_dir):
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.1, (2, 22050)).astype(np.float32)
    samples = [_sample("loud", 0, audio=noise), _sample("mute", 1), _sample("loud2", 2, audio=noise[:, ::-1].copy())]
    samples[0].sample_rate = samples[2].sample_rate = 22050  # resampled to the feature extractor's 16 kHz
    captioner = VideoCaptioner(_config(tiny_vlm_dir, audio="model", audio_model_path=str(tiny_audio_dir),
                                       audio_max_new_tokens=4))
    results = captioner.caption_batch(samples)
    assert results[1]["audio_caption"] is None
    for index in (0, 2):
        text = results[index]["audio_caption"]
        assert isinstance(text, str) and text and not text.startswith("[acoustic summary]")
        assert len(text) <= 4  # character-level vocabulary, 4 new tokens at most
    with pytest.raises(FileNotFoundError, match="audio_model_path"):
        VideoCaptioner(_config(tiny_vlm_dir, audio="model")).caption_batch([samples[0]])


def test_shot_ranges_map_source_boundaries_onto_strided_frames():
    from data_pipelines.captioning import _shot_ranges

    # 16 source frames held as 8 analysis frames (stride 2); cuts 6 and 11 frames in, one outside the clip.
    sample = _sample("strided", 0, num_frames=8, frame_stride=2, shot_boundaries=[6, 11, 40])
    sample.end_frame = sample.start_frame + 16
    assert _shot_ranges(sample) == [(0, 3), (3, 6), (6, 8)]
    assert _shot_ranges(_sample("single", 0)) == [(0, 5)]


def test_config_and_loading_errors_name_the_valid_choices(tmp_path):
    with pytest.raises(ValueError, match="Qwen2_5_VLForConditionalGeneration"):
        CaptionerConfig(model_class="LlamaForCausalLM")
    with pytest.raises(ValueError, match=r"\{duration\}"):
        check_template("Describe {subject}.")
    with pytest.raises(ValueError, match="acoustic_summary, model, none"):
        CaptionerConfig(audio="whisper")
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        VideoCaptioner(CaptionerConfig(model_path=str(tmp_path / "missing")))


def test_acoustic_summary_measures_onsets_pitch_and_silence():
    rate = 16000
    signal = np.zeros(2 * rate, dtype=np.float32)
    burst = np.arange(int(0.1 * rate)) / rate
    for start in (0.2, 0.7, 1.2, 1.6):  # four 100 ms bursts of 660 Hz
        begin = int(start * rate)
        signal[begin : begin + len(burst)] = 0.3 * np.sin(2 * np.pi * 660.0 * burst)
    summary = acoustic_summary(np.stack([signal, signal]), rate)
    assert summary["onsets"] == 4
    assert summary["dominant_frequency"] == pytest.approx(660.0, rel=0.02)
    assert summary["silence_fraction"] == pytest.approx(0.8, abs=0.05)
    assert summary["peak_dbfs"] == pytest.approx(20 * np.log10(0.3), abs=0.2)
    assert describe_audio(np.zeros((1, rate), np.float32), rate) == "[acoustic summary] silent."


def test_real_clip_audio_summary_and_caption(tiny_vlm_dir, shared_videos):
    videos = shared_videos
    from seedkit.data.video_io import read_video

    decoded = read_video(videos / "sintel_example3.mp4", with_audio=True, max_frames=24)
    assert decoded.audio is not None
    seconds = len(decoded.frames) / decoded.fps
    audio = decoded.audio[:, : int(seconds * decoded.sample_rate)]
    sample = ClipSample(source="sintel_example3.mp4", clip_id="sintel-0-24", start_frame=0, end_frame=24,
                        fps=decoded.fps, frames=decoded.frames[:, ::16, ::16], audio=audio,
                        sample_rate=decoded.sample_rate)
    summary = acoustic_summary(audio, decoded.sample_rate)
    assert -60 < summary["loudness_dbfs"] < 0 and summary["duration"] == pytest.approx(1.0, abs=0.05)
    [result] = VideoCaptioner(_config(tiny_vlm_dir)).caption_batch([sample])
    assert result["caption"] and result["audio_caption"].startswith("[acoustic summary]")
