"""The client distribution (``client/pyproject.toml``): what a calling service installs.

The wheel is built offline from a copy of ``client/`` (so the checkout gets no
``build/`` or ``*.egg-info``), unzipped, and imported as ``ser_triton_client`` by an
isolated interpreter that sees only the unzipped wheel, the standard library and
the environment's site-packages without its ``.pth`` files (``-I -S``): the main
checkout's editable install, which maps ``client`` etc. to the repository, stays out.
"""

from __future__ import annotations

import email
import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

HEAVY = ("torch", "transformers", "onnx", "onnxruntime")
#: Distributions a service installing the client must not get.
NOT_REQUIRED = (*HEAVY, "locust", "nvidia-pytriton")
#: The bundle's generic top-level names; none may be imported by the installed client.
BUNDLE_PARTS = ("client", "training", "export", "deploy", "loadtest", "ser")

#: Runs in the isolated interpreter: the public API by its installed name, then a
#: small end-to-end use without a server. Prints what it imported, as JSON.
IMPORT_AND_USE = r"""
import importlib, json, pkgutil, sys

import numpy as np

TONE = (0.5 * np.sin(2 * np.pi * 440 * np.arange(int(1.3 * 44_100)) / 44_100)).astype(np.float32)  # 1.3 s at 44.1 kHz

import ser_triton_client
from ser_triton_client.triton_client import (
    DEFAULT_MODEL, AsyncSerClient, ClassifyResult, ModelStats, Prediction, RetryPolicy, SerClient,
    TransportOptions, is_refused_restricted_api, is_retryable, normalize_url, parse_classification,
    translate_error,
)
from ser_triton_client.errors import (
    AccessDeniedError, AudioDecodeError, AudioError, ConfigError, ContractError, InferenceError,
    ModelNotFoundError, SerError, ServerUnavailableError, SilentAudioError,
)
from ser_triton_client.audio import AudioConfig, aggregate, load_audio, make_windows
from ser_triton_client.contract import ModelContract
from ser_triton_client.timeline import build_timeline

modules = sorted(m.name for m in pkgutil.iter_modules(ser_triton_client.__path__))
for name in modules:
    importlib.import_module("ser_triton_client." + name)

# the audio contract on an array (TONE below), resampled to 16 kHz and cut into 1 s windows
y = load_audio(TONE, sample_rate=44_100)
w = make_windows(y, window_samples=16_000, hop_samples=8_000)
p = aggregate(np.array([[0.8, 0.2], [0.4, 0.6]], dtype=np.float32), w.num_samples)
try:
    load_audio(np.zeros(16_000, dtype=np.float32), sample_rate=16_000, name="quiet")
    silent = None
except SilentAudioError as exc:
    silent = str(exc)

contract = ModelContract(labels=("calm", "angry"), window_samples=16_000, variant="int8")
back = ModelContract.from_parameters(contract.to_parameters(), model="m")
client = SerClient("grpc://127.0.0.1:1", retry=RetryPolicy.none())  # checks options, opens nothing

print(json.dumps({
    "modules": modules,
    "loaded": sorted(sys.modules),
    "audio": y.tolist(), "offsets": w.offsets.tolist(), "num_samples": w.num_samples.tolist(),
    "p": p.tolist(), "silent": silent, "round_trip": back == contract,
    "client": repr(client), "error_root": issubclass(ServerUnavailableError, SerError),
    "default_model": DEFAULT_MODEL, "retryable": is_retryable(ConnectionRefusedError()),
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The client's wheel, built offline (no build isolation) from a copy of ``client/``."""
    root = tmp_path_factory.mktemp("client-dist")
    source = root / "client"
    shutil.copytree(REPO_ROOT / "client", source,
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", "node_modules"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         str(source), "-w", str(root / "dist")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = (root / "dist").glob("ser_triton_client-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel) -> Path:
    """The wheel unzipped into a folder (what ``pip install`` puts in site-packages)."""
    target = wheel.parent.parent / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    return target


def run_isolated(folder: Path, code: str) -> subprocess.CompletedProcess:
    """``code`` in ``python -I -S`` with sys.path = stdlib, ``folder``, the environment's site-packages (no .pth)."""
    prelude = f"import sys; sys.path[:0] = [{str(folder)!r}]; sys.path.append({sysconfig.get_paths()['purelib']!r})\n"
    return subprocess.run([sys.executable, "-I", "-S", "-c", prelude + code],
                          capture_output=True, text=True, cwd=folder)


def test_the_wheel_holds_only_the_ser_triton_client_package(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"ser_triton_client", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    packaged = {n.split("/", 1)[1] for n in names if n.startswith("ser_triton_client/")}
    assert "triton_client.py" in packaged and "audio.py" in packaged and "__init__.py" in packaged
    assert all("/" not in n and n.endswith(".py") for n in packaged)  # no examples/, no node/


def test_the_wheel_requires_no_heavy_library(wheel):
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        msg = email.message_from_bytes(zf.read(meta))
    assert msg["Name"] == "ser-triton-client"
    requires = msg.get_all("Requires-Dist") or []
    names = {r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].split("!")[0].strip().lower()
             for r in requires}
    assert {"numpy", "soundfile", "soxr", "tritonclient"} <= names
    assert not names & set(NOT_REQUIRED), requires
    assert any(r.startswith("numpy") and "<2" in r for r in requires)


def test_the_installed_client_imports_and_works_under_its_own_name_alone(installed):
    proc = run_isolated(installed, IMPORT_AND_USE)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    loaded = out["loaded"]
    assert not [m for m in loaded if m.split(".")[0] in HEAVY], "heavy libraries imported"
    assert not [m for m in loaded if m.split(".")[0] in BUNDLE_PARTS], "a bundle part imported by its generic name"
    assert {"sync_client", "async_client", "triton_client", "audio", "errors", "contract"} <= set(out["modules"])
    # the same numbers as the checkout's client package gives
    import numpy as np

    from client.audio import aggregate, load_audio, make_windows

    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(int(1.3 * 44_100)) / 44_100)).astype(np.float32)
    y = load_audio(tone, sample_rate=44_100)
    w = make_windows(y, window_samples=16_000, hop_samples=8_000)
    assert np.array_equal(np.asarray(out["audio"], dtype=np.float32), y) and y.shape == (20_800,)
    assert out["offsets"] == w.offsets.tolist() and out["num_samples"] == w.num_samples.tolist() == [16_000, 16_000]
    assert out["p"] == aggregate(np.array([[0.8, 0.2], [0.4, 0.6]], dtype=np.float32), w.num_samples).tolist()
    assert "quiet" in out["silent"]
    assert out["round_trip"] is True and out["error_root"] is True and out["default_model"] == "ser_int8"
    assert out["retryable"] is True  # tritonclient is found in the environment
    assert out["client"] == "SerClient('127.0.0.1:1', model='ser_int8', protocol='grpc')"


def test_the_isolated_interpreter_does_not_see_the_checkout(installed):
    proc = run_isolated(installed, "import client")
    assert proc.returncode != 0 and "No module named 'client'" in proc.stderr
