"""MovaCheckpoint on the tiny checkpoint: model_index forms, subsets, round trip, demo cache, CLI."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from movakit.cli import main as mova_main
from movakit.loading import ALL_COMPONENTS, CheckpointError, MovaCheckpoint, load_state_dict
from movakit.models.audio_dit import AudioDiTConfig
from movakit.models.audio_vae import DacVAEConfig
from movakit.models.bridge import BridgeConfig
from movakit.models.video_dit import VideoDiTConfig
from movakit.loading.release_configs import release_config
from movakit.loading.demo import default_demo_checkpoint, write_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny", seed=0)


@pytest.fixture
def tiny_copy(tiny, tmp_path):
    return shutil.copytree(tiny, tmp_path / "copy")


def test_layout_is_the_official_one(tiny):
    index = json.loads((tiny / "model_index.json").read_text())
    assert index == release_config("model_index")
    assert index["video_dit"] == ["mova.diffusion.models.wan_video_dit", "WanModel"]
    for folder in ("video_dit", "video_dit_2"):
        files = sorted(p.name for p in (tiny / folder).iterdir())
        assert "diffusion_pytorch_model.safetensors.index.json" in files
        assert len([f for f in files if f.endswith(".safetensors")]) >= 2
    text_files = sorted(p.name for p in (tiny / "text_encoder").iterdir())
    assert "model.safetensors.index.json" in text_files and len([f for f in text_files if f.endswith(".safetensors")]) >= 2
    for folder in ("audio_dit", "dual_tower_bridge", "audio_vae", "video_vae"):
        assert (tiny / folder / "diffusion_pytorch_model.safetensors").is_file()
    marker = json.loads((tiny / "movakit_tiny.json").read_text())
    assert marker["random_weights"] is True
    scheduler = json.loads((tiny / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["shift"] == 5.0 and scheduler["extra_one_step"] is True
    assert scheduler["num_inference_steps"] == 100 and scheduler["sigma_min"] == pytest.approx(0.003 / 1.002)


def test_configs_keep_the_release_keys(tiny):
    for folder in ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "audio_vae", "video_vae", "text_encoder"):
        written = json.loads((tiny / folder / "config.json").read_text())
        assert set(written) == set(release_config(folder)), folder
    audio = json.loads((tiny / "audio_vae" / "config.json").read_text())
    assert audio["sample_rate"] == 48000 and audio["encoder_rates"] == [2, 3, 4, 5, 8]
    video = json.loads((tiny / "video_dit" / "config.json").read_text())
    text = json.loads((tiny / "text_encoder" / "config.json").read_text())
    assert video["text_dim"] == text["d_model"] == 32 and video["dim"] // video["num_heads"] == 24
    assert json.loads((tiny / "audio_dit" / "config.json").read_text())["in_dim"] == audio["latent_dim"]


def test_round_trip_loads_every_component_with_the_written_weights(tiny):
    models = MovaCheckpoint(tiny).load()
    assert models.random_weights and models.boundary_ratio == 0.9
    for name in ALL_COMPONENTS:
        assert getattr(models, name) is not None, name
    # configs equal what was written
    written = {f: json.loads((tiny / f / "config.json").read_text()) for f in ("video_dit", "audio_dit",
                                                                              "dual_tower_bridge", "audio_vae")}
    assert models.video_dit.config == VideoDiTConfig.from_dict(written["video_dit"])
    assert models.video_dit_2.config == VideoDiTConfig.from_dict(written["video_dit"])
    assert models.audio_dit.config == AudioDiTConfig.from_dict(written["audio_dit"])
    assert models.bridge.config == BridgeConfig.from_dict(written["dual_tower_bridge"])
    assert models.audio_vae.config == DacVAEConfig.from_dict(written["audio_vae"])
    assert models.video_vae.vae.config.base_dim == 8 and models.video_vae.z_dim == 16
    assert models.text_encoder.model.config.d_model == 32
    assert models.scheduler.config.shift == 5.0
    # weights equal the files
    for module, folder in [
        (models.video_dit, "video_dit"), (models.video_dit_2, "video_dit_2"), (models.audio_dit, "audio_dit"),
        (models.bridge, "dual_tower_bridge"), (models.audio_vae, "audio_vae"), (models.video_vae.vae, "video_vae"),
    ]:
        stored = load_state_dict(tiny / folder)
        live = module.state_dict()
        assert set(stored) == set(live), folder
        assert all(torch.equal(stored[k], live[k]) for k in stored), folder
    assert not torch.equal(models.video_dit.patch_embedding.weight, models.video_dit_2.patch_embedding.weight)


def test_loads_only_what_is_asked(tiny):
    models = MovaCheckpoint(tiny).load(("audio_vae", "scheduler"))
    assert models.audio_vae is not None and models.scheduler is not None
    assert all(getattr(models, n) is None for n in ALL_COMPONENTS if n not in ("audio_vae", "scheduler"))
    with pytest.raises(ValueError, match="'dit'"):
        MovaCheckpoint(tiny).load(("dit",))


def test_dtype_applies_except_audio_vae(tiny):
    models = MovaCheckpoint(tiny).load(("audio_dit", "audio_vae"), dtype=torch.bfloat16)
    assert models.audio_dit.patch_embedding.weight.dtype == torch.bfloat16
    assert models.audio_vae.post_quant_conv.weight.dtype == torch.float32


def test_bf16_checkpoint_audio_vae_upcast(tmp_path):
    path = write_tiny_checkpoint(tmp_path / "bf16", dtype=torch.bfloat16)
    assert load_state_dict(path / "audio_vae")["quant_conv.weight"].dtype == torch.bfloat16
    models = MovaCheckpoint(path).load(("audio_vae", "video_dit"))
    assert models.audio_vae.quant_conv.weight.dtype == torch.float32
    assert models.video_dit.patch_embedding.weight.dtype == torch.bfloat16  # stored dtype kept
    wav = models.audio_vae.decode(torch.zeros(1, 16, 2))
    assert wav.dtype == torch.float32 and wav.shape == (1, 1, 1920)


def test_diffusers_style_index_loads_by_folder_name(tiny_copy):
    index = {
        "_class_name": "MOVA",
        "_diffusers_version": "0.36.0",
        "_name_or_path": "OpenMOSS-Team/MOVA-360p",
        **{name: ["mova", cls] for name, cls in [("video_dit", "WanModel"), ("video_dit_2", "WanModel"),
                                                 ("audio_dit", "WanAudioModel"), ("audio_vae", "DAC"),
                                                 ("dual_tower_bridge", "DualTowerConditionalBridge"),
                                                 ("scheduler", "FlowMatchPairScheduler")]},
        "video_vae": ["diffusers", "AutoencoderKLWan"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
    }
    (tiny_copy / "model_index.json").write_text(json.dumps(index))
    ck = MovaCheckpoint(tiny_copy)
    assert ck.boundary_ratio == 0.9  # official constructor default when absent
    assert ck.load(("bridge",)).bridge is not None


def _edit_index(path, **changes):
    data = json.loads((path / "model_index.json").read_text())
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    (path / "model_index.json").write_text(json.dumps(data))


def test_index_settings_and_errors(tiny_copy):
    _edit_index(tiny_copy, boundary_ratio=0.875)
    assert MovaCheckpoint(tiny_copy).load(("scheduler",)).boundary_ratio == 0.875
    _edit_index(tiny_copy, boundary_ratio=1.5)
    with pytest.raises(CheckpointError, match="boundary_ratio"):
        MovaCheckpoint(tiny_copy)
    _edit_index(tiny_copy, boundary_ratio=0.9, audio_vae_type="oobleck")
    with pytest.raises(NotImplementedError, match="oobleck"):
        MovaCheckpoint(tiny_copy)
    _edit_index(tiny_copy, audio_vae_type="dac", mystery=["x", "Y"])
    with pytest.raises(CheckpointError, match="unknown component 'mystery'.*model_index.json|model_index.json.*'mystery'"):
        MovaCheckpoint(tiny_copy)
    _edit_index(tiny_copy, mystery=..., video_dit_2=[None, None])
    ck = MovaCheckpoint(tiny_copy)
    assert ck.load(("audio_vae",)).audio_vae is not None
    with pytest.raises(CheckpointError, match="'video_dit_2' is not in the checkpoint"):
        ck.load(("video_dit_2",))


def test_missing_folder_and_component_errors(tiny_copy, tmp_path):
    with pytest.raises(CheckpointError, match="model_index.json does not exist"):
        MovaCheckpoint(tmp_path)
    shutil.rmtree(tiny_copy / "audio_dit")
    with pytest.raises(CheckpointError, match="audio_dit.*does not exist"):
        MovaCheckpoint(tiny_copy).load(("audio_dit",))
    (tiny_copy / "dual_tower_bridge" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="dual_tower_bridge/config.json does not exist"):
        MovaCheckpoint(tiny_copy).load(("bridge",))


def test_component_config_error_names_the_file(tiny_copy):
    path = tiny_copy / "audio_vae" / "config.json"
    data = json.loads(path.read_text())
    data["hop"] = 960
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="audio_vae/config.json.*'hop'"):
        MovaCheckpoint(tiny_copy).load(("audio_vae",))


def test_video_vae_statistics_error_names_the_file(tiny_copy):
    path = tiny_copy / "video_vae" / "config.json"
    data = json.loads(path.read_text())
    data["latents_std"] = data["latents_std"][:3]
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="video_vae/config.json.*latents_std"):
        MovaCheckpoint(tiny_copy).load(("video_vae",))


def test_tensor_error_through_the_checkpoint_names_tensor_and_shard(tiny_copy):
    index_path = tiny_copy / "video_dit" / "diffusion_pytorch_model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first_shard = sorted(set(index["weight_map"].values()))[0]
    (tiny_copy / "video_dit" / first_shard).unlink()
    with pytest.raises(CheckpointError, match=first_shard):
        MovaCheckpoint(tiny_copy).load(("video_dit",))


def test_writer_is_deterministic_and_seeded(tmp_path):
    a = write_tiny_checkpoint(tmp_path / "a", seed=3)
    b = write_tiny_checkpoint(tmp_path / "b", seed=3)
    c = write_tiny_checkpoint(tmp_path / "c", seed=4)
    sa, sb, sc = (load_state_dict(p / "audio_dit") for p in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["patch_embedding.weight"], sc["patch_embedding.weight"])
    with pytest.raises(FileExistsError):
        write_tiny_checkpoint(a)


def test_default_demo_checkpoint_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MOVA_CACHE_DIR", str(tmp_path))
    first = default_demo_checkpoint()
    assert first == tmp_path / "tiny-mova" and (first / "movakit_tiny.json").is_file()
    stamp = (first / "model_index.json").stat().st_mtime_ns
    assert default_demo_checkpoint() == first
    assert (first / "model_index.json").stat().st_mtime_ns == stamp  # not rewritten
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-mova"]  # no temp folders left behind
    # a stale cache (other writer version) is replaced
    marker = first / "movakit_tiny.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "fingerprint": "old"}))
    assert default_demo_checkpoint() == first
    assert json.loads(marker.read_text())["fingerprint"] != "old"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-mova"]


def test_cli_writes_a_loadable_checkpoint(tmp_path, capsys):
    target = tmp_path / "cli"
    assert mova_main(["tiny-checkpoint", str(target), "--seed", "2"]) == 0
    assert "random" in capsys.readouterr().err
    assert MovaCheckpoint(target).random_weights
    assert json.loads((target / "movakit_tiny.json").read_text())["seed"] == 2
    with pytest.raises(SystemExit) as exc:
        mova_main(["tiny-checkpoint", str(target)])
    assert exc.value.code == 2
    assert "not an empty folder" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loads_onto_cuda_in_bf16(tiny):
    models = MovaCheckpoint(tiny).load(("video_dit", "audio_vae", "video_vae", "text_encoder"), device="cuda",
                                       dtype=torch.bfloat16)
    assert models.video_dit.patch_embedding.weight.device.type == "cuda"
    assert models.video_dit.patch_embedding.weight.dtype == torch.bfloat16
    assert models.audio_vae.decode(torch.zeros(1, 16, 2, device="cuda")).shape == (1, 1, 1920)
    ctx = models.text_encoder.encode(["a cat"])
    assert ctx.device.type == "cuda" and ctx.dtype == torch.bfloat16
    pixels = models.video_vae.decode(torch.zeros(1, 16, 2, 4, 4, device="cuda"))
    assert pixels.shape == (1, 3, 5, 32, 32) and pixels.dtype == torch.float32
