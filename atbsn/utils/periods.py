"""Options counted in iterations that may also be written as a fraction of the run, so that
changing ``train.total_iter`` alone keeps a schedule's shape."""
from __future__ import annotations

from typing import Union

from ..errors import OptionsError

Period = Union[int, float]


def iterations(value: Period, total_iter: int, where: str) -> int:
    """An int is a number of iterations; a float in (0, 1] is that fraction of ``total_iter``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionsError(f"'{where}' must be an integer (iterations) or a float in (0, 1] (a fraction of "
                           f"train.total_iter), got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise OptionsError(f"'{where}' must be >= 0 iterations, got {value}")
        return value
    if not 0.0 < value <= 1.0:
        raise OptionsError(f"'{where}' = {value}: a float is a fraction of train.total_iter and must lie in (0, 1]; "
                           f"write an integer for a number of iterations")
    return max(1, round(value * total_iter))
