"""The image-utility module: reading, writing, quantising, colour conversion, tensors (photo
files' orientation, metadata, alpha and integrity live in :mod:`.photo`).

Internally every image is RGB (or single-channel gray), float in [0, 1], HWC for NumPy and
CHW / NCHW for torch. Gray <-> colour conversion only happens when asked for explicitly.
"""
from __future__ import annotations

import os
from typing import Literal, Optional, Tuple

import numpy as np

from ..errors import DataError
from .photo import HEIF_EXTENSIONS, read_photo, write_photo

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm") + HEIF_EXTENSIONS

RoundingMode = Literal["half_up", "half_even", "truncate"]


def is_image_file(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def list_images(root: str, what: str = "image folder") -> list[str]:
    """Sorted image files of a folder; a clear error when it is missing or holds no image."""
    if not os.path.isdir(root):
        raise DataError(f"{what} not found: '{root}' (expected a folder of images)")
    files = sorted(os.path.join(root, f) for f in os.listdir(root) if is_image_file(f))
    if not files:
        raise DataError(f"{what} '{root}' holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def read_image(path: str, channels: Optional[int] = 3, convert: bool = False) -> Tuple[np.ndarray, int]:
    """Read an image as float32 HWC in [0, 1], upright (EXIF orientation applied, see
    :mod:`.photo`). Returns (image, bit_depth).

    ``channels`` (1 or 3, None = as stored) is what the caller expects. A mismatch (gray file for a
    colour network, an alpha channel) is an error unless ``convert`` is True.
    """
    photo = read_photo(path)
    img = photo.pixels if photo.alpha is None else np.concatenate([photo.pixels, photo.alpha], 2)
    stored = img.shape[2]
    if channels is not None and stored != channels:
        if not convert:
            kind = {1: "gray", 2: "gray+alpha", 3: "RGB", 4: "RGBA"}.get(stored, f"{stored}-channel")
            raise DataError(
                f"image '{path}' is {kind} but {channels}-channel input is expected; "
                f"set 'convert_color: true' on the dataset to convert it explicitly"
            )
        img = convert_channels(img, channels)
    return np.ascontiguousarray(img), photo.depth


def convert_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Explicit conversion: drop alpha, gray -> RGB by replication, RGB -> gray by BT.601 luma."""
    if img.shape[2] in (2, 4):
        img = img[:, :, :-1]
    if img.shape[2] == channels:
        return img
    if channels == 3:
        return np.repeat(img, 3, axis=2)
    luma = img @ np.array([0.299, 0.587, 0.114], dtype=img.dtype)
    return luma[:, :, None]


QUANTIZE_CHUNK = 1 << 18  # elements per block of a large image (2 MB of float64)


def quantize(x: np.ndarray, bit_depth: int = 8, mode: RoundingMode = "half_even", clip: bool = True) -> np.ndarray:
    """[0, 1] float -> unsigned integers. The single place where outputs are rounded.

    ``half_up`` is floor(v + 0.5) (Neighbor2Neighbor), ``half_even`` is NumPy's round (BasicSR,
    submission scripts), ``truncate`` reproduces C-BSN's inference script. ``clip=False`` wraps
    around like a C cast, as C-BSN's in-training validation does (a bug kept for its protocol).
    """
    x = np.asarray(x)
    if x.size > QUANTIZE_CHUNK and x.ndim >= 2:  # row blocks: the float64 temporaries stay in cache
        rows = max(1, QUANTIZE_CHUNK // (x.size // x.shape[0]))
        return np.concatenate([quantize(x[i:i + rows], bit_depth, mode, clip) for i in range(0, x.shape[0], rows)])
    peak = float(2**bit_depth - 1)
    v = np.asarray(x, dtype=np.float64) * peak
    if clip:
        v = np.clip(v, 0.0, peak)
    if mode == "half_up":
        v = np.floor(v + 0.5)
    elif mode == "half_even":
        v = np.round(v)
    elif mode == "truncate":
        v = np.trunc(v)
    else:
        raise ValueError(f"unknown rounding mode '{mode}'")
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    if clip:
        return np.clip(v, 0, peak).astype(dtype)
    return np.mod(v.astype(np.int64), int(peak) + 1).astype(dtype)


def writable_folder(folder: str) -> str:
    """Create ``folder`` if needed; one clear error when that fails or it cannot be written."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create output folder '{folder}': {err.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise DataError(f"output folder '{folder}' is not writable")
    return folder


def write_image(path: str, img: np.ndarray, bit_depth: int = 8) -> None:
    """Write a float [0,1] HWC (or already-quantised) image as PNG/TIFF/JPEG/..., atomically."""
    writable_folder(os.path.dirname(os.path.abspath(path)))
    write_photo(path, img, bit_depth)


def rgb_to_y(img: np.ndarray, channel_order: Literal["rgb", "bgr"]) -> np.ndarray:
    """BT.601 studio-swing luma on the 0-255 scale (MATLAB rgb2ycbcr), not rounded.

    The channel order is explicit: BasicSR's helper assumes BGR, and feeding it RGB silently swaps
    the R and B coefficients.
    """
    if channel_order == "rgb":
        coeffs = np.array([65.481, 128.553, 24.966])
    elif channel_order == "bgr":
        coeffs = np.array([24.966, 128.553, 65.481])
    else:
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    return 16.0 + np.asarray(img, dtype=np.float64) @ coeffs / 255.0


def to_tensor(img: np.ndarray):
    """HWC float array -> CHW float32 tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()


def to_numpy(t) -> np.ndarray:
    """CHW (or 1xCHW) tensor -> HWC float64 array."""
    if t.dim() == 4:
        t = t[0]
    return t.detach().cpu().double().numpy().transpose(1, 2, 0)
