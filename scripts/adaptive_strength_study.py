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

from typing import Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from real_noise_study import MADE_SETS, SETS, pairs, read_rgb  # noqa: E402

BLUR_SIGMAS = (0.5, 1.0, 1.5)
NLM_HS = (3, 5, 10, 15)
BM3D_SIGMAS = {"cc15": (3, 5, 8, 12), "sidd4": (10, 20, 30, 40), "cc15_mild": (3, 5, 8),
               "cc15_mixed": (5, 8)}  # 0-255, around each set's noise (30 s a call)
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


def run_baselines(set_name: str, done: Optional[dict] = None) -> dict:
    """{setting: {image: psnr}} for every classical setting, and the noisy input; settings already
    in ``done`` (the previous results) are kept, not recomputed (BM3D takes ~30 s an image)."""
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
        if done and key in done and set(done[key]) == {name for name, _, _ in images}:
            out[key] = done[key]
            continue
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


def teacher_outputs(teacher, noisy: np.ndarray) -> np.ndarray:
    """The stage-1 teacher at every hole size of HOLE_SIZES, as the recipe runs it (centred, on
    64-px cross-faded tiles): one U-Net pass per tile, one head per k. K x H x W x C in [0, 1]."""
    import torch

    from atbsn.inference import denoise_blended
    from atbsn.models.atbsn import center

    model = teacher.model
    net = model.networks["net"]

    def all_heads(t):
        x, mean = center(model.prepare_input(t) * 255, model.centering)
        with torch.no_grad():
            return torch.cat([h + mean for h in net.heads(net.features(x), list(HOLE_SIZES))], 1).cpu() / 255

    x = torch.from_numpy(np.ascontiguousarray(noisy.transpose(2, 0, 1))).float()[None]
    y = denoise_blended(all_heads, x, 64, 32)[0].numpy()
    return y.reshape(len(HOLE_SIZES), noisy.shape[2], *y.shape[-2:]).transpose(0, 2, 3, 1).astype(np.float64)


def textured_crop(clean: np.ndarray, size: int = 96):
    """(y, x) of the size x size window with the most gradient energy in the clean image."""
    import cv2

    g = cv2.cvtColor(clean.astype(np.float32), cv2.COLOR_RGB2GRAY)
    energy = cv2.Sobel(g, cv2.CV_32F, 1, 0) ** 2 + cv2.Sobel(g, cv2.CV_32F, 0, 1) ** 2
    box = cv2.boxFilter(energy, -1, (size, size), normalize=True, borderType=cv2.BORDER_CONSTANT)
    h, w = g.shape
    r = size // 2
    inner = box[r:h - r + 1, r:w - r + 1] if h > size and w > size else box
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return int(min(y, max(0, h - size))), int(min(x, max(0, w - size)))


def run_diagnosis(set_name: str, work: str, entry: dict) -> dict:
    """Per image: the teacher at each k, their mean (the 7-k ensemble) and the distilled student,
    each at full strength and with the adaptive strength; crops of the most textured regions."""
    import torch

    from atbsn.inference import Denoiser
    from atbsn.options import load_options
    from atbsn.strength import adaptive_blend, nl_means, noise_variance

    _, _, (teacher_ckpt, student_ckpt) = recipe_commands(set_name, work)
    recipe = {k: v for k, v in load_options("options/test/noisy_folder.yml")["val"]["strength"].items() if k != "mode"}
    teacher, student = Denoiser.from_checkpoint(teacher_ckpt, "cpu"), Denoiser.from_checkpoint(student_ckpt, "cpu")
    student.model.strength = {"mode": "full"}  # the network's own output; the adaptive step is applied below
    per_image, crops = {}, {}
    t0 = time.perf_counter()
    for name, noisy_path, clean_path in pairs(SETS[set_name]):
        noisy, clean = read_rgb(noisy_path), read_rgb(clean_path)
        x = torch.from_numpy(np.ascontiguousarray(noisy.transpose(2, 0, 1))).float()[None]
        candidates = {f"teacher k={k}": t for k, t in zip(HOLE_SIZES, teacher_outputs(teacher, noisy))}
        candidates["teacher, mean of the 7 k"] = np.mean([candidates[f"teacher k={k}"] for k in HOLE_SIZES], 0)
        candidates["student"] = student(noisy.astype(np.float32)).astype(np.float64)
        sigma = float(noise_variance(x).mean().sqrt() * 255)
        candidates[f"NL-means alone, h = {recipe['nlm_strength']} x estimated sigma"] = \
            nl_means(x[0], recipe["nlm_strength"] * sigma).numpy().transpose(1, 2, 0).astype(np.float64)
        row = {"noisy": psnr(noisy, clean)}
        adaptive_images = {}
        for label, out in candidates.items():
            row[label] = psnr(out, clean)
            d = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).float()[None]
            blended = adaptive_blend(x, d, **recipe)[0][0].numpy().transpose(1, 2, 0).astype(np.float64)
            row[label + " + adaptive"] = psnr(blended, clean)
            adaptive_images[label] = blended
        d = torch.from_numpy(np.ascontiguousarray(candidates["student"].transpose(2, 0, 1))).float()[None]
        shrink_only = adaptive_blend(x, d, **{**recipe, "classical_mix": 0.0})[0][0].numpy().transpose(1, 2, 0)
        row["student + shrinkage only (no NL-means)"] = psnr(shrink_only.astype(np.float64), clean)
        row["student + shrinkage only (no NL-means) + adaptive"] = row["student + adaptive"]
        per_image[name] = row
        y0, x0 = textured_crop(clean)
        sl = (slice(y0, y0 + 96), slice(x0, x0 + 96))
        crops[name] = {"yx": [y0, x0], "images": {
            "noisy": noisy[sl], "teacher k=3": candidates["teacher k=3"][sl],
            "teacher mean of k": candidates["teacher, mean of the 7 k"][sl], "student (full)": candidates["student"][sl],
            "student + shrinkage": shrink_only[sl].astype(np.float64),
            "recipe (+ NL-means)": adaptive_images["student"][sl], "clean": clean[sl]}}
        print(f"{set_name} diagnosis {name}: noisy {row['noisy']:.2f}, student {row['student']:.2f}, "
              f"+ adaptive {row['student + adaptive']:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    write_crops(set_name, crops, per_image, os.path.join(work, f"crops_{set_name}.png"))
    return {"per_image": per_image, "crop_origins": {n: c["yx"] for n, c in crops.items()},
            "seconds": time.perf_counter() - t0}


def write_crops(set_name: str, crops: dict, per_image: dict, path: str, rows: int = 4) -> None:
    """The most textured 96-px region of the images where the student loses most, at 2x (nearest),
    one row per image: noisy, teacher k=3, teacher mean, student, recipe, clean."""
    import cv2

    worst = sorted(per_image, key=lambda n: per_image[n]["student"] - per_image[n]["noisy"])[:rows]
    lines = []
    for name in worst:
        tiles = []
        for label, img in crops[name]["images"].items():
            t = cv2.resize(np.clip(img, 0, 1).astype(np.float32), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
            t = (t * 255).round().astype(np.uint8)[:, :, ::-1].copy()
            t = cv2.copyMakeBorder(t, 18, 2, 2, 2, cv2.BORDER_CONSTANT, value=(255, 255, 255))
            cv2.putText(t, label, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
            tiles.append(t)
        line = np.concatenate(tiles, 1)
        head = np.full((16, line.shape[1], 3), 255, np.uint8)
        r = per_image[name]
        cv2.putText(head, f"{name} (crop at y, x = {crops[name]['yx']}): noisy {r['noisy']:.2f} dB, student "
                    f"{r['student']:.2f}, recipe {r['student + adaptive']:.2f}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (0, 0, 0), 1, cv2.LINE_AA)
        lines += [head, line]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    cv2.imwrite(path, np.concatenate(lines, 0))


# --------------------------------------------------------------------------- report
def best_fixed(baselines: dict, kind: str):
    """The setting of ``kind`` with the best mean over the set (what a user picking one value gets)."""
    keys = [k for k in baselines if k.startswith(kind + " ") and k != "bm3d estimated"]
    return max(keys, key=lambda k: np.mean(list(baselines[k].values()))) if keys else None


def write_report(results: dict, out: str, work: str) -> None:
    lines = ["# Adaptive strength: mild and heavy real noise, image by image", "",
             "Every number below comes from " + "; then ".join(
                 f"`{r['command']}` at revision {r['revision']} ({r['machine']}, {r['date']})"
                 for r in results["runs"]) + ". The learned rows are trained on the *noisy* images of the set only "
             "(the README's three commands, `options/train/noisy_folder.yml`, `noisy_folder_distill.yml`, "
             "`options/test/noisy_folder.yml`); the clean images only score. PSNR is `basicsr_rgb` (8-bit, RGB, "
             "no border crop). Gains are over the noisy input of the same image.", ""]
    for set_name, res in results["sets"].items():
        base, rec, diag = res.get("baselines", {}), res.get("recipe"), res.get("diagnosis")
        lines += [f"## {set_name} (`{SETS[set_name]}`)", ""]
        if base:
            noisy = base["noisy"]
            lines += ["| method | mean PSNR | mean gain | worst gain | images worse than noisy |",
                      "|---|---:|---:|---:|---:|"]

            def row(label, scores):
                gains = [scores[n] - noisy[n] for n in noisy]
                return (f"| {label} | {np.mean(list(scores.values())):.2f} | {np.mean(gains):+.2f} | "
                        f"{min(gains):+.2f} | {sum(g < 0 for g in gains)} / {len(gains)} |")

            for key, scores in base.items():
                best = key in (best_fixed(base, "blur"), best_fixed(base, "nlm"), best_fixed(base, "bm3d"))
                lines.append(row(("**best fixed: " + key + "**") if best else key, scores))
            if rec:
                lines.append(row("**recipe (student + adaptive strength)**",
                                 {n: v["recipe"] for n, v in rec["per_image"].items()}))
            lines.append("")
        if rec:
            pi = rec["per_image"]
            err = [pi[n]["estimated_gain"] - (pi[n]["recipe"] - pi[n]["noisy"]) for n in pi]
            sig_ratio = [pi[n]["noise_sigma"] / max(pi[n]["true_sigma"], 1e-9) for n in pi]
            names = ["teacher", "distillation", "test.py"]
            lines += [f"Recipe wall time on this machine: " + ", ".join(
                f"{n} {s / 60:.1f} min" for n, s in zip(names, rec["seconds"]))
                + f"; all stages {sum(rec['seconds']) / 60:.1f} min. Commands: "
                + " && ".join(f"`{c}`" for c in rec["commands"]), "",
                f"test.py's estimate (`strength.csv`, no clean image) against the true gain: mean error "
                f"{np.mean(err):+.2f} dB, mean absolute error {np.mean(np.abs(err)):.2f} dB, worst {max(err, key=abs):+.2f} dB; "
                f"estimated noise sigma over the true RMS of noisy - clean: {min(sig_ratio):.2f}-{max(sig_ratio):.2f} "
                f"(the estimate counts the noise a local denoiser can see; slowly varying differences do not count).", "",
                "| image | noisy | recipe | true gain | estimated gain | estimated sigma | true sigma | mean strength w |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
            for n, v in pi.items():
                lines.append(f"| {n} | {v['noisy']:.2f} | {v['recipe']:.2f} | {v['recipe'] - v['noisy']:+.2f} | "
                             f"{v['estimated_gain']:+.2f} | {v['noise_sigma']:.2f} | {v['true_sigma']:.2f} | "
                             f"{v['mean_strength']:.2f} |")
            lines.append("")
        if diag:
            pi = diag["per_image"]
            labels = [k for k in next(iter(pi.values())) if k != "noisy"]
            lines += ["Where texture is lost (diagnosis): mean PSNR and worst gain over the noisy input of each stage, "
                      "at full strength and with the recipe's adaptive strength (shrinkage, and the NL-means average under mild noise) "
                      "applied to its output (the row 'shrinkage only' repeats the recipe's column in its adaptive column) "
                      f"(noisy mean {np.mean([v['noisy'] for v in pi.values()]):.2f} dB).", "",
                      "| stage | full: mean | full: worst gain | adaptive: mean | adaptive: worst gain |",
                      "|---|---:|---:|---:|---:|"]
            for label in labels:
                if label.endswith(" + adaptive"):
                    continue
                full = [pi[n][label] for n in pi]
                ad = [pi[n][label + " + adaptive"] for n in pi]
                lines.append(f"| {label} | {np.mean(full):.2f} | {min(f - pi[n]['noisy'] for f, n in zip(full, pi)):+.2f} | "
                             f"{np.mean(ad):.2f} | {min(a - pi[n]['noisy'] for a, n in zip(ad, pi)):+.2f} |")
            lines += ["", f"Crops: `crops_adaptive_{set_name}.png` (the most textured 96-px region of the four images "
                      "where the student loses most, shown at 2x).", ""]
            src = os.path.join(work, f"crops_{set_name}.png")
            if os.path.exists(src):
                import shutil

                shutil.copyfile(src, os.path.join(out, f"crops_adaptive_{set_name}.png"))
    with open(os.path.join(out, "adaptive.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    draw_scatter(results, out)
    print(f"wrote {out}/adaptive.md")


def draw_scatter(results: dict, out: str) -> None:
    """Per image: gain over the noisy input against the noisy PSNR (recipe, best NLM, best blur)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install matplotlib): scatter skipped")
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for set_name, res in results["sets"].items():
        base, rec = res.get("baselines"), res.get("recipe")
        if not base or not rec:
            continue
        noisy = base["noisy"]
        marker = {"cc15": "o", "sidd4": "s", "cc15_mixed": "D"}.get(set_name, "^")
        series = {"recipe": {n: v["recipe"] for n, v in rec["per_image"].items()}}
        for kind in ("nlm", "blur"):
            key = best_fixed(base, kind)
            if key:
                series[key] = base[key]
        for (label, scores), color in zip(series.items(), ("tab:red", "tab:olive", "tab:gray")):
            ax.scatter([noisy[n] for n in noisy], [scores[n] - noisy[n] for n in noisy], marker=marker, c=color,
                       s=22, label=f"{set_name}: {label}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("noisy input PSNR (dB)")
    ax.set_ylabel("gain over the noisy input (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "adaptive_scatter.png"), dpi=110)
    plt.close(fig)


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
            if set_name in MADE_SETS and not os.path.isdir(SETS[set_name]):
                from make_mild_noise_set import make

                make(SETS["cc15"], SETS[set_name], MADE_SETS[set_name])
            entry = results["sets"].setdefault(set_name, {})
            for stage in args.stages:
                if stage == "baselines":
                    entry["baselines"] = run_baselines(set_name, entry.get("baselines"))
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
