"""movakit.media: MP4 (H.264 + AAC 48 kHz), WAV and PNG written by ffmpeg, probed and decoded back."""

from __future__ import annotations

import wave
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from movakit.media import probe, read_audio, read_video_frames, write_outputs, write_wav


@dataclass(frozen=True)
class _Clip:
    frames: np.ndarray
    audio: np.ndarray
    sample_rate: int
    fps: float


def _clip(n=25, fps=25.0, sr=48000, seconds=None):
    frames = np.zeros((n, 48, 64, 3), np.uint8)
    frames[:, :, :32] = (250, 20, 20)  # left half red
    samples = int(sr * (seconds if seconds is not None else n / fps))
    audio = (0.5 * np.sin(2 * np.pi * 440 * np.arange(samples) / sr)).astype(np.float32)
    return _Clip(frames, audio, sr, fps)


def test_write_outputs_probe_and_decode_back(tmp_path):
    mp4, wav, png = write_outputs(_clip(), tmp_path / "sub" / "clip.mp4")
    assert (mp4.name, wav.name, png.name) == ("clip.mp4", "clip.wav", "clip.png")
    info = probe(mp4)
    assert (info.video_codec, info.pix_fmt, info.audio_codec) == ("h264", "yuv420p", "aac")
    assert (info.width, info.height, info.fps, info.num_frames) == (64, 48, 25.0, 25)
    assert info.sample_rate == 48000 and info.audio_channels == 1
    assert info.duration_s == pytest.approx(1.0, abs=0.05)
    frames = read_video_frames(mp4)
    assert frames.shape == (25, 48, 64, 3)
    assert frames[3, 24, 8, 0] > 200 and frames[3, 24, 56].max() < 30
    audio, sr = read_audio(mp4)
    assert sr == 48000 and abs(len(audio) - 48000) < 2048
    peak_hz = np.argmax(np.abs(np.fft.rfft(audio[:48000]))) * sr / len(audio[:48000])
    assert abs(peak_hz - 440) < 3
    assert Image.open(png).size == (64, 48)


def test_mux_is_trimmed_to_the_shorter_stream(tmp_path):
    mp4, _, _ = write_outputs(_clip(n=25, seconds=2.0), tmp_path / "long_audio.mp4")
    assert probe(mp4).duration_s == pytest.approx(1.0, abs=0.06)


def test_audio_is_resampled_to_48k_in_the_mp4(tmp_path):
    mp4, wav, _ = write_outputs(_clip(sr=16000), tmp_path / "lo.mp4")
    assert probe(mp4).sample_rate == 48000
    with wave.open(str(wav)) as f:
        assert f.getframerate() == 16000


def test_wav_is_clipped_16_bit_pcm(tmp_path):
    path = write_wav(np.array([0.0, 0.5, 2.0, -3.0], np.float32), 48000, tmp_path / "a.wav")
    with wave.open(str(path)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, 48000)
        pcm = np.frombuffer(f.readframes(4), np.int16)
    assert pcm.tolist() == [0, 16383, 32767, -32767]


def test_write_outputs_rejects_bad_input(tmp_path):
    clip = _clip()
    with pytest.raises(ValueError, match="mp4"):
        write_outputs(clip, tmp_path / "x.mkv")
    with pytest.raises(ValueError, match="uint8"):
        write_outputs(_Clip(clip.frames.astype(np.float32), clip.audio, 48000, 25.0), tmp_path / "x.mp4")
