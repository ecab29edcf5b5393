"""Captioning wired into a curation run: every kept clip's record carries the captioner's output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipelines.config import CurateConfig
from data_pipelines.pipeline import CurationRun
from seedkit.data.manifest import Manifest
from seedkit.data.video_io import write_video

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]


def save_tiny_qwen2_vl(directory: Path) -> Path:
    """A randomly initialised 2-layer Qwen2-VL with a character tokenizer, saved offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    vocabulary = {
        token: index for index, token in enumerate(SPECIAL_TOKENS + [chr(c) for c in range(32, 127)] + ["\n", "?"])
    }
    backend = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="?"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        unk_token="?")
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"]},
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "patch_size": 14,
                       "spatial_merge_size": 2, "temporal_patch_size": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    Qwen2VLImageProcessorPil().save_pretrained(directory)
    return directory


def test_curation_run_captions_kept_clips(tmp_path):
    pytest.importorskip("transformers")
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(2):
        base = rng.integers(60, 195, 3)
        pattern = np.kron(base + rng.integers(-50, 50, (6, 8, 1)), np.ones((8, 8, 1))).clip(0, 255).astype(np.uint8)
        for step in range(24):
            frame = pattern.copy()
            frame[16:28, (2 * step) % 52 : (2 * step) % 52 + 12] = 255
            frames.append(frame)
    seconds = len(frames) / 12
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(16000 * seconds)) / 16000)).astype(np.float32)[None]
    write_video(tmp_path / "in" / "a.mp4", np.stack(frames), fps=12, audio=tone, sample_rate=16000)
    model_dir = save_tiny_qwen2_vl(tmp_path / "vlm")
    config = CurateConfig.from_dict({
        "decode": {"analysis_size": 64},
        "split": {"min_duration": 1.0, "max_duration": 4.0},
        "filters": {},
        "shard": {"mode": "ranges"},
        "captioning": {"model_path": str(model_dir), "num_frames": 1, "batch_size": 2, "max_new_tokens": 2,
                       "frame_min_pixels": 28 * 28, "frame_max_pixels": 28 * 28},
        "executor": {"workers": 1, "timeout": 120},
    })
    summary = CurationRun(tmp_path / "in", tmp_path / "out", config, progress=False).run()
    assert summary.failures == {} and summary.clips_kept == 2
    records = list(Manifest.read(tmp_path / "out" / "manifest.jsonl", root=tmp_path / "in"))
    for record in records:
        assert isinstance(record.caption, str) and record.caption  # random weights: any non-empty text
        assert record.has_audio and isinstance(record.metadata.get("audio_caption"), str)
