"""Hostile audio: every case is a typed error that names the source and the reason."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from client.audio import AudioConfig, load_audio, make_windows
from client.errors import (
    AudioDecodeError,
    AudioError,
    AudioTooLongError,
    AudioTooShortError,
    ConfigError,
    EmptyAudioError,
    NonFiniteAudioError,
    SerError,
    SilentAudioError,
)

SR = 16_000


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioDecodeError, match="nope.wav: cannot decode audio \\(no such file\\)"):
        load_audio(path)


def test_zero_byte_file_is_refused(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="0 bytes"):
        load_audio(path)


def test_a_text_file_posing_as_wav_is_refused(tmp_path):
    path = tmp_path / "fake.wav"
    path.write_text("this is not audio\n" * 10)
    with pytest.raises(AudioDecodeError, match="fake.wav"):
        load_audio(path)


def test_a_truncated_wav_is_refused(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, np.full(SR, 0.3, np.float32), SR, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioDecodeError, match="cut.wav"):
        load_audio(path)


def test_a_header_only_wav_is_empty(tmp_path):
    path = tmp_path / "hdr.wav"
    sf.write(path, np.zeros(0, np.float32), SR)
    with pytest.raises(AudioError, match="hdr.wav"):
        load_audio(path)


def test_a_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioDecodeError, match="is a directory"):
        load_audio(tmp_path)


def test_empty_array_is_refused():
    with pytest.raises(EmptyAudioError, match="<array>: audio is empty"):
        load_audio(np.zeros(0, np.float32), sample_rate=SR)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_samples_are_refused_with_a_count(bad):
    y = np.full(SR, 0.2, np.float32)
    y[[3, 7]] = bad
    with pytest.raises(NonFiniteAudioError, match="2 of 16000 samples"):
        load_audio(y, sample_rate=SR, name="clip.wav")


@pytest.mark.parametrize("samples,rate", [(1, SR), (1_599, SR), (4_409, 44_100), (1, 8_000)])
def test_audio_under_the_minimum_duration_is_refused_naming_its_length(tmp_path, samples, rate):
    y = np.full(samples, 0.3, np.float32)
    with pytest.raises(AudioTooShortError, match=rf"<array>: audio is shorter than the allowed minimum \({samples} samples at {rate} Hz"):
        load_audio(y, sample_rate=rate)
    path = tmp_path / "short.wav"
    sf.write(path, y, rate, subtype="PCM_16")
    with pytest.raises(AudioTooShortError, match=f"{path}: .* < 0.1 s"):
        load_audio(path)
    assert load_audio(np.full(SR // 10, 0.3, np.float32), sample_rate=SR).shape == (SR // 10,)  # 0.1 s: accepted
    assert load_audio(y, sample_rate=rate, config=AudioConfig(min_duration_s=0)).size >= 1  # 0 turns the minimum off


def test_a_minimum_duration_that_is_negative_or_not_below_the_maximum_is_a_config_error():
    for bad in (-0.1, 5.0, float("nan")):
        with pytest.raises(ConfigError, match="min_duration_s"):
            AudioConfig(min_duration_s=bad, max_duration_s=5.0)


def test_an_array_with_a_rate_of_zero_is_a_config_error_not_a_division_by_zero():
    with pytest.raises(ConfigError, match="sample_rate=0"):
        load_audio(np.full(SR, 0.3, np.float32), sample_rate=0)


def test_digital_silence_is_refused_not_classified():
    with pytest.raises(SilentAudioError, match="silent"):
        load_audio(np.zeros(SR, np.float32), sample_rate=SR)


def test_audio_over_the_maximum_is_refused_before_decoding_it_whole(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.full(3 * SR, 0.1, np.float32), SR)
    with pytest.raises(AudioTooLongError, match="3.0 s > 2 s"):
        load_audio(path, config=AudioConfig(max_duration_s=2.0))


def test_array_without_sample_rate_is_a_config_error():
    with pytest.raises(ConfigError, match="sample_rate"):
        load_audio(np.ones(10, np.float32))


def test_three_dimensional_array_is_refused():
    with pytest.raises(ConfigError, match="shape"):
        load_audio(np.ones((2, 2, 2), np.float32), sample_rate=SR)


def test_bad_window_settings_are_refused():
    with pytest.raises(ConfigError, match="hop"):
        make_windows(np.ones(10, np.float32), window_samples=8, hop_samples=9)


def test_every_audio_error_is_a_ser_error_with_a_one_line_message(tmp_path):
    path = tmp_path / "x.wav"
    path.write_bytes(b"RIFF\x00\x00")
    with pytest.raises(SerError) as info:
        load_audio(path)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(__import__("shutil").which("ffmpeg") is not None, reason="ffmpeg is installed: the decoder is not missing")
def test_an_m4a_without_ffmpeg_names_the_missing_decoder(tmp_path):
    path = tmp_path / "voice.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A isommp42" + bytes(512))  # an MP4 header, no decoder here
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path)
    text = str(info.value)
    assert str(path) in text and "no decoder" in text and "ffmpeg" in text and "\n" not in text
