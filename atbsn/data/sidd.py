"""SIDD (Abdelhamed et al., CVPR 2018), sRGB: SIDD-Medium training images and the 1,280 validation /
benchmark blocks (specs/formats.md sections 1-2)."""
from __future__ import annotations

import os
import re
from typing import List, Literal, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..utils.image import read_image, to_tensor
from .matfile import load_variable
from .transforms import Augment, augment, random_crop

NOISY_RE = re.compile(r"^(\d{4})_NOISY_SRGB_(010|011)\.png$", re.IGNORECASE)
BLOCK_SHAPE = (40, 32, 256, 256, 3)


def find_sidd_medium(root: str) -> List[Tuple[str, Optional[str]]]:
    """(noisy, gt-or-None) paths of every capture under ``root`` (``.../Data`` or its parent),
    sorted, file names matched case-insensitively."""
    data = os.path.join(root, "Data") if os.path.isdir(os.path.join(root, "Data")) else root
    if not os.path.isdir(data):
        raise DataError(f"SIDD-Medium folder not found: '{root}' (expected SIDD_Medium_Srgb/Data/<scene folders>)")
    pairs = []
    for scene in sorted(os.listdir(data)):
        folder = os.path.join(data, scene)
        if not os.path.isdir(folder):
            continue
        files = {f.lower(): f for f in os.listdir(folder)}
        for lower, name in sorted(files.items()):
            m = NOISY_RE.match(name)
            if m:
                gt = files.get(f"{m.group(1)}_gt_srgb_{m.group(2)}.png")
                pairs.append((os.path.join(folder, name), os.path.join(folder, gt) if gt else None))
    if not pairs:
        raise DataError(f"'{data}' holds no SIDD captures (*_NOISY_SRGB_010.PNG / *_011.PNG in scene folders)")
    return pairs


class SIDDMediumDataset(Dataset):
    """SIDD-Medium sRGB captures, noisy only (self-supervised) or noisy/GT pairs.

    Training takes a random crop of one full-resolution capture per sample: only that capture is
    decoded, never the whole set. With ``cache_dir`` each capture is decoded once into a ``.npy``
    file and later crops are read through a memory map.
    """

    def __init__(self, root: str, crop_size: Optional[PositiveInt] = None, augment: Augment = "dihedral",
                 pairs: bool = False, cache_dir: Optional[str] = None):
        self.captures = find_sidd_medium(root)
        if pairs:
            missing = [n for n, g in self.captures if g is None]
            if missing:
                raise DataError(f"'pairs: true' but {len(missing)} capture(s) have no GT file, e.g. '{missing[0]}'")
        self.crop_size, self.augment, self.pairs, self.cache_dir = crop_size, augment, pairs, cache_dir

    def __len__(self):
        return len(self.captures)

    def _cached(self, path: str) -> str:
        """Decode ``path`` once into ``cache_dir`` (uint8 HWC RGB .npy); returns the .npy path."""
        os.makedirs(self.cache_dir, exist_ok=True)
        scene = os.path.basename(os.path.dirname(path))
        cached = os.path.join(self.cache_dir, f"{scene}__{os.path.basename(path)}.npy")
        if not os.path.exists(cached):
            import cv2

            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                raise DataError(f"cannot read image '{path}'")
            tmp = f"{cached}.{os.getpid()}.tmp.npy"
            np.save(tmp, np.ascontiguousarray(img[:, :, ::-1]))
            os.replace(tmp, cached)
        return cached

    def _load(self, path: str) -> torch.Tensor:
        if not self.cache_dir:
            return to_tensor(read_image(path, 3)[0])
        arr = np.load(self._cached(path), mmap_mode="r")
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)  # uint8 CHW

    def __getitem__(self, key):
        idx, seed = (key if isinstance(key, (tuple, list)) else (key, None))
        noisy_path, gt_path = self.captures[int(idx)]
        paths = [noisy_path] + ([gt_path] if self.pairs else [])
        g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        if self.cache_dir and g is not None and self.crop_size:
            images = self._crop_cached(paths, g)
        else:
            images = [self._load(p) for p in paths]
            if g is not None and self.crop_size:
                images = random_crop(images, self.crop_size, g, noisy_path)
        images = [im.float() / 255 if im.dtype == torch.uint8 else im for im in images]
        if g is not None:
            images = augment(images, self.augment, g)
        item = {"noisy": images[0], "name": os.path.splitext(os.path.basename(noisy_path))[0]}
        if self.pairs:
            item["clean"] = images[1]
        if g is not None:
            item["seed"] = torch.randint(0, 2**62, (), generator=g)
        return item

    def _crop_cached(self, paths: List[str], g: torch.Generator) -> List[torch.Tensor]:
        """Read only the crop's rows from the memory-mapped captures."""
        arrays = [np.load(self._cached(p), mmap_mode="r") for p in paths]
        h, w = arrays[0].shape[:2]
        size = self.crop_size
        if h < size or w < size:
            raise DataError(f"image '{paths[0]}' is {w}x{h}, smaller than the crop size {size}")
        top = int(torch.randint(0, h - size + 1, (), generator=g))
        left = int(torch.randint(0, w - size + 1, (), generator=g))
        return [torch.from_numpy(np.ascontiguousarray(a[top: top + size, left: left + size])).permute(2, 0, 1)
                for a in arrays]


def load_blocks(path: str, variable: str) -> np.ndarray:
    """(1280, 256, 256, 3) uint8 blocks, image-major (n = 32 i + j)."""
    blocks = load_variable(path, variable)
    if blocks.dtype != np.uint8:
        raise DataError(f"'{path}' variable '{variable}' has dtype {blocks.dtype}, expected uint8")
    if blocks.ndim == 5 and blocks.shape[2:] == BLOCK_SHAPE[2:]:
        count = blocks.shape[0] * blocks.shape[1]
        if count != 1280:
            raise DataError(f"'{path}' variable '{variable}' holds {count} blocks ({blocks.shape[0]}x{blocks.shape[1]}), "
                            f"expected 1280 (40 images x 32 blocks)")
        return blocks.reshape(1280, 256, 256, 3)
    raise DataError(f"'{path}' variable '{variable}' has shape {tuple(blocks.shape)}, expected {BLOCK_SHAPE}")


class SIDDBlocksDataset(Dataset):
    """SIDD validation or benchmark blocks from the official ``.mat`` files.

    ``noisy``: ``ValidationNoisyBlocksSrgb.mat`` or ``BenchmarkNoisyBlocksSrgb.mat``; ``gt``:
    ``ValidationGtBlocksSrgb.mat`` (validation only). The variable name is the file's stem.
    ``indices`` restricts to a subset of 0..1279 (image-major).
    """

    def __init__(self, noisy: str, gt: Optional[str] = None, indices: Optional[List[int]] = None,
                 split: Literal["auto", "validation", "benchmark"] = "auto"):
        self.noisy_path, self.gt_path = noisy, gt
        self.noisy = load_blocks(noisy, os.path.splitext(os.path.basename(noisy))[0])
        self.gt = load_blocks(gt, os.path.splitext(os.path.basename(gt))[0]) if gt else None
        self.block_ids = list(range(1280)) if indices is None else [int(i) for i in indices]
        bad = [i for i in self.block_ids if not 0 <= i < 1280]
        if bad:
            raise DataError(f"SIDD block indices must be in 0..1279, got {bad[:5]}")
        self.split = split if split != "auto" else ("benchmark" if "benchmark" in noisy.lower() else "validation")

    def __len__(self):
        return len(self.block_ids)

    def __getitem__(self, key):
        n = self.block_ids[int(key[0] if isinstance(key, (tuple, list)) else key)]
        item = {"noisy": torch.from_numpy(self.noisy[n].transpose(2, 0, 1).astype(np.float32) / 255),
                "name": f"{n:04d}", "index": n}
        if self.gt is not None:
            item["clean"] = torch.from_numpy(self.gt[n].transpose(2, 0, 1).astype(np.float32) / 255)
        return item
