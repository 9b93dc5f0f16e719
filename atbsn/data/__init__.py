"""Datasets, noise models and loaders. ``build_dataset(cfg)`` from a ``type:``-keyed section."""
from __future__ import annotations

import random
from typing import Any, Dict

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..registry import NonNegativeInt, PositiveInt, Registry
from .datasets import NoisyFolderDataset, PairedFolderDataset, SyntheticNoiseDataset
from .dnd import DNDDataset
from .sidd import SIDDBlocksDataset, SIDDMediumDataset
from .noise import NOISE_REGISTRY, build_noise
from .sampler import TrainSampler

# Settings a dataset section may carry besides its class's arguments: (type, default).
LOADER_KEYS = {
    "batch_size": (PositiveInt, 1),
    "num_workers": (NonNegativeInt, 0),
    "repeat": (PositiveInt, 1),
    "shuffle": (bool, True),
    "pin_memory": (bool, False),
}

DATASET_REGISTRY = Registry("dataset")
for _cls in (NoisyFolderDataset, PairedFolderDataset, SyntheticNoiseDataset, SIDDMediumDataset, SIDDBlocksDataset,
             DNDDataset):
    DATASET_REGISTRY.register(_cls)


def build_dataset(cfg: Dict[str, Any], where: str = "dataset"):
    kwargs = {k: v for k, v in cfg.items() if k not in LOADER_KEYS}
    return DATASET_REGISTRY.build(kwargs, where=where)


def _seed_worker_fn(base_seed: int):
    def init(worker_id: int) -> None:
        # Per-sample randomness comes from the sampler's keys; this seeds anything else a dataset
        # might draw from the global generators.
        s = (base_seed * 1009 + worker_id) % 2**32
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)

    return init


def build_train_loader(cfg: Dict[str, Any], seed: int, rank: int = 0, world_size: int = 1):
    dataset = build_dataset(cfg, where="datasets.train")
    sampler = TrainSampler(len(dataset), cfg["batch_size"], seed, cfg["shuffle"], cfg["repeat"], rank, world_size)
    loader = DataLoader(
        dataset, batch_size=sampler.per_rank, sampler=sampler, drop_last=True, num_workers=cfg["num_workers"],
        pin_memory=cfg["pin_memory"], worker_init_fn=_seed_worker_fn(seed * 131 + rank),
    )
    return loader, sampler


def build_eval_loader(cfg: Dict[str, Any], where: str, rank: int = 0, world_size: int = 1):
    """Deterministic loader over whole images (batch 1: images may differ in size). With several
    processes each rank takes every ``world_size``-th image, a disjoint shard."""
    dataset = build_dataset(cfg, where=where)
    if world_size > 1:
        dataset = torch.utils.data.Subset(dataset, list(range(rank, len(dataset), world_size)))
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=cfg.get("num_workers", 0))


__all__ = ["DATASET_REGISTRY", "NOISE_REGISTRY", "build_dataset", "build_noise", "build_train_loader",
           "build_eval_loader", "TrainSampler", "NoisyFolderDataset", "PairedFolderDataset", "SyntheticNoiseDataset",
           "SIDDMediumDataset", "SIDDBlocksDataset", "DNDDataset"]
