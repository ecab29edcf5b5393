"""Shape buckets for mixed image + video training, and a resumable batch sampler over them.

A bucket is a sample shape ``(frames, height, width)``; an image is ``frames = 1``. Every batch the
:class:`BucketBatchSampler` yields holds samples of one bucket, so batches stack without padding while images,
short clips and long clips still share one run. The order is a pure function of ``(seed, epoch)`` and the sampler
can start mid-epoch (``set_epoch(epoch, start_batch)``), which is what exact resume needs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np

Bucket = tuple[int, int, int]  # (frames, height, width)


class BucketSet:
    """A fixed list of allowed shapes; :meth:`assign` maps any sample shape to the bucket it is cropped to.

    The chosen bucket has at most the sample's frame count, the closest aspect ratio, and (among those) the
    largest area that fits inside the sample after an aspect-preserving resize, so samples are only downscaled
    and centre-cropped, never padded.
    """

    def __init__(self, buckets: Sequence[Sequence[int]]) -> None:
        if not buckets:
            raise ValueError("a BucketSet needs at least one (frames, height, width) bucket")
        self.buckets: list[Bucket] = [tuple(int(v) for v in bucket) for bucket in buckets]  # type: ignore[misc]
        for bucket in self.buckets:
            if len(bucket) != 3 or min(bucket) < 1:
                raise ValueError(f"bucket {bucket} must be three positive ints (frames, height, width)")

    def assign(self, num_frames: int, height: int, width: int) -> Bucket | None:
        """The bucket for a sample of this shape, or ``None`` when no bucket has few enough frames."""
        candidates = [b for b in self.buckets if b[0] <= num_frames]
        if not candidates:
            return None
        aspect = math.log(width / height)

        def score(bucket: Bucket) -> tuple[float, float, int]:
            aspect_error = abs(math.log(bucket[2] / bucket[1]) - aspect)
            fits = bucket[1] <= height and bucket[2] <= width
            return (round(aspect_error, 6), 0.0 if fits else 1.0, -bucket[0] * bucket[1] * bucket[2])

        return min(candidates, key=score)


class BucketBatchSampler:
    """Batches of indices that share a bucket; deterministic in ``(seed, epoch)``; resumable mid-epoch.

    Args:
        buckets: the bucket of every dataset index (``None`` excludes the sample).
        batch_size: samples per batch; a bucket's last batch may be smaller unless ``drop_last``.
        seed: shuffling seed.
        num_replicas, rank: data-parallel split; every rank gets the same number of batches.
    """

    def __init__(
        self,
        buckets: Sequence[Bucket | None],
        batch_size: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.buckets = list(buckets)
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order and skip its first ``start_batch`` batches (of this rank)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All of this rank's batches for ``epoch``, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        groups: dict[Bucket, list[int]] = defaultdict(list)
        for index, bucket in enumerate(self.buckets):
            if bucket is not None:
                groups[bucket].append(index)
        batches: list[list[int]] = []
        for bucket in sorted(groups):
            indices = [groups[bucket][i] for i in rng.permutation(len(groups[bucket]))]
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        batches = [batches[i] for i in rng.permutation(len(batches))]
        per_rank = len(batches) // self.num_replicas
        if per_rank == 0:
            raise ValueError(
                f"{len(batches)} batches cannot be split over {self.num_replicas} processes; use more data or a "
                "smaller batch_size"
            )
        return batches[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches(self.epoch)[self.start_batch :]

    def __len__(self) -> int:
        return len(self.epoch_batches(self.epoch)) - self.start_batch
