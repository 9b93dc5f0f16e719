"""Inference on any image size: padding (in the model), tiling with overlap, and a small Python API.

    from atbsn.inference import Denoiser
    den = Denoiser.from_checkpoint("experiments/quickstart/checkpoints/last.pth")
    clean = den(noisy_uint8_hwc)          # same dtype, range and layout as the input
"""
from __future__ import annotations

import weakref
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .errors import CheckpointError, OptionsError
from .models import DenoisingModel
from .models.setup import resolve_device, setup_model
from .weights import load_file
from .utils.allocator import freed_memory_reused


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> List[int]:
    """Tile origins every ``tile - overlap`` pixels (a multiple of ``align``, so every tile sees the
    same pooling phase as the whole image); the last tile may be shorter and ends at the border."""
    stride = (tile - overlap) // align * align
    if stride <= 0:
        raise OptionsError(f"val.tile: size {tile} minus overlap {overlap} leaves no stride of at least {align} px")
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(starts[-1] + stride)
    return starts


def _owned(starts: List[int], tile: int, length: int, i: int) -> tuple[int, int]:
    """The part of tile i that it writes: up to the middle of each overlap with a neighbour."""
    lo = 0 if i == 0 else (starts[i - 1] + tile + starts[i]) // 2
    hi = length if i == len(starts) - 1 else (starts[i] + tile + starts[i + 1]) // 2
    return lo, hi


def denoise_tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int,
                  align: int = 1) -> torch.Tensor:
    """Run ``fn`` on overlapping tiles, one at a time, and stitch each tile's central part. Equals the
    untiled result whenever ``overlap / 2`` covers the network's receptive radius."""
    if not 0 <= overlap < tile:
        raise OptionsError(f"val.tile.overlap ({overlap}) must be in [0, tile size {tile})")
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return fn(x)
    ys, xs = tile_starts(h, tile, overlap, align), tile_starts(w, tile, overlap, align)
    out: Optional[torch.Tensor] = None
    for i, y0 in enumerate(ys):
        ylo, yhi = _owned(ys, tile, h, i)
        for j, x0 in enumerate(xs):
            xlo, xhi = _owned(xs, tile, w, j)
            piece = fn(x[..., y0 : y0 + tile, x0 : x0 + tile])
            if out is None:
                out = torch.empty(*x.shape[:-3], piece.shape[-3], h, w, dtype=piece.dtype, device=piece.device)
            out[..., ylo:yhi, xlo:xhi] = piece[..., ylo - y0 : yhi - y0, xlo - x0 : xhi - x0]
    return out


def blended_starts(length: int, tile: int, stride: int) -> List[int]:
    """Origins every ``stride`` px with the last tile ending at the border: every tile is full-size."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def crossfade(tile: int, overlap: int) -> torch.Tensor:
    """A 1-D weight that ramps linearly over ``overlap`` px at both ends: neighbouring tiles at
    stride ``tile - overlap`` cross-fade, and their weights sum to one inside the image."""
    i = torch.arange(tile, dtype=torch.float32) + 0.5
    return torch.minimum(torch.ones(tile), torch.minimum(i, tile - i) / max(overlap, 1))


def denoise_blended(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int,
                    overlap: int) -> torch.Tensor:
    """Run ``fn`` on full-size ``tile`` x ``tile`` windows and cross-fade them. For networks that
    see only their training crop's size (receptive field wider than the crop), this keeps every
    pass at that size, and the fades hide the seams. Not equal to the untiled output by design."""
    if not 0 <= overlap < tile:
        raise OptionsError(f"val.tile.overlap ({overlap}) must be in [0, tile size {tile})")
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return fn(x)
    ys, xs = blended_starts(h, tile, tile - overlap), blended_starts(w, tile, tile - overlap)
    wy, wx = crossfade(min(tile, h), overlap), crossfade(min(tile, w), overlap)
    weight = wy[:, None] * wx[None, :]
    out: Optional[torch.Tensor] = None
    total = torch.zeros(h, w)
    for y0 in ys:
        for x0 in xs:
            piece = fn(x[..., y0 : y0 + tile, x0 : x0 + tile])
            if out is None:
                out = torch.zeros(*x.shape[:-3], piece.shape[-3], h, w, dtype=piece.dtype, device=piece.device)
            ph, pw = piece.shape[-2:]
            out[..., y0 : y0 + ph, x0 : x0 + pw] += piece * weight[:ph, :pw].to(piece.device)
            total[y0 : y0 + ph, x0 : x0 + pw] += weight[:ph, :pw]
    return out / total.to(out.device)


def default_overlap(model: DenoisingModel) -> int:
    """Twice the inference network's receptive radius, rounded up to its tile alignment: enough for
    tiled output to equal untiled output."""
    net = model.networks[model.inference_role]
    align = tile_alignment(model)
    radius = getattr(net, "receptive_radius", 64)
    return -(-2 * radius // align) * align


def tile_alignment(model: DenoisingModel) -> int:
    net = model.networks[model.inference_role]
    return int(getattr(net, "tile_alignment", getattr(net, "input_multiple", 1)))


class _PeakLiveBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages alive at once among those created while active: every op's
    outputs are counted until the tensor is freed."""

    def __init__(self):
        super().__init__()
        self.live: Dict[int, int] = {}
        self.current = self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                key = t.untyped_storage().data_ptr()
                if key and key not in self.live:
                    self.live[key] = t.untyped_storage().nbytes()
                    self.current += self.live[key]
                    weakref.finalize(t, self._free, key)
        self.peak = max(self.peak, self.current)
        return out


# Measured peak RSS over this estimate's live bytes on CPU (12-MP and 1-MP images, four networks of
# 0.1-1.3 M parameters): 16.0 GB vs 10.9, 2.0 vs 1.5, 9.9 vs 9.0, 14.4 vs 13.1.
ALLOCATOR_OVERHEAD = 1.5


def activation_bytes_per_pixel(model: DenoisingModel) -> float:
    """Peak bytes an untiled pass holds per input pixel, measured once on a 128-px probe."""
    cached = getattr(model, "_activation_bytes_per_pixel", None)
    if cached is not None:
        return cached
    side = max(128, 2 * model.input_multiple())
    channels = int(getattr(model.networks[model.inference_role], "in_channels", 3))
    probe = torch.rand(1, channels, side, side, device=model.device)
    mode = _PeakLiveBytes()
    with mode:
        model.denoise(probe)
    model._activation_bytes_per_pixel = ALLOCATOR_OVERHEAD * mode.peak / side**2
    return model._activation_bytes_per_pixel


def default_memory_limit_gb() -> float:
    """Half of the memory available now (Linux ``MemAvailable``; 8 GB where that is unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20 / 2
    except OSError:
        pass
    return 8.0


# Exact tiles recompute their overlap: tiled work over untiled work, kept at or below this when
# memory allows (a tile side of about 11.5 overlaps).
MAX_TILING_WORK = 1.2


def tiling_work(h: int, w: int, tile: int, overlap: int, align: int = 1) -> float:
    """Pixels the network runs on when an h x w image is tiled, over the image's pixels."""
    if h <= tile and w <= tile:
        return 1.0
    rows = sum(min(tile, h - y) for y in tile_starts(h, tile, overlap, align))
    cols = sum(min(tile, w - x) for x in tile_starts(w, tile, overlap, align))
    return rows * cols / (h * w)


def efficient_tile(overlap: int, align: int) -> int:
    """The smallest tile side whose tiling work stays under MAX_TILING_WORK on large images."""
    side = overlap / (1 - MAX_TILING_WORK ** -0.5)
    return int(-(-side // align) * align)


def automatic_tile(model: DenoisingModel, h: int, w: int, limit_gb: Optional[float]) -> Optional[int]:
    """A tile side when an untiled pass of an h x w image would need more than ``limit_gb``: the
    largest that fits, since a larger tile recomputes less of its overlap."""
    per_pixel = activation_bytes_per_pixel(model)
    need = per_pixel * h * w / 2**30
    limit = default_memory_limit_gb() if limit_gb is None else limit_gb
    if need <= limit:
        return None
    align, overlap = tile_alignment(model), default_overlap(model)
    side = int((limit / 2 * 2**30 / per_pixel) ** 0.5) // align * align
    side = max(side, 2 * overlap + align, 128)
    work = tiling_work(h, w, side, overlap, align)
    short = (f"; tiles of {efficient_tile(overlap, align)} px would stay under {MAX_TILING_WORK}x but do not fit"
             if work > MAX_TILING_WORK else "")
    print(f"a {w}x{h} image needs about {need:.1f} GB untiled (val.tile.memory_limit_gb {limit:.1f}): "
          f"denoising it in {side}-px tiles, {work:.2f}x the untiled work{short}")
    return side


_warned_tiles: set = set()


def warn_costly_tiles(model: DenoisingModel, h: int, w: int, tile: int, overlap: int) -> None:
    """One line per tile setting whose recomputed overlaps cost more than MAX_TILING_WORK."""
    align = tile_alignment(model)
    work = tiling_work(h, w, tile, overlap, align)
    key = (type(model.networks[model.inference_role]).__name__, tile, overlap)
    if work > MAX_TILING_WORK and key not in _warned_tiles:
        _warned_tiles.add(key)
        print(f"val.tile.size {tile} with overlap {overlap} runs {work:.1f}x the untiled work on a {w}x{h} image; "
              f"tiles of at least {efficient_tile(overlap, align)} px (or none, memory permitting) stay under "
              f"{MAX_TILING_WORK}x")


def denoise(model: DenoisingModel, noisy: torch.Tensor, tile: Optional[int] = None,
            overlap: Optional[int] = None, blend: bool = False,
            memory_limit_gb: Optional[float] = None, reports: Optional[list] = None) -> torch.Tensor:
    """[0,1] NCHW -> [0,1] NCHW (on the CPU), tiled above ``tile`` pixels per side; ``overlap``
    None picks :func:`default_overlap`; ``blend`` cross-fades full-size tiles
    (:func:`denoise_blended`, overlap None: half the tile). Without ``tile``, an image that would
    need more than ``memory_limit_gb`` (None: half the available memory) is tiled anyway.
    With ``val.strength.mode: adaptive`` (``model.strength``) the output is kept only as far as the
    image's own noise explains it (:mod:`atbsn.strength`); its per-image
    :class:`~atbsn.strength.StrengthReport` is appended to ``reports``."""
    out = denoise_full_strength(model, noisy, tile, overlap, blend, memory_limit_gb)
    strength = model.strength
    if strength["mode"] == "adaptive":
        from .strength import adaptive_blend

        settings = {k: v for k, v in strength.items() if k != "mode"}
        out, measured = adaptive_blend(noisy.cpu(), out, **settings)
        if reports is not None:
            reports.extend(measured)
    return out


def denoise_full_strength(model: DenoisingModel, noisy: torch.Tensor, tile: Optional[int] = None,
                          overlap: Optional[int] = None, blend: bool = False,
                          memory_limit_gb: Optional[float] = None) -> torch.Tensor:
    """The network's output, tiled as :func:`denoise` says."""
    explicit = bool(tile)
    if not tile and max(noisy.shape[-2:]) > 256:
        tile = automatic_tile(model, *noisy.shape[-2:], memory_limit_gb)
        overlap = None
    x, context = model.prepare(noisy)
    run = lambda t: model.denoise_tile(t).cpu()  # noqa: E731
    with freed_memory_reused():
        if tile and blend:
            overlap = tile // 2 if overlap is None else overlap
            return model.finish(denoise_blended(run, x, tile, overlap), context)
        if tile:
            overlap = default_overlap(model) if overlap is None else overlap
            if explicit and overlap < tile:
                warn_costly_tiles(model, *x.shape[-2:], tile, overlap)
            return model.finish(denoise_tiled(run, x, tile, overlap, tile_alignment(model)), context)
        return model.finish(run(x), context)


class Denoiser:
    """Denoise NumPy arrays or tensors with a trained model, returning the input's type and range.

    NumPy: HWC or HW, uint8 / uint16 (full range) or float ([0, 1]). Torch: CHW or NCHW float in [0, 1].
    """

    def __init__(self, model: DenoisingModel, tile: Optional[int] = None, overlap: Optional[int] = None,
                 blend: bool = False, memory_limit_gb: Optional[float] = None):
        self.model, self.tile, self.overlap, self.blend = model, tile, overlap, blend
        self.memory_limit_gb = memory_limit_gb
        model.train(False)

    @classmethod
    def from_options(cls, path: str, overrides: Optional[List[str]] = None, device: str = "auto"):
        from .options import load_options

        opt = load_options(path, overrides)
        return cls._from_opt(opt, device)

    @classmethod
    def from_checkpoint(cls, path: str, device: str = "auto"):
        """A training checkpoint carries its options, so it is enough on its own."""
        from .options import validate

        state = load_file(path)
        if "options" not in state:
            raise CheckpointError(f"'{path}' has no embedded options; use Denoiser.from_options with "
                                  f"path.pretrain_network pointing at it")
        opt = validate(state["options"], source=f"{path} (embedded options)")
        opt["path"]["pretrain_network"] = {role: path for role in state["networks"]}
        return cls._from_opt(opt, device)

    @classmethod
    def from_onnx(cls, path: str, tile: Optional[int] = None, overlap: Optional[int] = None,
                  strength: Optional[dict] = None, providers: Optional[list] = None):
        """An exported file (scripts/export_onnx.py) through onnxruntime; ``strength`` as val.strength."""
        from .deploy import OnnxModel
        from .options import strength_settings

        model = OnnxModel(path, providers)
        model.strength = strength_settings(strength)
        return cls(model, tile, overlap)

    @classmethod
    def _from_opt(cls, opt: dict, device: str):
        model = setup_model(opt, resolve_device(device if device != "auto" else opt["device"]))
        tile = opt["val"]["tile"]
        return cls(model, tile["size"], tile["overlap"], tile["blend"], tile["memory_limit_gb"])

    def denoise_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return denoise(self.model, x, self.tile, self.overlap, self.blend, self.memory_limit_gb)

    def __call__(self, image):
        if isinstance(image, torch.Tensor):
            batched = image.dim() == 4
            x = image if batched else image.unsqueeze(0)
            out = self.denoise_tensor(x.float()).to(image.device, image.dtype)
            return out if batched else out[0]
        arr = np.asarray(image)
        gray2d = arr.ndim == 2
        if gray2d:
            arr = arr[:, :, None]
        if arr.dtype == np.uint8:
            x, bits = arr.astype(np.float32) / 255.0, 8
        elif arr.dtype == np.uint16:
            x, bits = arr.astype(np.float32) / 65535.0, 16
        elif np.issubdtype(arr.dtype, np.floating):
            x, bits = arr.astype(np.float32), None
        else:
            raise TypeError(f"unsupported image dtype {arr.dtype}: use uint8, uint16 or float in [0, 1]")
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
        out = self.denoise_tensor(t)[0].numpy().transpose(1, 2, 0)
        if bits is not None:
            from .utils.image import quantize

            out = quantize(out, bits)
        else:
            out = out.astype(arr.dtype)
        return out[:, :, 0] if gray2d else out
