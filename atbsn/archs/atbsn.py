"""AT-BSN: asymmetric tunable blind-spot network (Chen et al., CVPR 2024).

One U-Net built from *shifted* convolutions and poolings sees only the half-plane above each
pixel (current row included). Running it on the four rotations of the image and shifting each
result down by s = (k + 1) // 2 rows before un-rotating hides a centred (2s-1)^2 square (plus a
few ring pixels for k >= 5): the hole size k is a test-time knob of one trained network.
Training uses k = 9, inference k = 3, and k = 0 gives a non-blind teacher for distillation.

State-dict keys match the official release (``unet.*``, ``nin_A/B/C``). Values are on [0, 255].
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import List, Literal, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OptionsError

SLOPE = 0.1


class Conv(nn.Module):
    """3x3 conv + LeakyReLU(0.1). Blind: the output at row y sees input rows y-2..y only (as if
    two zero rows were padded on top instead of one above and one below). The conv pads two rows
    at both ends and the last two output rows are dropped: the same numbers as padding a copy of
    the input first, without the copy."""

    def __init__(self, in_channels: int, out_channels: int, blind: bool, bias: bool = True):
        super().__init__()
        self.blind = blind
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=(2, 1) if blind else 1, bias=bias)
        self.conv.dropped_rows = 2 if blind else 0  # computed and dropped: not counted as the network's MACs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.blind:
            y = y[..., : x.shape[-2], :]
        # In place where the kept rows are one block of memory (always for plain convs; blind ones
        # in channels_last with batch 1, as at inference). A strided slice gets a compact copy,
        # which the next conv would otherwise make itself.
        return F.leaky_relu(y, SLOPE, inplace=not self.blind or is_compact(y))


def is_compact(x: torch.Tensor) -> bool:
    return x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """The memory format for a new tensor made from ``x``: channels_last if ``x`` is in it."""
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format


def shift_down(x: torch.Tensor, rows: int) -> torch.Tensor:
    """Move the map down by ``rows`` (zeros enter at the top, the last rows drop out)."""
    if rows == 0:
        return x
    return F.pad(x, (0, 0, rows, 0))[..., : x.shape[-2], :]


_official_forced = False


def official_graph() -> bool:
    """The official ops: in training (their backward is the faster one), when traced for ONNX
    export (the lean inference paths write into views and loop over stripes, which do not trace)
    and inside :func:`official_ops`."""
    return _official_forced or torch.is_grad_enabled() or torch.jit.is_tracing()


@contextmanager
def official_ops():
    """Run the official ops at inference too: MAC counting hooks the modules, and the lean paths
    call ``F.conv2d`` with folded weights instead."""
    global _official_forced
    previous, _official_forced = _official_forced, True
    try:
        yield
    finally:
        _official_forced = previous


def rot90(x: torch.Tensor, k: int) -> torch.Tensor:
    """``torch.rot90(x, k, dims=(-2, -1))``; traced as transpose and flips, which ONNX has."""
    if not torch.jit.is_tracing():
        return torch.rot90(x, k, dims=(-2, -1))
    k %= 4
    if k == 1:
        return x.transpose(-2, -1).flip(-2)
    if k == 2:
        return x.flip(-2).flip(-1)
    return x.transpose(-2, -1).flip(-1) if k == 3 else x


def pool(x: torch.Tensor, blind: bool) -> torch.Tensor:
    """MaxPool 2x2; blind: as if shifted down one row first (a zero row on top), so pooled row j
    covers rows 2j-1 and 2j. Computed without the shifted copy: the pool's own padding row
    (-inf) on top, then pooled row 0 against the zero it would have met."""
    if not blind:
        return F.max_pool2d(x, 2)
    if official_graph():
        return F.max_pool2d(shift_down(x, 1), 2)
    y = F.max_pool2d(x, 2, padding=(1, 0))[..., : x.shape[-2] // 2, :]
    y[..., 0, :].clamp_(min=0)
    return y


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)``; at inference, for a channels_last map of even size, two elementwise
    maxima over views of it instead: the CPU pool also computes argmax indices, and in bf16 it took
    49 ms on a 48-channel 1024² map against 6 for this (the same values, NaN included); in fp32,
    with test.py's tiles reusing freed memory, 40 against 14 ms (student A on 12 MP: 5.8-6.4 -> 5.7 s)."""
    n, c, h, w = x.shape
    if official_graph() or h % 2 or w % 2 \
            or not x.is_contiguous(memory_format=torch.channels_last):
        return F.max_pool2d(x, 2)
    v = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2 * c)  # a view: rows in pairs, column pairs in channels
    rows = torch.maximum(v[:, :, 0], v[:, :, 1])
    return torch.maximum(rows[..., :c], rows[..., c:]).permute(0, 3, 1, 2)


def upsample_cat(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``cat([upsample(x), skip], 1)`` written straight into one buffer: the nearest-neighbour
    upsampling is a broadcast copy into it, so the 4x-larger upsampled map is never allocated."""
    if official_graph():
        return torch.cat([upsample(x), skip], 1)
    n, c, h, w = x.shape
    out = torch.empty((n, c + skip.shape[1], 2 * h, 2 * w), dtype=x.dtype, device=x.device,
                      memory_format=layout_of(x))
    out[:, :c].unflatten(2, (h, 2)).unflatten(4, (w, 2)).copy_(x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2))
    out[:, c:].copy_(skip)
    return out


class EncoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, blind: bool, bias: bool):
        super().__init__()
        self.conv1 = Conv(in_channels, out_channels, blind, bias)

    def forward(self, x):
        return self.conv1(x)


class DecoderBlock(nn.Module):
    """Two convs (``conv1`` then ``conv2``); :class:`BlindUNet` calls them itself."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, blind: bool, bias: bool):
        super().__init__()
        self.conv1 = Conv(in_channels, mid_channels, blind, bias)
        self.conv2 = Conv(mid_channels, out_channels, blind, bias)


class BlindUNet(nn.Module):
    """The U-Net body (width 48, 5 poolings). ``blind`` selects shifted convs and pools; plain mode
    is student C. Every conv, including the last, is followed by LeakyReLU(0.1)."""

    def __init__(self, in_channels: int = 3, mid_channels: int = 48, out_channels: int = 96, blind: bool = True,
                 bias: bool = True):
        super().__init__()
        c, c2 = mid_channels, 2 * mid_channels
        self.blind = blind
        self.intro = Conv(in_channels, c, blind, bias)
        for i in range(1, 7):
            setattr(self, f"enc{i}", EncoderBlock(c, c, blind, bias))
        self.dec5 = DecoderBlock(c2, c2, c2, blind, bias)
        for i in (4, 3, 2):
            setattr(self, f"dec{i}", DecoderBlock(c2 + c, c2, c2, blind, bias))
        self.dec1 = DecoderBlock(c2 + in_channels, c2, out_channels, blind, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.intro(x)
        skips = []
        for i in range(1, 6):
            h = pool(getattr(self, f"enc{i}")(h), self.blind)
            skips.append(h)
        h = self.enc6(h)
        # Decoders run inline, rebinding h, so that each input is freed once used: at full
        # resolution a block call would hold its input, the concatenation and both outputs at once.
        for i, skip in zip((5, 4, 3, 2, 1), [*reversed(skips[:4]), x]):
            block = getattr(self, f"dec{i}")
            h = upsample_cat(h, skip)
            h = block.conv1(h)
            h = block.conv2(h)
        return h


def init_kaiming(module: nn.Module) -> None:
    """Official init: Kaiming-normal with a = 0.1 (fan_in, leaky-relu gain), zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=SLOPE)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def pad_bottom_right(x: torch.Tensor, multiple: int, mode: str) -> torch.Tensor:
    """Pad to multiples of ``multiple`` at the bottom and right only, so every pixel keeps its
    (row, col) and with it its pooling phase. ``reflect`` falls back to ``replicate`` when the pad
    is not smaller than the image."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if mode == "zero":
        return F.pad(x, (0, pw, 0, ph))
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


# The four rotations stacked by the official code, and their inverses (torch.rot90 k values).
ROTATIONS = (0, -1, 2, 1)
# Where each branch's shift points once un-rotated, as (rows, cols), in the order of ROTATIONS: the
# branches look up, left, down and right, and are shifted away from where they look.
SHIFT_DIRECTIONS = ((1, 0), (0, 1), (-1, 0), (0, -1))


def rotated_block(f: torch.Tensor, r: int, rows: Tuple[int, int], cols: Tuple[int, int]) -> torch.Tensor:
    """``torch.rot90(f, r, dims=(-2, -1))[..., a:b, c:d]``, rotating only that block."""
    hf, wf = f.shape[-2:]
    (a, b), (c, d) = rows, cols
    r %= 4
    if r == 0:
        return f[..., a:b, c:d]
    if r == 2:
        return torch.rot90(f[..., hf - b:hf - a, wf - d:wf - c], 2, dims=(-2, -1))
    if r == 1:
        return torch.rot90(f[..., c:d, wf - b:wf - a], 1, dims=(-2, -1))
    return torch.rot90(f[..., hf - d:hf - c, a:b], -1, dims=(-2, -1))


def place_shifted(dest: torch.Tensor, f: torch.Tensor, r: int, rows: Tuple[int, int], col_offset: int,
                  h: int, w: int) -> None:
    """Fill ``dest`` (rows x w) with rows ``rows`` and columns ``col_offset``.. of ``rot90(f, r)``
    (h x w); what falls outside it is zero (the zeros a shift brings in)."""
    a, b = max(rows[0], 0), min(rows[1], h)
    c, d = max(col_offset, 0), min(w + col_offset, w)
    ra, ca = a - rows[0], c - col_offset
    rb, cb = ra + max(b - a, 0), ca + max(d - c, 0)
    dest[..., :ra, :].zero_()
    dest[..., rb:, :].zero_()
    dest[..., ra:rb, :ca].zero_()
    dest[..., ra:rb, cb:].zero_()
    if b > a and d > c:
        dest[..., ra:rb, ca:cb].copy_(rotated_block(f, r, (a, b), (c, d)))


class ATBSN(nn.Module):
    """The teacher: ``net(x, hole_size=k)`` on [0, 255] inputs of any size.

    Conforming inputs (square, sides multiple of 32) run exactly the official batched graph.
    Others are padded at the bottom/right to multiples of 32 and, when not square, the four
    rotations run as separate passes (identical maths: convolutions act per sample).
    """

    input_multiple = 32
    receptive_radius = 288  # each branch looks ~283 px in its direction (specs/atbsn.md 7.5)

    def __init__(self, in_channels: int = 3, mid_channels: int = 48, out_channels: int = 3, bias: bool = True,
                 hole_size: int = 3, pad_mode: Literal["reflect", "replicate", "zero"] = "reflect"):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.hole_size, self.pad_mode = hole_size, pad_mode
        feat = 2 * mid_channels
        self.unet = BlindUNet(in_channels, mid_channels, feat, blind=True, bias=bias)
        self.nin_A = nn.Conv2d(4 * feat, 4 * feat, 1, bias=bias)
        self.nin_B = nn.Conv2d(4 * feat, feat, 1, bias=bias)
        self.nin_C = nn.Conv2d(feat, out_channels, 1, bias=bias)
        init_kaiming(self)
        nn.init.kaiming_normal_(self.nin_C.weight, nonlinearity="linear")

    @staticmethod
    def shift_for(hole_size: int) -> int:
        if not isinstance(hole_size, int) or isinstance(hole_size, bool) or hole_size < 0:
            raise OptionsError(f"hole_size must be a non-negative integer, got {hole_size!r}")
        return (hole_size + 1) // 2

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The blind U-Net's output in each rotated frame (independent of the hole size)."""
        if x.shape[-1] == x.shape[-2]:
            stacked = torch.cat([rot90(x, k) for k in ROTATIONS], 0)
            return list(self.unet(stacked).chunk(4, 0))
        return [self.unet(rot90(x, k)) for k in ROTATIONS]

    def shift_within(self, hole_size: int, features: Sequence[torch.Tensor]) -> int:
        """The shift of ``hole_size``, which must be smaller than the feature maps' side."""
        s = self.shift_for(hole_size)
        side = min(features[0].shape[-2:])
        if s >= side:
            raise OptionsError(f"hole_size {hole_size} (shift {s}) is too large for a {side}-pixel side")
        return s

    def head(self, features: Sequence[torch.Tensor], hole_size: int) -> torch.Tensor:
        """super_shift, un-rotate (blocks then look up, left, down, right) and the 1x1 head."""
        s = self.shift_within(hole_size, features)
        h = torch.cat([rot90(shift_down(f, s), -k) for f, k in zip(features, ROTATIONS)], 1)
        return self.head_tail(self.nin_A(h))

    def head_tail(self, a: torch.Tensor) -> torch.Tensor:
        """The head after ``nin_A`` (``a``: its output, before the activation; overwritten)."""
        h = F.leaky_relu(a, SLOPE, inplace=True)
        return self.nin_C(F.leaky_relu(self.nin_B(h), SLOPE, inplace=True))

    def heads(self, features: Sequence[torch.Tensor], hole_sizes: Sequence[int]) -> List[torch.Tensor]:
        """``[head(features, k) for k in hole_sizes]`` for the price of about one ``nin_A``.

        ``nin_A`` acts on the concatenation of the four un-rotated, shifted branches, so it splits
        into four 96->384 blocks, one per branch. A 1x1 conv commutes with shifting (zeros map to
        zero) and with rotation, so each block is applied once and un-rotated once; per k only the
        four shifted sums (in place) and the two small 1x1 layers remain. A shift down in a branch's
        rotated frame is, after un-rotation, a shift away from the direction that branch looks in.
        Equal to ``head`` up to float summation order.
        """
        shifts = [self.shift_within(k, features) for k in hole_sizes]
        blocks = self.nin_A.weight.chunk(4, dim=1)
        looking = [rot90(F.conv2d(f, w), -r) for f, w, r in zip(features, blocks, ROTATIONS)]
        up, left, down, right = looking  # the order of ROTATIONS: branches look up, left, down, right
        out = []
        for s in shifts:
            h = up + down if s == 0 else up.clone()
            if s:
                h[..., s:, :] = up[..., :-s, :]
                h[..., :s, :] = 0
                h[..., :-s, :] += down[..., s:, :]
                h[..., :, s:] += left[..., :, :-s]
                h[..., :, :-s] += right[..., :, s:]
            else:
                h += left + right
            if self.nin_A.bias is not None:
                h += self.nin_A.bias.view(1, -1, 1, 1)
            out.append(self.head_tail(h))
        return out

    def lean_forward(self, x: torch.Tensor, hole_size: int, stripes: int = 16) -> torch.Tensor:
        """``head(features(x), k)`` without autograd in about a quarter of the memory: one rotation
        through the U-Net at a time, each branch kept as it comes out (rotated, unshifted: no copy),
        and the 1x1 head run on ``stripes`` stripes of rows (1x1 convs act per pixel, so stripes are
        exact; a fixed count keeps memory per pixel the same at every size, as the tiling's memory
        estimate on a small probe assumes). Each stripe's 384-channel input is assembled in one
        reused buffer from the four branches, un-rotating and shifting only the blocks it needs.
        The batched graph holds the four rotations' U-Net activations and three 384-channel copies."""
        s = self.shift_for(hole_size)
        if s >= min(x.shape[-2:]):
            raise OptionsError(f"hole_size {hole_size} (shift {s}) is too large for a {min(x.shape[-2:])}-pixel side")
        branches = [self.unet(rot90(x, k)) for k in ROTATIONS]
        n, feat = branches[0].shape[:2]
        h, w = x.shape[-2:]
        out = x.new_empty(n, self.out_channels, h, w)
        rows = max(1, -(-h // stripes))
        buffer = torch.empty((n, 4 * feat, rows, w), dtype=branches[0].dtype, device=x.device,
                             memory_format=layout_of(branches[0]))
        for y0 in range(0, h, rows):
            y1 = min(y0 + rows, h)
            stripe = buffer[..., : y1 - y0, :]
            for i, (f, k, (dy, dx)) in enumerate(zip(branches, ROTATIONS, SHIFT_DIRECTIONS)):
                # rows y0..y1 of the un-rotated branch moved by s (dy, dx): read from s rows/cols before
                place_shifted(stripe[:, i * feat:(i + 1) * feat], f, -k, (y0 - dy * s, y1 - dy * s), -dx * s, h, w)
            out[..., y0:y1, :] = self.head_tail(self.nin_A(stripe))
        return out

    def forward(self, x: torch.Tensor, hole_size: int | None = None) -> torch.Tensor:
        k = self.hole_size if hole_size is None else hole_size
        h, w = x.shape[-2:]
        lean = not official_graph()  # inference: same maths, a quarter of the memory
        if h % 32 or w % 32:
            padded = pad_bottom_right(x, 32, self.pad_mode)
            out = self.lean_forward(padded, k) if lean else self.head(self.features(padded), k)
            return out[..., :h, :w]
        return self.lean_forward(x, k) if lean else self.head(self.features(x), k)
