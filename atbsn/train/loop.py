"""The iteration-based training loop. It knows nothing about any one method: a model returns its
losses from ``training_step``; the loop optimises, validates, logs and checkpoints."""
from __future__ import annotations

import math
import os
import shlex
import subprocess
import sys
import time
from typing import Dict, Optional

import torch

from .. import evaluation
from ..data import build_eval_loader, build_train_loader
from ..dist import DistInfo, barrier
from ..errors import OptionsError, TrainingError
from ..metrics import build_metric
from ..models import Progress
from ..models.setup import resolve_device, setup_model
from ..options import dump_options
from ..utils.logger import TensorBoard, get_logger
from ..weights import load_network
from .checkpoint import CheckpointManager, capture_rng, restore_rng
from .optim import build_optimizer, build_scheduler
from .preemption import StopOnSignal, TrainingPreempted, is_lost_peer, lost_ranks, requeue_slurm_job


def git_revision() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    if rev.returncode != 0:
        return "unknown (not a git checkout)"
    return rev.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def check_run_name(name: str, key: str = "name") -> str:
    """A run name is one folder name: it must not climb out of (or into) other folders."""
    if not name or name in (".", "..") or any(c in name for c in ("/", "\\", "\0")):
        raise OptionsError(f"{key} {name!r} must be a single folder name (no '/', '\\', '..' or NUL), "
                           f"e.g. 'atbsn_sidd'")
    return name


class RunLock:
    """An exclusive ``fcntl.flock`` on ``<folder>/.lock`` for this process's life: two runs of one
    name would mix their logs and checkpoints."""

    def __init__(self, folder: str, what: str):
        import fcntl

        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, ".lock")
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise OptionsError(f"{what} '{folder}' is in use by another process (PID {holder}); wait for it to "
                               f"finish or choose another name") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            self.file.close()


class Experiment:
    """``<experiments_root>/<name>/``: options, command, revision, log, TensorBoard, checkpoints, images."""

    def __init__(self, opt: dict, resume: bool, is_main: bool):
        self.root = os.path.join(opt["path"]["experiments_root"], opt["name"])
        self.checkpoints = os.path.join(self.root, "checkpoints")
        self.visualization = os.path.join(self.root, "visualization")
        self.tb = os.path.join(self.root, "tb")
        self.log_file = os.path.join(self.root, "train.log")
        self.archived: Optional[str] = None
        self.lock: Optional[RunLock] = None
        if not is_main:
            return
        try:
            if os.path.isdir(self.root) and not resume:
                # A new run never overwrites an old one: the old folder is renamed, not deleted,
                # unless another process is still writing it.
                RunLock(self.root, "run folder").release()
                self.archived = f"{self.root}_archived_{time.strftime('%Y%m%d_%H%M%S')}"
                os.rename(self.root, self.archived)
            self.lock = RunLock(self.root, "run folder")
            os.makedirs(self.checkpoints, exist_ok=True)
        except OSError as err:
            raise OptionsError(f"cannot create experiment folder '{self.root}': {err.strerror}") from None
        if not os.access(self.root, os.W_OK):
            raise OptionsError(f"experiment folder '{self.root}' is not writable")
        with open(os.path.join(self.root, "options.yml"), "w") as f:
            f.write(dump_options(opt))
        with open(os.path.join(self.root, "command.txt"), "a") as f:
            f.write(" ".join(shlex.quote(a) for a in [sys.executable] + sys.argv) + "\n")
        with open(os.path.join(self.root, "git_revision.txt"), "w") as f:
            f.write(git_revision() + "\n")


class Trainer:
    def __init__(self, opt: dict, dist: DistInfo = DistInfo(), auto_resume: bool = False):
        self.opt, self.dist = opt, dist
        tcfg, vcfg = opt["train"], opt["val"]
        src = opt.get("_source", "options")
        for key, value in (("datasets.train", opt["datasets"].get("train")), ("train.total_iter", tcfg["total_iter"]),
                           ("train.optimizer", tcfg["optimizer"])):
            if value is None:
                raise OptionsError(f"{src}: training needs '{key}'")
        check_run_name(opt["name"])
        self.device = resolve_device(opt["device"])
        if self.device.type == "cuda" and dist.enabled:
            self.device = torch.device("cuda", torch.cuda.current_device())
        torch.manual_seed(opt["seed"])
        if tcfg["deterministic"]:
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True

        self.model = setup_model(opt, self.device, training=True)
        self._wrap_networks(tcfg["compile"])
        self.params = [p for p in self.model.trainable_parameters() if p.requires_grad]
        self.optimizer = build_optimizer(tcfg["optimizer"], self.params)
        self.scheduler = build_scheduler(tcfg["scheduler"], self.optimizer, tcfg["total_iter"])
        self.amp_dtype = self.model.amp_dtype
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=tcfg["amp"] == "fp16")

        self.loader, self.sampler = build_train_loader(opt["datasets"]["train"], opt["seed"], dist.rank,
                                                       dist.world_size)
        self.loader.generator = torch.Generator().manual_seed(opt["seed"])  # keeps the global RNG untouched
        val_sets = opt["datasets"].get("val") or {}
        self.evaluator = evaluation.Evaluator(
            {name: build_eval_loader(cfg, f"datasets.val.{name}", dist.rank, dist.world_size)
             for name, cfg in val_sets.items()},
            [build_metric(m) for m in vcfg["metrics"]], vcfg["tile"]["size"], vcfg["tile"]["overlap"],
            vcfg["tile"]["blend"], vcfg["tile"]["memory_limit_gb"],
        ) if val_sets else None

        # Only now, with options, weights and data checked, is the run folder touched.
        self.exp = Experiment(opt, auto_resume, dist.is_main)
        self.log = get_logger(self.exp.log_file, dist.rank)
        if self.exp.archived:
            self.log.info("previous run folder kept as %s", self.exp.archived)
        self.ckpt = CheckpointManager(self.exp.checkpoints, tcfg["keep_checkpoints"])
        if dist.is_main:
            for p in self.ckpt.remove_stale_temporaries():
                self.log.info("removed %s, left by an interrupted write", p)
        self.iteration, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best: Optional[float] = None
        self.last_summary: Optional[dict] = None
        if auto_resume:
            self._resume()
        self.tb = TensorBoard(self.exp.tb if dist.is_main and opt["logger"]["use_tensorboard"] else None)

    # -- set-up helpers --------------------------------------------------------------------------
    def _wrap_networks(self, compile_nets: bool) -> None:
        for role in self.model.networks:
            fn = self.model.networks[role]
            if self.dist.enabled and role in self.model.trainable_roles:
                from torch.nn.parallel import DistributedDataParallel as DDP

                ids = [self.device.index] if self.device.type == "cuda" else None
                fn = DDP(fn, device_ids=ids)
            if compile_nets:
                fn = torch.compile(fn)
            self.model.set_runner(role, fn)

    def state(self) -> dict:
        return {
            "format_version": 1,
            "iteration": self.iteration,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "networks": {r: n.state_dict() for r, n in self.model.networks.items()},
            "model_state": self.model.training_state(),
            "architectures": {r: c["type"] for r, c in self.opt["networks"].items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng(),
            "best": self.best,
            "options": {k: v for k, v in self.opt.items() if not k.startswith("_")},
        }

    def _resume(self) -> None:
        found = self.ckpt.newest_valid()
        if found is None:
            self.log.info("auto_resume: no checkpoint in %s, starting from scratch", self.exp.checkpoints)
            return
        path, state = found
        archs = state.get("architectures", {})
        want = {r: c["type"] for r, c in self.opt["networks"].items()}
        if archs and archs != want:
            raise OptionsError(f"cannot resume from '{path}': it holds networks {archs}, the options build {want}")
        for role, net in self.model.networks.items():
            load_network(net, state["networks"][role], True, path)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.model.load_training_state(state.get("model_state") or {})
        restore_rng(state["rng"])
        self.iteration, self.epoch = state["iteration"], state["epoch"]
        self.batch_in_epoch, self.best = state["batch_in_epoch"], state.get("best")
        self.log.info("resumed from %s at iteration %d (epoch %d)", path, self.iteration, self.epoch)

    # -- the loop --------------------------------------------------------------------------------
    def optimize(self, batch: Dict[str, torch.Tensor], progress: Progress) -> Dict[str, float]:
        self.model.train(True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            losses = self.model.training_step(batch, progress)
        loss = losses["loss"]
        if not torch.isfinite(loss).all():
            raise TrainingError(
                f"non-finite loss ({loss.item()}) at iteration {progress.iteration + 1}; training stopped. "
                f"The last checkpoint in '{self.exp.checkpoints}' is kept; lower the learning rate or check the data"
            )
        self.scaler.scale(loss).backward()
        if self.opt["train"]["grad_clip"]:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.opt["train"]["grad_clip"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler:
            self.scheduler.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    def validate(self) -> Optional[dict]:
        """Every rank evaluates its shard of each set; the gathered summary is the same everywhere."""
        if self.evaluator is None:
            return None
        vcfg = self.opt["val"]
        result = self.evaluator.run(self.model, self.exp.visualization + f"/iter_{self.iteration:08d}",
                                    vcfg["save_images"])
        summary = result["summary"]
        for line in evaluation.format_summary(summary):
            self.log.info("validation @ %d: %s", self.iteration, line)
        flat = {f"val/{ds}/{proto}/{k}": v for ds, ps in summary.items() for proto, m in ps.items()
                for k, v in m.items() if isinstance(v, float)}
        self.tb.scalars(flat, self.iteration)
        self.last_summary = summary
        return summary

    def save(self, periodic: bool, best: bool) -> None:
        if self.dist.is_main:
            self.ckpt.save(self.state(), self.iteration, periodic, best)
        barrier()

    def fit(self) -> Optional[dict]:
        lcfg, total = self.opt["logger"], self.opt["train"]["total_iter"]
        per_epoch = self.sampler.batches_per_epoch
        use_bar = self.dist.is_main and (lcfg["progress_bar"] == "always" or
                                         (lcfg["progress_bar"] == "auto" and sys.stdout.isatty()))
        bar = None
        if use_bar:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=self.iteration, desc=self.opt["name"], dynamic_ncols=True)
        self.log.info("training %s for %d iterations (%d per epoch, global batch %d) on %s",
                      self.opt["name"], total, per_epoch, self.sampler.batch_size, self.device)
        t0, it0, lost = time.time(), self.iteration, False
        try:
            with StopOnSignal() as stop:
                try:
                    self._loop(stop, bar, t0, it0, total)
                except RuntimeError as err:
                    if not (self.dist.enabled and is_lost_peer(err)):
                        raise
                    stop.ignore_after_exit_in_torchrun_worker()  # its SIGTERM must not cut the message below
                    lost = True
        finally:
            if bar:
                bar.close()
        if lost:
            raise TrainingError(
                f"rank {self.dist.rank}: lost {lost_ranks(self.dist.rank)} during iteration {self.iteration + 1} "
                f"(the process is gone or unreachable); stopping. The last checkpoint in '{self.exp.checkpoints}' "
                f"is kept: start the job again with --auto_resume") from None
        self.tb.close()
        self.log.info("done: %d iterations; checkpoints in %s", self.iteration, self.exp.checkpoints)
        return self.last_summary

    def _loop(self, stop: StopOnSignal, bar, t0: float, it0: int, total: int) -> None:
        tcfg, vcfg, lcfg = self.opt["train"], self.opt["val"], self.opt["logger"]
        per_epoch = self.sampler.batches_per_epoch
        while self.iteration < total:
            if self.batch_in_epoch >= per_epoch:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            for batch in self.loader:
                progress = Progress(self.iteration, total, self.epoch, per_epoch)
                losses = self.optimize(batch, progress)
                self.iteration += 1
                self.batch_in_epoch += 1
                if bar:
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()})
                if self.iteration % lcfg["print_freq"] == 0 or self.iteration == total:
                    self._log_progress(losses, t0, it0, total)
                summary = None
                if self.iteration % vcfg["val_freq"] == 0 or self.iteration == total:
                    summary = self.validate()
                is_best = False
                if summary is not None:
                    s = evaluation.score(summary, vcfg["best_metric"])
                    if s is not None and (self.best is None or s > self.best):
                        self.best, is_best = s, True
                periodic = self.iteration % tcfg["save_freq"] == 0
                if periodic or is_best or self.iteration == total:
                    self.save(periodic, is_best)
                if stop.requested(self.dist.enabled, self.device):
                    self._stop_on_signal(stop, saved=periodic or is_best or self.iteration == total)
                if self.iteration >= total:
                    break

    def _stop_on_signal(self, stop: StopOnSignal, saved: bool) -> None:
        """Checkpoint this iteration (unless just saved), requeue on SLURM if asked, and stop."""
        if not saved:
            self.save(periodic=False, best=False)
        self.tb.close()
        where = os.path.join(self.exp.checkpoints, "last.pth")
        self.log.info("%s received: stopped after iteration %d, checkpoint %s", stop.name, self.iteration, where)
        if self.opt["dist"]["slurm_requeue"] and self.dist.is_main:
            self.log.info(requeue_slurm_job())
        raise TrainingPreempted(f"training stopped by {stop.name} at iteration {self.iteration}; checkpoint saved "
                                f"to '{where}'; continue with the same command and --auto_resume")

    def _log_progress(self, losses: Dict[str, float], t0: float, it0: int, total: int) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        rate = (self.iteration - it0) / max(time.time() - t0, 1e-9)
        eta = (total - self.iteration) / rate if rate > 0 else math.inf
        loss_txt = " ".join(f"{k}={v:.5g}" for k, v in losses.items())
        self.log.info("iter %d/%d epoch %d lr %.3e %s | %.2f it/s, ETA %s", self.iteration, total, self.epoch, lr,
                      loss_txt, rate, time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?")
        self.tb.scalars({f"train/{k}": v for k, v in losses.items()} | {"train/lr": lr}, self.iteration)
