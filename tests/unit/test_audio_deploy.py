"""GPU-node path of the server-side audio model, validated offline with the real tools.

* deploy/Dockerfile parses with Docker's own parser (the Go parser in PyPI ``dockerfile``), derives
  from the pinned NGC release and installs, at constraints.txt's versions, every third-party module
  the packaged audio code imports (onnxruntime: the speech gate's silero-vad);
* the compose override renders (Docker Compose v2) onto that image, with the base file's flags;
* the ``cpu-audio``/``gpu-audio`` overlays render (``kubectl kustomize``), pass the Kubernetes schemas
  and load ``ser`` beside a window model that the native ``ser`` lists;
* deploy/Dockerfile.batch (the image of ``ser batch``, the archive Job's) installs the ``ray`` extra at
  constraints.txt's versions.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy import flags

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
IMAGE = "ser-triton-server"
NGC = "nvcr.io/nvidia/tritonserver"
AUDIO_OVERLAYS = {"cpu-audio": "ser_int8", "gpu-audio": "ser_fp16"}


def _tag() -> str:
    """The pinned NGC release: deploy/flags.py's TRITON_TAG where defined, else deploy/triton.env's."""
    tag = getattr(flags, "TRITON_TAG", None)
    if tag:
        return str(tag)
    m = re.search(r"^TRITON_TAG=(\S+)$", (DEPLOY / "triton.env").read_text(), re.M)
    assert m, "deploy/triton.env names no TRITON_TAG"
    return m.group(1)


def _tool(name: str) -> str:
    venv_bin = Path(sys.executable).parent / name
    found = str(venv_bin) if venv_bin.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} not installed (make venv installs it)")
    return found


def _packaged_third_party() -> set[str]:
    from export.audio_repository import packaged_files

    found = set()
    for path in packaged_files().values():
        tree = ast.parse(path.read_text())
        fallback = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "_decode_fallback" for n in ast.walk(f)}
        for node in ast.walk(tree):
            if id(node) in fallback:
                continue  # librosa: other formats from *paths*; the server decodes bytes only
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names} - {"client", "triton_python_backend_utils"}


def test_the_dockerfile_parses_derives_from_the_pinned_release_and_installs_what_the_audio_code_imports():
    dockerfile = pytest.importorskip("dockerfile", reason="dockerfile (Docker's parser) not installed: make venv")
    commands = dockerfile.parse_file(str(DOCKERFILE))
    kinds = [c.cmd.upper() for c in commands]
    assert kinds[:2] == ["ARG", "FROM"] and kinds.count("FROM") == 1
    assert commands[0].value == (f"TRITON_TAG={_tag()}",), "the Dockerfile's default release drifted from deploy/triton.env"
    assert commands[1].value == (f"{NGC}:${{TRITON_TAG}}-py3",)
    runs = " ".join(" ".join(c.value) for c in commands if c.cmd.upper() == "RUN")
    pins = dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', runs))
    constraints = dict(line.split("==") for line in (REPO_ROOT / "requirements" / "constraints.txt").read_text().split() if "==" in line)
    assert pins and all(constraints.get(k) == v for k, v in pins.items()), f"{pins} differ from constraints.txt"
    assert _packaged_third_party() == {"numpy", "soundfile", "soxr", "onnxruntime"} <= set(pins), \
        "the image lacks a module the audio code imports"
    assert "pip install" in runs
    unpinned = [w for w in re.findall(r'"([^"]+)"', runs) if "==" not in w and not w.startswith("-") and "import" not in w]
    assert not unpinned, f"unpinned packages in the Dockerfile: {unpinned}"


def test_the_compose_override_builds_the_derived_image_and_keeps_the_production_flags():
    base_env = {**os.environ, "TRITON_ADMIN_KEY": "test-key", "GRAFANA_ADMIN_PASSWORD": "test-password"}
    for var in ("TRITON_TAG", "MODEL_REPOSITORY", "BIND_ADDRESS"):
        base_env.pop(var, None)
    compose = DEPLOY / "compose"
    out = subprocess.run(
        [_tool("docker-compose"), "-f", str(compose / "docker-compose.yml"), "-f", str(compose / "docker-compose.audio.yml"),
         "config", "--format", "json"], env=base_env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    triton = json.loads(out.stdout)["services"]["triton"]
    assert triton["image"] == f"{IMAGE}:{_tag()}-py3"
    assert Path(triton["build"]["context"]) == DEPLOY and triton["build"]["dockerfile"] == "Dockerfile"
    assert triton["build"]["args"] == {"TRITON_TAG": _tag()}
    assert {"--model-control-mode=explicit", "--strict-readiness=true", flags.SUMMARY_LATENCIES} <= set(triton["command"])
    assert triton["volumes"][0]["target"] == "/models" and triton["volumes"][0]["read_only"] is True


def _render(overlay: str) -> list[dict]:
    out = subprocess.run([_tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def native_audio_repository(native_repository, tiny_checkpoint, tmp_path_factory) -> Path:
    """The native repository of the tiny model plus its fp16 (what the gpu overlay loads) and ``ser``."""
    from export.pipeline import export_checkpoint
    from export.repository import write_repository

    repo = tmp_path_factory.mktemp("native-audio") / "repo"
    shutil.copytree(native_repository, repo)
    fp16 = tmp_path_factory.mktemp("export-fp16")
    export_checkpoint(tiny_checkpoint, fp16, variants=("fp16",), progress=False)
    write_repository(fp16, repo, runtime="native", variants=("fp16",), audio_model=True)
    return repo


@pytest.mark.parametrize("overlay", sorted(AUDIO_OVERLAYS))
def test_the_audio_overlays_validate_and_load_ser_beside_a_window_model_it_lists(overlay, native_audio_repository):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed (make venv)")
    from client.audio_service import inner_models_from_parameters
    from export.repository import read_model_config, validate_repository

    docs = _render(overlay)
    for doc in docs:
        kubernetes_validate.validate(doc, "1.37.0", strict=True)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{IMAGE}:{_tag()}-py3"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SER_MODEL"] == AUDIO_OVERLAYS[overlay]
    assert "--load-model=$(SER_MODEL)" in container["args"] and "--load-model=ser" in container["args"]
    plain = [d for d in _render(overlay.removesuffix("-audio")) if d["kind"] == "Deployment"][0]
    assert plain["spec"]["template"]["spec"]["containers"][0]["image"] == f"{NGC}:{_tag()}-py3"  # the plain overlays keep NGC's
    configs = validate_repository(native_audio_repository)
    ser = read_model_config(native_audio_repository / "ser")
    inner = [m.name for m in inner_models_from_parameters({k: v.string_value for k, v in ser.parameters.items()})]
    assert inner == ["ser_fp16", "ser_fp32", "ser_int8"] and env["SER_MODEL"] in configs and env["SER_MODEL"] in inner


def test_the_component_and_the_docs_name_the_image_of_the_pinned_release():
    component = yaml.safe_load((DEPLOY / "k8s" / "components" / "server-side-audio" / "kustomization.yaml").read_text())
    assert component["images"] == [{"name": NGC, "newName": IMAGE, "newTag": f"{_tag()}-py3"}]
    docs = (REPO_ROOT / "docs" / "server-side-audio.md").read_text()
    assert f"docker build -f deploy/Dockerfile -t {IMAGE}:{_tag()}-py3 deploy" in docs
    assert f"-t {IMAGE}:{_tag()}-py3 deploy" in DOCKERFILE.read_text()


def test_the_batch_image_installs_the_ray_extra_with_the_pins():
    dockerfile = pytest.importorskip("dockerfile", reason="dockerfile (Docker's parser) not installed: make venv")
    commands = dockerfile.parse_file(str(DEPLOY / "Dockerfile.batch"))
    run = " ".join(" ".join(c.value) for c in commands if c.cmd.upper() == "RUN")
    assert "-c requirements/constraints.txt '.[ray]'" in run
    copied = {c.value[0] for c in commands if c.cmd.upper() == "COPY"}
    assert {"client", "deploy", "ser"} <= copied
    assert [c.value for c in commands if c.cmd.upper() == "ENTRYPOINT"] == [("ser",)]
