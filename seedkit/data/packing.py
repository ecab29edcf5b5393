"""Native-resolution sequence packing: samples of any shape share one token budget.

Instead of resizing everything to a few buckets, each sample keeps its own ``(frames, height, width)`` and becomes
``tokens = latent_frames * (latent_height / p_h) * (latent_width / p_w)`` transformer tokens. A pack is a list of
samples whose tokens sum to at most the budget; the transformer's ``forward_packed`` runs them as one sequence
with per-sample (varlen) attention, so no sample attends to another and no compute is spent on padding beyond
the unused tail of the budget.

:func:`plan_packs` is first-fit-decreasing bin packing; :class:`PackedBatchSampler` shuffles, packs and splits
per epoch, deterministically in ``(seed, epoch)`` and resumable mid-epoch, like the bucket sampler.
:func:`padding_report` measures the padding waste of the three ways of batching a shape mix.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np
import torch


def num_tokens(shape: Sequence[int], patch_size: Sequence[int] = (1, 2, 2)) -> int:
    """Transformer tokens of a latent of ``shape = (frames, height, width)`` with ``patch_size``."""
    frames, height, width = shape
    if frames % patch_size[0] or height % patch_size[1] or width % patch_size[2]:
        raise ValueError(f"latent shape {tuple(shape)} is not divisible by the patch size {tuple(patch_size)}")
    return (frames // patch_size[0]) * (height // patch_size[1]) * (width // patch_size[2])


def plan_packs(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """First-fit-decreasing: indices of ``lengths`` grouped into packs of at most ``token_budget`` tokens.

    Packs are returned in creation order; indices inside a pack are in decreasing length.
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    too_long = [i for i, length in enumerate(lengths) if length > token_budget]
    if too_long:
        raise ValueError(
            f"{len(too_long)} samples are longer than the token budget {token_budget} (e.g. index {too_long[0]} "
            f"with {lengths[too_long[0]]} tokens); raise data.token_budget or drop those samples"
        )
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    packs: list[list[int]] = []
    free: list[int] = []
    for index in order:
        length = lengths[index]
        for pack_id, room in enumerate(free):
            if length <= room:
                packs[pack_id].append(index)
                free[pack_id] -= length
                break
        else:
            packs.append([index])
            free.append(token_budget - length)
    return packs


def cu_seqlens(lengths: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """Cumulative sequence starts ``[0, l0, l0 + l1, ...]`` as int32, the varlen-attention convention."""
    return torch.tensor([0, *np.cumsum(lengths).tolist()], dtype=torch.int32, device=device)


class PackedBatchSampler:
    """Yields packs (lists of dataset indices) that fit ``token_budget``; deterministic and resumable.

    Each epoch shuffles the indices, packs them with first-fit-decreasing inside windows of ``window`` samples
    (``None``: the whole epoch at once, the tightest packing) so packs still mix random samples, then shuffles
    the packs and splits them over ranks.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        token_budget: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        window: int | None = None,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.lengths = list(lengths)
        self.token_budget = token_budget
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.window = window
        self.epoch = 0
        self.start_batch = 0
        plan_packs(self.lengths, token_budget)  # validate lengths up front

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths)).tolist()
        window = self.window or len(order)
        packs: list[list[int]] = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            for pack in plan_packs([self.lengths[i] for i in chunk], self.token_budget):
                packs.append([chunk[i] for i in pack])
        packs = [packs[i] for i in rng.permutation(len(packs))]
        per_rank = len(packs) // self.num_replicas
        if per_rank == 0:
            raise ValueError(f"{len(packs)} packs cannot be split over {self.num_replicas} processes")
        return packs[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches(self.epoch)[self.start_batch :]

    def __len__(self) -> int:
        return len(self.epoch_batches(self.epoch)) - self.start_batch


def padding_report(
    shapes: Sequence[Sequence[int]],
    batch_size: int,
    token_budget: int,
    patch_size: Sequence[int] = (1, 2, 2),
    seed: int = 0,
) -> dict[str, float]:
    """Fraction of computed tokens that are padding, for three ways to batch the latent ``shapes``.

    * ``pad_to_max``: random batches of ``batch_size``, every sample zero-padded to the batch's largest sample.
    * ``buckets``: same-shape batches of ``batch_size`` (no padding inside a batch), but a step must be provisioned
      for the largest batch, so the waste is ``1 - mean(batch tokens) / max(batch tokens)``; for static-shape
      accelerators (compiled graphs, fixed memory) this is the real cost.
    * ``buckets_token_budget``: same-shape batches whose size is ``token_budget // tokens`` (Open-Sora style
      per-bucket batch sizes), each step provisioned for ``token_budget``; waste is the unused budget, mostly from
      budgets that are not a multiple of a bucket's tokens and from each bucket's last, partial batch.
    * ``packing``: first-fit-decreasing into ``token_budget``; waste is the unused tail of each pack.
    """
    lengths = [num_tokens(shape, patch_size) for shape in shapes]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths)).tolist()
    padded = used = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start : start + batch_size]]
        padded += max(batch) * len(batch)
        used += sum(batch)
    pad_to_max = 1.0 - used / padded

    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for shape, length in zip(shapes, lengths):
        groups[tuple(shape)].append(length)
    batch_tokens = []
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            batch_tokens.append(sum(group[start : start + batch_size]))
    buckets = 1.0 - float(np.mean(batch_tokens)) / max(batch_tokens)

    budget_batches = 0
    for group in groups.values():
        per_batch = max(1, token_budget // group[0])
        budget_batches += math.ceil(len(group) / per_batch)
    buckets_token_budget = 1.0 - sum(lengths) / (budget_batches * token_budget)

    packs = plan_packs(lengths, token_budget)
    packing = 1.0 - sum(lengths) / (len(packs) * token_budget)
    return {
        "pad_to_max": pad_to_max,
        "buckets": buckets,
        "buckets_token_budget": buckets_token_budget,
        "num_budget_bucket_batches": float(budget_batches),
        "packing": packing,
        "num_samples": float(len(lengths)),
        "num_packs": float(len(packs)),
        "num_bucket_batches": float(len(batch_tokens)),
        "mean_tokens_per_sample": float(np.mean(lengths)),
        "token_budget": float(token_budget),
        "pack_lower_bound": float(math.ceil(sum(lengths) / token_budget)),
    }
