"""H3's FlowMatchPairScheduler against the reference grid (float32, bit-exact) and the spec values."""

import sampler_reference as sref
import pytest
import torch

from movakit.schedulers.flow_match_pair import FlowMatchPairScheduler

RELEASE = {"num_train_timesteps": 1000, "shift": 5.0, "extra_one_step": True, "sigma_max": 1.0,
           "sigma_min": 0.0029940119760479044}


@pytest.fixture(scope="module")
def sched():
    return FlowMatchPairScheduler.from_config(dict(RELEASE))


@pytest.mark.parametrize("n", [1, 2, 10, 20, 25, 30, 33, 50])
def test_timesteps_equal_reference_bit_for_bit(sched, n):
    expect, _ = sref.flow_match_grid(n, shift=5.0)
    got = sched.timesteps(n)
    assert got.dtype == torch.float32
    assert torch.equal(got, expect)


def test_timesteps_50_match_spec_values(sched):
    t = sched.timesteps(50)
    for i, v in [(0, 1000.0), (1, 995.947), (2, 991.761), (47, 251.005), (48, 182.989), (49, 105.035)]:
        assert t[i].item() == pytest.approx(v, abs=1e-3)


@pytest.mark.parametrize("n,switch", [(10, 4), (20, 8), (25, 9), (50, 18)])
def test_expert_switch_index_matches_spec(sched, n, switch):
    t = sched.timesteps(n)
    assert int((t >= 900.0).sum()) == switch


@pytest.mark.parametrize("n", [25, 30, 33, 50])
def test_sigma_lookup_is_nearest_grid_point(sched, n):
    grid_t, grid_s = sref.flow_match_grid(1000, shift=5.0)
    for t in sref.flow_match_grid(n, shift=5.0)[0]:
        assert torch.equal(sched.sigma_of(t), sref.sigma_of(t, grid_t, grid_s))


@pytest.mark.parametrize("n,expected", [(25, 0.0), (50, 0.0), (30, 1.27e-3), (33, 1.25e-3)])
def test_sigma_lookup_snapping_error_matches_spec(sched, n, expected):
    # docs/sampler.md#scheduler: exact for step counts dividing 1000, ~1.27e-3 off for 30 (and 33)
    t, s = sref.flow_match_grid(n, shift=5.0)
    err = max(abs(sched.sigma_of(ti).item() - si.item()) for ti, si in zip(t, s))
    assert err == pytest.approx(expected, abs=1e-5)


def test_step_matches_reference_euler_including_final_sigma_zero(sched):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 3, generator=g)
    v = torch.randn(1, 4, 3, generator=g)
    t, _ = sref.flow_match_grid(10, shift=5.0)
    grid_t, grid_s = sref.flow_match_grid(1000, shift=5.0)
    mid = sched.step(x, v, t[3], t[4])
    assert torch.equal(mid, x + v * (sref.sigma_of(t[4], grid_t, grid_s) - sref.sigma_of(t[3], grid_t, grid_s)))
    last = sched.step(x, v, t[9], None)
    assert torch.equal(last, x + v * (0.0 - sref.sigma_of(t[9], grid_t, grid_s)))
