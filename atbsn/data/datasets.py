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
from ..registry import PositiveFloat, PositiveInt
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
    """Shared machinery: file lists, decoding (optionally cached), crop + augmentation.

    The cache holds photos at their stored bit depth (8-bit: a quarter of float32), and within
    ``cache_memory_gb``, so training memory does not grow with the folder: when the folder's
    photos do not fit, each item keeps a fixed reservoir of ``PATCH``-px patches (positions drawn
    once from the item's index, so every run and rank sees the same ones) and training crops come
    from those. A folder that fits trains exactly as if nothing were cached."""

    PATCH = 256

    def __init__(self, crop_size: Optional[PositiveInt], augment: Augment, channels: int, convert_color: bool,
                 cache: bool, cache_memory_gb: PositiveFloat = 1.0):
        if crop_size is not None and crop_size <= 0:
            raise DataError(f"crop_size must be positive, got {crop_size}")
        self.crop_size, self.augment = crop_size, augment
        self.channels, self.convert_color, self.cache = channels, convert_color, cache
        self.cache_bytes = int(cache_memory_gb * 2**30)
        self._cache: Dict[object, list] = {}
        self._patches_per_item: Optional[int] = None  # None: whole photos fit (decided on first use)

    def item_paths(self, idx: int) -> List[str]:
        raise NotImplementedError

    def _decode(self, path: str) -> Tuple[torch.Tensor, float]:
        """CHW at the stored depth (uint8; int32 for 16-bit; float32 for float files) and its scale."""
        img, depth = read_image(path, self.channels, self.convert_color)
        if depth == 8:
            return torch.from_numpy(np.round(img.transpose(2, 0, 1) * 255).astype(np.uint8)), 255.0
        if depth == 16:
            return torch.from_numpy(np.round(img.transpose(2, 0, 1) * 65535).astype(np.int32)), 65535.0
        return to_tensor(img), 1.0

    def load(self, path: str) -> torch.Tensor:
        """The whole image as float CHW in [0, 1] (cached when it fits)."""
        data, scale = self._stored(path)
        return _as_float(data, scale)

    def _stored(self, path: str) -> Tuple[torch.Tensor, float]:
        if path in self._cache:
            return self._cache[path][0]
        stored = self._decode(path)
        if self.cache and self._reservoir() is None:
            self._cache[path] = [stored]
        return stored

    def _reservoir(self) -> Optional[int]:
        """Patches kept per item when the folder's photos exceed the cache budget (None: they fit)."""
        if self._patches_per_item is None:
            sizes = [_pixels_of(p) for i in range(len(self._items())) for p in self.item_paths(i)]
            total = sum(sizes) * self.channels
            if total <= self.cache_bytes:
                self._patches_per_item = 0
            else:
                patch = max(self.PATCH, self.crop_size or 0) ** 2 * self.channels
                per_image = len(sizes) / max(1, len(self._items()))
                self._patches_per_item = max(4, int(self.cache_bytes / (len(self._items()) * per_image * patch)))
        return self._patches_per_item or None

    def _items(self) -> range:
        return range(len(self.paths) if hasattr(self, "paths") else len(self.pairs))

    def sample(self, idx: int, g: Optional[torch.Generator]) -> List[torch.Tensor]:
        """The item's images as float CHW: whole (``g`` None), or one random crop, augmented."""
        paths = self.item_paths(idx)
        count = self._reservoir() if (self.cache and g is not None and self.crop_size) else None
        if count is None:
            stored = [self._stored(p) for p in paths]
            _same_shape(stored, paths)
            if g is None:
                return [_as_float(d, s) for d, s in stored]
            images = [d for d, _ in stored]
        else:
            if ("patches", idx) not in self._cache:
                self._cache[("patches", idx)] = self._patches(idx, paths, count)
            patches = self._cache[("patches", idx)]
            k = int(torch.randint(0, len(patches), (), generator=g))
            images, stored = patches[k], [(None, s) for s in self._cache[("scales", idx)]]
        if self.crop_size is not None:
            images = random_crop(images, self.crop_size, g, paths[0])
        images = augment(images, self.augment, g)
        return [_as_float(im, s) for im, (_, s) in zip(images, stored)]

    def _patches(self, idx: int, paths: List[str], count: int) -> List[List[torch.Tensor]]:
        stored = [self._decode(p) for p in paths]
        _same_shape(stored, paths)
        self._cache[("scales", idx)] = [s for _, s in stored]
        h, w = stored[0][0].shape[-2:]
        size = max(self.PATCH, self.crop_size)
        ph, pw = min(size, h), min(size, w)
        pick = torch.Generator().manual_seed(1_000_003 * idx + 17)
        out = []
        for _ in range(count):
            top = int(torch.randint(0, h - ph + 1, (), generator=pick))
            left = int(torch.randint(0, w - pw + 1, (), generator=pick))
            out.append([d[..., top:top + ph, left:left + pw].clone() for d, _ in stored])
        return out


def _as_float(data: torch.Tensor, scale: float) -> torch.Tensor:
    return data if data.dtype == torch.float32 and scale == 1.0 else data.float() / scale


def _same_shape(stored: list, paths: List[str]) -> None:
    for (d, _), p in zip(stored[1:], paths[1:]):
        if d.shape != stored[0][0].shape:
            raise DataError(f"'{paths[0]}' is {tuple(stored[0][0].shape)} but its clean pair '{p}' is {tuple(d.shape)}")


def _pixels_of(path: str) -> int:
    """Pixels of an image from its header (no decoding); 0 when the header cannot tell."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.size[0] * im.size[1]
    except Exception:  # noqa: BLE001 - decoding will report a real problem
        return 0


class NoisyFolderDataset(ImageFolderBase):
    """A folder of real noisy images, for self-supervised training (no ground truth)."""

    def __init__(self, root: str, crop_size: Optional[PositiveInt] = None, augment: Augment = "dihedral",
                 channels: int = 3, convert_color: bool = False, cache: bool = False,
                 cache_memory_gb: PositiveFloat = 1.0):
        super().__init__(crop_size, augment, channels, convert_color, cache, cache_memory_gb)
        self.root = root
        self.paths = list_images(root, "noisy image folder")

    def __len__(self):
        return len(self.paths)

    def item_paths(self, idx: int) -> List[str]:
        return [self.paths[idx]]

    def __getitem__(self, key: Key):
        idx, seed = _split_key(key)
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        (noisy,) = self.sample(idx, g)
        return _with_seed({"noisy": noisy, "name": _stem(self.paths[idx])}, g)


class PairedFolderDataset(ImageFolderBase):
    """Noisy and clean folders whose files are matched by name (extension ignored)."""

    def __init__(self, noisy_root: str, clean_root: str, crop_size: Optional[PositiveInt] = None, augment: Augment = "none",
                 channels: int = 3, convert_color: bool = False, cache: bool = False,
                 cache_memory_gb: PositiveFloat = 1.0):
        super().__init__(crop_size, augment, channels, convert_color, cache, cache_memory_gb)
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

    def item_paths(self, idx: int) -> List[str]:
        return list(self.pairs[idx])

    def __getitem__(self, key: Key):
        idx, seed = _split_key(key)
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        noisy, clean = self.sample(idx, g)
        return _with_seed({"noisy": noisy, "clean": clean, "name": _stem(self.pairs[idx][0])}, g)


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
                 channels: int = 3, convert_color: bool = False, cache: bool = False, names_file: Optional[str] = None,
                 cache_memory_gb: PositiveFloat = 1.0):
        super().__init__(crop_size, augment, channels, convert_color, cache, cache_memory_gb)
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

    def item_paths(self, idx: int) -> List[str]:
        return [self.paths[idx]]

    def __getitem__(self, key: Key):
        idx, seed = _split_key(key)
        if seed is not None:  # training
            path = self.paths[idx % len(self.paths)]
            g = torch.Generator().manual_seed(seed)
            (clean,) = self.sample(idx % len(self.paths), g)
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
