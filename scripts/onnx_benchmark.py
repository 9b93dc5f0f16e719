#!/usr/bin/env python
"""onnxruntime against PyTorch on the CPU, for the recipe's student (ATBSNStudentA), same inputs, one process.

    python scripts/onnx_benchmark.py                 # 1 MP whole and 12 MP in the recipe's 1024-px tiles

Each row: one warm-up run, then the median of ``--repeats`` runs of ``atbsn.inference.denoise``
(the path test.py takes, full strength) on the same random image; the PyTorch model as
``options/test/noisy_folder.yml`` sets it up (fp32, channels_last on CPU), the ONNX file exported
from it with ``scripts/export_onnx.py``'s code. Writes ``benchmarks/onnx.md``; run it on an idle machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/onnx.md")
    args = p.parse_args()
    os.chdir(ROOT)
    import onnxruntime
    import torch

    from atbsn.deploy import OnnxModel, export_onnx
    from atbsn.inference import denoise
    from atbsn.models.setup import setup_model
    from atbsn.options import load_options

    torch.manual_seed(0)
    opt = load_options("options/test/noisy_folder.yml", ["path.pretrain_network=null", "val.strength.mode=full"])
    model = setup_model(opt, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "student.onnx")
        export_onnx(model, opt, path)  # the same weights (random: no checkpoint needed to time it)
        onnx_model = OnnxModel(path)
        rows = []
        for label, (h, w), tile in (("1 MP, whole", (1024, 1024), None), ("12 MP, 1024-px tiles", (3000, 4000), 1024)):
            x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1))
            times = {}
            for name, m in (("PyTorch", model), ("onnxruntime", onnx_model)):
                runs = []
                for i in range(args.repeats + 1):
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        out = denoise(m, x, tile)
                    if i:
                        runs.append(time.perf_counter() - t0)
                times[name] = statistics.median(runs)
                if name == "PyTorch":
                    ref = out
                else:
                    diff = float((out - ref).abs().max())
            rows.append((label, times["PyTorch"], times["onnxruntime"], diff))
            print(f"{label}: PyTorch {times['PyTorch']:.2f} s, onnxruntime {times['onnxruntime']:.2f} s, "
                  f"max |diff| {diff:.1e}", flush=True)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = ["# onnxruntime against PyTorch (CPU)", "",
             f"`python scripts/onnx_benchmark.py --repeats {args.repeats}` at {rev}, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
             f"({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nothing else running. The recipe's student "
             "(ATBSNStudentA, 31,185 MACs per pixel), `atbsn.inference.denoise` at full strength on the same random "
             f"image; median of {args.repeats} runs after one warm-up.", "",
             "| input | PyTorch | onnxruntime | speed-up | max abs difference |", "|---|---:|---:|---:|---:|"]
    for label, t_torch, t_ort, diff in rows:
        lines.append(f"| {label} | {t_torch:.2f} s | {t_ort:.2f} s | {t_torch / t_ort:.2f}x | {diff:.1e} |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
