"""Complete, atomic training checkpoints (Lightning-style).

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

from ..errors import CheckpointError
from ..weights import load_file

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
