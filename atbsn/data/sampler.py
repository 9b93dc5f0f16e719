"""A deterministic, resumable, rank-aware training sampler.

It yields ``(index, sample_seed)`` keys. All per-sample randomness (crop, augmentation, noise)
comes from ``sample_seed``, so a sample is a pure function of (run seed, epoch, position):
independent of the number of data-loader workers and of ranks, and exactly reproducible after
resuming mid-epoch. ``batch_size`` is the global batch; each rank takes its contiguous share of
every global batch, so the union over ranks equals the single-process batch.
"""
from __future__ import annotations

from typing import Iterator, Tuple

import torch
from torch.utils.data import Sampler

from ..errors import OptionsError


class TrainSampler(Sampler):
    def __init__(self, num_samples: int, batch_size: int, seed: int, shuffle: bool = True, repeat: int = 1,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise OptionsError(f"datasets.train.batch_size ({batch_size}) is the global batch and must be "
                               f"divisible by the number of processes ({world_size})")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.shuffle, self.repeat, self.rank, self.world_size = shuffle, repeat, rank, world_size
        self.batches_per_epoch = num_samples * repeat // batch_size
        if self.batches_per_epoch == 0:
            raise OptionsError(
                f"the training set has {num_samples} image(s) x repeat {repeat}, fewer than one batch of "
                f"{batch_size}: lower datasets.train.batch_size or raise datasets.train.repeat"
            )
        self.epoch, self.start_batch = 0, 0

    @property
    def per_rank(self) -> int:
        return self.batch_size // self.world_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def epoch_order(self, epoch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        total = self.num_samples * self.repeat
        order = torch.randperm(total, generator=g) if self.shuffle else torch.arange(total)
        seeds = torch.randint(0, 2**62, (total,), generator=g)
        return order % self.num_samples, seeds

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.per_rank

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        order, seeds = self.epoch_order(self.epoch)
        lo = self.rank * self.per_rank
        for b in range(self.start_batch, self.batches_per_epoch):
            for j in range(b * self.batch_size + lo, b * self.batch_size + lo + self.per_rank):
                yield int(order[j]), int(seeds[j])
