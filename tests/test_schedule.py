"""The cosine schedule against the original's numbers (its cosine_beta_schedule, N = 20, 64, 256).

Independent derivations of the same quantities (the paper's formula, Bayes' rule, Monte Carlo): test_posterior.py.
"""

import numpy as np
import pytest

from diffuser.diffusion.schedule import DiffusionSchedule, cosine_beta_schedule

# The original implementation's betas and posterior std for N = 20.
BETAS_20 = [0.00799, 0.02007, 0.03225, 0.04468, 0.05752, 0.07096, 0.08521, 0.10055, 0.1173, 0.13592, 0.157, 0.18136,
            0.21021, 0.24537, 0.28973, 0.34814, 0.42943, 0.55102, 0.74848, 0.999]
POSTERIOR_STD_20 = [0.0758, 0.1232, 0.1617, 0.1952, 0.2257, 0.2546, 0.2827, 0.3107, 0.3392, 0.3690, 0.4007, 0.4354,
                    0.4744, 0.5194, 0.5734, 0.6412, 0.7310, 0.8573, 0.9965]


def test_cosine_betas_match_the_original():
    np.testing.assert_allclose(cosine_beta_schedule(20).numpy(), BETAS_20, atol=6e-5)
    assert cosine_beta_schedule(64)[0].item() == pytest.approx(0.00120, abs=5e-6)
    assert cosine_beta_schedule(256)[0].item() == pytest.approx(0.000189, abs=5e-7)
    for n in (5, 20, 64, 256):
        betas = cosine_beta_schedule(n)
        assert betas[-1].item() == pytest.approx(0.999)
        assert ((betas > 0) & (betas < 1)).all()


def test_schedule_buffers_closed_forms():
    s = DiffusionSchedule(20)
    assert (s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all()
    assert s.alphas_cumprod[0].item() == pytest.approx(0.99201, abs=1e-5)
    assert s.alphas_cumprod[-1].item() == pytest.approx(6.06e-6, rel=1e-2)
    assert s.posterior_variance[0].item() == 0
    np.testing.assert_allclose(s.posterior_variance[1:].sqrt().numpy(), POSTERIOR_STD_20, atol=2e-4)
    np.testing.assert_allclose(s.posterior_variance[[19, 10, 2]].numpy(), [0.993, 0.136, 0.0152], rtol=5e-3)
    assert s.posterior_log_variance_clipped[0].item() == pytest.approx(np.log(1e-20), rel=1e-6)


def test_schedule_is_not_saved_and_rejects_unknown_names():
    assert DiffusionSchedule(8).state_dict() == {}
    with pytest.raises(ValueError, match="valid"):
        DiffusionSchedule(8, "quadratic")
