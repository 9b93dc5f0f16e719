"""The adaptive strength (atbsn/strength.py): the noise level from the noisy image alone, a change
kept only as far as the noise explains it, the gain estimate, and test.py's strength.csv; and the
recipe's ``train.amp: auto`` switch."""
import csv
import logging

import numpy as np
import pytest
import torch

from atbsn.strength import adaptive_blend, noise_variance

from conftest import run_cli, student_a_options, write_options


def _textured(h=192, w=192, seed=0):
    """Half flat, half fine stripes and checks (texture a blur would erase), in [0.2, 0.8]."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 0.5 + 0.25 * np.cos(yy / 30)  # the flat and the striped half share every brightness
    texture = 0.12 * np.sign(np.sin(xx * 1.3) * np.sin(yy * 1.1)) * (xx > w / 2)
    img = np.clip(base + texture, 0, 1)[None].repeat(3, 0) + rng.uniform(-0.02, 0.02, (3, 1, 1))
    return torch.from_numpy(img).float()[None]


WIENER_ONLY = {"mild_sigma": 255.0, "heavy_sigma": 255.0}  # the shrinkage at every noise level


def _mse(a, b):
    return float((a - b).pow(2).mean())


def test_noise_variance_of_white_and_signal_dependent_noise():
    clean = _textured()
    g = torch.Generator().manual_seed(0)
    for sigma in (2.0, 5.0, 12.0):  # 8-bit levels
        noisy = clean + torch.randn(clean.shape, generator=g) * sigma / 255
        est = noise_variance(noisy).mean().sqrt().item() * 255
        assert 0.8 * sigma < est < 1.15 * sigma, (sigma, est)
    # noise that grows with brightness: the estimate follows it (dark half vs bright half)
    ramp = torch.linspace(0.1, 0.9, 192).view(1, 1, 1, -1).expand(1, 3, 192, 192)
    sd = (1 + 10 * ramp) / 255
    noisy = ramp + torch.randn(ramp.shape, generator=g) * sd
    s2 = noise_variance(noisy)
    dark, bright = s2[..., :48].mean().sqrt() * 255, s2[..., -48:].mean().sqrt() * 255
    assert 2.0 < dark < 3.6 and 8.0 < bright < 11.5, (dark, bright)


def test_adaptive_blend_never_makes_the_image_worse_and_keeps_texture():
    """A prediction that does not see the pixel's noise (clean + its own error) and a blur that
    erases the stripes: the blend beats both the input and the candidate, and the estimated gain
    is within 0.6 dB of the true one."""
    clean = _textured()
    g = torch.Generator().manual_seed(1)
    for sigma in (3.0, 8.0, 20.0):
        noise = torch.randn(clean.shape, generator=g) * sigma / 255
        noisy = clean + noise
        blind = clean + torch.randn(clean.shape, generator=g) * 0.6 * sigma / 255  # independent of the noise
        import cv2

        blur = torch.from_numpy(cv2.GaussianBlur(noisy[0].numpy().transpose(1, 2, 0), (0, 0), 2.0)
                                .transpose(2, 0, 1)).float()[None]
        for cand in (blind, blur):
            out, (report,) = adaptive_blend(noisy, cand, **WIENER_ONLY)
            true_gain = 10 * np.log10(_mse(noisy, clean) / _mse(out, clean))
            assert _mse(out, clean) < _mse(noisy, clean)
            assert _mse(out, clean) < _mse(cand, clean) * 1.02
            assert abs(report.estimated_gain_db - true_gain) < 0.6, (sigma, report, true_gain)
            assert 0 < report.mean_strength <= 1 and not report.kept_input
        # the striped half keeps its texture: the blur's loss there is mostly undone
        _, half = clean.shape[-1], clean.shape[-1] // 2
        out, _ = adaptive_blend(noisy, blur, **WIENER_ONLY)
        assert _mse(out[..., half:], clean[..., half:]) < 0.5 * _mse(blur[..., half:], clean[..., half:])


def test_a_change_the_noise_does_not_explain_is_undone_and_min_gain_keeps_the_input():
    clean = _textured()
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(2)) * 2 / 255
    shifted = noisy + 0.2  # a brightness change 50x the noise
    out, (report,) = adaptive_blend(noisy, shifted)
    assert (out - noisy).abs().mean() < 0.01 and report.mean_strength < 0.01
    out, (report,) = adaptive_blend(noisy, clean, min_gain_db=50.0)
    assert torch.equal(out, noisy) and report.kept_input and report.estimated_gain_db == 0.0


def test_heavy_noise_keeps_the_full_change_and_mild_noise_is_averaged_with_nl_means():
    """Above heavy_sigma the network's change is kept in full (w = 1, no NL-means); at or below
    mild_sigma the output is the mean of the shrinkage and NL-means, between mild and heavy both fade."""
    from atbsn.strength import heaviness, nl_means

    assert heaviness(5, 8, 14) == 0 and heaviness(20, 8, 14) == 1 and heaviness(11, 8, 14) == pytest.approx(0.5)
    clean = _textured()
    g = torch.Generator().manual_seed(3)
    heavy = clean + torch.randn(clean.shape, generator=g) * 25 / 255
    cand = clean + torch.randn(clean.shape, generator=g) * 3 / 255
    out, (report,) = adaptive_blend(heavy, cand, classical_mix=0.5)
    assert torch.allclose(out, cand) and report.heaviness == 1 and report.mean_strength == 1
    assert report.classical_mix == 0
    mild = clean + torch.randn(clean.shape, generator=g) * 4 / 255
    shrunk, (r0,) = adaptive_blend(mild, cand, classical_mix=0.0)
    mixed, (r1,) = adaptive_blend(mild, cand, classical_mix=0.5)
    nlm = nl_means(mild[0], 1.25 * r1.noise_sigma)
    assert r1.heaviness == 0 and r1.classical_mix == 0.5 and r1.estimated_gain_db == r0.estimated_gain_db
    assert torch.allclose(mixed[0], 0.5 * shrunk[0] + 0.5 * nlm, atol=1e-6)
    assert _mse(mixed, clean) < _mse(mild, clean)


def test_clipped_highlights_neither_zero_the_noise_estimate_nor_turn_black():
    """A photo whose sky is clipped to white (Kodak's kodim20: 12% of it) has exactly flat blocks.
    Counted in the noise quantiles they took its estimate to 0, and the Wiener step divided 0 by 0
    there: the sky came out black (9.2 dB). Flat blocks are left out of the estimate, the clipped
    region stays white, and an image with no measurable noise at all is kept as it is."""
    clean = _textured()
    g = torch.Generator().manual_seed(5)
    noisy = (clean + torch.randn(clean.shape, generator=g) * 3 / 255).clamp(0, 1)
    noisy[..., :96, :] = 1.0  # the top half clipped: 50% of the blocks exactly flat
    est = noise_variance(noisy[..., 96:, :]).mean().sqrt().item() * 255
    est_clipped = noise_variance(noisy)[..., 96:, :].mean().sqrt().item() * 255
    assert 2.4 < est < 3.5 and abs(est_clipped - est) < 0.5, (est, est_clipped)
    out, (report,) = adaptive_blend(noisy, clean.clone(), classical_mix=0.75, wiener_refine=2.0)
    assert torch.isfinite(out).all() and report.noise_sigma > 1.0
    assert (out[..., :90, :] - 1.0).abs().max() < 1.5 / 255  # the clipped sky stays white
    assert _mse(out[..., 96:, :], clean[..., 96:, :]) < _mse(noisy[..., 96:, :], clean[..., 96:, :])
    flat = torch.full((1, 3, 64, 64), 0.5)
    out, (report,) = adaptive_blend(flat, flat + 0.1, classical_mix=0.75, wiener_refine=2.0)
    assert report.noise_sigma == 0 and report.kept_input and torch.equal(out, flat)


def test_test_py_writes_the_strength_csv_and_a_summary(tmp_path, image_folder):
    opt = student_a_options(tmp_path, image_folder, "strength")
    opt["val"]["strength"] = {"mode": "adaptive"}
    path = write_options(tmp_path / "s.yml", opt)
    code, out, err = run_cli("test.py", "-opt", path, "--input", str(image_folder / "noisy"),
                             "--output", str(tmp_path / "out"))
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "out" / "strength.csv")))
    assert len(rows) == 6 and {r["output"].rsplit("/", 1)[-1] for r in rows} == {f"img{i}.png" for i in range(6)}
    for r in rows:  # the fixture's noise is Gaussian with sigma 15 (clipped at the ends)
        assert 9 < float(r["noise_sigma_8bit"]) < 17, r
        assert 0 <= float(r["mean_strength"]) <= 1
    summary = [line for line in out.splitlines() if line.startswith("adaptive strength:")]
    assert len(summary) == 1 and "estimated noise sigma" in summary[0] and "strength.csv" in summary[0]


def test_adaptive_strength_in_the_python_api_matches_test_py(tmp_path, image_folder):
    from atbsn.inference import Denoiser
    from atbsn.utils.image import read_image

    opt = student_a_options(tmp_path, image_folder, "api")
    opt["val"]["strength"] = {"mode": "adaptive"}
    den = Denoiser.from_options(write_options(tmp_path / "api.yml", opt), device="cpu")
    noisy = (read_image(str(image_folder / "noisy" / "img0.png"))[0] * 255).round().astype(np.uint8)
    full = den.model.strength
    adaptive = den(noisy).astype(np.float64)
    den.model.strength = {"mode": "full"}
    plain = den(noisy).astype(np.float64)
    den.model.strength = full
    # the adaptive output lies between the input and the network's output, pixel by pixel
    lo, hi = np.minimum(noisy, plain) - 1, np.maximum(noisy, plain) + 1
    assert ((adaptive >= lo) & (adaptive <= hi)).all()


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_is_bf16_where_native_and_says_so(monkeypatch, caplog, native):
    from atbsn.models import setup

    monkeypatch.setattr(setup, "native_cpu_bf16", lambda: native)
    with caplog.at_level(logging.INFO, logger="atbsn"):
        dtype = setup.autocast_dtype("auto", torch.device("cpu"))
    assert dtype is (torch.bfloat16 if native else None)
    assert len(caplog.records) == 1
    assert ("bf16 autocast" if native else "fp32") in caplog.records[0].getMessage()


def test_the_recipe_trains_with_amp_auto():
    from atbsn.options import load_options

    assert load_options("options/train/noisy_folder.yml")["train"]["amp"] == "auto"
    assert load_options("options/test/noisy_folder.yml")["val"]["strength"]["mode"] == "adaptive"


def _dense_patch_wiener(noisy, pilot, sigma2, n, stride):
    """The DCT Wiener filter written out patch by patch (unfold, full 2-D basis): the reference for
    the separable, chunked one."""
    import torch.nn.functional as F
    from atbsn.strength import dct_matrix

    c = dct_matrix(n)
    basis = torch.einsum("ai,bj->abij", c, c).reshape(n * n, n * n)
    pad = n - 1
    xp, pp = (F.pad(t, (pad,) * 4, mode="reflect") for t in (noisy, pilot))
    vp = F.pad(sigma2, (pad,) * 4, mode="replicate")
    Y, P = basis @ F.unfold(xp, n, stride=stride), basis @ F.unfold(pp, n, stride=stride)
    v = F.unfold(vp, n, stride=stride).mean(1, keepdim=True)
    g = P ** 2 / (P ** 2 + v)
    wgt = 1 / (v * (g ** 2).sum(1, keepdim=True))
    num = F.fold(basis.T @ (g * Y * wgt), xp.shape[-2:], n, stride=stride)
    den = F.fold(wgt.expand(-1, n * n, -1), xp.shape[-2:], n, stride=stride)
    h, w = noisy.shape[-2:]
    return (num / den)[..., pad:pad + h, pad:pad + w]


def test_transform_wiener_matches_the_patch_by_patch_filter_in_any_chunking():
    from atbsn.strength import _wiener_channel

    g = torch.Generator().manual_seed(5)
    clean = _textured(61, 53)[:, :1]
    noisy = clean + torch.randn(clean.shape, generator=g) * 6 / 255
    sigma2 = noise_variance(noisy)
    for n, stride in ((8, 2), (4, 1), (8, 3)):
        ref = _dense_patch_wiener(noisy, clean, sigma2, n, stride)
        for chunk in (1, 5, 1000):
            out = _wiener_channel(noisy, clean, sigma2, n, stride, rows_per_chunk=chunk)
            assert out.shape == noisy.shape and (out - ref).abs().max() < 1e-5, (n, stride, chunk)


def test_transform_wiener_removes_noise_keeps_what_the_pilot_calls_signal_and_refines_nl_means():
    from atbsn.strength import nl_means, transform_wiener

    clean = _textured()
    g = torch.Generator().manual_seed(6)
    noisy = clean + torch.randn(clean.shape, generator=g) * 5 / 255
    # a pilot that says "all signal" leaves the image as it is; the clean pilot removes >90% of the noise power
    assert (transform_wiener(noisy, noisy * 1e3) - noisy).abs().max() < 1e-3
    assert _mse(transform_wiener(noisy, clean), clean) < 0.1 * _mse(noisy, clean)
    # piloted by NL-means, its mean with NL-means beats NL-means alone (the recipe's classical half)
    nlm = nl_means(noisy[0], 5 * 1.25)[None]
    refined = 0.5 * (nlm + transform_wiener(noisy, nlm, 1.3))
    assert _mse(refined, clean) < 0.9 * _mse(nlm, clean)
    _, (r0,) = adaptive_blend(noisy, clean, classical_mix=0.5)
    out, (r1,) = adaptive_blend(noisy, clean, classical_mix=0.5, wiener_refine=1.3)
    assert r1.estimated_gain_db == r0.estimated_gain_db and _mse(out, clean) < _mse(noisy, clean)


def test_the_memory_light_helpers_equal_their_plain_definitions():
    """The ring mean (shifted-add box sums, not a 5x5 conv), the row-strip padding and the accumulating
    transform_wiener are rewrites for 12-MP memory: they must compute what they replace."""
    import torch.nn.functional as F

    from atbsn.strength import _box_sum, _padded_rows, _ring_mean, transform_wiener

    g = torch.Generator().manual_seed(7)
    x = torch.rand(2, 3, 23, 31, generator=g)
    for radius in (1, 2, 3):
        k = torch.zeros(2 * radius + 1, 2 * radius + 1)
        k[0], k[-1], k[:, 0], k[:, -1] = 1, 1, 1, 1
        ref = F.conv2d(F.pad(x, (radius,) * 4, mode="reflect"), (k / k.sum()).expand(3, 1, -1, -1).contiguous(), groups=3)
        assert (_ring_mean(x, radius) - ref).abs().max() < 1e-6
    assert torch.equal(_ring_mean(x, 0), x)
    for size in (3, 5, 8):  # the shifted-add box sum behind the ring mean
        assert (_box_sum(x, size) - F.avg_pool2d(x, size, stride=1) * size * size).abs().max() < 1e-6 * size * size
    for mode in ("reflect", "replicate"):
        full = F.pad(x, (7,) * 4, mode=mode)
        for start, stop in ((0, 9), (5, 30), (20, 37)):
            assert torch.equal(_padded_rows(x, start, stop, 7, mode), full[..., start:stop, :]), (mode, start, stop)
    noisy, pilot = x[:1], x[1:]
    base = torch.rand(1, 3, 23, 31, generator=g)
    added = transform_wiener(noisy, pilot, 1.5, out=base.clone(), weight=0.3)
    assert (added - (base + 0.3 * transform_wiener(noisy, pilot, 1.5))).abs().max() < 1e-6


def test_the_noise_estimate_in_row_strips_equals_the_whole_image_formula_bit_for_bit():
    """noise_variance works in row strips (its full-size temporaries page-faulted 2 s per 12 MP) and
    box_mean sums by shifted adds (2.5x faster than avg_pool2d); every per-pixel sum is the same, and
    the brightness bins depend on exact values (ties move blocks between bins), so the estimate must
    be identical to the whole-image avg_pool2d formula, not close."""
    import torch.nn.functional as F

    from atbsn import strength
    from atbsn.strength import _ring_mean, box_mean, noise_variance

    def avg_pool_box_mean(x, size):  # box_mean's shifted adds sum in the CPU avg_pool2d's order
        r = size // 2
        return F.avg_pool2d(F.pad(x, (r, size - 1 - r, r, size - 1 - r), mode="reflect"), size, stride=1)

    def whole_image(x, ring=2, block=8):
        energy = sum((_ring_mean(x[:, c:c + 1], ring) - x[:, c:c + 1]).square() for c in range(x.shape[1]))
        energy = energy / (x.shape[1] * (1 + 1 / (8 * ring)))
        brightness = avg_pool_box_mean(x.mean(1, keepdim=True), block)
        b = min(block, *x.shape[-2:])
        return brightness, F.avg_pool2d(energy, b), F.avg_pool2d(brightness, b)

    g = torch.Generator().manual_seed(3)
    x = (torch.rand(2, 3, 150, 71, generator=g) * 255).round() / 255
    for size in (7, 8):  # the adaptive strength's window and the estimate's blocks
        assert torch.equal(box_mean(x, size), avg_pool_box_mean(x, size)), size
    original = strength._interp
    for shape in ((1, 3, 300, 77), (2, 1, 133, 6), (1, 3, 7, 90)):  # strips of 128 rows, ragged ends, blocks under 8 px
        x = (torch.rand(*shape, generator=g) * 255).round() / 255  # 8-bit values: many exact ties in brightness
        brightness, block_energy, block_level = whole_image(x)
        out = noise_variance(x)
        # the estimate is a function of these three maps; recompute it from them as noise_variance does
        ref = torch.empty_like(brightness)
        for i in range(x.shape[0]):
            e, lv = block_energy[i].flatten(), block_level[i].flatten()
            keep = e > strength.FLAT_BLOCK_ENERGY
            e, lv = e[keep], lv[keep]
            order = torch.argsort(lv)
            groups = [q for q in torch.tensor_split(order, min(8, len(order))) if len(q)]
            centers = torch.stack([lv[q].median() for q in groups])
            levels = torch.stack([torch.quantile(e[q], 0.2) for q in groups])
            ref[i] = original(brightness[i], centers, strength.smooth_levels(levels, torch.quantile(e, 0.2)))
        assert torch.equal(out, ref), shape
