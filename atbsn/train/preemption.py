"""Stopping on a signal without losing the run: a cluster preempts a job with SIGTERM (SLURM
before its kill, torchrun when it stops its workers, ``sbatch --signal=USR1@120`` ahead of the
time limit), and a user presses Ctrl-C (SIGINT).

The handler only records the signal. The loop finishes its current step, every rank agrees (one
all-reduce of a flag per step), rank 0 writes a checkpoint at that iteration (atomically, as every
save), and the process exits with :data:`PREEMPTED_EXIT_CODE`; ``--auto_resume`` continues from it
bit-exactly. Further signals while the checkpoint is written are recorded and ignored, so they
cannot interrupt the write. With ``dist.slurm_requeue: true`` rank 0 then requeues the job
(``scontrol requeue $SLURM_JOB_ID``).
"""
from __future__ import annotations

import os
import signal
import subprocess
from typing import Dict, Optional

import torch
import torch.distributed as tdist

from ..errors import UserError

# EX_TEMPFAIL (sysexits.h): a temporary failure; running the same command again with --auto_resume continues.
PREEMPTED_EXIT_CODE = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class TrainingPreempted(UserError):
    """Training stopped on a signal after saving a checkpoint."""

    exit_code = PREEMPTED_EXIT_CODE


class StopOnSignal:
    """Records SIGTERM / SIGINT / SIGUSR1 while training runs (a context manager; the previous
    handlers come back on exit)."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous: Dict[int, object] = {}
        self._ignore_on_exit = False

    def ignore_after_exit_in_torchrun_worker(self) -> None:
        """In a torchrun worker going down with an error, leave the stop signals ignored after exit.

        After a lost peer, torchrun's agent sends SIGTERM to the survivors within its monitor interval
        (0.1 s); restored to the default, it lands between this rank noticing the loss and printing
        which rank went away, and the process dies silent (-15). Ignored (process-wide: blocking would
        only cover this thread), the message gets out; SIGKILL still ends the process if it hangs.
        Outside torchrun (an in-process caller) the previous handlers come back as usual."""
        self._ignore_on_exit = bool(os.environ.get("TORCHELASTIC_RUN_ID"))

    def _record(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> "StopOnSignal":
        try:
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._record)
        except ValueError:  # not the main thread (e.g. an embedding application): no handlers
            self._previous.clear()
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_IGN if self._ignore_on_exit else handler)

    def requested(self, distributed: bool, device: torch.device) -> bool:
        """Whether any rank was signalled; with several processes every rank gets the same answer."""
        if not distributed:
            return self.signum is not None
        flag = torch.tensor([0 if self.signum is None else 1], device=device)
        tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
        if flag.item() and self.signum is None:
            self.signum = signal.SIGTERM  # another rank's signal
        return bool(flag.item())

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a signal"


def requeue_slurm_job() -> str:
    """``scontrol requeue $SLURM_JOB_ID``; what happened, in words."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return "dist.slurm_requeue is set but SLURM_JOB_ID is not (not under SLURM): not requeued"
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"scontrol requeue {job} failed: {err}"
    if done.returncode:
        return f"scontrol requeue {job} failed (rc {done.returncode}): {done.stderr.strip()}"
    return f"requeued SLURM job {job}"


def is_lost_peer(err: BaseException) -> bool:
    """Whether a collective failed because another process went away (gloo/NCCL/store errors)."""
    if isinstance(err, getattr(tdist, "DistError", ())):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(s in text for s in (
        "Connection closed by peer", "Connection reset by peer", "Broken pipe", "[Gloo]", "gloo", "NCCL",
        "Socket Timeout", "timed out"))


def lost_ranks(rank: int, timeout_s: float = 10.0) -> str:
    """After a failed collective, which rank is gone. Rank 0 asks every rank through gloo's
    monitored barrier, which names those that do not answer; another rank can only tell that it
    lost rank 0 (or that rank 0 lost someone). In a world of two, the lost rank is the other one
    (gloo cannot name a peer whose socket is already closed)."""
    import datetime
    import re

    world = tdist.get_world_size() if tdist.is_initialized() else 1
    if world == 2:
        return f"rank {1 - rank}"
    try:
        tdist.monitored_barrier(timeout=datetime.timedelta(seconds=timeout_s), wait_all_ranks=True)
    except Exception as err:  # noqa: BLE001 - any failure here is the answer we are looking for
        found = re.search(r"[Rr]anks? ([\d, ]+?) failed", str(err))
        if found and rank == 0:
            return f"rank {found.group(1).strip()}"
    return "rank 0 or another rank" if rank != 0 else "another rank"
