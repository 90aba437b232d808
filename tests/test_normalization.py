import numpy as np
import pytest
import torch

from diffuser.diffusion.normalization import NORMALIZERS, make_normalizer


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return np.stack([rng.normal(3, 2, 500), rng.uniform(-5, 1, 500), rng.exponential(1, 500)], 1).astype(np.float32)


@pytest.mark.parametrize("kind", sorted(NORMALIZERS))
def test_round_trip(kind, data):
    normalizer = make_normalizer(kind, 3).fit(data)
    x = torch.from_numpy(data)
    y = normalizer.normalize(x)
    atol = 2e-2 if kind == "cdf" else 1e-4  # the CDF is stored as 1001 quantiles
    torch.testing.assert_close(normalizer.unnormalize(y), x, atol=atol, rtol=0)
    # Observation slice alone, as the planner uses it.
    torch.testing.assert_close(normalizer.normalize(x[:, 1:], slice(1, None)), y[:, 1:])


def test_gaussian_and_limits_statistics(data):
    y = make_normalizer("gaussian", 3).fit(data).normalize(torch.from_numpy(data)).double()
    torch.testing.assert_close(y.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(0, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)
    y = make_normalizer("limits", 3).fit(data).normalize(torch.from_numpy(data))
    assert torch.allclose(y.min(0).values, -torch.ones(3)) and torch.allclose(y.max(0).values, torch.ones(3))
    y = make_normalizer("cdf", 3).fit(data).normalize(torch.from_numpy(data))
    assert y.min() >= -1 and y.max() <= 1 and abs(y.median().item()) < 0.05


def test_limits_unnormalize_clips_out_of_range():
    normalizer = make_normalizer("limits", 1).fit(np.array([[0.0], [10.0]]))
    assert normalizer.unnormalize(torch.tensor([[1.5]])).item() == pytest.approx(10.0)
    assert normalizer.unnormalize(torch.tensor([[-1.00001]])).item() == pytest.approx(-0.00005, abs=1e-6)


def test_safe_limits_widens_only_constant_dimensions():
    data = np.array([[1.0, 0.0], [1.0, 4.0]])
    normalizer = make_normalizer("safe_limits", 2).fit(data)
    assert normalizer.mins.tolist() == [0.0, 0.0] and normalizer.maxs.tolist() == [2.0, 4.0]


def test_statistics_are_buffers_saved_with_the_weights(data):
    normalizer = make_normalizer("gaussian", 3).fit(data)
    state = normalizer.state_dict()
    assert set(state) == {"mean", "std"}
    fresh = make_normalizer("gaussian", 3)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.normalize(torch.ones(3)), normalizer.normalize(torch.ones(3)))


def test_bad_input():
    with pytest.raises(ValueError, match="valid"):
        make_normalizer("minmax", 3)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        make_normalizer("gaussian", 3).fit(np.zeros((5, 4)))
    with pytest.raises(ValueError, match="empty"):
        make_normalizer("gaussian", 3).fit(np.zeros((0, 3)))
