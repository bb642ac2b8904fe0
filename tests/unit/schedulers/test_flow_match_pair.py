"""FlowMatchPairScheduler against the facts of docs/sampler.md#scheduler."""

from __future__ import annotations

import json

import pytest
import torch

from movakit.schedulers.flow_match_pair import FlowMatchPairScheduler

# scheduler_config.json as written by the official save_pretrained (docs/checkpoint.md#configs-come-from-the-folder),
# with its harmless extra key.
OFFICIAL = {
    "_class_name": "FlowMatchPairScheduler",
    "num_train_timesteps": 1000,
    "shift": 5.0,
    "sigma_max": 1.0,
    "sigma_min": 0.0029940119760479044,
    "extra_one_step": True,
    "inverse_timesteps": False,
    "reverse_sigmas": False,
    "num_inference_steps": 100,
}


@pytest.fixture
def sched() -> FlowMatchPairScheduler:
    return FlowMatchPairScheduler.from_config(OFFICIAL)


def _exact_sigmas(n: int) -> torch.Tensor:
    s = torch.linspace(1.0, 0.003 / 1.002, n + 1, dtype=torch.float64)[:-1]
    return 5 * s / (1 + 4 * s)


def test_50_step_timesteps_of_the_spec(sched):
    t = sched.timesteps(50)
    assert t.dtype == torch.float32 and t.shape == (50,)
    torch.testing.assert_close(t[:3], torch.tensor([1000.0, 995.947, 991.761]), rtol=0, atol=1e-3)
    torch.testing.assert_close(t[-3:], torch.tensor([251.005, 182.989, 105.035]), rtol=0, atol=1e-3)
    assert torch.all(t[1:] < t[:-1])


@pytest.mark.parametrize("steps,switch", [(50, 18), (25, 9), (20, 8), (10, 4)])
def test_expert_switch_step(sched, steps, switch):
    t = sched.timesteps(steps)
    first_low = int(torch.nonzero(t < 900.0)[0])
    assert first_low == switch


@pytest.mark.parametrize("steps", [50, 25, 20, 10])
def test_sigma_lookup_exact_when_steps_divide_1000(sched, steps):
    got = torch.stack([sched.sigma_of(t) for t in sched.timesteps(steps)]).double()
    assert (got - _exact_sigmas(steps)).abs().max() < 1e-6


def test_sigma_lookup_snaps_for_30_steps(sched):
    got = torch.stack([sched.sigma_of(t) for t in sched.timesteps(30)]).double()
    err = (got - _exact_sigmas(30)).abs().max().item()
    assert err == pytest.approx(1.27e-3, abs=0.02e-3)


def test_pairs_are_two_identical_columns(sched):
    p = sched.pairs(25)
    assert p.shape == (25, 2) and torch.equal(p[:, 0], p[:, 1]) and torch.equal(p[:, 0], sched.timesteps(25))


def test_euler_step_and_last_step_to_zero(sched):
    x = torch.randn(2, 3)
    v = torch.randn(2, 3)
    t = sched.timesteps(10)
    s0, s1 = sched.sigma_of(t[0]), sched.sigma_of(t[1])
    assert torch.equal(sched.step(x, v, t[0], t[1]), x + v * (s1 - s0))
    torch.testing.assert_close(sched.step(x, v, t[-1], None), x - v * sched.sigma_of(t[-1]))
    assert float(s0) == 1.0


def test_step_wants_float32(sched):
    with pytest.raises(TypeError, match="float32"):
        sched.step(torch.zeros(2, dtype=torch.bfloat16), torch.zeros(2), 1000.0, None)


def test_from_pretrained_reads_the_folder(tmp_path, sched):
    (tmp_path / "scheduler_config.json").write_text(json.dumps(OFFICIAL))
    loaded = FlowMatchPairScheduler.from_pretrained(tmp_path)
    assert torch.equal(loaded.timesteps(50), sched.timesteps(50))
    with pytest.raises(FileNotFoundError, match="scheduler_config.json"):
        FlowMatchPairScheduler.from_pretrained(tmp_path / "missing")


def test_code_default_shift_is_not_the_release(sched):
    default = FlowMatchPairScheduler.from_config({})
    assert not torch.allclose(default.timesteps(50), sched.timesteps(50))


@pytest.mark.parametrize(
    "d,exc,match",
    [
        ({"shfit": 5.0}, ValueError, "shfit"),
        ({"shift": 0.0}, ValueError, "shift"),
        ({"sigma_min": 1.5}, ValueError, "sigma_min"),
        ({"inverse_timesteps": True}, NotImplementedError, "inverse_timesteps"),
        ({"reverse_sigmas": True}, NotImplementedError, "reverse_sigmas"),
        ({"shift_terminal": 0.1}, NotImplementedError, "shift_terminal"),
        ({"shift": "5"}, ValueError, "shift must be a number"),
        ({"num_train_timesteps": 1000.0}, ValueError, "num_train_timesteps must be an integer"),
        ({"extra_one_step": "yes"}, ValueError, "extra_one_step must be true or false"),
    ],
)
def test_bad_configs_name_the_key(d, exc, match):
    with pytest.raises(exc, match=match):
        FlowMatchPairScheduler.from_config(d)
