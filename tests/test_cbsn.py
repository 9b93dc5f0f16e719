import json
import os
import re

import numpy as np
import pytest
import torch

from atbsn.archs.cbsn import CBSN, cbsn_state_dict_from_tf, read_tf_variables
from atbsn.errors import CheckpointError, OptionsError
from atbsn.inference import denoise
from atbsn.models import CBSNModel, Progress
from atbsn.models.cbsn import batch_to_space, space_to_batch, standardize
from atbsn.utils.tf_bundle import crc32c, mask_crc, read_bundle, read_index, write_bundle

from conftest import run_cli, tiny_options, write_options


def tf_variables(net: CBSN) -> dict:
    """The official TF names and HWIO layout for a network's weights (inverse of the converter)."""
    out = {}
    for key, value in net.state_dict().items():
        parts = key.split(".")
        masked = parts[-2] == "conv1" and parts[0] in ("B1", "B2") and len(parts) == 3
        leaf = {"weight": "W1" if masked else "kernel", "bias": "b1" if masked else "bias"}[parts[-1]]
        out["DBSN/" + "/".join(parts[:-1] + [leaf])] = (value.permute(2, 3, 1, 0) if value.dim() == 4 else value).numpy()
    return out


def test_crc32c_known_answers():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    data = np.random.RandomState(0).bytes(4096 * 6 + 77)  # the chunked NumPy path
    state = 0xFFFFFFFF
    for b in data:  # bitwise reference
        state ^= b
        for _ in range(8):
            state = (state >> 1) ^ 0x82F63B78 if state & 1 else state >> 1
    assert crc32c(data) == state ^ 0xFFFFFFFF
    assert mask_crc(0) == 0xA282EAD8


def test_tf_bundle_round_trip_and_official_layout(tmp_path):
    torch.manual_seed(0)
    net = CBSN(width=8, num_modules=2)
    variables = tf_variables(net)
    prefix = str(tmp_path / "CBSN_SIDDtrain.ckpt")
    write_bundle(prefix, variables)
    index = read_index(prefix + ".index")
    assert index[""]["num_shards"] == 1
    names = sorted(variables, key=str.encode)
    offsets = np.cumsum([0] + [variables[n].nbytes for n in names])
    assert [index[n]["offset"] for n in names] == offsets[:-1].tolist()  # contiguous, bytewise key order
    assert names[0].startswith("DBSN/B1/DCM0/conv1/bias")  # uppercase before lowercase, bias before kernel
    assert os.path.getsize(prefix + ".data-00000-of-00001") == offsets[-1]
    assert index["DBSN/B2/conv1/W1"]["shape"] == [5, 5, 8, 8]
    back = read_bundle(prefix + ".index")
    assert set(back) == set(variables) and all(np.array_equal(back[k], variables[k]) for k in variables)
    loaded = CBSN(width=8, num_modules=2)
    loaded.load_state_dict(cbsn_state_dict_from_tf(read_tf_variables(prefix), width=8, num_modules=2))
    x = torch.randn(1, 3, 20, 20)
    assert torch.equal(loaded(x, blind=True), net(x, blind=True))
    write_bundle(prefix, variables, masked_crc=False)  # unmasked CRCs are accepted too
    assert np.array_equal(read_bundle(prefix)["DBSN/conv4/kernel"], variables["DBSN/conv4/kernel"])


def test_tf_bundle_errors(tmp_path):
    torch.manual_seed(0)
    variables = tf_variables(CBSN(width=4, num_modules=1))
    prefix = str(tmp_path / "m.ckpt")
    write_bundle(prefix, variables)
    shard = prefix + ".data-00000-of-00001"
    data = bytearray(open(shard, "rb").read())
    data[100] ^= 0xFF
    open(shard, "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch for variable 'DBSN/B1/DCM0/conv"):
        read_bundle(prefix)
    data[100] ^= 0xFF
    open(shard, "wb").write(bytes(data[:-10]))
    with pytest.raises(CheckpointError, match="too short: variable 'DBSN/conv4/kernel'"):
        read_bundle(prefix)
    os.remove(shard)
    with pytest.raises(CheckpointError, match="data shard .*m.ckpt.data-00000-of-00001' is missing"):
        read_bundle(prefix)
    with pytest.raises(CheckpointError, match="index .*nothing.ckpt.index' not found"):
        read_bundle(str(tmp_path / "nothing.ckpt"))
    extra = dict(variables, **{"DBSN/B3/conv1/kernel": np.zeros((1, 1, 4, 4), np.float32),
                               "global_step": np.zeros((), np.int64)})
    with pytest.raises(CheckpointError, match="2 unexpected variable name.*DBSN/B3/conv1/kernel, global_step"):
        cbsn_state_dict_from_tf(extra, width=4, num_modules=1)
    partial = {k: v for k, v in variables.items() if "conv4" not in k}
    with pytest.raises(CheckpointError, match="missing from the TF checkpoint: B1.conv4.bias"):
        cbsn_state_dict_from_tf(partial, width=4, num_modules=1)


def reachable(first_radius: int, dilation: int, modules: int) -> set:
    """Offsets one blind branch sees: masked first-layer taps plus sums of dilated 3x3 steps."""
    taps = {(a, b) for a in range(-first_radius, first_radius + 1) for b in range(-first_radius, first_radius + 1)}
    seen = taps - {(0, 0)}
    for _ in range(modules):  # residual modules: keep the old offsets, add one dilated step
        seen = seen | {(a + dilation * i, b + dilation * j) for a, b in seen for i in (-1, 0, 1) for j in (-1, 0, 1)}
    return seen


def test_blind_spot_structure():
    """With positive weights every ReLU is linear, so gradients expose connectivity. Blind mode hides
    the centre and only the offsets neither branch reaches (both coordinates multiples of 6 within the
    dilation-2 branch's radius, of 3 beyond it); non-blind mode sees the whole 2x29+1 square."""
    torch.manual_seed(0)
    modules = 3
    net = CBSN(width=4, num_modules=modules).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.abs() + 0.01)
    r = net.receptive_radius
    assert r == 2 + 3 * modules
    x = torch.rand(1, 3, 2 * r + 9, 2 * r + 9, dtype=torch.float64, requires_grad=True)
    c = r + 4
    expected_hidden = {(a, b) for a in range(-r, r + 1) for b in range(-r, r + 1)} - reachable(1, 2, modules) \
        - reachable(2, 3, modules)
    assert (0, 0) in expected_hidden and (6, 0) in expected_hidden and (3, 0) not in expected_hidden
    for blind in (True, False):
        (g,) = torch.autograd.grad(net(x, blind)[0, :, c, c].sum(), x)
        seen = g[0].abs().sum(0) > 0
        window = seen[c - r: c + r + 1, c - r: c + r + 1]
        assert seen.sum() == window.sum()  # nothing beyond the receptive radius
        hidden = {(int(i) - r, int(j) - r) for i, j in (~window).nonzero()}
        assert hidden == (expected_hidden if blind else set())


def test_own_pixel_perturbation_with_reference_weights():
    torch.manual_seed(1)
    net = CBSN(width=16, num_modules=2).eval()
    x = torch.randn(1, 3, 32, 32)
    y = x.clone()
    y[0, :, 15, 17] += 5.0
    with torch.no_grad():
        b0, b1 = net(x, blind=True), net(y, blind=True)
        n0, n1 = net(x, blind=False), net(y, blind=False)
    assert torch.equal(b0[..., 15, 17], b1[..., 15, 17])
    assert (b0 - b1).abs().amax(dim=1)[0, 15, 16] > 0  # a neighbour does see it
    assert (n0 - n1)[..., 15, 17].abs().max() > 1e-3


def test_mask_is_applied_on_the_fly_and_centre_taps_learn_only_non_blind():
    net = CBSN(width=4, num_modules=1)
    centre = net.B1.conv1.weight[..., 1, 1].clone()
    assert centre.abs().sum() > 0
    x = torch.randn(2, 3, 20, 20)
    net(x, blind=True).sum().backward()
    assert net.B1.conv1.weight.grad[..., 1, 1].abs().sum() == 0 and net.B2.conv1.weight.grad[..., 2, 2].abs().sum() == 0
    assert torch.equal(net.B1.conv1.weight[..., 1, 1], centre)
    net.zero_grad()
    net(x, blind=False).sum().backward()
    assert net.B1.conv1.weight.grad[..., 1, 1].abs().sum() > 0


def test_space_to_batch_and_standardisation():
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).view(2, 3, 10, 10)
    sub = space_to_batch(x, 5)
    assert sub.shape == (50, 3, 2, 2)
    assert torch.equal(sub[1 * 2 + 1, :, 0, 0], x[1, :, 0, 1])  # offset-major: index = offset * B + b
    assert torch.equal(batch_to_space(sub, 5), x)
    flat = torch.full((1, 3, 16, 16), 0.25)
    z, (mean, std) = standardize(flat)
    assert torch.allclose(std, torch.full_like(std, 1 / 16)) and z.abs().max() == 0


def test_training_step_terms_and_ramp():
    torch.manual_seed(0)
    model = CBSNModel({"net": CBSN(width=8, num_modules=1)}, ramp_iters=100)
    model.train(True)
    batch = {"noisy": torch.rand(2, 3, 20, 20), "seed": torch.tensor([5, 6])}
    early = model.training_step(batch, Progress(0, 200, 0, 10))
    assert torch.allclose(early["loss"], early["loss_blind"])
    late = model.training_step(batch, Progress(150, 200, 0, 10))
    assert torch.allclose(late["loss"], late["loss_blind"] + late["loss_self"] + 2 * late["loss_inv"])
    mid = model.training_step(batch, Progress(50, 200, 0, 10))
    assert torch.allclose(mid["loss"], mid["loss_blind"] + 0.5 * (mid["loss_self"] + 2 * mid["loss_inv"]))
    with pytest.raises(OptionsError, match="divisible by both strides"):
        model.training_step({"noisy": torch.rand(1, 3, 24, 24)}, Progress(0, 1, 0, 1))


def test_inference_standardises_the_whole_image_and_tiles_exactly():
    torch.manual_seed(0)
    model = CBSNModel({"net": CBSN(width=8, num_modules=2)})
    model.train(False)
    noisy = torch.rand(1, 3, 70, 90)
    full = denoise(model, noisy)
    assert full.min() >= 0 and full.max() <= 1
    tiled = denoise(model, noisy, tile=48, overlap=2 * model.networks["net"].receptive_radius)
    assert (tiled - full).abs().max() < 1e-5
    x, (mean, std) = standardize(noisy)
    with torch.no_grad():
        padded = torch.nn.functional.pad(x, (32,) * 4, mode="reflect")
        manual = (model.networks["net"](padded, blind=False)[..., 32:-32, 32:-32] * std + mean).clamp(0, 1)
    assert torch.allclose(full, manual, atol=1e-6)


def test_patch_size_not_divisible_by_both_strides_is_rejected(tmp_path, image_folder):
    opt = tiny_options(tmp_path, image_folder, model={"type": "CBSNModel"},
                       networks={"net": {"type": "CBSN", "width": 8, "num_modules": 1}})
    opt["datasets"]["train"]["crop_size"] = 64
    code, _, err = run_cli("train.py", "-opt", write_options(tmp_path / "o.yml", opt))
    assert code == 2 and "crop_size (64) must be divisible by both strides" in err and "multiple of 10" in err


def test_short_training_run_and_converted_checkpoint_from_the_cli(tmp_path, image_folder):
    opt = tiny_options(tmp_path, image_folder, name="cbsn", model={"type": "CBSNModel", "ramp_iters": 2},
                       networks={"net": {"type": "CBSN", "width": 8, "num_modules": 1}})
    opt["datasets"]["train"].update(type="NoisyFolderDataset", root=str(image_folder / "noisy"), crop_size=40)
    del opt["datasets"]["train"]["noise"]
    opt["val"]["metrics"] = ["cbsn_fixed_val", "basicsr_rgb"]
    code, out, err = run_cli("train.py", "-opt", write_options(tmp_path / "o.yml", opt))
    assert code == 0, err
    ckpt = tmp_path / "experiments" / "cbsn" / "checkpoints" / "last.pth"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert "B1.conv1.weight" in state["networks"]["net"]
    # the same weights as a TF bundle, converted back and evaluated with valid.py
    net = CBSN(width=8, num_modules=1)
    net.load_state_dict(state["networks"]["net"])
    write_bundle(str(tmp_path / "tf" / "model.ckpt"), tf_variables(net))
    code, out, err = run_cli("scripts/convert_cbsn_tf.py", str(tmp_path / "tf" / "model.ckpt"),
                             str(tmp_path / "converted.pth"), "--width", "8", "--num-modules", "1")
    assert code == 0 and "34 TF variables (4,175 parameters)" in out, err
    code, _, err = run_cli("scripts/convert_cbsn_tf.py", str(tmp_path / "tf" / "model.ckpt"),
                           str(tmp_path / "converted.pth"))
    assert code == 2 and "exists" in err
    opt["path"]["pretrain_network"] = str(tmp_path / "converted.pth")
    opt["name"] = "cbsn_valid"
    code, out, err = run_cli("valid.py", "-opt", write_options(tmp_path / "v.yml", opt))
    assert code == 0, err
    summary = json.load(open(tmp_path / "results" / "cbsn_valid" / "summary.json"))
    fixed = summary["summary"]["set"]["cbsn_fixed_val"]
    assert fixed["count"] == 6 and 10 < fixed["psnr"] < 50
    # test.py: the same pipeline (whole-image standardisation, pad 32, non-blind, round) to PNGs
    code, out, err = run_cli("test.py", "-opt", str(tmp_path / "v.yml"), "--input", str(image_folder / "noisy"),
                             "--output", str(tmp_path / "out"))
    assert code == 0, err
    from atbsn.utils.image import quantize, read_image

    noisy = read_image(str(image_folder / "noisy" / "img0.png"))[0]
    model = CBSNModel({"net": net})
    model.train(False)
    expected = denoise(model, torch.from_numpy(noisy.transpose(2, 0, 1).copy())[None])[0].numpy().transpose(1, 2, 0)
    written = read_image(str(tmp_path / "out" / "img0.png"))[0]
    assert abs(written * 255 - quantize(expected, 8).astype(np.float64)).max() <= 1
    # the diagnosis script: the official pipeline's PSNR (rounded to 8 bits) and the variants
    code, out, err = run_cli("scripts/cbsn_inference_variants.py", str(ckpt), "--noisy", str(image_folder / "noisy"),
                             "--clean", str(image_folder / "clean"), "--window", "32")
    assert code == 0, err
    rows = dict(re.findall(r"^(\S+(?: input)?)\s+PSNR ([\d.]+) dB", out, re.M))
    assert set(rows) == {"noisy input", "official", "blind", "local_mean", "tiles"}, out
    clean = [read_image(str(image_folder / "clean" / f"img{i}.png"))[0] for i in range(6)]
    noisy_psnr = np.mean([10 * np.log10(1 / np.mean((read_image(str(image_folder / "noisy" / f"img{i}.png"))[0] - c) ** 2))
                          for i, c in enumerate(clean)])
    assert abs(float(rows["noisy input"]) - noisy_psnr) < 0.01
    official = np.mean([10 * np.log10(1 / np.mean((np.round(denoise(model, torch.from_numpy(
        read_image(str(image_folder / "noisy" / f"img{i}.png"))[0].transpose(2, 0, 1).copy())[None])[0].numpy()
        .transpose(1, 2, 0) * 255) / 255 - c) ** 2)) for i, c in enumerate(clean)])
    assert abs(float(rows["official"]) - official) < 0.01, (rows, official)


def test_local_mean_centering_feeds_the_high_pass_and_adds_the_mean_back():
    """model.centering: local_mean standardises the image minus its box mean, in training and at
    inference; an identity network then returns the input, as with the official pipeline."""
    class Identity(torch.nn.Module):
        input_multiple = 1
        receptive_radius = 0

        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))  # a device to be on

        def forward(self, x, blind=False):
            return x

    torch.manual_seed(0)
    noisy = torch.rand(1, 3, 40, 50) * 0.5 + torch.linspace(0, 0.4, 50)  # a brightness ramp
    seen = {}
    for centering in ("none", "local_mean"):
        model = CBSNModel({"net": Identity()}, centering=centering, centering_window=9)
        model.train(False)
        assert torch.allclose(model.denoise(noisy), noisy, atol=1e-5)
        x, _ = model.prepare(noisy)
        seen[centering] = x[..., 32:-32, 32:-32]
    box = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(noisy, (4, 4, 4, 4), mode="replicate"), 9, stride=1)
    expected, _ = standardize(noisy - box)
    assert torch.allclose(seen["local_mean"], expected, atol=1e-5)
    assert not torch.allclose(seen["none"], seen["local_mean"], atol=1e-2)
    with pytest.raises(OptionsError, match="model.centering"):
        CBSNModel({"net": Identity()}, centering="input_mean")
