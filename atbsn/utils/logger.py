"""Console + file logging on rank 0, optional TensorBoard (imported only when used)."""
from __future__ import annotations

import logging
import os
import sys
from typing import Dict, Optional

LOGGER_NAME = "atbsn"


def get_logger(log_file: Optional[str] = None, rank: int = 0) -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    logger.propagate = False
    logger.setLevel(logging.INFO if rank == 0 else logging.ERROR)
    fmt = logging.Formatter("%(asctime)s %(levelname)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if log_file and rank == 0:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger


class TensorBoard:
    """A thin wrapper that does nothing when disabled or on ranks other than 0."""

    def __init__(self, folder: Optional[str]):
        self.writer = None
        if folder:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logging.getLogger(LOGGER_NAME).warning(
                    "tensorboard is not installed: TensorBoard logging is off (pip install tensorboard)")
                return
            self.writer = SummaryWriter(folder)

    def scalars(self, values: Dict[str, float], step: int) -> None:
        if self.writer:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def image(self, tag: str, chw, step: int) -> None:
        if self.writer:
            self.writer.add_image(tag, chw.clamp(0, 1), step)

    def close(self) -> None:
        if self.writer:
            self.writer.close()
