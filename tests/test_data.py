import os

import numpy as np
import pytest
import torch

from atbsn.data import build_dataset, build_noise
from atbsn.data.sampler import TrainSampler
from atbsn.data.transforms import dihedral
from atbsn.errors import DataError, OptionsError
from atbsn.utils.image import read_image, write_image

from conftest import DATA, needs, write_png


def test_gaussian_and_poisson_statistics():
    g = torch.Generator().manual_seed(0)
    clean = torch.full((3, 128, 128), 0.5)
    noisy = build_noise({"type": "gaussian", "sigma": 25})(clean, g)
    assert abs((noisy - clean).std().item() * 255 - 25) < 0.5
    lam = 30
    noisy = build_noise({"type": "poisson", "lam": lam})(clean, g)
    assert abs(noisy.mean().item() - 0.5) < 0.01 and abs(noisy.var().item() - 0.5 / lam) < 1e-3
    assert torch.allclose(noisy * lam, (noisy * lam).round(), atol=1e-4)  # multiples of 1/lam, unclipped


def test_range_draws_one_strength_per_image():
    model = build_noise({"type": "gaussian", "sigma": [5, 50]})
    stds = [(model(torch.zeros(1, 64, 64), torch.Generator().manual_seed(s))).std().item() * 255 for s in range(20)]
    assert 5 - 1 < min(stds) and max(stds) < 50 + 2 and np.std(stds) > 5


def test_heteroscedastic_and_multivariate():
    g = torch.Generator().manual_seed(0)
    hg = build_noise({"type": "heteroscedastic_gaussian", "sigma_s": 40, "sigma_c": 10})
    dark, bright = torch.zeros(3, 64, 64), torch.ones(3, 64, 64)
    assert abs((hg(dark, g) - dark).std().item() * 255 - 10) < 0.5
    assert abs((hg(bright, g) - bright).std().item() * 255 - (40**2 + 10**2) ** 0.5) < 1.5
    cov = [[0.052886, 0.002695, 0.004399], [0.002695, 0.056920, 0.004446], [0.004399, 0.004446, 0.051680]]
    mg = build_noise({"type": "multivariate_gaussian", "covariance": cov})
    n = (mg(torch.zeros(3, 128, 128), g)).reshape(3, -1).double()
    assert torch.allclose(torch.cov(n), torch.tensor(cov, dtype=torch.float64), atol=2e-3)
    with pytest.raises(OptionsError, match="not positive definite"):
        build_noise({"type": "multivariate_gaussian", "covariance": [[1, 2, 0], [2, 1, 0], [0, 0, 1]]})
    random_cov = build_noise({"type": "multivariate_gaussian"}).random_covariance(g)
    assert torch.linalg.eigvalsh(random_cov).min() > 0


def test_validation_noise_is_a_pure_function_of_seed_and_index(image_folder):
    cfg = {"type": "SyntheticNoiseDataset", "root": str(image_folder / "clean"), "noise": {"type": "gaussian", "sigma": 25},
           "repeats": 2, "seed": 5}
    a, b = build_dataset(cfg), build_dataset(cfg)
    torch.manual_seed(123)  # global state must not matter
    assert len(a) == 12
    assert torch.equal(a[7]["noisy"], b[7]["noisy"]) and a[7]["name"] == "img1_r1"
    assert not torch.equal(a[1]["noisy"], a[7]["noisy"])  # another repeat, another draw
    assert not torch.equal(a[1]["noisy"], build_dataset({**cfg, "seed": 6})[1]["noisy"])


def test_legacy_numpy_stream_matches_official_draw_order(image_folder):
    cfg = {"type": "SyntheticNoiseDataset", "root": str(image_folder / "clean"), "noise": {"type": "gaussian", "sigma": 25},
           "repeats": 2, "seed": 101, "noise_seeding": "legacy_numpy"}
    ds = build_dataset(cfg)
    rs = np.random.RandomState(101)
    for r in range(2):
        for i in range(6):
            clean = read_image(str(image_folder / "clean" / f"img{i}.png"))[0].astype(np.float64)
            expected = (clean + rs.normal(size=clean.shape) * (25 / 255)).astype(np.float32)
            got = ds[r * 6 + i]["noisy"].numpy().transpose(1, 2, 0)
            assert np.array_equal(got, expected)


def test_training_items_depend_only_on_the_sample_key(image_folder):
    cfg = {"type": "SyntheticNoiseDataset", "root": str(image_folder / "clean"), "noise": {"type": "poisson", "lam": 30},
           "crop_size": 32, "augment": "dihedral"}
    ds = build_dataset(cfg)
    x, y = ds[(2, 99)], ds[(2, 99)]
    assert x["noisy"].shape == (3, 32, 32) and torch.equal(x["noisy"], y["noisy"]) and torch.equal(x["seed"], y["seed"])
    assert not torch.equal(x["noisy"], ds[(2, 100)]["noisy"])


def test_dihedral_group_has_eight_distinct_elements():
    x = torch.arange(9.0).view(1, 3, 3)
    outs = {tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(outs) == 8


def test_sampler_is_deterministic_resumable_and_splits_global_batches():
    s = TrainSampler(10, 4, seed=1, repeat=2)
    assert s.batches_per_epoch == 5
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, start_batch=2)
    assert list(s) == full[8:]
    ranks = []
    for r in range(2):
        t = TrainSampler(10, 4, seed=1, repeat=2, rank=r, world_size=2)
        t.set_epoch(3)
        ranks.append(list(t))
    merged = [k for b in range(5) for r in range(2) for k in ranks[r][2 * b: 2 * b + 2]]
    assert merged == full
    with pytest.raises(OptionsError, match="divisible"):
        TrainSampler(10, 3, seed=1, world_size=2)
    with pytest.raises(OptionsError, match="fewer than one batch"):
        TrainSampler(3, 4, seed=1)


def test_image_formats_and_explicit_color_conversion(tmp_path):
    rng = np.random.RandomState(0)
    img16 = rng.randint(0, 65536, (20, 24, 3)).astype(np.uint16)
    write_png(str(tmp_path / "a16.png"), img16)
    got, depth = read_image(str(tmp_path / "a16.png"))
    assert depth == 16 and np.allclose(got, img16 / 65535.0, atol=1e-7)
    gray = rng.randint(0, 256, (20, 24)).astype(np.uint8)
    write_png(str(tmp_path / "g.png"), gray)
    with pytest.raises(DataError, match="is gray but 3-channel input is expected.*convert_color"):
        read_image(str(tmp_path / "g.png"), 3)
    rgb, _ = read_image(str(tmp_path / "g.png"), 3, convert=True)
    assert rgb.shape == (20, 24, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])
    rgba = rng.randint(0, 256, (20, 24, 4)).astype(np.uint8)
    write_png(str(tmp_path / "rgba.png"), rgba)
    with pytest.raises(DataError, match="RGBA"):
        read_image(str(tmp_path / "rgba.png"), 3)
    import cv2

    cv2.imwrite(str(tmp_path / "j.jpg"), rng.randint(0, 256, (16, 16, 3)).astype(np.uint8))
    cv2.imwrite(str(tmp_path / "t.tif"), rng.randint(0, 256, (16, 16, 3)).astype(np.uint8))
    assert read_image(str(tmp_path / "j.jpg"))[0].shape == (16, 16, 3)
    assert read_image(str(tmp_path / "t.tif"))[0].shape == (16, 16, 3)
    out = rng.rand(8, 8, 3)
    write_image(str(tmp_path / "o16.png"), out, 16)
    back, depth = read_image(str(tmp_path / "o16.png"))
    assert depth == 16 and np.abs(back - out).max() <= 0.5 / 65535 + 1e-7


def test_bad_data_errors(tmp_path, image_folder):
    with pytest.raises(DataError, match="not found.*expected a folder of images"):
        build_dataset({"type": "NoisyFolderDataset", "root": str(tmp_path / "nope")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        build_dataset({"type": "NoisyFolderDataset", "root": str(tmp_path / "empty")})
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "x.png").write_bytes(b"\x89PNG not really")
    ds = build_dataset({"type": "NoisyFolderDataset", "root": str(tmp_path / "corrupt")})
    with pytest.raises(DataError, match="x.png.*corrupt"):
        ds[0]
    ds = build_dataset({"type": "NoisyFolderDataset", "root": str(image_folder / "noisy"), "crop_size": 200})
    with pytest.raises(DataError, match="128x96, smaller than the crop size 200"):
        ds[(0, 1)]
    os.remove(image_folder / "noisy" / "img3.png")
    with pytest.raises(DataError, match="unmatched: img3"):
        build_dataset({"type": "PairedFolderDataset", "noisy_root": str(image_folder / "noisy"),
                       "clean_root": str(image_folder / "clean")})


def test_non_finite_pixels_are_rejected_at_read_time(tmp_path):
    import cv2

    img = np.full((20, 20, 3), 0.5, np.float32)
    img[2:12, 2:12] = np.nan
    path = str(tmp_path / "nan.tif")
    assert cv2.imwrite(path, img)
    with pytest.raises(DataError, match=r"nan.tif' has 300 non-finite sample\(s\)"):
        read_image(path)


@needs(os.path.join(DATA, "CC15"))
def test_cc15_pairs_load_by_name():
    ds = build_dataset({"type": "PairedFolderDataset", "noisy_root": os.path.join(DATA, "CC15", "noisy"),
                        "clean_root": os.path.join(DATA, "CC15", "clean")})
    assert len(ds) == 15
    item = ds[0]
    assert item["noisy"].shape == item["clean"].shape == (3, 512, 512)
