#!/usr/bin/env python
"""Mild and heavy real noise: the noisy-folder recipe with its adaptive strength, per image, against
the classical denoisers at their best fixed setting per set.

    python scripts/adaptive_strength_study.py --sets cc15 sidd4                  # everything (~1 h on 2 cores)
    python scripts/adaptive_strength_study.py --sets cc15 --stages baselines
    python scripts/adaptive_strength_study.py --sets cc15 --stages diagnosis --teacher T.pth --student S.pth

Stages:
* ``baselines``: Gaussian blur sigma {0.5, 1, 1.5}, OpenCV NL-means h {3, 5, 10, 15}, BM3D over a
  sigma sweep and with ``skimage``'s estimated sigma (``pip install bm3d``), every image.
* ``recipe``: the README's three commands, as a user types them (teacher, distillation, test.py
  into a folder), timed; the written PNGs are scored, and test.py's ``strength.csv`` estimate of
  each image's gain is set against the true gain.
* ``diagnosis``: where texture is lost: the teacher at every hole size k, the 7-k ensemble, the
  distilled student, each at full strength and with the adaptive strength, per image; crops of the
  most textured region of the worst images.

Writes ``results.json``, ``adaptive.md`` and figures (``pip install matplotlib``) into ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from real_noise_study import SETS, pairs, read_rgb  # noqa: E402

BLUR_SIGMAS = (0.5, 1.0, 1.5)
NLM_HS = (3, 5, 10, 15)
BM3D_SIGMAS = {"cc15": (2, 3, 5, 8, 12), "sidd4": (10, 15, 20, 30, 40)}  # 0-255, around each set's noise
HOLE_SIZES = (0, 1, 3, 5, 7, 9, 11)


def psnr(pred: np.ndarray, clean: np.ndarray) -> float:
    """``basicsr_rgb``: both rounded to 8 bits, RGB, no border crop."""
    a = np.clip(np.round(pred * 255), 0, 255)
    b = np.clip(np.round(clean * 255), 0, 255)
    mse = float(np.mean((a - b) ** 2))
    return 10 * np.log10(255 ** 2 / max(mse, 1e-10))


def classical(kind: str, value, noisy: np.ndarray) -> np.ndarray:
    """noisy HWC float [0, 1] -> denoised, as a user would call each tool."""
    import cv2

    if kind == "blur":
        return cv2.GaussianBlur(noisy.astype(np.float32), (0, 0), float(value)).astype(np.float64)
    if kind == "nlm":  # OpenCV works in 8-bit BGR
        u8 = np.clip(np.round(noisy * 255), 0, 255).astype(np.uint8)
        h = float(value)
        return cv2.fastNlMeansDenoisingColored(u8[:, :, ::-1].copy(), None, h, h, 7, 21)[:, :, ::-1] / 255.0
    if kind == "bm3d":
        import bm3d

        if value == "estimated":
            from skimage.restoration import estimate_sigma

            sigma = float(estimate_sigma(noisy, channel_axis=-1, average_sigmas=True))
        else:
            sigma = float(value) / 255
        return np.clip(bm3d.bm3d_rgb(noisy, sigma), 0, 1)
    raise ValueError(kind)


def run_baselines(set_name: str) -> dict:
    """{setting: {image: psnr}} for every classical setting, and the noisy input."""
    settings = [("noisy", None)] + [("blur", s) for s in BLUR_SIGMAS] + [("nlm", h) for h in NLM_HS]
    try:
        import bm3d  # noqa: F401

        settings += [("bm3d", s) for s in BM3D_SIGMAS[set_name]] + [("bm3d", "estimated")]
    except ImportError:
        print("bm3d not installed (pip install bm3d): BM3D skipped")
    images = [(name, read_rgb(n), read_rgb(c)) for name, n, c in pairs(SETS[set_name])]
    out = {}
    for kind, value in settings:
        t0 = time.perf_counter()
        key = kind if value is None else f"{kind} {value}"
        out[key] = {name: psnr(noisy if kind == "noisy" else classical(kind, value, noisy), clean)
                    for name, noisy, clean in images}
        print(f"{set_name} {key:16s} {np.mean(list(out[key].values())):.2f} dB ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    return out


# --------------------------------------------------------------------------- the recipe, as a user runs it
def recipe_commands(set_name: str, work: str):
    root = f"{SETS[set_name]}/noisy"
    exp = os.path.join(work, "experiments")
    teacher, student = f"recipe_{set_name}_teacher", f"recipe_{set_name}_student"
    out = os.path.join(work, set_name, "recipe")
    return [
        ["python", "train.py", "-opt", "options/train/noisy_folder.yml", "--set", f"datasets.train.root={root}",
         f"name={teacher}", f"path.experiments_root={exp}"],
        ["python", "train.py", "-opt", "options/train/noisy_folder_distill.yml", "--set",
         f"datasets.train.root={root}", f"name={student}", f"path.experiments_root={exp}",
         f"path.pretrain_network.teacher={exp}/{teacher}/checkpoints/last.pth"],
        ["python", "test.py", "-opt", "options/test/noisy_folder.yml", "--input", root, "--output", out, "--set",
         f"path.pretrain_network.student={exp}/{student}/checkpoints/last.pth"],
    ], out, [f"{exp}/{teacher}/checkpoints/last.pth", f"{exp}/{student}/checkpoints/last.pth"]


def run_recipe(set_name: str, work: str) -> dict:
    """The three commands (each stage's seconds kept in ``<work>/<set>_recipe_<i>.seconds``, so an
    interrupted study resumes), then the written PNGs scored and strength.csv read back."""
    commands, out_dir, ckpts = recipe_commands(set_name, work)
    seconds = []
    for i, cmd in enumerate(commands):
        stamp = os.path.join(work, f"{set_name}_recipe_{i}.seconds")
        if os.path.exists(stamp) and (i == 2 or os.path.exists(ckpts[i])):
            seconds.append(float(open(stamp).read()))
            continue
        os.makedirs(work, exist_ok=True)
        t0 = time.perf_counter()
        with open(os.path.join(work, f"{set_name}_recipe_{i}.log"), "w") as log:
            rc = subprocess.call([sys.executable, *cmd[1:]], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        if rc:
            raise SystemExit(f"{' '.join(cmd)} failed (rc {rc}); see {log.name}")
        seconds.append(time.perf_counter() - t0)
        with open(stamp, "w") as f:
            f.write(f"{seconds[-1]:.1f}\n")
        print(f"{set_name} recipe stage {i}: {seconds[-1] / 60:.1f} min", flush=True)
    estimates = {}
    with open(os.path.join(out_dir, "strength.csv")) as f:
        for row in csv.DictReader(f):
            estimates[os.path.splitext(os.path.basename(row["input"]))[0]] = row
    per_image = {}
    for name, noisy_path, clean_path in pairs(SETS[set_name]):
        noisy, clean = read_rgb(noisy_path), read_rgb(clean_path)
        out = read_rgb(os.path.join(out_dir, f"{name}.png"))
        e = estimates[name]
        per_image[name] = {"noisy": psnr(noisy, clean), "recipe": psnr(out, clean),
                           "estimated_gain": float(e["estimated_gain_db"]), "noise_sigma": float(e["noise_sigma_8bit"]),
                           "true_sigma": float(np.sqrt(np.mean((noisy - clean) ** 2)) * 255),
                           "mean_strength": float(e["mean_strength"])}
    return {"commands": [" ".join(c) for c in commands], "seconds": seconds, "per_image": per_image}


def run_diagnosis(set_name, work, entry):  # STUB
    raise NotImplementedError


def write_report(results, out, work):  # STUB
    print(json.dumps({k: {s: {n: v.get('recipe') for n, v in d.get('recipe', {}).get('per_image', {}).items()} for s in []} for k, d in results['sets'].items()}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", nargs="+", default=["cc15", "sidd4"], choices=list(SETS))
    p.add_argument("--stages", nargs="+", default=["baselines", "recipe", "diagnosis"],
                   choices=["baselines", "recipe", "diagnosis"])
    p.add_argument("--out", default="benchmarks/real_noise")
    p.add_argument("--work", default="results/adaptive_strength_study")
    p.add_argument("--report-only", action="store_true", help="rewrite adaptive.md and the figures from results.json")
    args = p.parse_args()
    os.chdir(ROOT)
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "adaptive_results.json")
    results = json.load(open(json_path)) if os.path.exists(json_path) else {"runs": [], "sets": {}}
    if not args.report_only:
        import torch

        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        results["runs"].append({"command": "python scripts/adaptive_strength_study.py " + " ".join(sys.argv[1:]),
                                "revision": rev + (" (with uncommitted changes)" if dirty else ""),
                                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                           f"torch {torch.__version__}, {torch.get_num_threads()} threads",
                                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
        for set_name in args.sets:
            entry = results["sets"].setdefault(set_name, {})
            for stage in args.stages:
                if stage == "baselines":
                    entry["baselines"] = run_baselines(set_name)
                elif stage == "recipe":
                    entry["recipe"] = run_recipe(set_name, args.work)
                elif stage == "diagnosis":
                    entry["diagnosis"] = run_diagnosis(set_name, args.work, entry)
                with open(json_path, "w") as f:  # keep what is done if a later stage fails
                    json.dump(results, f, indent=1)
    write_report(results, args.out, args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
