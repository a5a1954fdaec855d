"""The audio contract: decoding, mono, resampling, windows, aggregation, normalisation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from client.audio import (
    AudioConfig,
    aggregate,
    decode,
    load_audio,
    make_windows,
    normalize_reference,
    resample,
    to_mono,
)

SR = 16_000


def tone(seconds: float, *, sr: int = SR, freq: float = 220.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "FLOAT"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_every_soundfile_format_decodes_to_the_same_float_signal(tmp_path, fmt, subtype):
    y = tone(0.5)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, y, SR, format=fmt, subtype=subtype)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    tol = 0.05 if subtype == "VORBIS" else 1e-3
    n = min(len(out), len(y))
    assert np.abs(out[:n] - y[:n]).max() < tol


def test_integer_pcm_is_scaled_by_its_full_range():
    pcm = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    out = load_audio(np.tile(pcm, 500), sample_rate=SR)  # 0.125 s: above the minimum duration
    assert out.max() == pytest.approx(32767 / 32768, abs=1e-6)
    assert out.min() == -1.0


def test_stereo_is_averaged_to_mono():
    left, right = tone(0.2), np.zeros(int(0.2 * SR), dtype=np.float32)
    mono = to_mono(np.stack([left, right], axis=1))
    np.testing.assert_allclose(mono, left / 2, atol=1e-7)


def test_resampling_44k1_to_16k_keeps_duration_and_pitch():
    y = tone(1.0, sr=44_100, freq=440.0)
    out = resample(y, orig_sr=44_100, target_sr=SR)
    assert abs(len(out) - SR) <= 1
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * SR / len(out) - 440.0) < 2.0


def test_encoded_bytes_decode_like_the_file(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, tone(0.3), SR)
    from_bytes = load_audio(path.read_bytes())
    np.testing.assert_array_equal(from_bytes, load_audio(path))


def test_short_audio_is_one_padded_window_carrying_its_true_length():
    w = make_windows(tone(0.25), window_samples=SR, hop_samples=SR // 2)
    assert w.waveforms.shape == (1, SR) and w.waveforms.dtype == np.float32
    assert w.num_samples.tolist() == [SR // 4] and w.num_samples.dtype == np.int64
    assert not w.waveforms[0, SR // 4 :].any()


def test_long_audio_is_cut_into_full_overlapping_windows_covering_every_sample():
    y = np.arange(int(2.3 * SR), dtype=np.float32)
    w = make_windows(y, window_samples=SR, hop_samples=SR // 2)
    assert w.offsets.tolist() == [0, 8000, 16000, int(2.3 * SR) - SR]
    assert (w.num_samples == SR).all()
    assert w.waveforms[-1, -1] == y[-1]
    for off, win in zip(w.offsets, w.waveforms, strict=True):
        np.testing.assert_array_equal(win, y[off : off + SR])


def test_aggregation_weights_windows_by_valid_samples():
    p = np.array([[1.0, 0.0], [0.0, 1.0]])
    out = aggregate(p, np.array([3000, 1000]))
    np.testing.assert_allclose(out, [0.75, 0.25])
    assert out.dtype == np.float32


def test_reference_normalisation_matches_wav2vec2_feature_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    rng = np.random.default_rng(0)
    clips = [rng.normal(0.1, 0.3, n).astype(np.float32) for n in (SR, 9000, 4000)]
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True, return_attention_mask=True)
    ref = fe(clips, sampling_rate=SR, padding="max_length", max_length=SR, return_tensors="np")["input_values"]
    windows = np.zeros((3, SR), np.float32)
    for i, c in enumerate(clips):
        windows[i, : len(c)] = c
    ours = normalize_reference(windows, np.array([len(c) for c in clips]))
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_decode_reports_sample_rate_and_channels(tmp_path):
    path = tmp_path / "s.wav"
    sf.write(path, np.stack([tone(0.1, sr=48_000)] * 2, axis=1), 48_000)
    data, sr = decode(path)
    assert sr == 48_000 and data.shape == (4800, 2)


def test_audio_config_rejects_nonsense():
    from client.errors import ConfigError

    with pytest.raises(ConfigError, match="sample_rate"):
        AudioConfig(sample_rate=0)


def test_the_client_package_imports_neither_torch_nor_transformers():
    code = (
        "import sys, client.audio, client.contract, client.errors\n"
        "import importlib.util\n"
        "if importlib.util.find_spec('client.triton_client'): import client.triton_client\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "sys.exit(1 if bad else 0)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_mp3_decodes_through_libsndfile_without_ffmpeg(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3 support")
    y = tone(0.5, sr=44_100)
    sf.write(tmp_path / "x.mp3", y, 44_100, format="MP3")
    out = load_audio(tmp_path / "x.mp3")
    assert abs(len(out) - SR // 2) < 0.05 * SR and 0.3 < np.abs(out).max() < 0.7


@pytest.mark.skipif(__import__("shutil").which("ffmpeg") is None, reason="needs ffmpeg (not installed by make/CI)")
def test_m4a_decodes_through_ffmpeg_when_it_is_present(tmp_path):
    sf.write(tmp_path / "x.wav", tone(0.5), SR)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(tmp_path / "x.wav"), str(tmp_path / "x.m4a")], check=True)
    out = load_audio(tmp_path / "x.m4a")
    assert abs(len(out) - SR // 2) < 0.1 * SR and 0.3 < np.abs(out).max() < 0.7
