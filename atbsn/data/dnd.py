"""DND (Plötz and Roth, CVPR 2017), sRGB track: 50 images x 20 crops of 512x512, kept in float
(specs/formats.md section 4). Ground truth is not public: the set is for submissions only."""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .matfile import require_keys


def _read_h5(path: str, what: str, read):
    """``read(h5py.File)`` with one clear error for a missing, truncated or foreign file."""
    import h5py

    if not os.path.isfile(path):
        raise DataError(f"{what} not found: '{path}'")
    try:
        with h5py.File(path, "r") as f:
            return read(f)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"cannot read {what} '{path}': {type(err).__name__}: {err} "
                        f"(expected a MATLAB v7.3 / HDF5 file)") from None


def read_bounding_boxes(info_path: str) -> np.ndarray:
    """(50, 20, 4) int boxes [r1, c1, r2, c2], 1-based inclusive, from ``info.mat`` (v7.3)."""

    def read(f):
        require_keys(info_path, f, ["info"], "root")
        require_keys(info_path, f["info"], ["boundingboxes"], "group 'info'")
        refs = f["info"]["boundingboxes"]
        return [np.asarray(f[refs[0][i]][()]).T for i in range(refs.shape[1])]

    out = np.stack(_read_h5(info_path, "DND info file", read)).astype(np.int64)
    if out.shape[1:] != (20, 4):
        raise DataError(f"'{info_path}' bounding boxes have shape {out.shape[1:]}, expected (20, 4) per image")
    return out


def read_dnd_image(path: str) -> np.ndarray:
    """``InoisySRGB`` as float32 HxWx3 (h5py returns it transposed as 3xWxH)."""

    def read(f):
        require_keys(path, f, ["InoisySRGB"], "root")
        return np.asarray(f["InoisySRGB"][()], dtype=np.float32).T

    img = _read_h5(path, "DND image", read)
    if img.ndim != 3 or img.shape[2] != 3:
        raise DataError(f"'{path}' InoisySRGB has shape {img.shape} after transposing, expected HxWx3")
    bad = int(img.size - np.count_nonzero(np.isfinite(img)))
    if bad:
        raise DataError(f"'{path}' InoisySRGB has {bad} non-finite value(s) (NaN or infinity)")
    return img


class DNDDataset(Dataset):
    """The 1,000 DND sRGB crops (image-major, ``name`` = ``%04d_%02d``), float32 in [0, 1]."""

    def __init__(self, root: str, images: Optional[List[int]] = None):
        self.root = root
        self.boxes = read_bounding_boxes(os.path.join(root, "info.mat"))
        self.images = list(range(1, len(self.boxes) + 1)) if images is None else list(images)
        self._cached: Optional[tuple] = None

    def __len__(self):
        return 20 * len(self.images)

    def image(self, number: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != number:
            self._cached = (number, read_dnd_image(os.path.join(self.root, "images_srgb", f"{number:04d}.mat")))
        return self._cached[1]

    def __getitem__(self, key):
        idx = int(key[0] if isinstance(key, (tuple, list)) else key)
        number, box = self.images[idx // 20], idx % 20
        r1, c1, r2, c2 = self.boxes[number - 1, box]
        img = self.image(number)
        crop = img[r1 - 1: r2, c1 - 1: c2]
        if crop.shape[:2] != (r2 - r1 + 1, c2 - c1 + 1):
            raise DataError(f"DND image {number:04d} box {box + 1} {[r1, c1, r2, c2]} lies outside the "
                            f"{img.shape[0]}x{img.shape[1]} image")
        return {"noisy": torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))),
                "name": f"{number:04d}_{box + 1:02d}", "image": number, "box": box}
