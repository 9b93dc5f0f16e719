"""Benchmark submission files (specs/formats.md sections 3-4).

* SIDD: the Kaggle CSV (``ID,BLOCK``: base64 of the raw 256x256x3 uint8 HWC block, 1,280 rows) and
  the legacy ``SubmitSrgb.mat`` (40x32 cell ``DenoisedBlocksSrgb``, ``TimeMPSrgb``, ``OptionalData``).
* DND: ``0001.mat`` .. ``0050.mat`` with ``Idenoised`` (1x20 cell of float32 512x512x3), ``israw``
  false and ``eval_version`` "1.0".
Blocks are quantised by :func:`atbsn.utils.image.quantize` (clip, round), the one place that rounds.
"""
from __future__ import annotations

import base64
import csv
import os
from typing import Dict, Optional

import numpy as np

from .errors import DataError
from .utils.image import quantize, writable_folder

SIDD_CSV = "SubmitSrgb.csv"
SIDD_MAT = "SubmitSrgb.mat"


def refuse_existing(folder: str, names, overwrite: bool) -> None:
    existing = [n for n in names if os.path.exists(os.path.join(folder, n))]
    if existing and not overwrite:
        raise DataError(f"'{folder}' already holds a submission ({', '.join(existing[:3])}"
                        f"{' ...' if len(existing) > 3 else ''}); pass --overwrite to replace it")


def _atomic(path: str, write) -> None:
    tmp = f"{path}.tmp{os.path.splitext(path)[1]}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sidd_blocks_uint8(blocks: np.ndarray) -> np.ndarray:
    """Float [0,1] (1280, 256, 256, 3) -> uint8; uint8 passes through."""
    if blocks.shape != (1280, 256, 256, 3):
        raise DataError(f"a SIDD submission needs 1280 blocks of 256x256x3, got {blocks.shape}")
    if blocks.dtype == np.uint8:
        return blocks
    out = np.empty(blocks.shape, np.uint8)
    for n in range(len(blocks)):  # block by block: quantising runs in float64, 8x the uint8 size
        out[n] = quantize(blocks[n], 8, "half_even")
    return out


def write_sidd_csv(blocks: np.ndarray, path: str) -> str:
    blocks = sidd_blocks_uint8(blocks)

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ID", "BLOCK"])
            for n in range(1280):
                w.writerow([n, base64.b64encode(np.ascontiguousarray(blocks[n]).tobytes()).decode("ascii")])

    _atomic(path, write)
    return path


def write_sidd_mat(blocks: np.ndarray, path: str, time_mp: float, optional: Optional[Dict[str, str]] = None) -> str:
    import scipy.io

    blocks = sidd_blocks_uint8(blocks)
    cells = np.empty((40, 32), dtype=object)
    for n in range(1280):
        cells[n // 32, n % 32] = blocks[n]
    data = {"DenoisedBlocksSrgb": cells, "TimeMPSrgb": np.float64(time_mp),
            "OptionalData": {k: str(v) for k, v in (optional or {}).items()} or {"MethodName": "atbsn"}}
    _atomic(path, lambda tmp: scipy.io.savemat(tmp, data, do_compression=False))
    return path


def dnd_bundle_names():
    return [f"{i:04d}.mat" for i in range(1, 51)]


def write_dnd_bundle(crops: Dict[int, np.ndarray], number: int, folder: str) -> str:
    """``%04d.mat`` for one image from its 20 denoised crops (box 0..19 -> float32 HxWx3 in [0,1])."""
    import scipy.io

    if sorted(crops) != list(range(20)):
        raise DataError(f"DND image {number:04d}: expected 20 crops, got boxes {sorted(crops)}")
    cells = np.empty((1, 20), dtype=object)
    for b in range(20):
        crop = np.asarray(crops[b], dtype=np.float32)
        if crop.ndim != 3 or crop.shape[2] != 3:
            raise DataError(f"DND image {number:04d} box {b + 1}: crop has shape {crop.shape}, expected HxWx3")
        cells[0, b] = crop
    path = os.path.join(folder, f"{number:04d}.mat")
    data = {"Idenoised": cells, "israw": False, "eval_version": "1.0"}
    _atomic(path, lambda tmp: scipy.io.savemat(tmp, data))
    return path


# --------------------------------------------------------------------------- test.py on a benchmark
BENCHMARK_DATASETS = ("SIDDBlocksDataset", "DNDDataset")


def is_benchmark(test_cfg: dict) -> bool:
    """``datasets.test`` is a benchmark's test set: test.py writes its submission files."""
    return (test_cfg or {}).get("type") in BENCHMARK_DATASETS


def write_submission(opt: dict, test_cfg: dict, out_dir: str, overwrite: bool, load_model):
    """Denoise every block of the benchmark set and write the SIDD CSV + SubmitSrgb.mat, or the 50
    DND bundles. ``load_model`` is called once the output folder is known to be usable.
    Returns (written paths, seconds per megapixel, megapixels, seconds)."""
    import time

    from .data import build_dataset
    from .inference import denoise

    dataset = build_dataset(test_cfg, where="datasets.test")
    is_sidd = test_cfg["type"] == "SIDDBlocksDataset"
    names = [SIDD_CSV, SIDD_MAT] if is_sidd else dnd_bundle_names()
    writable_folder(out_dir)
    refuse_existing(out_dir, names, overwrite)
    if is_sidd and len(dataset) != 1280:
        raise DataError(f"a SIDD submission needs all 1280 blocks, the dataset has {len(dataset)} "
                        f"(remove datasets.test.indices)")
    model = load_model()
    tile = opt["val"]["tile"]
    seconds, pixels = 0.0, 0
    blocks = np.empty((len(dataset), 256, 256, 3), np.uint8) if is_sidd else None
    crops: dict = {}
    written = []
    for i in range(len(dataset)):
        item = dataset[i]
        t0 = time.perf_counter()
        pred = denoise(model, item["noisy"][None], tile["size"], tile["overlap"], tile["blend"],
                       tile["memory_limit_gb"])[0].numpy().transpose(1, 2, 0)
        seconds += time.perf_counter() - t0
        pixels += pred.shape[0] * pred.shape[1]
        if is_sidd:
            blocks[i] = quantize(pred, 8, "half_even")
        else:
            crops.setdefault(item["image"], {})[item["box"]] = np.clip(pred, 0, 1).astype(np.float32)
            if len(crops[item["image"]]) == 20:
                written.append(write_dnd_bundle(crops.pop(item["image"]), item["image"], out_dir))
    time_mp = seconds / (pixels / 1e6)
    if is_sidd:
        written = [write_sidd_csv(blocks, os.path.join(out_dir, SIDD_CSV)),
                   write_sidd_mat(blocks, os.path.join(out_dir, SIDD_MAT), time_mp,
                                  {"MethodName": opt["model"]["type"], "Name": opt["name"]})]
    return written, time_mp, pixels / 1e6, seconds
