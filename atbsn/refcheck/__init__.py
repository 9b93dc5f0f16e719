"""Checks against the tensors produced by the official implementations (``shared/reference``),
one module per method.

Each reference file the project understands has a check function yielding ``Result`` rows; the
script ``scripts/verify_reference.py`` and the test-suite both run them. Relative error is
``max|ours - ref| / max|ref|`` for tensors and ``|ours - ref| / |ref|`` for scalars.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Iterator, List

from .atbsn import (ATBSN_WEIGHTS, check_atbsn_bias_perturbation, check_atbsn_distill, check_atbsn_metrics,
                    check_atbsn_students, check_atbsn_teacher, check_atbsn_weights)
from .cbsn import check_cbsn_bias_perturbation, check_cbsn_vectors, check_cbsn_weights
from .common import TOL_METRIC, TOL_NET, Result, rel_err
from .dbsn import (DBSN_BIASES, DBSN_WEIGHTS, check_dbsn_bias_perturbation, check_dbsn_losses, check_dbsn_vectors,
                   check_dbsn_weights)
from .n2n import check_n2n_metrics, check_n2n_vectors, check_n2n_weights

CHECKS: Dict[str, Callable[[str, str], Iterator[Result]]] = {
    **{f: check_atbsn_weights for f in ATBSN_WEIGHTS},
    "atbsn_teacher_bias_perturbation.pt": check_atbsn_bias_perturbation,
    "atbsn_student_c_bias_perturbation.pt": check_atbsn_bias_perturbation,
    "atbsn_teacher_vectors.pt": check_atbsn_teacher,
    "atbsn_students_vectors.pt": check_atbsn_students,
    "atbsn_distill_vectors.pt": check_atbsn_distill,
    "n2n_unet_weights.pt": check_n2n_weights,
    "n2n_unet_perturbed_weights.pt": check_n2n_weights,
    "n2n_unet_vectors.pt": check_n2n_vectors,
    "n2n_metrics_vectors.pt": check_n2n_metrics,
    "atbsn_metrics_vectors.pt": check_atbsn_metrics,
    "cbsn_weights_tf.pt": check_cbsn_weights,
    "cbsn_bias_perturbation_tf.pt": check_cbsn_bias_perturbation,
    "cbsn_vectors.pt": check_cbsn_vectors,
    **{f: check_dbsn_weights for f in DBSN_WEIGHTS},
    **{f: check_dbsn_bias_perturbation for f in DBSN_BIASES},
    "dbsn_color_vectors.pt": check_dbsn_vectors,
    "dbsn_gray_vectors.pt": check_dbsn_vectors,
    "dbsn_color_loss_vectors.pt": check_dbsn_losses,
    "dbsn_gray_loss_vectors.pt": check_dbsn_losses,
}


def run_checks(folder: str) -> tuple[List[Result], List[str], List[str]]:
    """(results, errors for files that could not be checked, files not yet covered)."""
    results: List[Result] = []
    errors: List[str] = []
    pending: List[str] = []
    for file in sorted(os.listdir(folder)):
        if not file.endswith(".pt"):
            continue
        check = CHECKS.get(file)
        if check is None:
            pending.append(file)
            continue
        try:
            results.extend(check(folder, file))
        except Exception as err:  # a file we should understand but cannot check is a failure
            errors.append(f"{file}: {type(err).__name__}: {err}")
    missing = [f for f in CHECKS if not os.path.exists(os.path.join(folder, f))]
    errors.extend(f"{f}: expected reference file is missing" for f in missing)
    return results, errors, pending


__all__ = ["CHECKS", "Result", "TOL_METRIC", "TOL_NET", "rel_err", "run_checks", *sorted(
    name for name in dir() if name.startswith("check_"))]
