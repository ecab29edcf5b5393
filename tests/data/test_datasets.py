"""Training datasets: keyed determinism, collation, real-clip crops."""

from __future__ import annotations

import pytest
import torch

from seedkit.data.buckets import BucketBatchSampler
from seedkit.data.datasets import (
    EpochKeyedBatchSampler,
    MixedVideoDataset,
    RealClipCrops,
    ShapesVideoDataset,
    collate_latents,
    collate_packed,
    collate_videos,
    pad_text,
)


def test_shapes_dataset_is_a_pure_function_of_its_key():
    dataset = ShapesVideoDataset([(5, 16, 16), (1, 16, 24)], length=6, seed=3)
    first = dataset[(2, 0)]
    assert first["video"].shape == (3, 5, 16, 16) and dataset[(1, 0)]["video"].shape == (3, 1, 16, 24)
    assert torch.equal(first["video"], dataset[(2, 0)]["video"]) and first["caption"] == dataset[(2, 0)]["caption"]
    assert not torch.equal(first["video"], dataset[(2, 1)]["video"])  # a new epoch draws a new scene
    assert first["video"].min() >= -1 and first["video"].max() <= 1
    assert dataset.bucket_keys() == [(5, 16, 16), (1, 16, 24)] * 3


def test_epoch_keyed_sampler_feeds_a_dataloader():
    dataset = ShapesVideoDataset([(5, 16, 16), (1, 16, 16)], length=8, seed=0)
    sampler = EpochKeyedBatchSampler(BucketBatchSampler(dataset.bucket_keys(), batch_size=2, seed=0))
    sampler.set_epoch(3)
    batches = list(sampler)
    assert all(epoch == 3 for batch in batches for _, epoch in batch) and len(sampler) == 4
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_videos)
    batch = next(iter(loader))
    assert batch["video"].ndim == 5 and len(batch["caption"]) == 2


def test_collate_latents_pads_text_and_rejects_mixed_shapes():
    items = [
        {"latents": torch.randn(8, 2, 2, 2), "text": torch.randn(3, 4), "pooled": torch.randn(5)},
        {"latents": torch.randn(8, 2, 2, 2), "text": torch.randn(5, 4), "pooled": torch.randn(5)},
    ]
    batch = collate_latents(items)
    assert batch["latents"].shape == (2, 8, 2, 2, 2) and batch["text"].shape == (2, 5, 4)
    assert batch["text_mask"].tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    assert torch.equal(batch["text"][0, :3], items[0]["text"]) and batch["pooled"].shape == (2, 5)
    items[1]["latents"] = torch.randn(8, 1, 2, 2)
    with pytest.raises(ValueError, match="bucket sampler"):
        collate_latents(items)
    packed = collate_packed(items)
    assert [t.shape[1] for t in packed["latents"]] == [2, 1]
    padded, mask = pad_text([torch.zeros(0, 4)])
    assert padded.shape == (1, 1, 4) and mask.sum() == 0


def test_real_clip_crops_from_shared_videos(shared_videos):
    directory = shared_videos
    crops = RealClipCrops(directory, short_side=32, max_frames=9)
    assert len(crops) >= 3, crops.failed
    import numpy as np

    rng = np.random.default_rng(0)
    crop = crops.crop(rng, 5, 16, 24)
    assert crop.shape == (3, 5, 16, 24) and -1 <= crop.min() and crop.max() <= 1
    assert crop.std() > 0.01  # real footage, not a constant frame
    dataset = MixedVideoDataset([(5, 16, 16)], length=40, seed=0, real_clips=crops, real_fraction=0.5)
    captions = [dataset[(index, 0)]["caption"] for index in range(40)]
    assert 5 < captions.count("") < 35  # both sources are drawn
    assert torch.equal(dataset[(7, 0)]["video"], dataset[(7, 0)]["video"])
