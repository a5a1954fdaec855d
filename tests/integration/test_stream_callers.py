"""The callers of live calls against the real tritonserver: ``ser stream`` and the bare tritonclient example.

Both must report what :class:`client.stream.StreamSession` reports for the same audio (the gate off,
so every window is classified by ``ser_fp32``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from client.stream import StreamSession
from tests.helpers import REPO_ROOT, assert_one_line_error, node_example_modules, ser

EXAMPLE = REPO_ROOT / "client" / "examples" / "stream_tritonclient.py"


@pytest.fixture(scope="module")
def call_wav(tmp_path_factory) -> Path:
    """About 2 s of generated speech as a 16-bit mono WAV at 16 kHz."""
    from loadtest.payload import generated_clips

    y = generated_clips(1, 0)[0][1]
    path = tmp_path_factory.mktemp("stream-callers") / "call.wav"
    sf.write(path, y, 16_000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def reference(triton_server, call_wav):
    """The call's result through the bundle's client, chunk by chunk, gate on."""
    pcm, _ = sf.read(call_wav, dtype="int16")
    with StreamSession(triton_server.grpc_url) as session:
        call = session.call(sample_rate=16_000)
        for i in range(0, pcm.size, 1600):
            call.send(pcm[i:i + 1600])
        return call.end()


def _segments(result) -> list[list]:
    return [[s.label, round(s.start_s, 3), round(s.end_s, 3)] for s in result.segments]


def test_ser_stream_prints_each_update_then_the_calls_segments(triton_server, call_wav, reference):
    proc = ser("stream", str(call_wav), "--url", triton_server.grpc_url, "--speed", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    updates, end = lines[:-1], lines[-1]
    assert [u["end_s"] for u in updates] == pytest.approx([u.end_s for u in reference.updates])
    assert [u["label"] for u in updates] == [u.label for u in reference.updates]
    assert end["event"] == "end"
    assert [[s["label"], round(s["start_s"], 3), round(s["end_s"], 3)] for s in end["segments"]] == _segments(reference)


def test_ser_stream_plays_piped_pcm_in_real_time_and_prints_updates_as_they_come(triton_server, call_wav, reference):
    pcm, _ = sf.read(call_wav, dtype="int16")
    duration = pcm.size / 16_000
    command = [sys.executable, "-m", "ser", "stream", "-", "--rate", "16000", "--format", "s16le",
               "--url", triton_server.grpc_url]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT)
    started = time.monotonic()
    proc.stdin.write(pcm.tobytes())
    proc.stdin.close()
    first = proc.stdout.readline().decode()
    first_at = time.monotonic() - started
    rest, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=60)
    finished_at = time.monotonic() - started
    assert proc.returncode == 0, err.decode()
    assert "-" in first and "s" in first
    assert finished_at >= duration - 0.1  # paced: about the call's own length
    assert first_at < finished_at - 0.5  # the first update came while the call was still playing
    text = rest.decode()
    for segment in reference.segments:
        assert f"{segment.start_s:7.2f}-{segment.end_s:7.2f} s  {segment.label}" in text


def test_the_tritonclient_only_example_streams_a_call(triton_server, call_wav, reference):
    script_lines = [ln for ln in EXAMPLE.read_text().splitlines() if ln.strip() and not ln.startswith(("#", '"""', "Usage"))]
    assert len(script_lines) <= 60
    code = ("import runpy, sys; sys.modules.update(client=None, soundfile=None, soxr=None, librosa=None); "
            f"sys.argv = ['x', {str(call_wav)!r}, {triton_server.grpc_url!r}, '--fast']; runpy.run_path({str(EXAMPLE)!r})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [u["end_s"] for u in lines[:-1]] == pytest.approx([u.end_s for u in reference.updates])
    assert lines[-1]["segments"] == _segments(reference)


def test_the_node_grpc_example_streams_a_call(triton_server, call_wav, reference, tmp_path):
    import os

    modules = node_example_modules()
    descriptors = tmp_path / "triton.desc"
    subprocess.run([sys.executable, str(EXAMPLE.parent / "node" / "triton_descriptors.py"), str(descriptors)], check=True, timeout=60)
    out = subprocess.run(["node", str(EXAMPLE.parent / "node" / "stream.js"), str(descriptors), str(call_wav),
                          triton_server.grpc_url, "--fast"], env={**os.environ, "NODE_PATH": str(modules)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [u["end_s"] for u in lines[:-1]] == pytest.approx([u.end_s for u in reference.updates])
    assert [u["label"] for u in lines[:-1]] == [u.label for u in reference.updates]
    assert lines[-1]["segments"] == _segments(reference)


def test_the_demo_prints_a_streamed_calls_updates_and_segments(triton_server, call_wav, reference):
    import io

    from ser.demo_stream import print_streamed_call

    out = io.StringIO()
    print_streamed_call(triton_server.grpc_url, call_wav, out)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(reference.updates) + 1
    assert lines[-1] == "      segments: " + ", ".join(f"{s.label} {s.start_s:.2f}-{s.end_s:.2f} s" for s in reference.segments)


def test_ser_stream_refuses_bad_input_in_one_line(triton_server, tmp_path):
    assert_one_line_error(ser("stream", str(tmp_path / "missing.wav"), "--url", triton_server.grpc_url), "missing.wav", "no such file")
    assert_one_line_error(ser("stream", "-", "--url", triton_server.grpc_url), "--rate")
    assert_one_line_error(ser("stream", str(tmp_path), "--url", "127.0.0.1:1", "--timeout-s", "2"), "is a directory")
    wav = tmp_path / "ok.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16_000)
    assert_one_line_error(ser("stream", str(wav), "--url", "127.0.0.1:1"), "127.0.0.1:1")
    assert_one_line_error(ser("stream", str(wav), "--url", triton_server.grpc_url, "--model", "nope"), "nope")
