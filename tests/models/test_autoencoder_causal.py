
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from seedkit.models import flavors
from seedkit.models.autoencoder_causal import CausalConvCache, CausalVideoAutoencoder, FrameGroupNorm


def _debug_vae(**overrides) -> CausalVideoAutoencoder:
    torch.manual_seed(0)
    config = {**flavors.get("debug").vae, **overrides}
    return CausalVideoAutoencoder(**config).eval()


def _video(batch=1, frames=5, height=16, width=16, seed=1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, height, width, generator=generator) * 2 - 1


@pytest.fixture(scope="module")
def vae():
    return _debug_vae()


@torch.no_grad()
@pytest.mark.parametrize("frames, latent_frames", [(1, 1), (5, 2), (9, 3)])
def test_video_and_image_shapes(vae, frames, latent_frames):
    sample = _video(batch=2, frames=frames, height=16, width=8)
    posterior = vae.encode(sample).latent_dist
    assert isinstance(posterior, DiagonalGaussianDistribution)
    assert posterior.mean.shape == (2, 8, latent_frames, 2, 1)
    decoded = vae.decode(posterior.mode()).sample
    assert decoded.shape == sample.shape
    assert torch.isfinite(decoded).all()


@torch.no_grad()
@pytest.mark.parametrize("frames", [2, 4, 6, 8])
def test_invalid_frame_counts_name_the_valid_ones(vae, frames):
    with pytest.raises(ValueError, match=r"1, 5, 9, 13"):
        vae.encode(_video(frames=frames))


def test_invalid_spatial_size_raises(vae):
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.encode(_video(height=12))


@torch.no_grad()
def test_causality_later_frames_do_not_change_earlier_latents(vae):
    vae.disable_temporal_chunking()
    sample = _video(frames=9)
    changed = sample.clone()
    changed[:, :, 5:] = -changed[:, :, 5:]  # frames 5..8 only feed latent frame 2
    moments = vae.encode_chunk(sample)
    moments_changed = vae.encode_chunk(changed)
    assert torch.equal(moments[:, :, :2], moments_changed[:, :, :2])
    assert not torch.allclose(moments[:, :, 2:], moments_changed[:, :, 2:])

    latents = torch.randn(1, 8, 3, 2, 2)
    latents_changed = latents.clone()
    latents_changed[:, :, 2] += 1.0  # latent frame 2 only feeds pixel frames 5..8
    decoded = vae.decode_chunk(latents)
    decoded_changed = vae.decode_chunk(latents_changed)
    assert torch.equal(decoded[:, :, :5], decoded_changed[:, :, :5])
    assert not torch.allclose(decoded[:, :, 5:], decoded_changed[:, :, 5:])


@torch.no_grad()
@pytest.mark.parametrize(
    "padding_mode, first_chunk_frames, output_norm",
    [("replicate", 1, True), ("zeros", 5, True), ("replicate", 1, False)],
)
def test_chunked_encode_and_decode_equal_whole_clip(padding_mode, first_chunk_frames, output_norm):
    vae = _debug_vae(temporal_padding_mode=padding_mode, output_norm=output_norm)
    sample = _video(frames=13, height=8, width=8)
    whole_moments = vae.encode_chunk(sample)
    cache = CausalConvCache()
    chunks = [vae.encode_chunk(sample[:, :, :first_chunk_frames], cache)]
    for start in range(first_chunk_frames, 13, 4):
        chunks.append(vae.encode_chunk(sample[:, :, start : start + 4], cache))
    assert (torch.cat(chunks, dim=2) - whole_moments).abs().max() <= 1e-5
    assert not cache.is_empty

    latents = torch.randn(1, 8, 4, 1, 1, generator=torch.Generator().manual_seed(3))
    whole_decoded = vae.decode_chunk(latents)
    first_latent_frames = 1 + (first_chunk_frames - 1) // 4
    cache = CausalConvCache()
    chunks = [vae.decode_chunk(latents[:, :, :first_latent_frames], cache)]
    for start in range(first_latent_frames, 4):
        chunks.append(vae.decode_chunk(latents[:, :, start : start + 1], cache))
    assert [chunk.shape[2] for chunk in chunks] == [first_chunk_frames] + [4] * (len(chunks) - 1)
    assert (torch.cat(chunks, dim=2) - whole_decoded).abs().max() <= 1e-5


@torch.no_grad()
def test_temporal_chunking_switch_gives_the_same_result():
    vae = _debug_vae()
    sample = _video(frames=13, height=8, width=8)
    vae.disable_temporal_chunking()
    whole_latents = vae.encode(sample).latent_dist.mean
    whole_decoded = vae.decode(whole_latents).sample
    vae.enable_temporal_chunking(4)  # 1 + 4, then 4-frame chunks: five chunks
    chunked_latents = vae.encode(sample).latent_dist.mean
    chunked_decoded = vae.decode(whole_latents).sample
    assert (chunked_latents - whole_latents).abs().max() <= 1e-5
    assert (chunked_decoded - whole_decoded).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="multiple of 4"):
        vae.enable_temporal_chunking(6)


def test_chunk_api_rejects_bad_chunk_lengths(vae):
    with pytest.raises(ValueError, match="1, 5, 9"):
        vae.encode_chunk(_video(frames=4), CausalConvCache())
    cache = CausalConvCache()
    with torch.no_grad():
        vae.encode_chunk(_video(frames=1), cache)
    with pytest.raises(ValueError, match="multiple of 4"):
        vae.encode_chunk(_video(frames=3), cache)


def test_tile_blending_is_a_partition_of_unity():
    """With a spatially local stand-in decoder, blended tiles reproduce the untiled output exactly."""
    vae = _debug_vae()
    vae.enable_tiling(tile_sample_min_height=16, tile_sample_min_width=16, tile_sample_stride_height=8,
                      tile_sample_stride_width=8)
    latents = torch.randn(1, 8, 2, 5, 7)

    def local_decoder(latent_tile):
        repeated = latent_tile[:, :3].repeat_interleave(4, dim=2)[:, :, 3:]
        return F.interpolate(repeated, scale_factor=(1, 8, 8), mode="nearest")

    vae._decode_frames = local_decoder
    tiled = vae.decode(latents).sample
    vae.disable_tiling()
    untiled = vae.decode(latents).sample
    assert tiled.shape == untiled.shape == (1, 3, 5, 40, 56)
    assert (tiled - untiled).abs().max() <= 1e-6


def _relative_error(approximation: torch.Tensor, reference: torch.Tensor) -> float:
    return ((approximation - reference).abs().mean() / reference.abs().mean()).item()


@torch.no_grad()
def test_tiling_is_close_to_untiled_and_closer_with_larger_tiles():
    # Without mid attention every output depends on a bounded neighbourhood and on per-frame norm statistics.
    vae = _debug_vae(mid_attention=False)
    sample = _video(frames=1, height=48, width=48)
    latents = vae.encode(sample).latent_dist.mean
    decoded = vae.decode(latents).sample
    errors = {}
    for tile, stride in [(32, 16), (40, 8)]:
        vae.enable_tiling(tile, tile, stride, stride)
        tiled_latents = vae.encode(sample).latent_dist.mean
        tiled_decoded = vae.decode(latents).sample
        assert tiled_latents.shape == latents.shape and tiled_decoded.shape == decoded.shape
        assert not torch.equal(tiled_decoded, decoded)  # the tiled path really ran
        errors[tile] = (_relative_error(tiled_latents, latents), _relative_error(tiled_decoded, decoded))
    # An untrained model on 4-latent-pixel tiles, whose per-frame norm statistics come from the tile alone: the error
    # is bounded, and shrinks as tiles get more context.
    assert all(encode_error < 1.0 and decode_error < 1.0 for encode_error, decode_error in errors.values())
    assert errors[40][0] < errors[32][0] and errors[40][1] < errors[32][1]
    with pytest.raises(ValueError, match="multiple of 8"):
        vae.enable_tiling(tile_sample_min_height=20)


@torch.no_grad()
def test_slicing_equals_batched(vae):
    sample = _video(batch=2, frames=5, height=8, width=8)
    latents = vae.encode(sample).latent_dist.mean
    decoded = vae.decode(latents).sample
    vae.enable_slicing()
    try:
        assert (vae.encode(sample).latent_dist.mean - latents).abs().max() <= 1e-5
        assert (vae.decode(latents).sample - decoded).abs().max() <= 1e-5
    finally:
        vae.disable_slicing()


@torch.no_grad()
def test_sixteen_x_spatial_variant():
    vae = _debug_vae(spatial_compression_ratio=16)
    sample = _video(frames=5, height=32, width=16)
    latents = vae.encode(sample).latent_dist.mean
    assert latents.shape == (1, 8, 2, 2, 1)
    assert vae.decode(latents).sample.shape == sample.shape
    with pytest.raises(ValueError, match=r"\[8, 16, 32\]"):
        _debug_vae(spatial_compression_ratio=12)


def test_save_load_round_trip_and_latent_factors(tmp_path):
    vae = _debug_vae(scaling_factor=0.5, shift_factor=0.1)
    vae.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = CausalVideoAutoencoder.from_pretrained(tmp_path).eval()
    assert loaded.config.scaling_factor == 0.5 and loaded.config.shift_factor == 0.1
    assert tuple(loaded.config.block_out_channels) == (8, 16, 16, 16)
    sample = _video(frames=5)
    with torch.no_grad():
        assert torch.equal(vae.encode(sample).latent_dist.mean, loaded.encode(sample).latent_dist.mean)


def test_gradient_checkpointing_matches_gradients():
    sample = _video(frames=1, height=8, width=8)
    grads = []
    for checkpointing in (False, True):
        vae = _debug_vae()
        if checkpointing:
            vae.enable_gradient_checkpointing()
        vae(sample).sample.square().mean().backward()
        grads.append(vae.encoder.conv_in.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@torch.no_grad()
def test_real_clip_round_trip_on_a_crop(shared_videos):
    videos = shared_videos
    from seedkit.data.video_io import frames_to_tensor, read_video

    clip = read_video(videos / "chaplin.mp4", with_audio=False, max_frames=9)
    assert clip.frames.shape[0] == 9 and clip.frames.dtype == np.uint8
    height, width = clip.frames.shape[1:3]
    top, left = (height - 32) // 2, (width - 32) // 2
    sample = frames_to_tensor(clip.frames[:, top : top + 32, left : left + 32])[None]
    assert sample.shape == (1, 3, 9, 32, 32) and -1.0 <= sample.min() and sample.max() <= 1.0
    vae = _debug_vae()
    latents = vae.encode(sample).latent_dist.sample(generator=torch.Generator().manual_seed(0))
    assert latents.shape == (1, 8, 3, 4, 4)
    decoded = vae.decode(latents).sample
    assert decoded.shape == sample.shape
    assert torch.isfinite(latents).all() and torch.isfinite(decoded).all()


def test_norm_ignores_an_offset_shared_by_all_pixels_of_a_frame():
    # Regression: with a per-pixel RMSNorm over channels, an offset common to every pixel (which AdamW grows within a
    # few steps on flat backgrounds) made every pixel normalise to the same vector, and the decoder output collapsed
    # to a flat frame. A per-frame GroupNorm subtracts the offset (the part shared by the channels of a group).
    torch.manual_seed(0)
    norm = FrameGroupNorm(16)
    hidden_states = torch.randn(2, 16, 3, 4, 4)
    group_offset = 100.0 * torch.randn(2, norm.num_groups, 3, 1, 1)  # per clip, group and frame
    offset = group_offset.repeat_interleave(16 // norm.num_groups, dim=1)
    torch.testing.assert_close(norm(hidden_states + offset), norm(hidden_states), atol=1e-3, rtol=1e-3)
    assert norm(hidden_states + offset).std(dim=(3, 4)).min() > 0.3  # the pixels stay distinct


def test_norm_is_per_frame_and_keeps_one_pixel_frames_informative():
    norm = FrameGroupNorm(16)
    assert norm.num_groups == 4  # at least 4 channels per group
    hidden_states = torch.randn(1, 16, 5, 1, 1)
    changed = hidden_states.clone()
    changed[:, :, 3:] *= 5.0
    assert torch.equal(norm(hidden_states)[:, :, :3], norm(changed)[:, :, :3])  # later frames do not leak back
    assert norm(hidden_states).std() > 0.5  # a 1x1 latent frame is not normalised to the bias


def test_output_norm_switch_removes_only_the_two_output_norms():
    with_norm, without_norm = _debug_vae(), _debug_vae(output_norm=False)
    removed = set(with_norm.state_dict()) - set(without_norm.state_dict())
    assert removed == {f"{part}.norm_out.{kind}" for part in ("encoder", "decoder") for kind in ("weight", "bias")}
    assert set(without_norm.state_dict()) < set(with_norm.state_dict())


@pytest.mark.parametrize("padding_mode", ["replicate", "zeros"])
def test_single_frame_2d_path_equals_the_3d_convolution(padding_mode):
    from seedkit.models.autoencoder_causal import CausalConv3d

    torch.manual_seed(0)
    conv = CausalConv3d(4, 6, 3, spatial_stride=2, temporal_padding_mode=padding_mode)
    frame = torch.randn(2, 4, 1, 10, 10, requires_grad=True)
    fast = conv(frame)
    # The 3D convolution over the padded past the fast path stands for.
    past = frame.expand(-1, -1, 2, -1, -1) if padding_mode == "replicate" else torch.zeros(2, 4, 2, 10, 10)
    reference = torch.nn.Conv3d.forward(conv, torch.cat([past, frame], dim=2))
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)
    fast_grads = torch.autograd.grad(fast.square().sum(), [frame, conv.weight, conv.bias])
    reference_grads = torch.autograd.grad(reference.square().sum(), [frame, conv.weight, conv.bias])
    for fast_grad, reference_grad in zip(fast_grads, reference_grads):
        torch.testing.assert_close(fast_grad, reference_grad, atol=1e-4, rtol=1e-4)
    # A one-frame first chunk leaves the same cache for the next chunk as the 3D path.
    cache = CausalConvCache()
    conv.cache_key = "conv"
    conv(frame.detach(), cache)
    torch.testing.assert_close(cache.get("conv"), torch.cat([past, frame], dim=2)[:, :, -2:].detach())
