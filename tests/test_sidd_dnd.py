"""SIDD and DND readers and submission writers on files written in the exact official formats."""
import base64
import csv
import os

csv.field_size_limit(1 << 20)  # a BLOCK field is 262,144 characters, over the csv module's default limit

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from atbsn.data import build_dataset
from atbsn.data.dnd import read_bounding_boxes
from atbsn.data.sidd import load_blocks
from atbsn.errors import DataError
from atbsn import submission

from conftest import run_cli, student_a_options, write_options, write_png

MATLAB_73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."


def write_v73(path, variables):
    """A MATLAB v7.3 file: 512-byte MATLAB header (user block) + HDF5 with the axes reversed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            f.create_dataset(name, data=np.asarray(value).transpose(tuple(reversed(range(np.ndim(value))))))
    with open(path, "r+b") as f:
        f.write(MATLAB_73_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")


@pytest.fixture(scope="module")
def sidd_mats(tmp_path_factory):
    root = tmp_path_factory.mktemp("sidd")
    rng = np.random.default_rng(0)
    gt = rng.integers(40, 216, (40, 32, 256, 256, 3), dtype=np.uint8)
    noisy = gt + rng.integers(0, 20, gt.shape, dtype=np.uint8)  # no overflow: at most 235
    for name, value in (("ValidationNoisyBlocksSrgb", noisy), ("ValidationGtBlocksSrgb", gt),
                        ("BenchmarkNoisyBlocksSrgb", noisy)):
        scipy.io.savemat(str(root / f"{name}.mat"), {name: value})
    return root, noisy, gt


def test_sidd_blocks_image_major_order_v5_and_v73(sidd_mats, tmp_path):
    root, noisy, gt = sidd_mats
    ds = build_dataset({"type": "SIDDBlocksDataset", "noisy": str(root / "ValidationNoisyBlocksSrgb.mat"),
                        "gt": str(root / "ValidationGtBlocksSrgb.mat"), "indices": [0, 33, 1279]})
    assert len(ds) == 3 and ds.split == "validation"
    item = ds[1]
    assert item["name"] == "0033"
    assert np.array_equal((item["noisy"] * 255).round().byte().permute(1, 2, 0).numpy(), noisy[1, 1])
    assert np.array_equal((item["clean"] * 255).round().byte().permute(1, 2, 0).numpy(), gt[1, 1])
    write_v73(str(tmp_path / "ValidationNoisyBlocksSrgb.mat"), {"ValidationNoisyBlocksSrgb": noisy[:, :4]})
    with pytest.raises(DataError, match="holds 160 blocks .* expected 1280"):
        load_blocks(str(tmp_path / "ValidationNoisyBlocksSrgb.mat"), "ValidationNoisyBlocksSrgb")


@pytest.mark.slow
def test_sidd_v73_resave_restores_axes(tmp_path):
    blocks = np.random.default_rng(1).integers(0, 256, (40, 32, 256, 256, 3), dtype=np.uint8)
    write_v73(str(tmp_path / "BenchmarkNoisyBlocksSrgb.mat"), {"BenchmarkNoisyBlocksSrgb": blocks})
    got = load_blocks(str(tmp_path / "BenchmarkNoisyBlocksSrgb.mat"), "BenchmarkNoisyBlocksSrgb")
    assert np.array_equal(got, blocks.reshape(1280, 256, 256, 3))


def test_bad_mat_files(tmp_path):
    scipy.io.savemat(str(tmp_path / "ValidationGtBlocksSrgb.mat"), {"ValidationGTBlocksSrgb": np.zeros((2, 2), np.uint8)})
    with pytest.raises(DataError, match="no variable 'ValidationGtBlocksSrgb' \\(it has: ValidationGTBlocksSrgb\\)"):
        load_blocks(str(tmp_path / "ValidationGtBlocksSrgb.mat"), "ValidationGtBlocksSrgb")
    scipy.io.savemat(str(tmp_path / "X.mat"), {"X": np.zeros((40, 32, 256, 256, 3), np.float32)})
    with pytest.raises(DataError, match="dtype float32, expected uint8"):
        load_blocks(str(tmp_path / "X.mat"), "X")
    scipy.io.savemat(str(tmp_path / "Y.mat"), {"Y": np.zeros((40, 32, 128, 128, 3), np.uint8)})
    with pytest.raises(DataError, match="shape \\(40, 32, 128, 128, 3\\), expected \\(40, 32, 256, 256, 3\\)"):
        load_blocks(str(tmp_path / "Y.mat"), "Y")
    data = open(tmp_path / "Y.mat", "rb").read()
    (tmp_path / "Z.mat").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="cannot read .*Z.mat.*truncated or corrupt"):
        load_blocks(str(tmp_path / "Z.mat"), "Y")


def _dnd_fixture(root, n_images=50, side=520):
    os.makedirs(root / "images_srgb", exist_ok=True)
    rng = np.random.default_rng(2)
    images = {}
    for i in range(1, n_images + 1):
        img = rng.random((side, side + 8, 3), dtype=np.float32)
        images[i] = img
        write_v73(str(root / "images_srgb" / f"{i:04d}.mat"), {"InoisySRGB": img})
    boxes = {}
    with h5py.File(root / "info.mat", "w", userblock_size=512) as f:
        info = f.create_group("info")
        refs = []
        for i in range(1, 51):
            # boxes shift by up to 2 rows / 4 columns below: keep r2 <= side and c2 <= side + 8
            r1, c1 = int(rng.integers(1, side - 512 - 2 + 2)), int(rng.integers(1, side + 8 - 512 - 4 + 2))
            b = np.array([[r1 + (k % 3), c1 + (k % 5), r1 + (k % 3) + 511, c1 + (k % 5) + 511] for k in range(20)], float)
            boxes[i] = b.astype(int)
            refs.append(f.create_dataset(f"#refs#/b{i}", data=b.T).ref)  # MATLAB stores 4x20
        info.create_dataset("boundingboxes", data=np.array([refs], dtype=h5py.ref_dtype))
        info.create_dataset("nlf", data=np.zeros((1, 50)))
    return images, boxes


def test_dnd_crops_are_float_and_one_based_inclusive(tmp_path):
    images, boxes = _dnd_fixture(tmp_path, n_images=2)
    assert read_bounding_boxes(str(tmp_path / "info.mat")).shape == (50, 20, 4)
    ds = build_dataset({"type": "DNDDataset", "root": str(tmp_path), "images": [1, 2]})
    assert len(ds) == 40
    item = ds[27]  # image 2, box 8
    r1, c1, r2, c2 = boxes[2][7]
    assert item["name"] == "0002_08" and item["noisy"].dtype == torch.float32 and item["noisy"].shape == (3, 512, 512)
    assert np.array_equal(item["noisy"].numpy().transpose(1, 2, 0), images[2][r1 - 1: r2, c1 - 1: c2])
    with h5py.File(tmp_path / "bad_info.mat", "w") as f:
        f.create_group("info").create_dataset("nlf", data=np.zeros(3))
    with pytest.raises(DataError, match="group 'info' has no 'boundingboxes' \\(it has: nlf\\)"):
        read_bounding_boxes(str(tmp_path / "bad_info.mat"))


def test_submission_writers_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    pred = rng.random((1280, 256, 256, 3), dtype=np.float32) * 1.2 - 0.1  # out of range values are clipped
    expected = {n: np.round(np.clip(pred[n].astype(np.float64), 0, 1) * 255).astype(np.uint8) for n in (0, 33, 1279)}
    submission.write_sidd_csv(pred, str(tmp_path / "SubmitSrgb.csv"))
    with open(tmp_path / "SubmitSrgb.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ID", "BLOCK"] and len(rows) == 1281 and len(rows[5][1]) == 262144
    for n in (0, 33, 1279):
        block = np.frombuffer(base64.b64decode(rows[n + 1][1]), np.uint8).reshape(256, 256, 3)
        assert int(rows[n + 1][0]) == n and np.array_equal(block, expected[n])
    submission.write_sidd_mat(pred, str(tmp_path / "SubmitSrgb.mat"), 0.25, {"MethodName": "x"})
    mat = scipy.io.loadmat(str(tmp_path / "SubmitSrgb.mat"))
    cells = mat["DenoisedBlocksSrgb"]
    assert cells.shape == (40, 32) and cells[1, 1].dtype == np.uint8 and np.array_equal(cells[1, 1], expected[33])
    assert mat["TimeMPSrgb"].item() == 0.25 and mat["OptionalData"]["MethodName"][0, 0][0] == "x"
    crops = {b: rng.random((512, 512, 3), dtype=np.float32) for b in range(20)}
    submission.write_dnd_bundle(crops, 7, str(tmp_path))
    bundle = scipy.io.loadmat(str(tmp_path / "0007.mat"))
    assert bundle["Idenoised"].shape == (1, 20) and bundle["Idenoised"][0, 3].dtype == np.float32
    assert np.array_equal(bundle["Idenoised"][0, 3], crops[3])
    assert not bundle["israw"].item() and bundle["eval_version"][0] == "1.0"
    with pytest.raises(DataError, match="already holds a submission"):
        submission.refuse_existing(str(tmp_path), ["SubmitSrgb.csv"], overwrite=False)
    with pytest.raises(DataError, match="needs 1280 blocks"):
        submission.write_sidd_csv(pred[:64], str(tmp_path / "x.csv"))


def test_sidd_medium_folder_case_insensitive_and_crops(tmp_path):
    rng = np.random.default_rng(4)
    for scene, ext in (("0001_001_S6_00100_00060_3200_L", "PNG"), ("0002_001_GP_00100_00060_3200_N", "png")):
        for cap in ("010", "011"):
            img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
            inst = scene[:4]
            write_png(str(tmp_path / "SIDD_Medium_Srgb" / "Data" / scene / f"{inst}_NOISY_SRGB_{cap}.{ext}"), img)
            write_png(str(tmp_path / "SIDD_Medium_Srgb" / "Data" / scene / f"{inst}_GT_SRGB_{cap}.{ext}"), img // 2)
    for cache in (None, str(tmp_path / "cache")):
        ds = build_dataset({"type": "SIDDMediumDataset", "root": str(tmp_path / "SIDD_Medium_Srgb"), "crop_size": 64,
                            "pairs": True, "cache_dir": cache})
        assert len(ds) == 4
        a, b = ds[(2, 11)], ds[(2, 11)]
        assert a["noisy"].shape == (3, 64, 64) and torch.equal(a["noisy"], b["noisy"])
        assert torch.allclose(a["clean"], torch.floor(a["noisy"] * 255 / 2) / 255)
        keep = a
    assert torch.equal(keep["noisy"], build_dataset({"type": "SIDDMediumDataset", "root": str(tmp_path / "SIDD_Medium_Srgb"),
                                                     "crop_size": 64, "pairs": True})[(2, 11)]["noisy"])
    (tmp_path / "empty" / "Data" / "scene").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no SIDD captures"):
        build_dataset({"type": "SIDDMediumDataset", "root": str(tmp_path / "empty")})


def test_valid_py_on_sidd_validation_blocks(sidd_mats, tmp_path, image_folder):
    root, _, _ = sidd_mats
    opt = student_a_options(tmp_path, image_folder, "sidd_val")
    opt["datasets"] = {"val": {"sidd": {"type": "SIDDBlocksDataset", "noisy": str(root / "ValidationNoisyBlocksSrgb.mat"),
                                        "gt": str(root / "ValidationGtBlocksSrgb.mat"), "indices": list(range(8))}}}
    opt["val"].update(metrics=["atbsn_official", "basicsr_rgb"], save_images=2)
    code, out, err = run_cli("valid.py", "-opt", write_options(tmp_path / "v.yml", opt))
    assert code == 0, err
    assert "sidd [atbsn_official, 8 images]" in out and "sidd [basicsr_rgb, 8 images]" in out
    assert sorted(os.listdir(tmp_path / "results" / "sidd_val" / "images" / "sidd")) == ["0000.png", "0001.png"]


@pytest.mark.slow
def test_test_py_writes_both_sidd_submissions_and_dnd_bundles(sidd_mats, tmp_path, image_folder):
    root, _, _ = sidd_mats
    opt = student_a_options(tmp_path, image_folder, "bench")
    opt["datasets"] = {"test": {"type": "SIDDBlocksDataset", "noisy": str(root / "BenchmarkNoisyBlocksSrgb.mat")}}
    path = write_options(tmp_path / "sidd.yml", opt)
    code, out, err = run_cli("test.py", "-opt", path)
    assert code == 0, err
    folder = tmp_path / "results" / "bench" / "submission"
    assert sorted(os.listdir(folder)) == ["SubmitSrgb.csv", "SubmitSrgb.mat"] and "s per megapixel" in out
    mat = scipy.io.loadmat(str(folder / "SubmitSrgb.mat"))
    with open(folder / "SubmitSrgb.csv", newline="") as f:
        rows = list(csv.reader(f))
    block = np.frombuffer(base64.b64decode(rows[101][1]), np.uint8).reshape(256, 256, 3)
    assert np.array_equal(block, mat["DenoisedBlocksSrgb"][3, 4]) and mat["TimeMPSrgb"].item() > 0
    code, _, err = run_cli("test.py", "-opt", path)
    assert code == 2 and "already holds a submission" in err and "--overwrite" in err
    assert run_cli("test.py", "-opt", path, "--overwrite")[0] == 0

    _dnd_fixture(tmp_path / "dnd")
    opt["datasets"] = {"test": {"type": "DNDDataset", "root": str(tmp_path / "dnd")}}
    code, out, err = run_cli("test.py", "-opt", write_options(tmp_path / "dnd.yml", opt), "--output", str(tmp_path / "dnd_out"))
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "dnd_out")) == [f"{i:04d}.mat" for i in range(1, 51)]
    bundle = scipy.io.loadmat(str(tmp_path / "dnd_out" / "0050.mat"))
    assert bundle["Idenoised"].shape == (1, 20) and bundle["Idenoised"][0, 19].shape == (512, 512, 3)


def test_prepare_sidd_cuts_patches_and_resumes(tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / "SIDD_Medium_Srgb" / "Data"
    for scene in ("0001_001_S6_00100_00060_3200_L", "0003_002_IP_00100_00060_3200_H"):
        for cap in ("010", "011"):
            write_png(str(src / scene / f"{scene[:4]}_NOISY_SRGB_{cap}.PNG"), rng.integers(0, 256, (300, 420, 3), dtype=np.uint8))
            write_png(str(src / scene / f"{scene[:4]}_GT_SRGB_{cap}.PNG"), rng.integers(0, 256, (300, 420, 3), dtype=np.uint8))
    code, out, err = run_cli("scripts/prepare_sidd.py", str(tmp_path / "SIDD_Medium_Srgb"), str(tmp_path / "p"),
                             "--preset", "cbsn")
    assert code == 0, err
    # rows 10..34 step 200 -> [10]; cols 10..154 -> [10]: one 256 patch per capture
    files = sorted(f for f in os.listdir(tmp_path / "p") if f.endswith(".png"))
    assert len(files) == 4 and files[0] == "0001_001_S6_00100_00060_3200_L_010_0010_0010.png"
    code, out, _ = run_cli("scripts/prepare_sidd.py", str(tmp_path / "SIDD_Medium_Srgb"), str(tmp_path / "p"),
                           "--preset", "cbsn")
    assert "0 patches written, 4 capture(s) already done" in out
    code, out, err = run_cli("scripts/prepare_sidd.py", str(tmp_path / "SIDD_Medium_Srgb"), str(tmp_path / "q"),
                             "--size", "128", "--stride", "96", "--gt")
    assert code == 0, err
    assert len(os.listdir(tmp_path / "q" / "noisy")) == len(os.listdir(tmp_path / "q" / "gt")) == 4 * 2 * 4
    code, _, err = run_cli("scripts/prepare_sidd.py", str(tmp_path / "nothing"), str(tmp_path / "r"))
    assert code == 2 and "SIDD-Medium folder not found" in err


@pytest.mark.slow
def test_export_sidd_blocks_image_major_png(sidd_mats, tmp_path):
    root, noisy, gt = sidd_mats
    code, out, err = run_cli("scripts/export_sidd_blocks.py", str(root / "ValidationNoisyBlocksSrgb.mat"), str(tmp_path),
                             "--gt", str(root / "ValidationGtBlocksSrgb.mat"))
    assert code == 0, err
    names = sorted(os.listdir(tmp_path / "noisy"))
    assert len(names) == 1280 and names[33] == "0033.png" and names == sorted(os.listdir(tmp_path / "gt"))
    from atbsn.utils.image import read_image

    assert np.array_equal(np.round(read_image(str(tmp_path / "gt" / "0033.png"))[0] * 255).astype(np.uint8), gt[1, 1])


def test_truncated_dnd_file_is_a_clear_error(tmp_path):
    _dnd_fixture(tmp_path, n_images=1)
    data = open(tmp_path / "images_srgb" / "0001.mat", "rb").read()
    (tmp_path / "images_srgb" / "0001.mat").write_bytes(data[: len(data) // 2])
    ds = build_dataset({"type": "DNDDataset", "root": str(tmp_path), "images": [1]})
    with pytest.raises(DataError, match="cannot read DND image .*0001.mat"):
        ds[0]


def test_non_finite_dnd_pixels_are_a_clear_error(tmp_path):
    from atbsn.data.dnd import read_dnd_image

    os.makedirs(tmp_path / "images_srgb")
    img = np.full((40, 48, 3), 0.5, np.float32)
    img[:2, :3] = np.nan
    write_v73(str(tmp_path / "images_srgb" / "0001.mat"), {"InoisySRGB": img})
    with pytest.raises(DataError, match="0001.mat' InoisySRGB has 18 non-finite value"):
        read_dnd_image(str(tmp_path / "images_srgb" / "0001.mat"))
