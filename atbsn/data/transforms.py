"""Random crops and the dihedral augmentations, drawn from an explicit generator."""
from __future__ import annotations

from typing import List, Literal

import torch

from ..errors import DataError

Augment = Literal["none", "dihedral", "flip_rot90"]


def random_crop(images: List[torch.Tensor], size: int, g: torch.Generator, name: str = "") -> List[torch.Tensor]:
    """The same random ``size`` x ``size`` window of every CHW image in ``images``."""
    h, w = images[0].shape[-2:]
    if h < size or w < size:
        raise DataError(f"image '{name}' is {w}x{h}, smaller than the crop size {size}")
    top = int(torch.randint(0, h - size + 1, (), generator=g))
    left = int(torch.randint(0, w - size + 1, (), generator=g))
    return [im[..., top : top + size, left : left + size] for im in images]


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 dihedral transforms (k in 0..7): rotate by 90 k degrees, transpose if k >= 4."""
    if k >= 4:
        x = x.transpose(-2, -1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def augment(images: List[torch.Tensor], mode: Augment, g: torch.Generator) -> List[torch.Tensor]:
    """``dihedral``: uniform over the 8 transforms. ``flip_rot90``: AT-BSN's official sequence
    (h-flip p=0.5, v-flip p=0.5, then always +90 degrees), which only reaches 4 of the 8."""
    if mode == "none":
        return images
    if mode == "dihedral":
        k = int(torch.randint(0, 8, (), generator=g))
        return [dihedral(im, k).contiguous() for im in images]
    if mode == "flip_rot90":
        hflip, vflip = (torch.rand(2, generator=g) < 0.5).tolist()
        out = []
        for im in images:
            if hflip:
                im = im.flip(-1)
            if vflip:
                im = im.flip(-2)
            out.append(torch.rot90(im, 1, dims=(-2, -1)).contiguous())
        return out
    raise ValueError(f"unknown augmentation '{mode}'")
