#!/usr/bin/env python
"""The real-noise study: every method trained self-supervised on the *noisy* images of a paired set,
scored against the clean ones, beside the classical denoisers a user would otherwise run.

    python scripts/real_noise_study.py                           # all methods, both sets (~2 h CPU)
    python scripts/real_noise_study.py --sets sidd4 --methods baselines atbsn
    python scripts/real_noise_study.py --figures-only            # redraw from results.json

Each method is run through ``train.py`` exactly as a user would (the commands are recorded), its
saved checkpoints are evaluated on the full images with the inference settings embedded in them
(tiles, centering), and the train wall time is pro-rated per checkpoint (one process on this
2-core machine, nothing else running). Writes ``results.json``, ``results.md``, ``curves.png``
and ``crops_<set>.png`` into ``--out``; the denoised images go to ``--work``.
BM3D needs ``pip install bm3d``, the figures ``pip install matplotlib`` (both optional).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SETS = {"sidd4": "../shared/data/SIDD_samples", "cc15": "../shared/data/CC15",
        "cc15_mild": "results/data/cc15_mild",  # made by scripts/make_mild_noise_set.py
        "cc15_mixed": "results/data/cc15_mixed"}
MADE_SETS = {"cc15_mild": (0.75,), "cc15_mixed": (0.4, 0.6, 0.8, 1.0, 0.5)}  # CC15's noise scales, JPEG q95
CROP_IMAGE = {"sidd4": ("sidd_1", 200, 150), "cc15": ("d800_iso6400_1", 180, 200),
              "cc15_mild": ("d800_iso6400_1", 180, 200), "cc15_mixed": ("d800_iso6400_1", 180, 200)}  # name, y, x of a 128 crop

# One entry per method: the train.py stages (options file, overrides) run in order, ``{prev}`` being
# the previous stage's last checkpoint; the last stage is evaluated. A stage given as a method name
# reuses that method's run (the distilled student starts from the teacher run above it, and its
# minutes include the teacher's). Budgets are CPU-sized and the same for both sets.
METHODS = {
    "atbsn": [("options/train/noisy_folder.yml", [])],
    "atbsn_student": ["atbsn", ("options/train/noisy_folder_distill.yml", ["path.pretrain_network.teacher={prev}"])],
    "cbsn": [("benchmarks/real_noise/configs/cbsn.yml", [])],
    "n2n": [("benchmarks/real_noise/configs/n2n.yml", [])],
    "dbsn": [("benchmarks/real_noise/configs/dbsn_mu.yml", []),
             ("benchmarks/real_noise/configs/dbsn_mg.yml", ["path.pretrain_network.net={prev}"])],
}
OWN_PROTOCOL = {"atbsn": "atbsn_official", "atbsn_student": "atbsn_official", "cbsn": "cbsn_fixed_val",
                "n2n": "n2n_official", "dbsn": "dbsn_official"}
LABELS = {"atbsn": "AT-BSN teacher (k=3)", "atbsn_student": "AT-BSN distilled student", "cbsn": "C-BSN",
          "n2n": "Neighbor2Neighbor", "dbsn": "D-BSN (posterior mean)", "noisy": "noisy input",
          "blur": "Gaussian blur (sigma 1.5)", "nlm": "OpenCV NL-means (h 15)", "bm3d": "BM3D (estimated sigma)"}


def read_rgb(path: str) -> np.ndarray:
    from atbsn.utils.image import read_image

    return read_image(path, 3, False)[0].astype(np.float64)


def pairs(root: str):
    for noisy in sorted(glob.glob(os.path.join(root, "noisy", "*.png"))):
        yield os.path.splitext(os.path.basename(noisy))[0], noisy, os.path.join(root, "clean", os.path.basename(noisy))


def score(pred: np.ndarray, clean: np.ndarray, protocols) -> dict:
    out = {}
    for proto in protocols:
        m = proto(pred, clean)
        out[proto.name] = {"psnr": float(m["psnr"]), "ssim": float(m.get("ssim", float("nan")))}
    return out


def mean_scores(per_image: dict) -> dict:
    names = next(iter(per_image.values())).keys()
    return {p: {k: float(np.mean([v[p][k] for v in per_image.values()])) for k in ("psnr", "ssim")} for p in names}


def fmt_ssim(v: float) -> str:
    return "-" if v != v else f"{v:.4f}"  # D-BSN's protocol has no SSIM


# --------------------------------------------------------------------------- classical baselines
def classical(kind: str, noisy: np.ndarray) -> np.ndarray:
    """noisy HWC float [0, 1] -> denoised, as a user would call each tool."""
    import cv2

    if kind == "blur":
        return cv2.GaussianBlur(noisy.astype(np.float32), (0, 0), 1.5)
    u8 = np.clip(np.round(noisy * 255), 0, 255).astype(np.uint8)
    if kind == "nlm":  # OpenCV works in BGR
        return cv2.fastNlMeansDenoisingColored(u8[:, :, ::-1].copy(), None, 15, 15, 7, 21)[:, :, ::-1] / 255.0
    if kind == "bm3d":
        import bm3d
        from skimage.restoration import estimate_sigma

        sigma = float(estimate_sigma(noisy, channel_axis=-1, average_sigmas=True))
        return np.clip(bm3d.bm3d_rgb(noisy, sigma), 0, 1)
    raise ValueError(kind)


def run_baselines(set_name: str, root: str, work: str, protocols) -> dict:
    from atbsn.utils.image import write_image

    kinds = ["noisy", "blur", "nlm"]
    try:
        import bm3d  # noqa: F401

        kinds.append("bm3d")
    except ImportError:
        print("bm3d not installed (pip install bm3d): BM3D skipped")
    results = {}
    for kind in kinds:
        per_image, t0 = {}, time.perf_counter()
        for name, noisy_path, clean_path in pairs(root):
            noisy, clean = read_rgb(noisy_path), read_rgb(clean_path)
            pred = noisy if kind == "noisy" else classical(kind, noisy)
            write_image(os.path.join(work, set_name, kind, f"{name}.png"), pred)
            per_image[name] = score(pred, clean, protocols)
        seconds = time.perf_counter() - t0
        results[kind] = {"mean": mean_scores(per_image), "per_image": per_image, "seconds": seconds}
        print(f"{set_name} {kind:6s} PSNR {results[kind]['mean']['basicsr_rgb']['psnr']:.2f} dB  ({seconds:.0f} s)",
              flush=True)
    return results


# --------------------------------------------------------------------------- learned methods
def train_stage(options: str, overrides, log_path: str) -> tuple:
    cmd = [sys.executable, "train.py", "-opt", options, "--set", *overrides]
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if rc:
        raise SystemExit(f"training failed (rc {rc}); see {log_path}")
    return " ".join(["python", "train.py", "-opt", options, "--set", *overrides]), time.perf_counter() - t0


def evaluate_checkpoint(path: str, root: str, protocols, save_dir: str = "") -> dict:
    from atbsn.inference import Denoiser
    from atbsn.utils.image import write_image

    den = Denoiser.from_checkpoint(path, device="cpu")
    per_image = {}
    t0 = time.perf_counter()
    for name, noisy_path, clean_path in pairs(root):
        noisy, clean = read_rgb(noisy_path), read_rgb(clean_path)
        pred = den(noisy.astype(np.float32)).astype(np.float64)
        if save_dir:
            write_image(os.path.join(save_dir, f"{name}.png"), pred)
        per_image[name] = score(np.clip(pred, 0, 1), clean, protocols)
    return {"mean": mean_scores(per_image), "per_image": per_image, "inference_s": time.perf_counter() - t0}


def run_method(method: str, set_name: str, root: str, work: str, protocols, done: dict) -> dict:
    exp_root = os.path.join(work, "experiments")
    commands, prev, stage_seconds = [], "", []
    for i, stage in enumerate(METHODS[method]):
        if isinstance(stage, str):  # an earlier method's run
            if stage not in done:
                raise SystemExit(f"{method} starts from {stage}: run --methods {stage} {method}")
            commands += done[stage]["commands"]
            stage_seconds += [m * 60 for m in done[stage]["stage_minutes"]]
            prev = done[stage]["last"]
            continue
        options, extra = stage
        run_name = f"study_{set_name}_{method}_s{i}"
        overrides = [f"name={run_name}", f"path.experiments_root={exp_root}", f"datasets.train.root={root}/noisy",
                     *[e.format(prev=prev) for e in extra]]
        timing = os.path.join(work, f"{run_name}.seconds")
        if os.path.exists(timing):  # a finished stage of an interrupted study: its checkpoints and time
            cmd = " ".join(["python", "train.py", "-opt", options, "--set", *overrides])
            seconds = float(open(timing).read())
        else:
            cmd, seconds = train_stage(options, overrides, os.path.join(work, f"{run_name}.log"))
            with open(timing, "w") as f:
                f.write(f"{seconds:.1f}\n")
        print(f"{set_name} {method} stage {i}: {seconds / 60:.1f} min  ({cmd})", flush=True)
        commands.append(cmd)
        stage_seconds.append(seconds)
        prev = os.path.join(exp_root, run_name, "checkpoints", "last.pth")
    ckpt_dir = os.path.dirname(prev)
    start = sum(stage_seconds[:-1])  # earlier stages count in the minutes of every point
    points = []
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "iter_*.pth")), key=lambda p: int(re.findall(r"\d+", p)[-1]))
    total_iter = None
    for path in ckpts:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        total_iter = state["options"]["train"]["total_iter"]
        it = int(state["iteration"])
        final = it == total_iter
        res = evaluate_checkpoint(path, root, protocols, os.path.join(work, set_name, method) if final else "")
        res.update(iteration=it, minutes=(start + stage_seconds[-1] * it / total_iter) / 60)
        points.append(res)
        print(f"{set_name} {method} iter {it}: PSNR {res['mean']['basicsr_rgb']['psnr']:.2f} dB "
              f"at {res['minutes']:.1f} train-min (inference {res['inference_s']:.0f} s)", flush=True)
    return {"commands": commands, "stage_minutes": [s / 60 for s in stage_seconds], "points": points,
            "last": prev}


# --------------------------------------------------------------------------- diagnosis (issue: size-dependent output)
DIAGNOSIS_ITERS = 400
DIAGNOSIS_MODES = {"whole image": (None, None, False), "tiles 128, cross-faded": (128, 64, True),
                   "tiles 64 (the crop size), cross-faded": (64, 32, True)}


def run_diagnosis(set_name: str, root: str, work: str) -> dict:
    """The teacher of noisy_folder.yml on a short budget, uncentred (the official model) and centred,
    each evaluated whole and in tiles: PSNR and the output's mean level minus the input's."""
    import torch

    from atbsn.inference import Denoiser, denoise
    from atbsn.metrics import build_metric

    proto = build_metric("basicsr_rgb")
    out = {"iterations": DIAGNOSIS_ITERS, "commands": [], "rows": []}
    for centering in ("none", "input_mean"):
        run_name = f"diag_{set_name}_{centering}"
        overrides = [f"name={run_name}", f"path.experiments_root={os.path.join(work, 'experiments')}",
                     f"datasets.train.root={root}/noisy", f"model.centering={centering}",
                     f"train.total_iter={DIAGNOSIS_ITERS}", f"train.scheduler.T_max={DIAGNOSIS_ITERS}",
                     f"train.save_freq={DIAGNOSIS_ITERS}"]
        cmd, seconds = train_stage("options/train/noisy_folder.yml", overrides, os.path.join(work, f"{run_name}.log"))
        out["commands"].append(cmd)
        den = Denoiser.from_checkpoint(os.path.join(work, "experiments", run_name, "checkpoints", "last.pth"), "cpu")
        for mode, (tile, overlap, blend) in DIAGNOSIS_MODES.items():
            psnrs, offsets = [], []
            for name, noisy_path, clean_path in pairs(root):
                noisy, clean = read_rgb(noisy_path), read_rgb(clean_path)
                x = torch.from_numpy(np.ascontiguousarray(noisy.transpose(2, 0, 1)))[None].float()
                pred = denoise(den.model, x, tile, overlap, blend)[0].numpy().transpose(1, 2, 0).astype(np.float64)
                psnrs.append(proto(np.clip(pred, 0, 1), clean)["psnr"])
                offsets.append(float((pred - noisy).mean() * 255))
            row = {"centering": centering, "inference": mode, "psnr": float(np.mean(psnrs)),
                   "mean_offset": float(np.mean(offsets)), "max_abs_offset": float(np.max(np.abs(offsets)))}
            out["rows"].append(row)
            print(f"diagnosis {set_name} centering={centering} {mode}: PSNR {row['psnr']:.2f} dB, output mean - input "
                  f"mean {row['mean_offset']:+.1f} gray levels", flush=True)
    return out


# --------------------------------------------------------------------------- report
def write_markdown(results: dict, out: str) -> None:
    runs = results["runs"]
    lines = ["# Real noise: self-supervised methods vs classical denoisers", "",
             "Produced by " + "; then ".join(f"`{r['command']}` at revision {r['revision']}" for r in runs)
             + f", on {runs[-1]['machine']}; the notes below say where the machine was not idle.", "",
             "Every learned method is trained on the **noisy images only** of the set it is scored on (as a user "
             "with a folder of noisy photos would); the clean images are used only to score. PSNR/SSIM are "
             "`basicsr_rgb` (RGB, no border crop, rounded to 8 bits) unless a column says otherwise; "
             "train-min are wall minutes of `train.py` on the 2-core CPU (no GPU), pro-rated per checkpoint, "
             "inference time not included.", "",
             "Reading the tables:",
             "- The recipe a user runs (`options/train/noisy_folder.yml`, then `noisy_folder_distill.yml`, then "
             "`options/test/noisy_folder.yml`) is the *AT-BSN distilled student* row at its last iteration; its "
             "train-min include the teacher's.",
             "- BM3D gets its sigma from `skimage.restoration.estimate_sigma` (wavelet MAD of the finest scale), "
             "as a user would call it; that sees only the finest-scale part of spatially correlated sRGB noise, so "
             "BM3D under-denoises SIDD.",
             "- Budgets are CPU-sized and far from the papers' (C-BSN here: width 32, 1,200 iterations; official: "
             "width 128, 500k). Neighbor2Neighbor and D-BSN assume noise independent between neighbouring pixels, "
             "which sRGB camera noise is not: they learn to keep part of it.", ""]
    lines += [f"- {r}" for r in results.get("remarks", [])] + ([""] if results.get("remarks") else [])
    for set_name, res in results["sets"].items():
        diag = res.get("diagnosis")
        if diag:
            noisy_psnr = res.get("baselines", {}).get("noisy", {}).get("mean", {}).get("basicsr_rgb", {}).get("psnr")
            lines += [f"## Why short AT-BSN runs lost to the noisy input ({set_name})", "",
                      f"The stage-1 teacher of `options/train/noisy_folder.yml` after {diag['iterations']} iterations "
                      f"on 64-px crops, evaluated whole and in tiles"
                      + (f" (noisy input {noisy_psnr:.2f} dB)" if noisy_psnr else "") + ":", "",
                      "| centering | inference | PSNR | output mean - input mean (gray levels, 0-255) |",
                      "|---|---|---:|---:|"]
            for r in diag["rows"]:
                lines.append(f"| {r['centering']} | {r['inference']} | {r['psnr']:.2f} | {r['mean_offset']:+.1f} "
                             f"(max {r['max_abs_offset']:.1f}) |")
            lines += ["", "Commands: " + " ; ".join(f"`{c}`" for c in diag["commands"]), ""]
        base = res.get("baselines", {})
        noisy = base.get("noisy", {}).get("mean", {}).get("basicsr_rgb", {}).get("psnr")
        lines += [f"## {set_name} (`{SETS.get(set_name, '')}`)", "",
                  "| method | train-min | iterations | PSNR | SSIM | own protocol | own PSNR / SSIM | gain over noisy |",
                  "|---|---:|---:|---:|---:|---|---:|---:|"]
        for kind, r in base.items():
            m = r["mean"]["basicsr_rgb"]
            gain = f"{m['psnr'] - noisy:+.2f}" if noisy is not None else ""
            lines.append(f"| {LABELS[kind]} | - | - | {m['psnr']:.2f} | {m['ssim']:.4f} | - | - | {gain} |")
        for method, r in res.get("methods", {}).items():
            for p in r["points"]:
                m, own = p["mean"]["basicsr_rgb"], p["mean"][OWN_PROTOCOL[method]]
                gain = f"{m['psnr'] - noisy:+.2f}" if noisy is not None else ""
                lines.append(f"| {LABELS[method]} | {p['minutes']:.1f} | {p['iteration']} | {m['psnr']:.2f} | "
                             f"{m['ssim']:.4f} | {OWN_PROTOCOL[method]} | {own['psnr']:.2f} / {fmt_ssim(own['ssim'])} | "
                             f"{gain} |")
        missing = [m for m in METHODS if m not in res.get("methods", {})]
        if missing:
            lines += ["", f"Not run on {set_name} yet: {', '.join(LABELS[m] for m in missing)} "
                      f"(`python scripts/real_noise_study.py --sets {set_name} --methods {' '.join(missing)}`)."]
        lines += [""]
        for method, r in res.get("methods", {}).items():
            lines += [f"- {LABELS[method]}: " + " && ".join(f"`{c}`" for c in r["commands"])]
        lines += [""]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def draw_figures(results: dict, out: str, work: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install matplotlib): figures skipped")
        return
    sets = list(results["sets"])
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.5), squeeze=False)
    for ax, set_name in zip(axes[0], sets):
        res = results["sets"][set_name]
        for kind, r in res.get("baselines", {}).items():
            ax.axhline(r["mean"]["basicsr_rgb"]["psnr"], ls="--" if kind != "noisy" else ":", lw=1,
                       color={"noisy": "k", "blur": "tab:gray", "nlm": "tab:olive", "bm3d": "tab:brown"}[kind],
                       label=LABELS[kind])
        for method, r in res.get("methods", {}).items():
            xs = [p["minutes"] for p in r["points"]]
            ys = [p["mean"]["basicsr_rgb"]["psnr"] for p in r["points"]]
            ax.plot(xs, ys, "o-", label=LABELS[method])
        ax.set_title(f"{set_name}: trained on its noisy images only")
        ax.set_xlabel("train wall minutes (2-core CPU)")
        ax.set_ylabel("PSNR (dB, basicsr_rgb)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "curves.png"), dpi=110)
    plt.close(fig)

    for set_name in sets:
        name, y, x = CROP_IMAGE.get(set_name, (None, 0, 0))
        res = results["sets"][set_name]
        columns = [k for k in res.get("baselines", {})] + list(res.get("methods", {}))
        tiles, labels = [], []
        for kind in columns:
            path = os.path.join(work, set_name, kind, f"{name}.png")
            if os.path.exists(path):
                tiles.append(read_rgb(path)[y:y + 128, x:x + 128])
                labels.append(LABELS[kind].split(" (")[0])
        clean = os.path.join(SETS[set_name], "clean", f"{name}.png")
        if not tiles:  # no outputs in this work folder: keep the committed grid
            continue
        if os.path.exists(clean):
            tiles.append(read_rgb(clean)[y:y + 128, x:x + 128])
            labels.append("clean")
        fig, axes = plt.subplots(1, len(tiles), figsize=(1.9 * len(tiles), 2.3), squeeze=False)
        for ax, t, lab in zip(axes[0], tiles, labels):
            ax.imshow(np.clip(t, 0, 1), interpolation="nearest")
            ax.set_title(lab, fontsize=7)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"crops_{set_name}.png"), dpi=120)
        plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    p.add_argument("--methods", nargs="+", default=["baselines", *METHODS],
                   choices=["baselines", "diagnosis", *METHODS])
    p.add_argument("--out", default="benchmarks/real_noise")
    p.add_argument("--work", default="results/real_noise_study")
    p.add_argument("--figures-only", action="store_true")
    args = p.parse_args()
    os.chdir(ROOT)
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "results.json")
    results = json.load(open(json_path)) if os.path.exists(json_path) else {"sets": {}}
    if "meta" in results:  # one run recorded the old way
        results["runs"] = [results.pop("meta")]
    if not args.figures_only:
        import torch

        import atbsn.inference  # noqa: F401  (all of the package now, not half before and half after an edit)
        from atbsn.metrics import build_metric

        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        results.setdefault("runs", []).append({
            "command": "python scripts/real_noise_study.py " + " ".join(sys.argv[1:]), "revision": rev,
            "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads"})
        names = sorted({"basicsr_rgb", *OWN_PROTOCOL.values()})
        protocols = [build_metric(n) for n in names]
        for set_name in args.sets:
            entry = results["sets"].setdefault(set_name, {})
            root = SETS[set_name]
            if "baselines" in args.methods:
                entry["baselines"] = run_baselines(set_name, root, args.work, protocols)
            if "diagnosis" in args.methods:
                entry["diagnosis"] = run_diagnosis(set_name, root, args.work)
            for method in args.methods:
                if method not in ("baselines", "diagnosis"):
                    methods = entry.setdefault("methods", {})
                    methods[method] = run_method(method, set_name, root, args.work, protocols, methods)
                    with open(json_path, "w") as f:  # keep what is done if a later run fails
                        json.dump(results, f, indent=1)
            with open(json_path, "w") as f:
                json.dump(results, f, indent=1)
    write_markdown(results, args.out)
    draw_figures(results, args.out, args.work)
    print(f"wrote {args.out}/results.md and figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
