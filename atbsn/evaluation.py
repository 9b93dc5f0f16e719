"""Validation on paired or synthetic sets: per-image metrics by named protocol, summaries, files.

Used by the training loop (every ``val_freq``) and by ``valid.py``.
"""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Dict, List, Optional

import numpy as np
import torch

from .errors import DataError
from .inference import denoise
from .metrics import MetricProtocol
from .utils.image import to_numpy, write_image


def _mean(values: List[float]) -> Optional[float]:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


class Evaluator:
    """Evaluates a model on named loaders. Metrics of the noisy inputs are computed once and kept."""

    def __init__(self, loaders: Dict[str, torch.utils.data.DataLoader], protocols: List[MetricProtocol],
                 tile: Optional[int] = None, overlap: Optional[int] = None, blend: bool = False,
                 memory_limit_gb: Optional[float] = None):
        self.loaders, self.protocols, self.tile, self.overlap = loaders, protocols, tile, overlap
        self.blend, self.memory_limit_gb = blend, memory_limit_gb
        self._input_metrics: Dict[tuple, Dict[str, float]] = {}

    def run(self, model, image_dir: Optional[str] = None, save_images: int = 0, progress: bool = False) -> dict:
        """Evaluate this process's shard; with torch.distributed the records of all ranks are gathered,
        so every rank returns the same result as a single process would."""
        model.train(False)
        records = []
        for set_order, (set_name, loader) in enumerate(self.loaders.items()):
            ds = loader.dataset
            global_index = ds.indices if isinstance(ds, torch.utils.data.Subset) else None
            it = loader
            if progress:
                from tqdm import tqdm

                it = tqdm(loader, desc=f"validate {set_name}", leave=False)
            for local, batch in enumerate(it):
                idx = global_index[local] if global_index is not None else local
                if "clean" not in batch:
                    raise DataError(f"validation set '{set_name}' has no clean images: validate on a dataset type "
                                    f"that yields clean references (paired folders, or synthetic noise on clean images)")
                pred = denoise(model, batch["noisy"], self.tile, self.overlap, self.blend, self.memory_limit_gb)
                for b in range(pred.shape[0]):
                    name = batch["name"][b]
                    p, g, n = to_numpy(pred[b]), to_numpy(batch["clean"][b]), to_numpy(batch["noisy"][b])
                    if image_dir and idx < save_images:
                        write_image(os.path.join(image_dir, set_name, f"{name}.png"), p)
                    for proto in self.protocols:
                        key = (set_name, name, proto.name)
                        try:
                            if key not in self._input_metrics:
                                self._input_metrics[key] = proto(n, g)
                            scores = proto(p, g)
                        except ValueError as err:  # e.g. an image smaller than the SSIM window
                            raise DataError(f"validation set '{set_name}', image '{name}' ({g.shape[1]}x{g.shape[0]}"
                                            f"): {proto.name}: {err}") from None
                        rec = {"_order": (set_order, idx), "dataset": set_name, "image": name, "protocol": proto.name}
                        rec.update(scores)
                        rec.update({f"input_{k}": v for k, v in self._input_metrics[key].items()})
                        records.append(rec)
        records = gather_records(records)
        return {"records": records, "summary": summarize(records), "protocols": [p.describe() for p in self.protocols]}


def gather_records(records: List[dict]) -> List[dict]:
    """All ranks' records in the single-process order (sets, then image index, then protocol)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        shards: List[Optional[List[dict]]] = [None] * dist.get_world_size()
        dist.all_gather_object(shards, records)
        records = [r for shard in shards for r in shard]
    records.sort(key=lambda r: r["_order"])  # stable: protocols keep their order
    for r in records:
        r.pop("_order")
    return records


def summarize(records: List[dict]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{dataset: {protocol: {metric: mean over images, 'count': n}}}; +inf PSNRs are excluded."""
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    groups: Dict[tuple, List[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["protocol"]), []).append(r)
    for (ds, proto), rs in groups.items():
        metrics = [k for k in rs[0] if k not in ("dataset", "image", "protocol")]
        entry = {m: _mean([r[m] for r in rs]) for m in metrics}
        entry["count"] = len(rs)
        infinite = sum(1 for r in rs if not math.isfinite(r.get("psnr", 0.0)))
        if infinite:
            entry["infinite_psnr_excluded"] = infinite
        out.setdefault(ds, {})[proto] = entry
    return out


def format_summary(summary: dict) -> List[str]:
    lines = []
    for ds, protos in summary.items():
        for proto, m in protos.items():
            parts = [f"{ds} [{proto}, {m['count']} images]"]
            for metric in ("psnr", "ssim"):
                if m.get(metric) is not None:
                    fmt = "{:.2f} dB" if metric == "psnr" else "{:.4f}"
                    txt = f"{metric.upper()} {fmt.format(m[metric])}"
                    if m.get(f"input_{metric}") is not None:
                        txt += f" (noisy input {fmt.format(m[f'input_{metric}'])})"
                    parts.append(txt)
            lines.append("  ".join(parts))
    return lines


def score(summary: dict, metric: str = "psnr") -> Optional[float]:
    """The number that picks ``best.pth``: the first protocol's ``metric``, averaged over the sets."""
    values = []
    for protos in summary.values():
        first = next(iter(protos.values()))
        if first.get(metric) is not None:
            values.append(first[metric])
    return float(np.mean(values)) if values else None


def write_results(result: dict, folder: str, extra: Optional[dict] = None) -> tuple[str, str]:
    os.makedirs(folder, exist_ok=True)
    csv_path, json_path = os.path.join(folder, "metrics.csv"), os.path.join(folder, "summary.json")
    records = result["records"]
    if records:
        fields = list(dict.fromkeys(k for r in records for k in r))
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(records)
    with open(json_path, "w") as f:
        json.dump({"summary": result["summary"], "protocols": result["protocols"], **(extra or {})}, f, indent=2)
    return csv_path, json_path
