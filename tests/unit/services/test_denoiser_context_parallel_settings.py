"""The settings of a denoiser replica over N devices: N is checked, each rank gets its own device, and the stack
refuses a bad N (the replica itself runs in tests/integration/test_stack_context_parallel.py)."""

from __future__ import annotations

import pytest

from movakit.runtime.stack import StackConfig, StackError
from movakit.services.denoiser.ranks import own_settings, rank_device
from movakit.services.denoiser.settings import DenoiserSettings

KEYS = {"MOVA_DENOISER_S3_ACCESS_KEY": "id", "MOVA_DENOISER_S3_SECRET_KEY": "sk", "MOVA_DENOISER_KAFKA_SECRET": "ks"}


def test_context_parallel_defaults_to_one_and_reads_flag_and_variable():
    assert DenoiserSettings.load([], KEYS).context_parallel == 1
    assert DenoiserSettings.load([], {**KEYS, "MOVA_DENOISER_CONTEXT_PARALLEL": "4"}).context_parallel == 4
    assert DenoiserSettings.load(["--context-parallel", "2"], KEYS).context_parallel == 2


@pytest.mark.parametrize(("env", "name"), [
    ({"MOVA_DENOISER_CONTEXT_PARALLEL": "0"}, "MOVA_DENOISER_CONTEXT_PARALLEL"),
    ({"MOVA_DENOISER_CONTEXT_PARALLEL": "two"}, "MOVA_DENOISER_CONTEXT_PARALLEL"),
    ({"MOVA_DENOISER_CONTEXT_PARALLEL": "2", "MOVA_DENOISER_DEVICE": "cuda:1"}, "MOVA_DENOISER_DEVICE"),
])
def test_bad_values_name_the_variable(env, name):
    with pytest.raises(ValueError, match=name):
        DenoiserSettings.load([], {**KEYS, **env})


def test_one_device_per_rank():
    assert [rank_device("cuda", r) for r in range(3)] == ["cuda:0", "cuda:1", "cuda:2"]
    assert rank_device("cpu", 1) == "cpu"


def test_stack_refuses_a_replica_of_no_ranks(tmp_path):
    with pytest.raises(StackError, match="--denoiser-context-parallel"):
        StackConfig(state_dir=tmp_path, denoiser_context_parallel=0).validate()


def test_each_rank_loads_on_its_own_device():
    replica = DenoiserSettings.load([], {**KEYS, "MOVA_DENOISER_CONTEXT_PARALLEL": "2", "MOVA_DENOISER_DEVICE": "cuda"})
    rank1 = own_settings(replica, rank_device(replica.device, 1))
    assert (rank1.device, rank1.model_dtype, rank1.listen) == ("cuda:1", "bfloat16", replica.listen)
