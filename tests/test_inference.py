import numpy as np
import pytest
import torch

from atbsn.archs import N2NUNet
from atbsn.errors import OptionsError
from atbsn.inference import Denoiser, denoise_tiled, tile_starts
from atbsn.models import Neighbor2Neighbor, pad_to_multiple


def test_tiles_cover_the_image_and_stitch_exactly_for_local_operators():
    assert tile_starts(100, 40, 10) == [0, 30, 60]
    assert tile_starts(30, 40, 10) == [0]
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 3, 3, padding=1))
    x = torch.rand(1, 3, 70, 95)
    with torch.no_grad():
        full = conv(x)
        tiled = denoise_tiled(conv, x, tile=32, overlap=8)  # receptive radius 2 <= overlap / 2
    assert torch.allclose(full, tiled, atol=1e-6)
    with pytest.raises(OptionsError, match="overlap"):
        denoise_tiled(conv, x, tile=32, overlap=32)


def test_padding_bottom_right_to_multiple_or_square():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    p = pad_to_multiple(x, 4)
    assert p.shape[-2:] == (8, 8) and torch.equal(p[..., :5, :7], x)
    assert torch.equal(p[..., 5, :7], x[..., 3, :])  # reflect
    assert pad_to_multiple(x, 4, square=True).shape[-2:] == (8, 8)
    assert pad_to_multiple(torch.zeros(1, 1, 33, 40), 32, square=True).shape[-2:] == (64, 64)
    assert pad_to_multiple(torch.zeros(1, 1, 3, 40), 32).shape[-2:] == (32, 64)  # tiny: replicate fallback


def _denoiser():
    torch.manual_seed(0)
    model = Neighbor2Neighbor({"net": N2NUNet(3, 3, 8, init_scale=1.0)})
    return Denoiser(model)


def test_denoiser_returns_the_input_type_and_range():
    den = _denoiser()
    rng = np.random.RandomState(0)
    u8 = rng.randint(0, 256, (37, 50, 3)).astype(np.uint8)
    out = den(u8)
    assert out.dtype == np.uint8 and out.shape == u8.shape
    u16 = (u8.astype(np.uint16) * 257)
    out16 = den(u16)
    assert out16.dtype == np.uint16 and np.abs(out16.astype(int) / 257 - out.astype(int)).max() <= 1
    f = u8.astype(np.float32) / 255
    outf = den(f)
    assert outf.dtype == np.float32 and np.abs(outf - np.clip(outf, 0, 1)).max() >= 0  # not clipped silently
    assert np.abs(np.round(np.clip(outf, 0, 1) * 255) - out).max() <= 1
    t = torch.from_numpy(f.transpose(2, 0, 1))
    outt = den(t)
    assert isinstance(outt, torch.Tensor) and outt.shape == t.shape
    assert torch.allclose(outt, torch.from_numpy(outf.transpose(2, 0, 1)), atol=1e-6)
    assert den(t[None]).shape == (1, 3, 37, 50)
    with pytest.raises(TypeError, match="unsupported image dtype"):
        den(u8.astype(np.int32))


def test_tiled_equals_untiled_when_the_overlap_covers_the_receptive_field():
    from atbsn.archs import ATBSNStudentA
    from atbsn.inference import default_overlap, denoise

    torch.manual_seed(0)
    model = Neighbor2Neighbor({"net": ATBSNStudentA()})
    model.train(False)
    assert default_overlap(model) == 28  # 2 x radius 13, aligned to the 2 poolings (4 px)
    x = torch.rand(1, 3, 150, 230)
    full = denoise(model, x)
    tiled = denoise(model, x, tile=64)  # overlap None -> default
    assert (tiled - full).abs().max() < 1e-4
    assert (denoise(model, x, tile=64, overlap=4) - full).abs().max() > 1e-3  # too small an overlap shows


def test_receptive_radius_attributes_match_the_gradient_support(monkeypatch):
    import torch.nn.functional as F

    from atbsn.archs import ATBSNStudentA, ATBSNStudentB

    monkeypatch.setattr(F, "max_pool2d", lambda x, k, *a, **kw: F.avg_pool2d(x, k))
    for cls in (ATBSNStudentA, ATBSNStudentB):
        torch.manual_seed(0)
        net = cls().double()
        x = torch.rand(1, 3, 128, 128, dtype=torch.float64, requires_grad=True)
        radius = 0
        for y, xx in ((64, 64), (65, 65), (64, 65)):
            (g,) = torch.autograd.grad(net(x)[0, :, y, xx].sum(), x)
            nz = (g[0].abs().sum(0) > 0).nonzero()
            radius = max(radius, (nz[:, 0] - y).abs().max().item(), (nz[:, 1] - xx).abs().max().item())
        assert radius == cls.receptive_radius, (cls.__name__, radius)


def test_cpu_bf16_without_native_support_runs_in_fp32_with_one_line(monkeypatch, caplog):
    import logging

    import torch

    from atbsn.models import setup

    monkeypatch.setattr(setup, "native_cpu_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="atbsn"):
        assert setup.autocast_dtype("bf16", torch.device("cpu")) is None
    assert len(caplog.records) == 1 and "no native bf16" in caplog.records[0].getMessage()
    monkeypatch.setattr(setup, "native_cpu_bf16", lambda: True)
    assert setup.autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert setup.autocast_dtype(None, torch.device("cpu")) is None


@pytest.mark.parametrize("arch, kwargs, size", [
    ("N2NUNet", {"n_feature": 8}, (420, 390)),
    ("ATBSN", {"mid_channels": 8}, (700, 650)),
    ("ATBSNStudentA", {}, (150, 130)),
    ("ATBSNStudentB", {}, (160, 150)),  # 29x the work in 80-px tiles: every seam is still crossed
    ("ATBSNStudentC", {"mid_channels": 8}, (420, 390)),
    ("CBSN", {"width": 8, "num_modules": 2}, (100, 90)),
    ("MWCNN", {"widths": [8, 8, 8], "layers": 1}, (160, 140)),
])
def test_tiled_equals_untiled_for_every_inference_arch_at_the_default_overlap(arch, kwargs, size):
    from atbsn.archs import ARCH_REGISTRY
    from atbsn.inference import default_overlap, denoise, tile_alignment, tiling_work
    from atbsn.models import ATBSNModel, CBSNModel

    torch.manual_seed(0)
    net = ARCH_REGISTRY.get(arch)(**kwargs)
    wrapper = {"ATBSN": ATBSNModel, "CBSN": CBSNModel}.get(arch, Neighbor2Neighbor)
    model = wrapper({"net": net})
    model.train(False)
    channels = getattr(net, "in_channels", 3)
    x = torch.rand(1, channels, *size, generator=torch.Generator().manual_seed(1))
    overlap, align = default_overlap(model), tile_alignment(model)
    tile = -(-(overlap + 2 * align) // align) * align  # the smallest tile: the most seams
    if arch == "CBSN":
        tile += 2 * model.inference_pad  # the prepared image carries the reflect padding
    assert tiling_work(size[0] + (64 if arch == "CBSN" else 0), size[1], tile, overlap, align) > 1.0  # really tiled
    full = denoise(model, x, memory_limit_gb=float("inf"))
    tiled = denoise(model, x, tile=tile)
    assert (tiled - full).abs().max() < 1e-4, (arch, (tiled - full).abs().max().item())


def test_tiling_work_and_the_tile_that_keeps_it_under_1_2x():
    from atbsn.inference import MAX_TILING_WORK, efficient_tile, tiling_work

    assert tiling_work(1024, 1024, 512, 288, 32) == pytest.approx(3.40, abs=0.01)  # student C at 512 px: 3.4x
    side = efficient_tile(288, 32)
    assert side == 3328 and tiling_work(3000, 4000, side, 288, 32) <= MAX_TILING_WORK
    assert tiling_work(3000, 4000, 1024, 28, 4) < 1.05  # student A at the recipe's 1024 px
    assert tiling_work(500, 500, 512, 288, 32) == 1.0


def test_bf16_inference_stays_within_bf16_tolerance():
    """train.amp: bf16 at inference: autocast where the CPU has native bf16, fp32 (the same output) where not."""
    from atbsn.models.setup import setup_model
    from atbsn.options import validate

    def denoised(amp):
        opt = validate({"name": "bf", "model": {"type": "Neighbor2Neighbor"},
                        "networks": {"net": {"type": "ATBSNStudentC", "mid_channels": 16}}, "train": {"amp": amp}})
        torch.manual_seed(0)
        model = setup_model(opt, torch.device("cpu"))
        return model.denoise(torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(2)))

    fp32, bf16 = denoised(None), denoised("bf16")
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert (bf16 - fp32).abs().max().item() < 4e-2 * fp32.abs().max().item()  # measured here: 1.9e-2


def test_a_networks_tiles_reuse_freed_memory_and_give_it_back_after():
    """atbsn.inference runs the tiles inside freed_memory_reused: same-sized activations reuse the
    memory the previous tile freed instead of page-faulting it in (a third of student A's time on a
    12-MP photo), and after the tiles the memory goes back and glibc's defaults return (the
    adaptive strength's peak stays its own). ATBSN_MALLOC=system turns it off."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    code = """
import ctypes, resource, torch
from atbsn.utils.allocator import freed_memory_reused
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
x = torch.rand(1, 16, 1024, 1024)  # 64 MB: glibc would mmap every tensor of this size afresh
def faults(n):
    counts = []
    for _ in range(n):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        y = x * 2
        del y
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return counts
def mmapped_gb():  # 1 when a 1-GB tensor gets its own mmap (glibc's default), 0 when it comes from the heap
    before = libc.mallinfo2().hblkhd
    big = torch.empty(2**28)  # never written: nothing is faulted in
    return (libc.mallinfo2().hblkhd - before) >> 30
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20
plain = faults(4)
with freed_memory_reused() as on:
    with freed_memory_reused() as nested:
        reused = faults(20)  # the first few may still grow the heap (allocator.py says why; 30 runs: up to the 6th)
        inside = mmapped_gb()
    kept = torch.empty(1, 64, 1024, 1024).fill_(1)  # 256 MB freed inside the block ...
    del kept
    rss_inside = rss_mb()
rss_after = rss_mb()  # ... and given back when it ends
print(on, nested, min(plain), max(reused[12:]), inside, mmapped_gb(), rss_inside - rss_after)
"""
    for mode in ("", "system"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "ATBSN_MALLOC": mode})
        assert out.returncode == 0, out.stderr
        on, nested, plain, reused, inside, after, returned = out.stdout.split()
        assert int(plain) > 10000, out.stdout  # 16k pages per 64-MB tensor
        if mode == "system":
            assert on == nested == "False" and int(reused) > 10000 and inside == after == "1", out.stdout
            continue
        assert on == nested == "True"
        assert int(reused) < 100 and inside == "0", out.stdout
        assert after == "1", out.stdout  # glibc mmaps large tensors again after the block
        assert int(returned) > 200, out.stdout
