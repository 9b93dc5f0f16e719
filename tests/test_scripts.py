"""The README's scripts, quick start and official configs, run as a user runs them."""
import json
import os
import re
import shutil

import pytest

from conftest import DATA, REFERENCE, ROOT, needs, run_cli


@pytest.mark.slow  # 22 s; .ci/run also runs the script on the reference itself
@needs(REFERENCE)
def test_verify_reference_passes_and_fails_on_a_corrupted_copy(tmp_path):
    code, out, err = run_cli("scripts/verify_reference.py", REFERENCE)
    assert code == 0, out + err
    assert re.search(r"^(\d+) passed, 0 failed, 0 errors", out, re.M) and int(re.search(r"^(\d+) passed", out, re.M).group(1)) >= 30
    assert "PASS  n2n_unet_vectors.pt" in out and "loss_total_epoch100" in out
    # a corrupted copy of an understood file must fail the run
    for f in ("n2n_unet_vectors.pt", "n2n_unet_weights.pt", "n2n_unet_perturbed_weights.pt", "n2n_metrics_vectors.pt",
              "atbsn_metrics_vectors.pt"):
        shutil.copy(os.path.join(REFERENCE, f), tmp_path / f)
    (tmp_path / "n2n_metrics_vectors.pt").write_bytes(b"not a torch file")
    code, out, _ = run_cli("scripts/verify_reference.py", str(tmp_path))
    assert code == 1 and "ERROR n2n_metrics_vectors.pt" in out


@pytest.mark.slow  # 41 s: two multi-million-parameter networks built and stepped
def test_benchmark_cbsn_and_dbsn_rows_and_method_steps(tmp_path):
    code, out, err = run_cli("scripts/benchmark.py", "--archs", "CBSN", "DBSN", "DBSNSigmaMu", "--size", "32",
                             "--train-size", "16", "--train-batch", "1", "--runs", "1", "--warmup", "0",
                             "--methods", "cbsn", "dbsn_color_mg", "--method-batch", "1", "--method-size", "20",
                             "--out", str(tmp_path))
    assert code == 0, err
    assert "| CBSN | 3,656,131 | 3,650,112 |" in out  # parameters minus the 6,019 biases (spec)
    assert "| DBSN | 6,612,675 | 6,599,232 |" in out and "| DBSNSigmaMu | 4,358 | 4,288 |" in out
    steps = {r["method"]: r for r in json.load(open(tmp_path / "results.json"))["method_steps"]}
    assert steps["cbsn"]["params"] == 3656131 and steps["cbsn"]["step_ms"] > 0
    assert steps["dbsn_color_mg"]["params"] == 6612675 + 4358 + 3494
    assert "C-BSN (3 passes" in out


def test_benchmark_reports_the_n2n_row_into_results_benchmark_with_progress(tmp_path):
    before = {f: os.path.getmtime(os.path.join(ROOT, "benchmarks", f)) for f in ("results.md", "results.json")}
    code, out, err = run_cli("scripts/benchmark.py", "--archs", "N2NUNet", "--size", "64", "--train-size", "64",
                             "--train-batch", "1", "--runs", "1", "--warmup", "0", cwd=tmp_path)
    assert code == 0, err
    assert "| N2NUNet | 1,259,475 | 297,074 |" in out
    assert re.search(r"^\[1/1\] N2NUNet \.\.\. [\d.]+ s$", out, re.M), out  # one progress line per measurement
    assert before == {f: os.path.getmtime(os.path.join(ROOT, "benchmarks", f)) for f in before}
    rows = json.load(open(tmp_path / "results" / "benchmark" / "results.json"))["rows"]
    assert rows[0]["params"] == 1259475 and rows[0]["macs_per_pixel"] == pytest.approx(297074.25)
    assert rows[0]["inference_ms"] > 0 and rows[0]["train_step_ms"] > 0


@pytest.mark.slow
def test_quickstart_learns_at_least_3db(tmp_path):
    code, out, err = run_cli("train.py", "-opt", "options/train/quickstart.yml", "--set",
                             f"path.experiments_root={tmp_path}")
    assert code == 0, err
    m = re.search(r"PSNR ([\d.]+) dB \(noisy input ([\d.]+) dB\)", out.split("final validation:")[1])
    denoised, noisy = float(m.group(1)), float(m.group(2))
    print(f"quick start: noisy {noisy:.2f} dB -> denoised {denoised:.2f} dB (+{denoised - noisy:.2f} dB)")
    assert denoised - noisy >= 3.0
    assert os.path.exists(tmp_path / "quickstart" / "visualization" / "iter_00000600" / "quickstart" / "3096.png")


@pytest.mark.slow
@needs(os.path.join(DATA, "Kodak"))
def test_official_n2n_config_runs_on_the_shared_sets(tmp_path):
    d = lambda name: os.path.join(DATA, name)  # noqa: E731
    code, out, err = run_cli(
        "train.py", "-opt", "options/train/train_n2n_gauss25.yml", "--set", f"path.experiments_root={tmp_path}",
        f"datasets.train.root={d('BSD300_test')}", "datasets.train.num_workers=0", "datasets.train.crop_size=64",
        "train.total_iter=2", "val.val_freq=2", f"datasets.val.kodak.root={d('Kodak')}", "datasets.val.kodak.repeats=1",
        "datasets.val.bsd300=null",  # 100 more full images: too slow for CI; BSD300 is the training root here
        f"datasets.val.set14.root={d('Set14')}", "datasets.val.set14.repeats=1", "logger.use_tensorboard=false")
    assert code == 0, err
    for line in ("kodak [n2n_official, 24 images]", "set14 [n2n_official, 12 images]"):
        assert line in out
    # sigma 25 noisy input scores about 20.2 dB on these sets under the n2n_official protocol
    noisy = [float(x) for x in re.findall(r"n2n_official, \d+ images\].*?noisy input ([\d.]+) dB", out)]
    assert all(19.5 < v < 21.5 for v in noisy), noisy


def test_prepare_n2n_imagenet_selects_sides_in_256_512(tmp_path):
    import numpy as np

    from conftest import write_png

    for name, (h, w) in {"a": (300, 400), "b": (200, 400), "c": (512, 256), "d": (600, 300)}.items():
        write_png(str(tmp_path / "src" / f"{name}.png"), np.zeros((h, w, 3), np.uint8))
    code, out, err = run_cli("scripts/prepare_n2n_imagenet.py", str(tmp_path / "src"), str(tmp_path / "dst"))
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "dst")) == ["a.jpg", "c.jpg"] and "2 images" in out
    code, out, _ = run_cli("scripts/prepare_n2n_imagenet.py", str(tmp_path / "src"), str(tmp_path / "dst"))
    assert code == 0 and "2 images" in out  # restartable: existing outputs are kept


@pytest.mark.slow  # 20 s: a benchmark script end to end (the default suite stays under 10 min)
def test_benchmark_atbsn_rows_and_distillation_step(tmp_path):
    code, out, err = run_cli("scripts/benchmark.py", "--archs", "ATBSN", "ATBSNStudentC", "--size", "32",
                             "--train-size", "32", "--train-batch", "1", "--distill-batch", "1", "--distill-size", "32",
                             "--runs", "1", "--warmup", "0", "--method-steps", "--out", str(tmp_path))
    assert code == 0, err
    assert "| ATBSN | 1,268,547 | 1,249,029 |" in out and "| ATBSNStudentC | 1,003,011 | 185,753 |" in out
    result = json.load(open(tmp_path / "results.json"))
    d = result["atbsn_distillation"]
    assert d["max_target_diff_255"] < 1e-3 and d["naive_ms"] > 0 and d["shared_ms"] > 0
    assert result["atbsn_teacher"]["ours_forward_gflops"] > 0 and result["machine"]["conv3x3_gflops"] > 0


@pytest.mark.slow
@needs(os.path.join(DATA, "CC15"))
def test_atbsn_teacher_then_distillation_on_cc15_from_the_cli(tmp_path):
    cc = lambda s: os.path.join(DATA, "CC15", s)  # noqa: E731
    data = [f"datasets.train.root={cc('noisy')}", f"datasets.val.cc15.noisy_root={cc('noisy')}",
            f"datasets.val.cc15.clean_root={cc('clean')}", f"path.experiments_root={tmp_path}",
            "datasets.train.crop_size=64", "datasets.train.batch_size=2", "train.save_freq=4", "val.val_freq=4",
            "logger.use_tensorboard=false"]
    code, out, err = run_cli("train.py", "-opt", "options/train/train_atbsn_cc15.yml", "--set", "train.total_iter=4",
                             *data)
    assert code == 0, err
    assert re.search(r"cc15 \[atbsn_official, 15 images\]  PSNR [\d.]+ dB \(noisy input 33.4\d dB\)", out), out
    teacher = tmp_path / "atbsn_cc15" / "checkpoints" / "best.pth"
    code, out, err = run_cli("train.py", "-opt", "options/train/distill_atbsn_cc15.yml", "--set", "train.total_iter=4",
                             f"path.pretrain_network.teacher={teacher}", *data)
    assert code == 0, err
    assert "l1_k0=" in out + open(tmp_path / "atbsn_d_cc15" / "train.log").read()
    student = tmp_path / "atbsn_d_cc15" / "checkpoints" / "last.pth"
    common = [f"path.pretrain_network.student={student}", f"path.results_root={tmp_path / 'results'}",
              "datasets.val.sidd_val=null"]
    code, out, err = run_cli("valid.py", "-opt", "options/test/test_atbsn.yml", "--set", *common,
                             f"datasets.val.cc15={{type: PairedFolderDataset, noisy_root: {cc('noisy')}, "
                             f"clean_root: {cc('clean')}}}")
    assert code == 0, err
    assert "cc15 [atbsn_official, 15 images]" in out and "cc15 [basicsr_rgb, 15 images]" in out
    code, out, err = run_cli("test.py", "-opt", "options/test/test_atbsn.yml", "--set", *common, "--input",
                             os.path.join(DATA, "real_noisy_samples"), "--output", str(tmp_path / "out"))
    assert code == 0, err
    assert len(os.listdir(tmp_path / "out")) == 3


@pytest.mark.slow
def test_test_py_on_a_12_megapixel_image_keeps_memory_bounded(tmp_path, image_folder):
    import subprocess
    import sys

    import numpy as np

    from conftest import student_a_options, write_options, write_png

    opt = student_a_options(tmp_path, image_folder, "big")
    opt["val"]["tile"] = {"size": 512}
    path = write_options(tmp_path / "big.yml", opt)
    write_png(str(tmp_path / "in" / "big.png"), np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8))
    wrapper = ("import resource, sys; from atbsn.cli import test_main; code = test_main(sys.argv[1:]); "
               "print('PEAK_RSS_MIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); sys.exit(code)")
    p = subprocess.run([sys.executable, "-c", wrapper, "-opt", path, "--input", str(tmp_path / "in"), "--output",
                        str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr
    peak = float(p.stdout.split("PEAK_RSS_MIB")[1])
    print(f"12-MP test.py peak RSS: {peak:.0f} MiB")
    assert peak < 2500  # untiled, the same network peaks above 16 GB (scripts/benchmark.py --full-res)
    from atbsn.utils.image import read_image

    assert read_image(str(tmp_path / "out" / "big.png"))[0].shape == (3000, 4000, 3)


def test_peak_memory_reports_the_process_tree_peak():
    code, out, err = run_cli("scripts/peak_memory.py", "--", "python", "-c",
                             "import time; x = bytearray(400 * 2**20); x[::4096] = b'1' * len(x[::4096]); time.sleep(1)")
    assert code == 0, err
    m = re.search(r"process-tree peak RSS ([\d.]+) GiB", err)
    assert m and 0.35 < float(m.group(1)) < 2.0, err


STAND_INS = {  # the official checkouts' files that --official imports, as stand-ins built on our networks
    "codes/models/modules/arch_atbsn.py": """
import torch
from atbsn.archs import ATBSN, ATBSNStudentC as N_BSN

class DoubleNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.nbsn, self.bsn = N_BSN(), ATBSN()

    def forward(self, x, hole_size, mode):
        with torch.no_grad():
            targets = [self.bsn(x, k) for k in hole_size]
        return self.nbsn(x), targets
""",
    "arch_unet.py": """
from atbsn.archs import N2NUNet

class UNet(N2NUNet):
    def __init__(self, in_nc, out_nc, n_feature):
        super().__init__(in_nc, out_nc, n_feature)
""",
    "train.py": """
import torchvision  # never imported by --official: only these functions are
def space_to_depth(x, block_size):
    return x
def generate_mask_pair(img):
    return 0, 1
def generate_subimages(img, mask):
    return img[..., mask::2, ::2]
""",
    "dbsn_color/net/__init__.py": "",
    "dbsn_color/util/__init__.py": "",
    "dbsn_color/net/backbone_net.py": """
from atbsn.archs import DBSN
from util import marker  # the official files import the checkout's own top-level packages

def DBSN_Model(in_ch, out_ch, mid_ch, *rest):
    return DBSN(in_ch, out_ch, mid_ch)
""",
    "dbsn_color/util/marker.py": "",
    "dbsn_color/net/sigma_net.py": """
from atbsn.archs import DBSNSigmaMu, DBSNSigmaN

def Sigma_mu_Net(in_ch, out_ch, mid_ch, layers, kernel_size, bias):
    return DBSNSigmaMu(in_ch, out_ch, mid_ch, layers)

def Sigma_n_Net(in_ch, out_ch, mid_ch, layers, kernel_size, bias):
    return DBSNSigmaN(in_ch, out_ch, mid_ch, layers, variant="color")
""",
    "dbsn_gray/net/mwcnn_gray.py": "from atbsn.archs import MWCNN\n",
}


def test_benchmark_official_side_by_side_mode(tmp_path):
    """--official PATH ... recognises each official checkout by its layout and imports its files
    (here stand-ins built on our networks: the official code is never part of this repository)."""
    repos = {"atbsn": ["codes/models/modules/arch_atbsn.py"], "n2n": ["arch_unet.py", "train.py"],
             "dbsn": [f for f in STAND_INS if f.startswith("dbsn_")]}
    for repo, files in repos.items():
        for f in files:
            (tmp_path / repo / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / repo / f).write_text(STAND_INS[f])
    code, out, err = run_cli("scripts/benchmark.py", "--archs", "ATBSNStudentA", "--size", "32", "--train-size", "32",
                             "--train-batch", "1", "--distill-batch", "1", "--distill-size", "32", "--n2n-batch", "1",
                             "--n2n-size", "64", "--runs", "1", "--warmup", "0", "--official",
                             *(str(tmp_path / r) for r in repos), "--out", str(tmp_path / "out"))
    assert code == 0, err
    rows = json.load(open(tmp_path / "out" / "results.json"))["official"]
    assert [(r["repo"], r["case"].split(",")[0]) for r in rows] == [
        ("hnmizuho/AT-BSN", "teacher forward"), ("hnmizuho/AT-BSN", "teacher train step"),
        ("hnmizuho/AT-BSN", "distillation step"), ("hnmizuho/AT-BSN", "student C forward"),
        ("TaoHuang2018/Neighbor2Neighbor", "UNet forward"), ("TaoHuang2018/Neighbor2Neighbor", "training step"),
        ("XHWXD/DBSN", "D-BSN colour forward (backbone"), ("XHWXD/DBSN", "D-BSN mu pre-training step"),
        ("XHWXD/DBSN", "MWCNN (gray student) forward")]
    compared = {r["case"].split(",")[0]: r["max_rel_diff"] for r in rows if r["max_rel_diff"] is not None}
    assert compared["teacher forward"] < 1e-5 and compared["distillation step"] < 1e-5  # same maths, other order
    assert compared["student C forward"] == compared["UNet forward"] == compared["MWCNN (gray student) forward"] == 0
    assert all(r["ours_ms"] > 0 and r["official_ms"] > 0 for r in rows)
    assert "| XHWXD/DBSN | D-BSN mu pre-training step" in out
    code, _, err = run_cli("scripts/benchmark.py", "--archs", "ATBSNStudentA", "--size", "32", "--runs", "1",
                           "--official", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert code != 0 and "is no known official checkout" in err and "arch_unet.py (TaoHuang2018/Neighbor2Neighbor)" in err


@pytest.mark.slow  # 19 s: a benchmark script end to end
def test_cpu_speed_reports_throughput_and_the_allocator_gain(tmp_path):
    """scripts/cpu_speed.py: the teacher's GFLOP/s against a conv of its dominant shape, and each
    training step with glibc's default allocator and with train.py's keep_freed_memory."""
    code, out, err = run_cli("scripts/cpu_speed.py", "--sections", "teacher", "steps", "--size", "64", "--runs", "1",
                             "--steps", "recipe_teacher", "--out", str(tmp_path / "out"))
    assert code == 0, err
    result = json.load(open(tmp_path / "out" / "results.json"))
    t = result["throughput"]
    assert t["size"] == 64 and 0 < t["teacher_gflops"] and 0 < t["fraction_of_peak"] < 2
    (system, kept), = result["steps"]
    assert (system["kept_freed_memory"], kept["kept_freed_memory"]) == (False, True)
    assert system["step"] == kept["step"] == "recipe_teacher" and system["batch"] == 8 and kept["step_ms"] > 0
    assert "| AT-BSN teacher, noisy-folder recipe (width 24, k = 9) | 8x64² |" in out


@pytest.mark.slow  # 18 s: a benchmark script end to end
def test_cpu_speed_photo_section_reports_ratios_end_to_end_runs_and_stages(tmp_path):
    """scripts/cpu_speed.py --sections photo (on a small photo here): each network's GFLOP/s
    against the 48->48 conv, test.py end to end with both strength modes, and the stage shares."""
    code, out, err = run_cli("scripts/cpu_speed.py", "--sections", "photo", "--photo-archs", "ATBSNStudentA",
                             "--photo-runs", "1", "--photo-size", "128x192", "--out", str(tmp_path / "out"))
    assert code == 0, err
    result = json.load(open(tmp_path / "out" / "results.json"))
    (a,) = result["photo"]
    assert a["arch"] == "ATBSNStudentA" and a["macs_per_pixel"] == 31185 and a["tile"] == 1024
    assert a["seconds"] > 0 and 0 < a["fraction_of_conv"] < 3
    assert [r["strength"] for r in result["test_py"]] == ["adaptive", "full"]
    assert all(r["seconds"] > 0 and r["peak_rss_mb"] > 50 for r in result["test_py"])
    stages = result["stages"]["stages"]
    assert set(stages) >= {"network (tiles, assembly)", "quantise to 8 bits", "encode + write PNG (metadata, atomic)"}
    assert abs(sum(stages.values()) - result["stages"]["total"]) < 1e-6
    assert result["profile"] and result["profile"][0]["op"].startswith("aten::")
    assert a["amp"] in ("fp32", "bf16")  # the test options' train.amp: auto, as this CPU resolves it
    assert f"| ATBSNStudentA | {a['amp']} | 31,185 | 1024 |" in out and "| adaptive |" in out


@pytest.mark.slow  # 8 s: a benchmark script end to end
def test_gpu_speed_script_dry_runs_on_the_cpu(tmp_path):
    """scripts/gpu_speed.py is the one prepared GPU check of issue 24 (12-MP student inference, bf16,
    channels_last); a session lent a GPU runs it as it is, so its whole path runs here on a CPU."""
    code, out, err = run_cli("scripts/gpu_speed.py", "--device", "cpu", "--amp", "fp32", "--photo-size", "64x96",
                             "--runs", "1", "--warmup", "1", "--no-test-py", "--out", str(tmp_path / "out"))
    assert code == 0, err
    result = json.load(open(tmp_path / "out" / "results.json"))
    (a,) = result["networks"]
    assert a["arch"] == "ATBSNStudentA" and a["macs_per_pixel"] == 31185 and a["shape"] == [64, 96]
    assert a["untiled_s"] > 0 and a["tiled_s"] > 0 and result["conv_gflops"] > 0
    assert "| ATBSNStudentA | 31,185 |" in out
    import torch

    if not torch.cuda.is_available():  # without --device cpu, on a machine without CUDA, it says so
        code, _, err = run_cli("scripts/gpu_speed.py", "--out", str(tmp_path / "out2"))
        assert code != 0 and "no CUDA device" in err


def test_mild_noise_sets_scale_the_real_noise_per_image_as_listed(tmp_path):
    """make_mild_noise_set.py: clean + s (noisy - clean), s cycled over the sorted names (a folder shot
    at several ISOs), saved through JPEG; scales.csv says which image got which factor."""
    import cv2
    import numpy as np

    rng = np.random.RandomState(0)
    src = tmp_path / "src"
    for sub in ("noisy", "clean"):
        (src / sub).mkdir(parents=True)
    clean = cv2.GaussianBlur(rng.randint(0, 256, (64, 64, 3)).astype(np.float32), (0, 0), 3) * 2 - 128
    clean = np.clip(clean + 128, 40, 215)
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(src / "clean" / name), np.round(clean).astype(np.uint8))
        luma_noise = rng.normal(0, 12, (64, 64, 1))  # grey, so JPEG's chroma subsampling keeps it
        cv2.imwrite(str(src / "noisy" / name), np.round(clean + luma_noise).astype(np.uint8))
    code, out, err = run_cli("scripts/make_mild_noise_set.py", "--source", str(src), "--out", str(tmp_path / "mix"),
                             "--scale", "0.25", "1.0", "--quality", "100")
    assert code == 0, err
    assert "3 pairs" in out and "noise x 0.25 1.0" in out
    assert (tmp_path / "mix" / "scales.csv").read_text().split() == ["name,scale", "a.png,0.25", "b.png,1.0", "c.png,0.25"]
    for name, scale in (("a.png", 0.25), ("b.png", 1.0)):
        got = cv2.imread(str(tmp_path / "mix" / "noisy" / name)).astype(float) - cv2.imread(str(src / "clean" / name))
        want = cv2.imread(str(src / "noisy" / name)).astype(float) - cv2.imread(str(src / "clean" / name))
        assert np.std(got) == pytest.approx(scale * np.std(want), rel=0.1)
