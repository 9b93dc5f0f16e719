"""Reading MATLAB files: v5/v7 through scipy, v7.3 (HDF5) through h5py, with errors that name the
file, the variable and what was expected."""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError


def is_hdf5(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(1024)
    return b"\x89HDF\r\n\x1a\n" in head[:8] or head[512:520] == b"\x89HDF\r\n\x1a\n"


def load_variable(path: str, name: str, shape: Optional[Tuple[int, ...]] = None, dtype=None) -> np.ndarray:
    """One variable of a .mat file. v7.3 files come back from h5py with the axes reversed; they are
    restored so both versions give MATLAB's (row-major here) shape."""
    if not os.path.isfile(path):
        raise DataError(f"file not found: '{path}'")
    try:
        if is_hdf5(path):
            import h5py

            with h5py.File(path, "r") as f:
                if name not in f:
                    raise DataError(f"'{path}' has no variable '{name}' (it has: {', '.join(sorted(f.keys()))})")
                value = np.asarray(f[name][()])
                value = value.transpose(tuple(reversed(range(value.ndim))))
        else:
            import scipy.io

            names = [n for n, *_ in scipy.io.whosmat(path)]
            if name not in names:
                raise DataError(f"'{path}' has no variable '{name}' (it has: {', '.join(sorted(names)) or 'none'})")
            value = scipy.io.loadmat(path, variable_names=[name])[name]
    except DataError:
        raise
    except Exception as err:  # truncated or corrupt file
        raise DataError(f"cannot read '{path}': {type(err).__name__}: {str(err).strip()[:200]} "
                        f"(a truncated or corrupt .mat file?)") from None
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise DataError(f"'{path}' variable '{name}' has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if dtype is not None and value.dtype != np.dtype(dtype):
        raise DataError(f"'{path}' variable '{name}' has dtype {value.dtype}, expected {np.dtype(dtype)}")
    return value


def require_keys(path: str, group, keys: Sequence[str], where: str) -> None:
    missing = [k for k in keys if k not in group]
    if missing:
        raise DataError(f"'{path}' {where} has no {', '.join(repr(k) for k in missing)} "
                        f"(it has: {', '.join(sorted(group.keys()))})")
