#!/usr/bin/env python
"""Memory and time of the recipe on a folder of big phone-sized photos (not a timed test).

    python scripts/photo_folder_benchmark.py --photos 200 --iters 150 --distill-iters 20 --test-photos 5

Generates ``--photos`` 12-MP JPEGs (4000 x 3000, a smooth random scene with fine texture and
signal-dependent noise, quality 92; deterministic), trains ``options/train/noisy_folder.yml`` on
them for ``--iters`` iterations (enough for every photo to be visited, so the training cache is
full), distils for ``--distill-iters`` and runs ``test.py -opt options/test/noisy_folder.yml`` over
the first ``--test-photos``.
Each command runs under ``/usr/bin/time -v``; the report gives its peak RSS, the seconds to the
first training iteration, iterations per second and test.py's MP/s, in ``--out`` (markdown + JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_photo(path: str, seed: int, h: int = 3000, w: int = 4000) -> None:
    import cv2

    rng = np.random.RandomState(seed)
    small = rng.uniform(0.1, 0.9, (h // 200 + 2, w // 200 + 2, 3)).astype(np.float32)
    scene = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scene += 0.06 * np.sin(xx * rng.uniform(0.3, 1.2) + yy * rng.uniform(0.1, 0.5))[:, :, None]
    scene += rng.randn(h, w, 3).astype(np.float32) * (0.01 + 0.02 * np.clip(scene, 0, 1))  # shot + read noise
    img = np.clip(np.round(scene * 255), 0, 255).astype(np.uint8)
    cv2.imwrite(path, img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])


def timed(cmd: list, log_path: str, first_marker: str | None = None) -> dict:
    """Run ``cmd`` under /usr/bin/time -v; wall seconds, peak RSS (MB), seconds until a stdout line
    contains ``first_marker``."""
    t0 = time.perf_counter()
    first = None
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["/usr/bin/time", "-v", *cmd], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            log.write(line)
            if first is None and first_marker and first_marker in line:
                first = time.perf_counter() - t0
        rc = proc.wait()
    text = open(log_path).read()
    if rc:
        raise SystemExit(f"{' '.join(cmd)} failed (rc {rc}); see {log_path}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 1024
    return {"command": " ".join(cmd), "seconds": time.perf_counter() - t0, "peak_rss_mb": rss, "first_seconds": first}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photos", type=int, default=200)
    p.add_argument("--iters", type=int, default=150)
    p.add_argument("--distill-iters", type=int, default=20)
    p.add_argument("--test-photos", type=int, default=5)
    p.add_argument("--work", default="results/photo_folder_benchmark")
    p.add_argument("--out", default="benchmarks/photo_folder")
    args = p.parse_args()
    os.chdir(ROOT)
    photos = os.path.join(args.work, "photos")
    os.makedirs(photos, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(args.photos):
        path = os.path.join(photos, f"photo_{i:04d}.jpg")
        if not os.path.exists(path):
            make_photo(path, i)
    print(f"{args.photos} photos of 12 MP ready in {photos} ({time.perf_counter() - t0:.0f} s)", flush=True)
    exp = os.path.join(args.work, "experiments")
    train = timed([sys.executable, "train.py", "-opt", "options/train/noisy_folder.yml", "--set",
                   f"datasets.train.root={photos}", f"train.total_iter={args.iters}", "name=photo_folder_benchmark",
                   f"path.experiments_root={exp}", "logger.print_freq=1", "logger.use_tensorboard=false",
                   f"train.save_freq={args.iters}", f"val.val_freq={args.iters}"],
                  os.path.join(args.work, "train.log"), first_marker=" iter 1/")
    print(f"train: peak RSS {train['peak_rss_mb']:.0f} MB, first iteration after {train['first_seconds']:.1f} s, "
          f"{train['seconds']:.0f} s in all", flush=True)
    distill = timed([sys.executable, "train.py", "-opt", "options/train/noisy_folder_distill.yml", "--set",
                     f"datasets.train.root={photos}", f"train.total_iter={args.distill_iters}",
                     "name=photo_folder_benchmark_student", f"path.experiments_root={exp}", "logger.print_freq=1",
                     "logger.use_tensorboard=false", f"train.save_freq={args.distill_iters}",
                     f"val.val_freq={args.distill_iters}",
                     f"path.pretrain_network.teacher={exp}/photo_folder_benchmark/checkpoints/last.pth"],
                    os.path.join(args.work, "distill.log"), first_marker=" iter 1/")
    print(f"distill: peak RSS {distill['peak_rss_mb']:.0f} MB, first iteration after {distill['first_seconds']:.1f} s",
          flush=True)
    subset = os.path.join(args.work, "test_input")
    os.makedirs(subset, exist_ok=True)
    for i in range(args.test_photos):
        name = f"photo_{i:04d}.jpg"
        if not os.path.exists(os.path.join(subset, name)):
            os.link(os.path.join(photos, name), os.path.join(subset, name))
    test = timed([sys.executable, "test.py", "-opt", "options/test/noisy_folder.yml", "--input", subset,
                  "--output", os.path.join(args.work, "test_output"), "--set",
                  f"path.pretrain_network.student={exp}/photo_folder_benchmark_student/checkpoints/last.pth"],
                 os.path.join(args.work, "test.log"))
    mp = args.test_photos * 12.0
    test["mp_per_s"] = mp / test["seconds"]
    print(f"test.py: peak RSS {test['peak_rss_mb']:.0f} MB, {test['seconds']:.0f} s for {mp:.0f} MP", flush=True)
    import torch

    result = {"photos": args.photos, "iters": args.iters, "test_photos": args.test_photos, "train": train,
              "distill": distill, "distill_iters": args.distill_iters, "test": test, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                       f"torch {torch.__version__}",
              "revision": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    rows = [("teacher training", train, f"{args.iters} iterations"), ("distillation", distill,
            f"{args.distill_iters} iterations"), ("test.py", test, f"{args.test_photos} photos, {test['mp_per_s']:.2f} MP/s")]
    lines = ["# A folder of 12-MP photos: memory and time", "",
             f"`python scripts/photo_folder_benchmark.py --photos {args.photos} --iters {args.iters} --distill-iters "
             f"{args.distill_iters} --test-photos {args.test_photos}` at {result['revision'][:7]} on "
             f"{result['machine']}, {result['date']} (nothing else running). {args.photos} generated 4000 x 3000 JPEGs; "
             "each command under `/usr/bin/time -v`.", "",
             "| stage | peak RSS | first iteration after | wall time | what |", "|---|---:|---:|---:|---|"]
    for name, r, what in rows:
        first = f"{r['first_seconds']:.1f} s" if r.get("first_seconds") else "-"
        lines.append(f"| {name} | {r['peak_rss_mb'] / 1024:.2f} GB | {first} | {r['seconds']:.0f} s | {what} |")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}/results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
