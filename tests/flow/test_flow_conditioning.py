"""The frame-conditioning tensor shared by I2V training and sampling."""

import pytest
import torch

from seedkit.flow import first_frame_condition, frame_condition


def test_first_frame_condition_layout():
    first = torch.randn(2, 4, 1, 3, 5)
    condition = first_frame_condition(first, num_latent_frames=3)
    assert condition.shape == (2, 5, 3, 3, 5)
    torch.testing.assert_close(condition[:, :4, :1], first)
    assert torch.count_nonzero(condition[:, :4, 1:]) == 0
    assert condition[:, 4, 0].eq(1).all() and condition[:, 4, 1:].eq(0).all()
    with pytest.raises(ValueError, match=r"\[B, C, 1, H, W\]"):
        first_frame_condition(torch.randn(2, 4, 2, 3, 5), 3)


def test_frame_condition_masks_arbitrary_frames():
    latents = torch.randn(1, 2, 4, 2, 2)
    mask = torch.tensor([[False, True, False, True]])
    condition = frame_condition(latents, mask)
    torch.testing.assert_close(condition[:, :2, 1], latents[:, :, 1])
    assert torch.count_nonzero(condition[:, :2, 0]) == 0 and condition[0, 2, 3].eq(1).all()
    with pytest.raises(ValueError, match=r"\[B, F\] = \[1, 4\]"):
        frame_condition(latents, torch.ones(1, 3))
