
import pytest
import torch
import torch.nn.functional as F

import atbsn.archs.atbsn as atbsn_arch
from atbsn.archs import ATBSN, ATBSNStudentA, ATBSNStudentC
from atbsn.archs.atbsn import ROTATIONS, pad_bottom_right, rotated_block, shift_down
from atbsn.errors import CheckpointError, OptionsError
from atbsn.models import ATBSNDistillation, ATBSNModel, Progress
from atbsn.options import validate
from atbsn.weights import extract_state_dict, load_network

from conftest import tiny_options


def _blind_sets(net, k, positions, size=64):
    """Per output pixel, the input pixels within 7 px with zero gradient. Max-pooling routes gradient
    to the arg-max only, so the test swaps in average pooling, which has the same connectivity."""
    inp = torch.rand(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    out = net(inp, hole_size=k)
    sets = []
    for y, x in positions:
        (grad,) = torch.autograd.grad(out[0, :, y, x].sum(), inp, retain_graph=True)
        g = grad[0].abs().sum(0)[y - 7: y + 8, x - 7: x + 8]
        sets.append({(int(i) - 7, int(j) - 7) for i, j in (g == 0).nonzero()})
    return sets


@pytest.mark.parametrize("k,count", [(0, 0), (1, 1), (3, 9), (5, 26), (7, 54), (9, 90), (11, 134)])
def test_blind_spot_geometry(monkeypatch, k, count):
    monkeypatch.setattr(atbsn_arch, "pool", lambda x, blind: F.avg_pool2d(shift_down(x, 1) if blind else x, 2))
    torch.manual_seed(0)
    net = ATBSN(mid_channels=4).double()  # connectivity does not depend on the width
    s = (k + 1) // 2
    positions = ((32, 32), (33, 33), (32, 33), (33, 32))
    for (y, x), blind in zip(positions, _blind_sets(net, k, positions)):
        assert len(blind) == count, (k, y, x, len(blind))
        square = {(i, j) for i in range(-s + 1, s) for j in range(-s + 1, s)}
        assert square <= blind and all(max(abs(i), abs(j)) <= s for i, j in blind)


def test_perturbing_hidden_pixels_leaves_the_output_unchanged():
    torch.manual_seed(0)
    net = ATBSN().eval()
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        base = net(x, hole_size=3)
        for dy, dx in ((0, 0), (1, 1), (-1, 0)):  # inside the 3x3 hole: exactly no effect
            x2 = x.clone()
            x2[..., 30 + dy, 30 + dx] += 500
            assert torch.equal(net(x2, hole_size=3)[..., 30, 30], base[..., 30, 30])
        x2 = x.clone()
        x2[..., 30, 30] += 500
        assert not torch.equal(net(x2, hole_size=0)[..., 30, 30], net(x, hole_size=0)[..., 30, 30])
        x2 = x.clone()
        x2[..., 27, 30] += 500  # 3 rows above: visible at k = 3
        assert not torch.equal(net(x2, hole_size=3)[..., 30, 30], base[..., 30, 30])


def test_any_input_size_without_changing_conforming_results():
    torch.manual_seed(0)
    net = ATBSN().eval()
    x = torch.rand(1, 3, 64, 64) * 255
    assert torch.equal(net(x, hole_size=3), net.head(net.features(x), 3))  # training: the official batched graph
    with torch.no_grad():
        direct = net.head(net.features(x), 3)
        # inference: one rotation at a time and a striped head (a quarter of the memory), same maths
        assert torch.equal(net(x, hole_size=3), net.lean_forward(x, 3))
        assert torch.allclose(net(x, hole_size=3), direct, rtol=0, atol=1e-3)
        separate = net.head([net.unet(torch.rot90(x, k, dims=(-2, -1))) for k in ROTATIONS], 3)
        assert torch.allclose(separate, direct, rtol=0, atol=1e-3)  # per-rotation passes: same maths
        odd = torch.rand(1, 3, 50, 77) * 255
        out = net(odd, hole_size=3)
        assert out.shape == odd.shape
        padded = pad_bottom_right(odd, 32, "reflect")
        torch.testing.assert_close(out, net.head(net.features(padded), 3)[..., :50, :77], rtol=0, atol=1e-3)
        student = ATBSNStudentC().eval()
        assert student(odd).shape == odd.shape
        assert ATBSNStudentA()(odd).shape == odd.shape


def test_bad_hole_sizes_crops_and_checkpoints(tmp_path, image_folder):
    net = ATBSN()
    with pytest.raises(OptionsError, match="non-negative integer"):
        net(torch.rand(1, 3, 32, 32), hole_size=-1)
    with pytest.raises(OptionsError, match="too large"):
        net(torch.rand(1, 3, 32, 32), hole_size=80)
    with pytest.raises(OptionsError, match="non-negative integer"):
        ATBSNModel({"net": net}, train_hole_size=2.5)
    opt = tiny_options(tmp_path, image_folder, model={"type": "ATBSNModel"}, networks={"net": {"type": "ATBSN"}})
    opt["datasets"]["train"].update(type="NoisyFolderDataset", root=str(image_folder / "noisy"), crop_size=48)
    del opt["datasets"]["train"]["noise"]
    from atbsn.train.loop import Trainer

    with pytest.raises(OptionsError, match="crop_size \\(48\\) must be a multiple of 32"):
        Trainer(validate(opt))
    with pytest.raises(CheckpointError, match="missing keys \\(6\\): nin_A.weight"):
        load_network(ATBSN(), ATBSNStudentC().state_dict(), True, "student.pth")
    with pytest.raises(CheckpointError, match="shape mismatches: unet.dec1.conv2.conv.weight"):
        load_network(ATBSNStudentC(), {k: v for k, v in ATBSN().state_dict().items() if k.startswith("unet.")},
                     True, "teacher.pth")


def test_official_distilled_container_splits_by_prefix():
    t, s = ATBSN(), ATBSNStudentC()
    container = {**{f"bsn.{k}": v for k, v in t.state_dict().items()},
                 **{f"nbsn.{k}": v for k, v in s.state_dict().items()}}
    for role, net in (("teacher", ATBSN()), ("student", ATBSNStudentC())):
        load_network(net, extract_state_dict(container, role, "atbsn-d.pth", ATBSNDistillation.official_state_dict),
                     True, "atbsn-d.pth")
    assert torch.equal(net.unet.intro.conv.weight, s.unet.intro.conv.weight)


def test_distillation_runs_the_teacher_unet_once_and_sums_terms():
    torch.manual_seed(0)
    teacher, student = ATBSN(), ATBSNStudentC()
    calls = []
    teacher.unet.register_forward_hook(lambda *a: calls.append(1))
    model = ATBSNDistillation({"teacher": teacher, "student": student})
    model.init_training()
    model.train(True)
    assert not teacher.training and student.training and not any(p.requires_grad for p in teacher.parameters())
    out = model.training_step({"noisy": torch.rand(2, 3, 32, 32)}, Progress(0, 1, 0, 1))
    assert len(calls) == 1  # one stacked U-Net pass for all 7 hole sizes
    terms = [out[f"l1_k{k}"] for k in (0, 1, 3, 5, 7, 9, 11)]
    assert torch.allclose(out["loss"], torch.stack(terms).sum())
    mean = ATBSNDistillation({"teacher": teacher, "student": student}, mean_teacher=True)
    assert set(mean.training_step({"noisy": torch.rand(2, 3, 32, 32)}, Progress(0, 1, 0, 1))) == {"loss"}
    with pytest.raises(OptionsError, match="shares no U-Net keys"):
        ATBSNDistillation({"teacher": teacher, "student": ATBSNStudentA()}).init_training()


def test_teacher_ensemble_averages_hole_sizes():
    torch.manual_seed(0)
    net = ATBSN().eval()
    model = ATBSNModel({"net": net}, ensemble_hole_sizes=[1, 3, 5])
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        expected = torch.stack([net(x * 255, hole_size=k) for k in (1, 3, 5)]).mean(0) / 255
        assert torch.allclose(model.denoise(x), expected, atol=1e-5)


def test_stage1_checkpoint_loads_as_the_distillation_teacher():
    t = ATBSN()
    ckpt = {"iteration": 10, "networks": {"net": t.state_dict()}}
    teacher = ATBSN()
    load_network(teacher, extract_state_dict(ckpt, "teacher", "stage1.pth"), True, "stage1.pth")
    assert torch.equal(teacher.nin_C.weight, t.nin_C.weight)
    with pytest.raises(CheckpointError, match="has networks \\['a', 'b'\\], not 'teacher'"):
        extract_state_dict({"networks": {"a": {}, "b": {}}}, "teacher", "x.pth")


def test_rotated_block_is_the_block_of_the_rotation():
    f = torch.rand(2, 3, 7, 11)
    for r in range(-3, 4):
        rotated = torch.rot90(f, r, dims=(-2, -1))
        h, w = rotated.shape[-2:]
        for a, b, c, d in ((0, h, 0, w), (1, h - 2, 2, w - 1), (3, 4, 0, 5)):
            assert torch.equal(rotated_block(f, r, (a, b), (c, d)), rotated[..., a:b, c:d])


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 64, 96), (1, 3, 96, 32)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_lean_inference_equals_the_batched_graph(shape, channels_last):
    """Inference assembles each head stripe from the four rotated, unshifted branches and pools
    without a shifted copy: the same numbers as the official graph, for every shift and layout."""
    torch.manual_seed(0)
    net = ATBSN(mid_channels=8).eval()
    x = torch.rand(*shape) * 255
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        net = net.to(memory_format=torch.channels_last)
    for k in (0, 1, 3, 9, 11):
        with torch.no_grad():
            lean = net(x, hole_size=k)
        with torch.enable_grad():  # the training graph: shifted pools, cat of upsampled maps
            batched = net.head([net.unet(torch.rot90(x, r, dims=(-2, -1))) for r in ROTATIONS], k)
        assert torch.allclose(lean, batched, rtol=0, atol=1e-3), (k, (lean - batched).abs().max())
        assert lean.shape == x.shape


def test_polyphase_rewrites_equal_the_full_resolution_convs():
    """phase_weight / upsampled_weight / replicate_conv3x3 compute the same convs (float64: exact
    up to rounding), for zero and replicate padding."""
    import torch.nn.functional as F

    from atbsn.archs.polyphase import phase_weight, replicate_conv3x3, upsampled_weight

    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    x = torch.randn(2, 3, 10, 14, generator=g, dtype=torch.float64)
    for mode in ("constant", "replicate"):
        direct = F.conv2d(F.pad(x, (1, 1, 1, 1), mode=mode), w)
        phases = F.conv2d(F.pixel_unshuffle(F.pad(x, (2, 2, 2, 2), mode=mode), 2), phase_weight(w))
        for a in range(2):
            for b in range(2):
                got = phases[:, (2 * a + b) * 5:(2 * a + b + 1) * 5]
                assert (got - direct[..., a::2, b::2]).abs().max() < 1e-12
        h = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64)
        up = F.interpolate(h, scale_factor=2, mode="nearest")
        direct = F.conv2d(F.pad(up, (1, 1, 1, 1), mode=mode), w)
        folded = F.pixel_shuffle(F.conv2d(F.pad(h, (1, 1, 1, 1), mode=mode), upsampled_weight(w)), 2)
        assert (folded - direct).abs().max() < 1e-12
    for shape in ((1, 3, 1, 6), (1, 3, 2, 2), (2, 3, 9, 4)):
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        assert (replicate_conv3x3(x, w) - F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w)).abs().max() < 1e-12


@pytest.mark.parametrize("arch", ["ATBSNStudentA", "ATBSNStudentB"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_student_inference_paths_equal_the_official_graph(arch, channels_last):
    """Students at inference: replicate convs without padded copies, upsampling written into the
    concatenation, and (A) its full-resolution convs at half resolution; within 1e-5 of [0, 1]
    (1e-6 here), on sizes that take the rewrite (multiples of 4) and those that do not."""
    from atbsn.archs import ARCH_REGISTRY
    from atbsn.archs.atbsn import official_ops

    torch.manual_seed(0)
    net = ARCH_REGISTRY.get(arch)().eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    for shape in ((2, 3, 64, 96), (1, 3, 68, 36), (1, 3, 66, 98), (1, 3, 63, 97)):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 255
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            lean = net(x)
            with official_ops():
                official = net(x)
        assert lean.shape == official.shape == x.shape
        assert (lean - official).abs().max() / 255 < 1e-6, (shape, (lean - official).abs().max())
    weights_before = net.dec1.state_dict()
    with torch.no_grad():  # folded weights follow a weight change
        for p in net.parameters():
            p.mul_(0.5)
        with official_ops():
            official = net(x[..., :64, :64])
        assert (net(x[..., :64, :64]) - official).abs().max() / 255 < 1e-6
    assert weights_before.keys() == net.dec1.state_dict().keys()


def test_max_pool2x2_equals_max_pool2d_in_every_layout_and_dtype():
    """The inference pool (two maxima over views in bf16 channels_last) gives max_pool2d's values
    exactly, NaN included; other layouts, odd sizes and fp32 take max_pool2d itself."""
    from atbsn.archs.atbsn import max_pool2x2

    g = torch.Generator().manual_seed(3)
    for shape in ((2, 5, 8, 6), (1, 48, 16, 16), (1, 4, 7, 9), (1, 1, 4, 4)):
        for dtype in (torch.bfloat16, torch.float32):
            for cl in (False, True):
                x = torch.randn(*shape, generator=g).to(dtype)
                x[0, 0, 1, 1] = float("nan")
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.no_grad():
                    ours, ref = max_pool2x2(x), F.max_pool2d(x, 2)
                assert ours.shape == ref.shape and ours.dtype == ref.dtype
                assert torch.equal(ours.isnan(), ref.isnan()) and torch.equal(ours.nan_to_num(), ref.nan_to_num())
