"""Shape buckets and the resumable bucket batch sampler."""

from __future__ import annotations

import pytest

from seedkit.data.buckets import BucketBatchSampler, BucketSet


def test_bucket_set_picks_aspect_and_frames():
    buckets = BucketSet([(1, 32, 32), (5, 32, 32), (5, 32, 48), (9, 32, 48)])
    assert buckets.assign(1, 64, 64) == (1, 32, 32)  # an image only fits the image bucket
    assert buckets.assign(7, 40, 60) == (5, 32, 48)  # 1.5 aspect, at most 7 frames
    assert buckets.assign(17, 320, 480) == (9, 32, 48)  # the longest bucket that fits
    assert buckets.assign(9, 30, 30) == (5, 32, 32)  # aspect first, then the most frames
    assert BucketSet([(5, 16, 16)]).assign(1, 16, 16) is None
    with pytest.raises(ValueError, match="three positive ints"):
        BucketSet([(0, 16, 16)])


def make_keys():
    return [(1, 4, 4)] * 7 + [(5, 4, 4)] * 5 + [(5, 4, 6)] * 4


def test_batches_are_single_bucket_and_cover_the_epoch():
    keys = make_keys()
    sampler = BucketBatchSampler(keys, batch_size=3, seed=0)
    batches = list(sampler)
    assert all(len({keys[i] for i in batch}) == 1 for batch in batches)
    assert sorted(i for batch in batches for i in batch) == list(range(len(keys)))
    assert len(sampler) == len(batches) == 3 + 2 + 2
    dropped = BucketBatchSampler(keys, batch_size=3, seed=0, drop_last=True)
    assert all(len(batch) == 3 for batch in dropped)


def test_order_is_deterministic_per_epoch_and_resumable():
    keys = make_keys()
    sampler = BucketBatchSampler(keys, batch_size=2, seed=5)
    epoch0 = list(sampler)
    assert list(BucketBatchSampler(keys, batch_size=2, seed=5)) == epoch0
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0
    sampler.set_epoch(1, start_batch=3)
    assert list(sampler) == epoch1[3:] and len(sampler) == len(epoch1) - 3


def test_ranks_get_disjoint_equal_shares():
    keys = make_keys()
    shares = [list(BucketBatchSampler(keys, batch_size=2, seed=1, num_replicas=2, rank=r)) for r in range(2)]
    assert len(shares[0]) == len(shares[1])
    flat = [set(i for batch in share for i in batch) for share in shares]
    assert not flat[0] & flat[1]
    with pytest.raises(ValueError, match="rank"):
        BucketBatchSampler(keys, batch_size=2, num_replicas=2, rank=2)
