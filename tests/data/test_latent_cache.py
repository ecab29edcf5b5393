"""The latent cache: encode once with the debug VAE and tiny T5, read back, resume an interrupted build."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from seedkit.data.latent_cache import LatentCache, build_latent_cache, latent_statistics, valid_frame_count
from seedkit.data.manifest import Manifest
from seedkit.data.shapes_writers import write_shapes_dataset
from seedkit.models import flavors
from seedkit.models.autoencoder_causal import CausalVideoAutoencoder
from seedkit.models.text_encoders import load_text_encoder


@pytest.fixture(scope="module")
def shapes_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    summary = write_shapes_dataset(
        root, num_clips=6, seed=0, frames=[5], sizes=[(16, 16), (16, 32)], image_fraction=0.34, progress=False
    )
    return Manifest.read(summary.manifest_path)


@pytest.fixture(scope="module")
def components():
    torch.manual_seed(0)
    vae = CausalVideoAutoencoder(**{**flavors.get("debug").vae, "scaling_factor": 2.0, "shift_factor": 0.1})
    return vae.eval(), load_text_encoder("t5-tiny")


def test_cache_round_trip(tmp_path, shapes_manifest, components):
    vae, text_encoder = components
    manifest_path = build_latent_cache(shapes_manifest, vae, text_encoder, tmp_path, batch_size=2, progress=False)
    cache = LatentCache(tmp_path)
    assert len(cache) == len(shapes_manifest)
    assert all(record.media == "latent" for record in cache.manifest)
    by_id = {record.id: record for record in shapes_manifest}
    for index, record in enumerate(cache.manifest):
        source = by_id[record.id]
        frames = 1 if source.media == "image" else 5
        expected_shape = [8, 1 + (frames - 1) // 4, source.height // 8, source.width // 8]
        assert record.metadata["latent_shape"] == expected_shape
        item = cache.load(index)
        # stored un-normalised, read back as (z - shift) * scale, equal to a fresh encode of the clip
        from seedkit.data.latent_cache import load_clip

        pixels = load_clip(shapes_manifest, source).unsqueeze(0)
        with torch.no_grad():
            mean = vae.encode(pixels).latent_dist.mean[0]
        torch.testing.assert_close(item["latents"], (mean - 0.1) * 2.0, atol=1e-5, rtol=1e-5)
        tokens = text_encoder.encode([source.caption]).attention_mask.sum().item()
        assert item["text"].shape == (tokens, 32)
    info = json.loads((tmp_path / "cache_info.json").read_text())
    assert info["scaling_factor"] == 2.0 and info["pooled_dim"] is None
    assert load_file(tmp_path / "empty_prompt.safetensors")["text"].shape[0] == 1  # just </s>
    assert manifest_path.name == "manifest.jsonl"
    mean, std = latent_statistics(cache)
    assert std > 0 and abs(mean) < 10


def test_interrupted_build_resumes_without_re_encoding(tmp_path, shapes_manifest, components):
    vae, text_encoder = components
    first_half = Manifest(shapes_manifest.records[:3], root=shapes_manifest.root)
    build_latent_cache(first_half, vae, text_encoder, tmp_path, batch_size=2, shard_size=2, progress=False)
    shards_before = sorted(p.name for p in tmp_path.glob("shard-*.safetensors"))
    (tmp_path / "shard-00099.safetensors.tmp").write_bytes(b"partial")  # a crash mid-write leaves only a .tmp
    calls = []
    original = vae.encode

    def counting_encode(x, *args, **kwargs):
        calls.append(x.shape[0])
        return original(x, *args, **kwargs)

    vae.encode = counting_encode
    try:
        build_latent_cache(shapes_manifest, vae, text_encoder, tmp_path, batch_size=2, shard_size=2, progress=False)
    finally:
        del vae.encode
    assert sum(calls) == len(shapes_manifest) - 3  # only the missing samples were encoded
    cache = LatentCache(tmp_path)
    assert sorted(record.id for record in cache.manifest) == sorted(record.id for record in shapes_manifest)
    assert set(shards_before) <= {p.name for p in tmp_path.glob("shard-*.safetensors")}
    for index in range(len(cache)):
        assert torch.isfinite(cache.load(index)["latents"]).all()


def test_mismatched_cache_is_refused(tmp_path, shapes_manifest, components):
    vae, text_encoder = components
    subset = Manifest(shapes_manifest.records[:1], root=shapes_manifest.root)
    build_latent_cache(subset, vae, text_encoder, tmp_path, progress=False)
    other = CausalVideoAutoencoder(**{**flavors.get("debug").vae, "scaling_factor": 3.0})
    with pytest.raises(ValueError, match="holds a cache made with"):
        build_latent_cache(subset, other, text_encoder, tmp_path, progress=False)


def test_valid_frame_count():
    assert [valid_frame_count(n) for n in (1, 4, 5, 8, 9, 12)] == [1, 1, 5, 5, 9, 9]
    with pytest.raises(ValueError):
        valid_frame_count(0)


def test_fit_to_bucket_and_bucketed_cache(tmp_path, shapes_manifest, components):
    from seedkit.data.buckets import BucketSet
    from seedkit.data.latent_cache import fit_to_bucket

    video = torch.linspace(-1, 1, 3 * 9 * 30 * 50).reshape(3, 9, 30, 50)
    fitted = fit_to_bucket(video, (5, 16, 32))
    assert fitted.shape == (3, 5, 16, 32) and fitted.min() >= -1 and fitted.max() <= 1
    with pytest.raises(ValueError, match="cannot fill"):
        fit_to_bucket(video, (13, 16, 16))
    vae, text_encoder = components
    buckets = BucketSet([(1, 16, 16), (5, 16, 16)])  # the 16x32 clips are resized + cropped to 16x16
    build_latent_cache(shapes_manifest, vae, text_encoder, tmp_path, buckets=buckets, progress=False)
    shapes = {tuple(record.metadata["latent_shape"]) for record in LatentCache(tmp_path).manifest}
    assert shapes == {(8, 1, 2, 2), (8, 2, 2, 2)}


def test_extra_captions_are_cached_and_drawn_per_epoch(tmp_path, components):
    from seedkit.data.datasets import LatentDataset

    vae, text_encoder = components
    root = tmp_path / "shapes"
    summary = write_shapes_dataset(root, num_clips=4, seed=0, frames=[5], sizes=[(16, 16)], captions_per_clip=3,
                                   progress=False)
    manifest = Manifest.read(summary.manifest_path)
    # Extra captions leave the clips and their own captions as a dataset written without them.
    plain = Manifest.read(write_shapes_dataset(tmp_path / "plain", num_clips=4, seed=0, frames=[5], sizes=[(16, 16)],
                                               progress=False).manifest_path)
    assert [r.caption for r in manifest] == [r.caption for r in plain]
    assert all(len(record.metadata["extra_captions"]) == 2 for record in manifest)
    build_latent_cache(manifest, vae, text_encoder, tmp_path / "cache", batch_size=2, progress=False)
    cache = LatentCache(tmp_path / "cache")
    by_id = {record.id: record for record in manifest}
    for index, record in enumerate(cache.manifest):
        captions = [by_id[record.id].caption] + by_id[record.id].metadata["extra_captions"]
        assert cache.num_captions(index) == 3
        for number, caption in enumerate(captions):
            expected = text_encoder.encode([caption])
            tokens = int(expected.attention_mask.sum())
            torch.testing.assert_close(cache.load(index, number)["text"], expected.hidden_states[0, :tokens],
                                       atol=1e-5, rtol=1e-5)
        with pytest.raises(IndexError, match="3 cached captions"):
            cache.load(index, 3)
    dataset = LatentDataset(tmp_path / "cache", seed=5)
    torch.testing.assert_close(dataset[0]["text"], cache.load(0, 0)["text"])
    drawn = [dataset[(0, epoch)]["text"] for epoch in range(12)]
    assert len({tuple(text.shape) + (float(text.sum()),) for text in drawn}) > 1  # wording changes across epochs
    torch.testing.assert_close(dataset[(0, 7)]["text"], drawn[7])  # and is the same when asked again (resume)
    torch.testing.assert_close(dataset[(0, 7)]["latents"], dataset[0]["latents"])
    # Narrowing to some record ids keeps exactly those items, in cache order, without re-reading the manifest.
    ids = dataset.record_ids()
    narrowed = dataset.keeping({ids[2], ids[0], "not-in-the-cache"})
    assert narrowed.record_ids() == [ids[0], ids[2]] and len(dataset) == 4
    torch.testing.assert_close(narrowed[1]["latents"], dataset[2]["latents"])
    with pytest.raises(ValueError, match="none of the 1 asked-for"):
        dataset.keeping({"not-in-the-cache"})
