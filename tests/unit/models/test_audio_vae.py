"""DAC-VAE: sizes from config, exact lengths, Gaussian bottleneck, weight-norm loading, release key names."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from movakit.loading import build_on_meta, load_component_strict
from movakit.models.audio_vae import DacVAE, DacVAEConfig
from movakit.testing.keys import key_listing, release_module_on_meta
from movakit.loading.release_configs import release_config

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "keys" / "audio_vae.txt"


def _config(**changes) -> DacVAEConfig:
    data = release_config("audio_vae")
    data.update({"encoder_dim": 2, "latent_dim": 8, "decoder_dim": 32}, **changes)
    return DacVAEConfig.from_dict(data)


def _model(seed: int = 0, **changes) -> DacVAE:
    torch.manual_seed(seed)
    return DacVAE(_config(**changes)).eval()


def test_release_config_numbers():
    config = DacVAEConfig.from_dict(release_config("audio_vae"))
    assert config.hop_length == 960 and config.sample_rate / config.hop_length == 50
    assert config.resolved_latent_dim == 128


@pytest.mark.parametrize("latent_len", [1, 2, 5])
def test_decode_length_is_hop_times_latent_length(latent_len):
    model = _model()
    with torch.no_grad():
        wav = model.decode(torch.randn(2, 8, latent_len))
    assert wav.shape == (2, 1, 960 * latent_len) and wav.dtype == torch.float32
    assert wav.abs().max() <= 1.0  # tanh output


def test_hop_comes_from_the_config_not_a_constant():
    model = _model(sample_rate=16000, encoder_rates=[2, 4], decoder_rates=[4, 2], decoder_dim=8)
    assert model.hop_length == 8 and model.sample_rate == 16000
    with torch.no_grad():
        assert model.decode(torch.randn(1, 8, 3)).shape == (1, 1, 24)
        mean, _ = model.encode(torch.randn(1, 1, 17))
    assert mean.shape == (1, 8, math.ceil(17 / 8))


@pytest.mark.parametrize("num_samples", [960, 961, 1919, 2880])
def test_encode_latent_length_is_ceil_of_samples_over_hop(num_samples):
    model = _model()
    with torch.no_grad():
        mean, logvar = model.encode(torch.rand(1, 1, num_samples) * 2 - 1)
    assert mean.shape == logvar.shape == (1, 8, math.ceil(num_samples / 960))


def test_encode_pads_with_zeros_on_the_right():
    model = _model()
    wav = torch.rand(1, 1, 1000) * 2 - 1
    padded = torch.cat([wav, torch.zeros(1, 1, 920)], dim=-1)
    with torch.no_grad():
        assert torch.equal(model.encode(wav)[0], model.encode(padded)[0])


def test_logvar_is_clamped():
    model = _model()
    with torch.no_grad():
        model.quant_conv.bias[8:] = 1e4  # logvar half
        _, high = model.encode(torch.zeros(1, 1, 960))
        model.quant_conv.bias[8:] = -1e4
        _, low = model.encode(torch.zeros(1, 1, 960))
    assert torch.all(high == 20.0) and torch.all(low == -30.0)


def test_mean_and_logvar_are_the_two_halves_of_quant_conv():
    model = _model()
    wav = torch.rand(1, 1, 1920) * 2 - 1
    with torch.no_grad():
        h = model.quant_conv(model.encoder(wav))
        mean, logvar = model.encode(wav)
    assert torch.equal(mean, h[:, :8]) and torch.equal(logvar, h[:, 8:])


def test_decode_is_post_quant_conv_then_decoder():
    model = _model()
    z = torch.randn(1, 8, 2)
    with torch.no_grad():
        assert torch.equal(model.decode(z), model.decoder(model.post_quant_conv(z)))
    assert isinstance(model.decoder.model[-1], nn.Tanh)


def test_bad_inputs_name_the_argument():
    model = _model()
    with pytest.raises(ValueError, match="decode z"):
        model.decode(torch.randn(1, 7, 2))
    with pytest.raises(ValueError, match="encode wav"):
        model.encode(torch.randn(1, 2, 960))


def test_config_validation():
    data = release_config("audio_vae")
    with pytest.raises(ValueError, match="unknown key 'hop'"):
        DacVAEConfig.from_dict({**data, "hop": 960})
    # SGLang's listing carries hop_length 3840: not a DAC argument, the hop stays prod(encoder_rates)
    assert DacVAEConfig.from_dict({**data, "hop_length": 3840}).hop_length == 960
    assert DacVAEConfig.from_dict({k: v for k, v in data.items() if k != "use_weight_norm"}).use_weight_norm is False
    with pytest.raises(ValueError, match="missing key 'sample_rate'"):
        DacVAEConfig.from_dict({k: v for k, v in data.items() if k != "sample_rate"})
    with pytest.raises(NotImplementedError, match="continuous"):
        DacVAEConfig.from_dict({**data, "continuous": False})
    with pytest.raises(ValueError, match="decoder_rates"):
        DacVAEConfig.from_dict({**data, "decoder_rates": [8, 5, 4, 3]})
    assert DacVAEConfig.from_dict({**data, "latent_dim": None}).resolved_latent_dim == 128 * 2**5


def _weight_normed_state(model: DacVAE) -> dict[str, torch.Tensor]:
    """The state dict a DAC trained with weight norm and saved without remove_weight_norm() would hold."""
    normed = copy.deepcopy(model)
    for module in normed.modules():
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)) and module not in (normed.quant_conv,
                                                                                  normed.post_quant_conv):
            torch.nn.utils.parametrizations.weight_norm(module)
    state = {}
    for key, value in normed.state_dict().items():
        state[key.replace(".parametrizations.weight.original0", ".weight_g")
              .replace(".parametrizations.weight.original1", ".weight_v")] = value.clone()
    return state


def test_weight_normed_and_plain_checkpoints_give_identical_outputs(tmp_path):
    model = _model(seed=1)
    plain_dir, wn_dir = tmp_path / "plain", tmp_path / "wn"
    plain_dir.mkdir()
    wn_dir.mkdir()
    save_file({k: v.clone() for k, v in model.state_dict().items()}, str(plain_dir / "diffusion_pytorch_model.safetensors"))
    wn_state = _weight_normed_state(model)
    assert "encoder.block.0.weight_g" in wn_state and "encoder.block.0.weight" not in wn_state
    assert "decoder.model.1.block.1.weight_v" in wn_state  # transposed conv too
    save_file(wn_state, str(wn_dir / "diffusion_pytorch_model.safetensors"))

    config = _config(use_weight_norm=True)
    from_plain = load_component_strict(build_on_meta(lambda: DacVAE(_config())), plain_dir)
    from_wn = load_component_strict(build_on_meta(lambda: DacVAE(config)), wn_dir)
    z = torch.randn(1, 8, 3)
    wav = torch.rand(1, 1, 1920) * 2 - 1
    with torch.no_grad():
        reference = model.decode(z)
        assert torch.equal(from_plain.decode(z), reference)
        assert torch.allclose(from_wn.decode(z), reference, atol=1e-5)
        assert torch.allclose(from_wn.encode(wav)[0], model.encode(wav)[0], atol=1e-5)


def test_release_key_listing_matches_fixture():
    module = release_module_on_meta("audio_vae")
    assert key_listing(module) == FIXTURE.read_text().splitlines()
    shapes = dict(line.split("\t") for line in FIXTURE.read_text().splitlines())
    assert shapes["quant_conv.weight"] == "[256, 128, 1]"  # docs/model.md#audio-vae: 1x1, 128 -> 256
    assert shapes["post_quant_conv.weight"] == "[128, 128, 1]"
    assert shapes["decoder.model.0.weight"] == "[2048, 128, 7]"
    assert shapes["decoder.model.7.weight"] == "[1, 64, 7]"
    assert not any("weight_g" in k or "quantizer" in k for k in shapes)
