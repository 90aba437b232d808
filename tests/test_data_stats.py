"""diffuser.tools.data_stats: a dataset file's episodes, terminals and returns, worked by hand."""

import numpy as np
import pytest

from conftest import locomotion_arrays
from diffuser.tools.data_stats import dataset_summary


def test_dataset_statistics_by_hand(locomotion_file):
    arrays = locomotion_arrays()  # episodes of 12, 20, 7 and 30 steps; the first and third end in terminals
    ends = np.cumsum([12, 20, 7, 30])
    returns = np.array([arrays["rewards"][e - n : e].sum() for e, n in zip(ends, [12, 20, 7, 30])], dtype=np.float64)
    stats = dataset_summary("hopper-medium-v2", locomotion_file)
    assert (stats["steps"], stats["episodes"], stats["terminals"]) == (69, 4, 2)
    assert stats["return_mean"] == pytest.approx(returns.mean(), rel=1e-5)
    assert stats["return_std"] == pytest.approx(returns.std(), rel=1e-5)
    assert (stats["return_min"], stats["return_max"]) == pytest.approx((returns.min(), returns.max()), rel=1e-5)
    # D4RL hopper references: random −20.272305, expert 3234.3
    assert stats["normalized_mean"] == pytest.approx(100 * (returns.mean() + 20.272305) / (3234.3 + 20.272305))
