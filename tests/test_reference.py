"""Every registered reference check (atbsn.refcheck.CHECKS) against the official tensors, one test per file."""
import pytest

from atbsn.refcheck import CHECKS

from conftest import REFERENCE, needs

MIN_RESULTS = {"atbsn_teacher_vectors.pt": 7, "atbsn_students_vectors.pt": 7, "atbsn_distill_vectors.pt": 7,
               "n2n_metrics_vectors.pt": 6, "atbsn_metrics_vectors.pt": 6}
REQUIRED = {"n2n_unet_vectors.pt": {"output (official init)", "output_perturbed", "loss_total_epoch1",
                                    "loss_total_epoch100"}}


@needs(REFERENCE)
@pytest.mark.parametrize("file", sorted(CHECKS))
def test_reference_check(file):
    results = list(CHECKS[file](REFERENCE, file))
    assert len(results) >= MIN_RESULTS.get(file, 1)
    assert REQUIRED.get(file, set()) <= {r.name for r in results}
    for r in results:
        assert r.ok, (r.name, r.rel_err, r.tol)
