import re

import pytest
import torch

from atbsn.archs import DBSN, MWCNN, DBSNSigmaMu, DBSNSigmaN
from atbsn.archs.mwcnn import HaarDWT
from atbsn.errors import OptionsError, TrainingError
from atbsn.models.base_model import check_train_crop
from atbsn.weights import load_pretrained
from atbsn.models import DBSNDistillation, DBSNModel, Progress
from atbsn.models.dbsn import diagonal, gaussian_nll, posterior_mean

from conftest import run_cli, tiny_options, write_options


def small_nets(channels=1, noise="awgn", width=8, blocks=1, head=8):
    torch.manual_seed(0)
    out = 1 if channels == 1 else (6 if noise == "mg" else 3)
    return {"net": DBSN(channels, width=width, br1_blocks=blocks, br2_blocks=blocks),
            "sigma_mu": DBSNSigmaMu(width, out, head), "sigma_n": DBSNSigmaN(channels, out, head)}


def test_parameter_counts_of_the_official_shapes():
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert count(DBSN(1)) == 6612289 and count(DBSN(3)) == 6612675
    assert [count(DBSNSigmaMu(96, o, m)) for o, m in ((1, 16), (1, 32), (3, 32), (6, 32))] == [1841, 4193, 4259, 4358]
    assert [count(DBSNSigmaN(c, o, m)) for c, o, m in ((1, 1, 16), (1, 1, 32), (3, 3, 32), (3, 6, 32))] == \
        [865, 3265, 3395, 3494]
    mw = MWCNN()
    assert count(mw) == 16145892
    assert {n for n, p in mw.named_parameters() if not p.requires_grad} == {"DWT.weight", "IWT.weight"}
    assert "level3_next.block.6.weight" in mw.state_dict()  # the released gray MWCNN's keys


def test_haar_transform_is_interleaved_and_perfectly_invertible():
    x = torch.randn(2, 3, 8, 12)
    coeffs = HaarDWT()(x)
    assert coeffs.shape == (2, 12, 4, 6)
    cell = x[0, 1, :2, :2]
    assert torch.allclose(coeffs[0, 4, 0, 0], cell.sum() / 2)  # channel 1's LL comes 5th
    assert torch.allclose(coeffs[0, 5, 0, 0], (cell[0].sum() - cell[1].sum()) / 2)  # LH: as released (180 deg)
    assert torch.allclose(HaarDWT(inverse=True)(coeffs), x, atol=1e-6)


def lattice_hidden(radius: int, mask_radius: int, dilation: int, blocks: int) -> set:
    """Offsets a branch cannot see: not of the form (masked tap) + dilation * m, |m| <= 2 * blocks."""
    taps = {(a, b) for a in range(-mask_radius, mask_radius + 1) for b in range(-mask_radius, mask_radius + 1)} - {(0, 0)}
    r = 2 * blocks
    seen = {(a + dilation * i, b + dilation * j) for a, b in taps for i in range(-r, r + 1) for j in range(-r, r + 1)}
    window = {(a, b) for a in range(-radius, radius + 1) for b in range(-radius, radius + 1)}
    return window - seen


def test_blind_spot_lattice_connectivity():
    """Positive weights make every ReLU linear, so a zero gradient means no path: mu and f ignore the
    centre and exactly the offsets neither branch reaches (= 0 mod 6 where both branches reach)."""
    torch.manual_seed(0)
    net = DBSN(1, width=4, br1_blocks=2, br2_blocks=2).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.abs() + 0.01)
    r = net.receptive_radius
    assert (net.br1.receptive_radius, r) == (9, 14)
    size = 2 * r + 9
    c = size // 2
    expected = lattice_hidden(r, 1, 2, 2) & lattice_hidden(r, 2, 3, 2)
    assert (0, 0) in expected and (6, 6) in expected and (6, -12) in expected
    assert not any(a % 6 or b % 6 for a, b in expected if max(abs(a), abs(b)) <= 9)  # 0 mod 6 within br1's reach
    x = torch.rand(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    mu, f = net(x)
    for out in (mu[0, :, c, c].sum(), f[0, :, c, c].sum()):
        (g,) = torch.autograd.grad(out, x, retain_graph=True)
        seen = g[0, 0] != 0
        window = seen[c - r: c + r + 1, c - r: c + r + 1]
        assert seen.sum() == window.sum()
        assert {(int(i) - r, int(j) - r) for i, j in (~window).nonzero()} == expected


def test_perturbing_multiples_of_six_leaves_the_full_size_prior_mean_unchanged():
    torch.manual_seed(0)
    net = DBSN(1).eval()
    x = torch.rand(1, 1, 40, 40)
    p = (20, 20)
    with torch.no_grad():
        base = net(x)[0][0, 0, p[0], p[1]]
        for o, changes in (((0, 0), False), ((6, 0), False), ((-6, 12), False), ((18, -18), False),
                           ((1, 0), True), ((2, 0), True), ((3, 3), True), ((6, 3), True)):
            y = x.clone()
            y[0, 0, p[0] + o[0], p[1] + o[1]] += 0.5
            after = net(y)[0][0, 0, p[0], p[1]]
            assert bool(after != base) == changes, o


def test_mask_is_applied_on_every_pass_and_centre_taps_get_no_gradient():
    net = DBSN(1, width=4, br1_blocks=1, br2_blocks=1)
    x = torch.rand(1, 1, 16, 16)
    before = net(x)[0]
    with torch.no_grad():
        net.br1.branch[0].weight[..., 1, 1] += 100
        net.br2.branch[0].weight[..., 2, 2] += 100
    assert torch.equal(net(x)[0], before)
    net(x)[0].sum().backward()
    assert net.br1.branch[0].weight.grad[..., 1, 1].abs().sum() == 0
    assert "br1.branch.0.centre_mask" not in net.state_dict()


def test_gray_and_colour_losses_guard_and_posterior():
    torch.manual_seed(0)
    y, mu = torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 6, requires_grad=True)
    v_mu, v_n = torch.full_like(y, 1e-12), torch.full_like(y, 1e-12)
    value, hit, t1 = gaussian_nll(y, mu, v_mu, v_n, "map")
    assert hit and value.item() == 0.0 and t1 > 1e8
    value.backward()
    assert mu.grad.abs().sum() > 0  # the official guard zeroes the value, not the step
    assert not gaussian_nll(y, mu, v_mu, v_n, "map", pretrain=True)[1]  # gray MAP pretrain has no guard
    # colour with diagonal covariances = three independent gray problems (with the 1/2 factor)
    yc, muc = torch.rand(1, 3, 4, 5), torch.rand(1, 3, 4, 5)
    var_mu, var_n = torch.rand(1, 3, 4, 5) * 0.1 + 0.01, torch.rand(1, 3, 4, 5) * 0.1 + 0.01
    colour, _, _ = gaussian_nll(yc, muc, diagonal(var_mu), diagonal(var_n), "map")
    per_channel = ((yc - muc).square() / (var_mu + var_n) + torch.log(var_mu + var_n)).sum(1).mean() / 2
    assert torch.allclose(colour, per_channel, rtol=1e-5)
    xc = posterior_mean(yc, muc, diagonal(var_mu), diagonal(var_n))
    xg = torch.cat([posterior_mean(yc[:, i:i + 1], muc[:, i:i + 1], var_mu[:, i:i + 1], var_n[:, i:i + 1])
                    for i in range(3)], 1)
    assert torch.allclose(xc, xg, atol=1e-4)
    # gamma: the general formula weights y; the official gray test weights mu
    g = posterior_mean(y, mu.detach(), v_mu + 0.01, v_n + 0.02, 0.5)
    assert torch.allclose(g, (0.5 * y * 0.01 + mu.detach() * 0.02) / (0.5 * 0.01 + 0.02), atol=1e-6)


@pytest.mark.parametrize("stage,trained", [("mu_pretrain", {"net"}), ("sigma_pretrain", {"sigma_mu", "sigma_n"}),
                                           ("joint", {"net", "sigma_mu", "sigma_n"})])
@pytest.mark.parametrize("channels,noise", [(1, "awgn"), (1, "hg"), (3, "mg")])
def test_each_stage_updates_only_its_networks(stage, trained, channels, noise):
    model = DBSNModel(small_nets(channels, noise), noise=noise, stage=stage)
    model.train(True)
    assert model.networks["net"].training == ("net" in trained)
    before = {k: v.clone() for k, v in model.networks.state_dict().items()}
    opt = torch.optim.Adam(list(model.trainable_parameters()), 1e-3)
    out = model.training_step({"noisy": torch.rand(2, channels, 24, 24)}, Progress(0, 1, 0, 1))
    assert torch.isfinite(out["loss"])
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    after = model.networks.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == trained


def test_non_finite_sigma_stops_with_module_and_iteration():
    model = DBSNModel(small_nets(), noise="awgn")
    with torch.no_grad():
        model.networks["sigma_n"].conv_final.bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"networks.sigma_n produced non-finite values at iteration 4"):
        model.training_step({"noisy": torch.rand(1, 1, 12, 12)}, Progress(3, 10, 0, 10))


def test_bad_configurations():
    with pytest.raises(OptionsError, match="needs a colour backbone"):
        DBSNModel(small_nets(1), noise="mg")
    with pytest.raises(OptionsError, match="out_channels 6"):
        DBSNModel(small_nets(3, "awgn"), noise="mg")
    model = DBSNModel(small_nets(3, "hg"), noise="hg")
    with pytest.raises(OptionsError, match="expects 3-channel images, got 1"):
        model.training_step({"noisy": torch.rand(1, 1, 12, 12)}, Progress(0, 1, 0, 1))


def test_distillation_targets_and_synthetic_pairs():
    nets = small_nets()
    torch.manual_seed(1)
    nets["student"] = MWCNN(1, widths=(8, 8, 8), layers=1)
    model = DBSNDistillation(nets, noise="awgn")
    model.train(True)
    assert not model.networks["net"].training and model.networks["student"].training
    clean = torch.rand(8, 1, 16, 16)
    batch = {"noisy": clean + 0.1 * torch.randn_like(clean), "clean": clean, "seed": torch.arange(8)}
    out = model.training_step(batch, Progress(0, 1, 0, 1))
    manual = (0.1 * out["mse_pseudo"] + out["mse_synthetic"]) / 16
    assert torch.allclose(out["loss"], manual)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        noisy = model.synthesize(clean, g)
    sigma = model.networks["sigma_n"](clean)  # gray CNN_est at init: constant 3e-4 -> std ~0.0192
    std = (torch.nn.functional.softplus(sigma.mean() - 4) + 1e-3).item()
    assert 0.9 * std * 0.9 < (noisy - clean).std().item() < 1.1 * std * 1.1
    with pytest.raises(OptionsError, match="divisible by 8"):
        model.check_options({"datasets": {"train": {"batch_size": 12, "channels": 1}}})
    with pytest.raises(OptionsError, match="crop_size .*20.* multiple of 8"):
        check_train_crop(model, {"datasets": {"train": {"batch_size": 8, "channels": 1, "crop_size": 20}}})


def test_official_checkpoint_container_loads_by_role(tmp_path):
    nets = small_nets()
    ckpt = {"state_dict_dbsn": {f"module.{k}": v for k, v in nets["net"].state_dict().items()},
            "state_dict_sigma_mu": {f"module.{k}": v for k, v in nets["sigma_mu"].state_dict().items()},
            "state_dict_sigma_n": {f"module.{k}": v for k, v in nets["sigma_n"].state_dict().items()},
            "epoch": 3}
    torch.save(ckpt, tmp_path / "official.pth")
    torch.manual_seed(5)
    model = DBSNModel(small_nets(), noise="awgn")
    load_pretrained(model, {r: str(tmp_path / "official.pth") for r in ("net", "sigma_mu", "sigma_n")})
    for role in ("net", "sigma_mu", "sigma_n"):
        for k, v in nets[role].state_dict().items():
            assert torch.equal(model.networks[role].state_dict()[k], v)


def test_cli_stages_gray_into_colour_error_and_posterior_validation(tmp_path, image_folder):
    small = {"net": {"type": "DBSN", "in_channels": 1, "width": 8, "br1_blocks": 1, "br2_blocks": 1},
             "sigma_mu": {"type": "DBSNSigmaMu", "in_channels": 8, "out_channels": 1, "width": 8},
             "sigma_n": {"type": "DBSNSigmaN", "in_channels": 1, "out_channels": 1, "width": 8}}
    opt = tiny_options(tmp_path, image_folder, name="mu", model={"type": "DBSNModel", "noise": "awgn",
                                                                  "stage": "mu_pretrain"}, networks=small)
    for cfg in (opt["datasets"]["train"], opt["datasets"]["val"]["set"]):
        cfg.update(channels=1, convert_color=True)
    opt["datasets"]["train"]["crop_size"] = 32
    opt["val"]["metrics"] = ["dbsn_official"]
    code, out, err = run_cli("train.py", "-opt", write_options(tmp_path / "mu.yml", opt))
    assert code == 0, err
    opt.update(name="joint", model={"type": "DBSNModel", "noise": "awgn", "stage": "joint"})
    opt["path"]["pretrain_network"] = {"net": str(tmp_path / "experiments" / "mu" / "checkpoints" / "last.pth")}
    code, out, err = run_cli("train.py", "-opt", write_options(tmp_path / "joint.yml", opt))
    assert code == 0, err
    m = re.search(r"set \[dbsn_official, 6 images\]\s+PSNR ([\d.]+) dB \(noisy input ([\d.]+) dB\)", out)
    assert m and 5 < float(m.group(1)) < 50 and abs(float(m.group(2)) - 28.17) < 0.01, out  # the fixture: sigma 15
    # a colour backbone with gray datasets: one clear error before anything runs
    opt["name"] = "colour"
    opt["networks"]["net"]["in_channels"] = 3
    opt["networks"]["sigma_n"]["in_channels"] = 3
    opt["networks"]["sigma_mu"]["out_channels"] = opt["networks"]["sigma_n"]["out_channels"] = 3
    opt["path"]["pretrain_network"] = None
    code, _, err = run_cli("train.py", "-opt", write_options(tmp_path / "c.yml", opt))
    assert code == 2 and "datasets.train.channels is 1 but networks.net has in_channels 3" in err
    opt["model"]["noise"] = "poisson"
    code, _, err = run_cli("train.py", "-opt", write_options(tmp_path / "p.yml", opt))
    assert code == 2 and "noise" in err and "'awgn'" in err and "'mg'" in err


def test_dbsn_noise_models_as_specified():
    from atbsn.data.noise import build_noise

    clean = torch.full((3, 200, 200), 0.5)
    fixed = [[0.052886, 0.002695, 0.004399], [0.002695, 0.056920, 0.004446], [0.004399, 0.004446, 0.051680]]
    noisy = build_noise({"type": "multivariate_gaussian", "covariance": fixed})(clean, torch.Generator().manual_seed(0))
    std = (noisy - clean).flatten(1).std(1) * 255
    assert torch.allclose(std, torch.tensor([58.6, 60.8, 58.0]), atol=1.0)  # the spec's per-channel stds
    mg = build_noise({"type": "multivariate_gaussian"})
    g = torch.Generator().manual_seed(1)
    covs = [mg.random_covariance(g) for _ in range(3)]
    assert not torch.allclose(covs[0], covs[1])  # a fresh covariance per patch
    assert all(torch.linalg.eigvalsh(c).min() > 0 and c.max() <= (75 / 255) ** 2 for c in covs)
    with pytest.raises(OptionsError, match="not positive definite"):
        build_noise({"type": "multivariate_gaussian", "covariance": [[1, 2, 0], [2, 1, 0], [0, 0, 1]]})
    x = torch.rand(1, 64, 64)
    same = build_noise({"type": "heteroscedastic_gaussian", "sigma_s": 40, "sigma_c": 10, "same_z": True})
    z = (same(x, torch.Generator().manual_seed(2)) - x) / (40 / 255 * x + 10 / 255)  # official z1 = z2
    assert torch.allclose(z, torch.randn(x.shape, generator=torch.Generator().manual_seed(2)), atol=1e-4)
    indep = build_noise({"type": "heteroscedastic_gaussian", "sigma_s": 40, "sigma_c": 10})
    n = indep(torch.full((1, 300, 300), 0.5), torch.Generator().manual_seed(3)) - 0.5
    assert abs(n.std().item() * 255 - (20 ** 2 + 10 ** 2) ** 0.5) < 0.5  # sqrt(a^2 x^2 + d^2) at x = 0.5


def test_guard_hits_survive_a_checkpoint_round_trip(tmp_path):
    """The loop saves model.training_state() in every checkpoint and restores it on resume."""
    model = DBSNModel(small_nets(), noise="awgn")
    model.guard_hits = 3
    torch.save({"model_state": model.training_state()}, tmp_path / "c.pth")
    resumed = DBSNModel(small_nets(), noise="awgn")
    resumed.load_training_state(torch.load(tmp_path / "c.pth", weights_only=True)["model_state"])
    assert resumed.guard_hits == 3
    import inspect

    from atbsn.train.loop import Trainer

    assert '"model_state": self.model.training_state()' in inspect.getsource(Trainer.state)
    assert "load_training_state" in inspect.getsource(Trainer._resume)
