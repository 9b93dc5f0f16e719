"""Image datasets: real noisy folders, noisy/clean pairs, clean images with synthetic noise.

``__getitem__`` accepts a plain index (deterministic: validation/test) or an ``(index, seed)``
key from :class:`~atbsn.data.sampler.TrainSampler` (training: random crop/augmentation/noise
drawn from that seed). Items are dicts of CHW float tensors in [0, 1] plus the image name.
"""
from __future__ import annotations

import os
from typing import Dict, List, Literal, Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..registry import PositiveInt
from ..utils.image import list_images, read_image, to_tensor
from .noise import build_noise
from .transforms import Augment, augment, random_crop

Key = Union[int, Tuple[int, int]]


def _split_key(key: Key) -> Tuple[int, Optional[int]]:
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return int(key), None


def _with_seed(item: dict, g: Optional[torch.Generator]) -> dict:
    """Training items carry a seed for the method's own per-sample randomness (e.g. N2N's
    sub-sampler), so it too is independent of workers, ranks and resumption."""
    if g is not None:
        item["seed"] = torch.randint(0, 2**62, (), generator=g)
    return item


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def select_names(paths: List[str], names_file: Optional[str]) -> List[str]:
    """Keep the images whose stems are listed in ``names_file`` (one per line), e.g. CBSD68 =
    BSD300 test restricted to ``CBSD68_ids.txt``."""
    if names_file is None:
        return paths
    try:
        with open(names_file) as f:
            names = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise DataError(f"names_file '{names_file}' cannot be read: {e.strerror}") from None
    by_stem = {_stem(p): p for p in paths}
    missing = [n for n in names if _stem(n) not in by_stem]
    if missing:
        raise DataError(f"names_file '{names_file}' lists {len(missing)} image(s) not in the folder, e.g. '{missing[0]}'")
    return [by_stem[_stem(n)] for n in names]


class ImageFolderBase(Dataset):
    """Shared machinery: file lists, decoding (optionally cached), crop + augmentation."""

    def __init__(self, crop_size: Optional[PositiveInt], augment: Augment, channels: int, convert_color: bool, cache: bool):
        if crop_size is not None and crop_size <= 0:
            raise DataError(f"crop_size must be positive, got {crop_size}")
        self.crop_size, self.augment = crop_size, augment
        self.channels, self.convert_color, self.cache = channels, convert_color, cache
        self._cache: Dict[str, torch.Tensor] = {}

    def load(self, path: str) -> torch.Tensor:
        if path in self._cache:
            return self._cache[path]
        img = to_tensor(read_image(path, self.channels, self.convert_color)[0])
        if self.cache:
            self._cache[path] = img
        return img

    def crop_and_augment(self, images: List[torch.Tensor], g: Optional[torch.Generator], name: str):
        if g is None:  # deterministic access: full images, no augmentation
            return images
        if self.crop_size is not None:
            images = random_crop(images, self.crop_size, g, name)
        return augment(images, self.augment, g)


class NoisyFolderDataset(ImageFolderBase):
    """A folder of real noisy images, for self-supervised training (no ground truth)."""

    def __init__(self, root: str, crop_size: Optional[PositiveInt] = None, augment: Augment = "dihedral",
                 channels: int = 3, convert_color: bool = False, cache: bool = False):
        super().__init__(crop_size, augment, channels, convert_color, cache)
        self.root = root
        self.paths = list_images(root, "noisy image folder")

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, key: Key):
        idx, seed = _split_key(key)
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        (noisy,) = self.crop_and_augment([self.load(self.paths[idx])], g, self.paths[idx])
        return _with_seed({"noisy": noisy, "name": _stem(self.paths[idx])}, g)


class PairedFolderDataset(ImageFolderBase):
    """Noisy and clean folders whose files are matched by name (extension ignored)."""

    def __init__(self, noisy_root: str, clean_root: str, crop_size: Optional[PositiveInt] = None, augment: Augment = "none",
                 channels: int = 3, convert_color: bool = False, cache: bool = False):
        super().__init__(crop_size, augment, channels, convert_color, cache)
        noisy = {_stem(p): p for p in list_images(noisy_root, "noisy image folder")}
        clean = {_stem(p): p for p in list_images(clean_root, "clean image folder")}
        missing = sorted(set(noisy) ^ set(clean))
        if missing:
            raise DataError(
                f"'{noisy_root}' and '{clean_root}' must hold the same file names; unmatched: {', '.join(missing[:10])}"
            )
        self.pairs = [(noisy[k], clean[k]) for k in sorted(noisy)]

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, key: Key):
        idx, seed = _split_key(key)
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        npath, cpath = self.pairs[idx]
        noisy, clean = self.load(npath), self.load(cpath)
        if noisy.shape != clean.shape:
            raise DataError(f"'{npath}' is {tuple(noisy.shape)} but its clean pair '{cpath}' is {tuple(clean.shape)}")
        noisy, clean = self.crop_and_augment([noisy, clean], g, npath)
        return _with_seed({"noisy": noisy, "clean": clean, "name": _stem(npath)}, g)


class SyntheticNoiseDataset(ImageFolderBase):
    """Clean images plus synthetic noise.

    Training (``(index, seed)`` keys): crop, augment, then fresh noise on every visit.
    Validation (integer keys): ``repeats`` noisy versions of each full image, item
    ``r * n_images + i``. Noise seeding:

    * ``per_image`` (default): the noise of (repeat r, image i) is a pure function of (seed, r, i).
    * ``legacy_numpy``: one legacy ``np.random.RandomState(seed)`` stream consumed in the order
      repeat -> sorted image list, as Neighbor2Neighbor's validation draws it (Gaussian and Poisson).
      It reproduces the official noise of the first set of the official script (Kodak); the
      official BSD300 and Set14 streams continue Kodak's stream instead of restarting.
    """

    def __init__(self, root: str, noise: dict, crop_size: Optional[PositiveInt] = None, augment: Augment = "none",
                 repeats: int = 1, seed: int = 0, noise_seeding: Literal["per_image", "legacy_numpy"] = "per_image",
                 channels: int = 3, convert_color: bool = False, cache: bool = False, names_file: Optional[str] = None):
        super().__init__(crop_size, augment, channels, convert_color, cache)
        self.root = root
        self.paths = select_names(list_images(root, "clean image folder"), names_file)
        self.noise_cfg = dict(noise)
        self.noise = build_noise(noise, where="noise")
        self.repeats, self.seed, self.noise_seeding = repeats, seed, noise_seeding
        if noise_seeding == "legacy_numpy" and self.noise_cfg["type"] not in ("gaussian", "poisson"):
            raise DataError("noise_seeding 'legacy_numpy' supports gaussian and poisson noise only")
        self._legacy_states: Optional[list] = None

    def __len__(self):
        return len(self.paths) * self.repeats

    def __getitem__(self, key: Key):
        idx, seed = _split_key(key)
        if seed is not None:  # training
            path = self.paths[idx % len(self.paths)]
            g = torch.Generator().manual_seed(seed)
            (clean,) = self.crop_and_augment([self.load(path)], g, path)
            return _with_seed({"noisy": self.noise(clean, g), "clean": clean, "name": _stem(path)}, g)
        repeat, i = divmod(idx, len(self.paths))
        path = self.paths[i]
        clean = self.load(path)
        if self.noise_seeding == "legacy_numpy":
            noisy = self._legacy_noisy(idx, clean)
        else:
            state = np.random.SeedSequence([self.seed, repeat, i]).generate_state(2, dtype=np.uint32)
            g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
            noisy = self.noise(clean, g)
        name = _stem(path) if self.repeats == 1 else f"{_stem(path)}_r{repeat}"
        return {"noisy": noisy, "clean": clean, "name": name}

    # -- Neighbor2Neighbor's legacy NumPy stream ------------------------------------------------
    def _legacy_draw(self, rs: np.random.RandomState, clean_hwc: np.ndarray) -> np.ndarray:
        cfg = self.noise_cfg
        key = "sigma" if cfg["type"] == "gaussian" else "lam"
        value = cfg[key]
        if isinstance(value, (list, tuple)):
            lo, hi = (value[0] / 255.0, value[1] / 255.0) if key == "sigma" else value
            param = rs.uniform(lo, hi, size=(1, 1, 1))
        else:
            param = value / 255.0 if key == "sigma" else value
        if key == "sigma":
            return (clean_hwc + rs.normal(size=clean_hwc.shape) * param).astype(np.float32)
        return (rs.poisson(param * clean_hwc) / param).astype(np.float32)

    def _legacy_noisy(self, idx: int, clean: torch.Tensor) -> torch.Tensor:
        if self._legacy_states is None:  # replay the stream once, remembering the state before each draw
            rs = np.random.RandomState(self.seed)
            states = []
            for j in range(len(self)):
                states.append(rs.get_state())
                shape_src = self.load(self.paths[j % len(self.paths)]).numpy().transpose(1, 2, 0)
                self._legacy_draw(rs, shape_src.astype(np.float64))
            self._legacy_states = states
        rs = np.random.RandomState()
        rs.set_state(self._legacy_states[idx])
        clean_hwc = clean.numpy().transpose(1, 2, 0).astype(np.float64)
        return torch.from_numpy(self._legacy_draw(rs, clean_hwc).transpose(2, 0, 1).copy())
