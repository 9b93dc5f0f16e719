"""Complete, atomic training checkpoints (Lightning-style) and network-weight loading.

One file holds everything needed to continue bit for bit on the same device: networks,
optimiser, scheduler, AMP scaler, RNG states (python, numpy, torch, cuda), iteration, epoch,
sampler position, best score and the resolved options. Files are written to a temporary name
and renamed, and read back with ``weights_only=True``.
"""
from __future__ import annotations

import glob
import logging
import os
import random
import re
import shutil
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError

FORMAT_VERSION = 1
log = logging.getLogger("atbsn")


# --------------------------------------------------------------------------- RNG state
def capture_rng() -> Dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- files
def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def atomic_save(obj: Any, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # disk full shows up as either (torch's zip writer)
        reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0][:200]
        kept = f"; the previous '{os.path.basename(path)}' is kept" if os.path.exists(path) else ""
        raise CheckpointError(f"cannot write checkpoint '{path}': {reason}{kept}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_file(path: str, map_location="cpu") -> Dict[str, Any]:
    """``torch.load(weights_only=True)`` with one clear error for missing/truncated/foreign files."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: '{path}'")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, pickle with code, not a torch file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint '{path}': {first[:300]}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint '{path}' holds a {type(obj).__name__}, expected a dict")
    return obj


ITER_RE = re.compile(r"iter_(\d+)\.pth$")


class CheckpointManager:
    """``iter_XXXXXXXX.pth`` every ``save_freq`` (newest ``keep`` kept), plus ``last.pth`` and ``best.pth``."""

    def __init__(self, folder: str, keep: int = 3):
        self.folder, self.keep = folder, keep

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def save(self, state: Dict[str, Any], iteration: int, periodic: bool, best: bool) -> str:
        last = self.path("last.pth")
        atomic_save(state, last)
        if periodic:
            self._link(last, self.path(f"iter_{iteration:08d}.pth"))
            self._prune()
        if best:
            self._link(last, self.path("best.pth"))
        return last

    @staticmethod
    def _link(src: str, dst: str) -> None:
        """Hard-link (no extra disk) when possible, copy otherwise; replace atomically."""
        tmp = f"{dst}.tmp.{os.getpid()}"
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)

    def periodic(self) -> List[Tuple[int, str]]:
        found = []
        for p in glob.glob(self.path("iter_*.pth")):
            m = ITER_RE.search(p)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def _prune(self) -> None:
        for _, p in self.periodic()[: -self.keep] if self.keep > 0 else []:
            os.remove(p)

    def remove_stale_temporaries(self) -> List[str]:
        """``*.tmp.<pid>`` left by a write that was killed, when that process is gone."""
        removed = []
        for p in glob.glob(self.path("*.tmp.*")):
            pid = p.rsplit(".", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                os.remove(p)
                removed.append(p)
        return removed

    def newest_valid(self) -> Optional[Tuple[str, Dict[str, Any]]]:
        """The newest checkpoint that loads; damaged ones are reported and skipped. If there are
        checkpoints and none loads, that is an error: starting over would silently lose the run."""
        candidates = [self.path("last.pth")] + [p for _, p in reversed(self.periodic())]
        loaded = []
        for p in candidates:
            if not os.path.exists(p):
                continue
            try:
                state = load_file(p)
                if "iteration" not in state or "networks" not in state:
                    raise CheckpointError(f"'{p}' is not a training checkpoint (no 'iteration'/'networks')")
            except CheckpointError as err:
                log.warning("skipping damaged checkpoint: %s", err)
                continue
            loaded.append((state["iteration"], p, state))
        present = [p for p in candidates if os.path.exists(p)]
        if not loaded and present:
            raise CheckpointError(f"auto_resume: none of the {len(present)} checkpoint(s) in '{self.folder}' can be "
                                  f"read (see the warnings above); move them away to start from scratch")
        if not loaded:
            return None
        _, p, state = max(loaded, key=lambda t: t[0])
        return p, state


# --------------------------------------------------------------------------- weights
# Official containers that hold several networks under a prefix (AT-BSN's distilled checkpoint).
ROLE_PREFIXES = {"student": "nbsn.", "teacher": "bsn."}
# Official D-BSN checkpoints: one dict holding the three networks' state dicts.
ROLE_CONTAINERS = {"net": "state_dict_dbsn", "sigma_mu": "state_dict_sigma_mu", "sigma_n": "state_dict_sigma_n"}


def extract_state_dict(obj: Dict[str, Any], role: str, path: str) -> Dict[str, torch.Tensor]:
    """Accept a training checkpoint, ``{'params': sd}`` (BasicSR), ``{'state_dict': sd}`` or a plain
    state dict; strip a ``module.`` / ``_orig_mod.`` prefix. From a container whose keys carry the
    official ``nbsn.`` / ``bsn.`` prefixes, the role's part is taken (student / teacher); from an
    official D-BSN checkpoint, ``state_dict_dbsn`` / ``_sigma_mu`` / ``_sigma_n`` by role."""
    if "networks" in obj and isinstance(obj["networks"], dict):
        nets = obj["networks"]
        if role in nets:
            sd = nets[role]
        elif len(nets) == 1:  # e.g. a stage-1 checkpoint ('net') loaded as the distillation teacher
            sd = next(iter(nets.values()))
        else:
            raise CheckpointError(f"checkpoint '{path}' has networks {sorted(nets)}, not '{role}'")
    elif any(k in obj for k in ROLE_CONTAINERS.values()):
        if ROLE_CONTAINERS.get(role) not in obj:
            raise CheckpointError(f"'{path}' is an official D-BSN checkpoint ({', '.join(k for k in obj if k.startswith('state_dict'))}); "
                                  f"it has no network for role '{role}' (roles: {', '.join(ROLE_CONTAINERS)})")
        sd = obj[ROLE_CONTAINERS[role]]
    elif "params" in obj and isinstance(obj["params"], dict):
        sd = obj["params"]
    elif "state_dict" in obj and isinstance(obj["state_dict"], dict):
        sd = obj["state_dict"]
    else:
        sd = obj
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"'{path}' does not hold a state dict of tensors for network '{role}'")
    prefix = ROLE_PREFIXES.get(role)
    if prefix and any(k.startswith(prefix) for k in sd):
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_network(net: nn.Module, sd: Dict[str, torch.Tensor], strict: bool, source: str) -> None:
    """Load with a message that lists missing / unexpected / mis-shaped keys."""
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs network {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}"
                         f"{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            parts.append(f"shape mismatches: {'; '.join(shapes[:5])}")
        raise CheckpointError(
            f"'{source}' does not fit {type(net).__name__} (is it a checkpoint of another architecture?): "
            + "; ".join(parts)
        )
    net.load_state_dict(sd, strict=strict)
