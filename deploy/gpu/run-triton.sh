#!/usr/bin/env bash
# Serve the *native* model repository with the NGC Triton container on a GPU node.
#
#   deploy/gpu/run-triton.sh [start]   # docker run -d ..., then wait until every model is ready
#   deploy/gpu/run-triton.sh stop      # SIGTERM (in-flight requests finish), then remove the container
#   deploy/gpu/run-triton.sh logs      # follow the server log
#   deploy/gpu/run-triton.sh status    # readiness of the server and of each model
#   deploy/gpu/run-triton.sh print     # print the docker command and the models; run nothing
#
# Settings (environment):
#   REPOSITORY   native repository written by `ser repository --runtime native`
#                (default: <repo root>/model_repository/native); mounted read-only at /models
#   TRITON_TAG   NGC release; 24.10 ships tritonserver 2.51, the version the local runtime uses
#   NAME         container name (default: ser-triton)
#   GPUS         value of --gpus (default: all; e.g. '"device=0"')
#   SHM_SIZE     --shm-size (default: 1g; the python backend and pinned buffers use /dev/shm)
#   HTTP_PORT, GRPC_PORT, METRICS_PORT   host ports (defaults 8000, 8001, 8002)
#   READY_TIMEOUT_S                      seconds to wait for readiness (default 300)
#   BIND_ADDRESS                         host address the ports are published on (default 0.0.0.0)
set -euo pipefail

TRITON_TAG="${TRITON_TAG:-24.10}"
IMAGE="nvcr.io/nvidia/tritonserver:${TRITON_TAG}-py3"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEFAULT_REPOSITORY="model_repository/native"
REPOSITORY="${REPOSITORY:-${ROOT}/${DEFAULT_REPOSITORY}}"
NAME="${NAME:-ser-triton}"
GPUS="${GPUS:-all}"
SHM_SIZE="${SHM_SIZE:-1g}"
BIND_ADDRESS="${BIND_ADDRESS:-0.0.0.0}"
HTTP_PORT="${HTTP_PORT:-8000}"
GRPC_PORT="${GRPC_PORT:-8001}"
METRICS_PORT="${METRICS_PORT:-8002}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-300}"
# Ports inside the container: Triton's defaults.
CONTAINER_HTTP_PORT=8000
CONTAINER_GRPC_PORT=8001
CONTAINER_METRICS_PORT=8002

die() { echo "run-triton: error: $*" >&2; exit 2; }

# Model names = the repository's sub-folders holding a config.pbtxt (ser_fp32, ser_int8, ser_fp16...).
models() {
  local dir
  for dir in "${REPOSITORY}"/*/; do
    [[ -f "${dir}config.pbtxt" ]] && basename "${dir}"
  done
  return 0
}

docker_args() {
  printf '%s\n' run -d --name "${NAME}" \
    --gpus "${GPUS}" \
    --shm-size "${SHM_SIZE}" \
    --ulimit memlock=-1 --ulimit stack=67108864 \
    -p "${BIND_ADDRESS}:${HTTP_PORT}:${CONTAINER_HTTP_PORT}" \
    -p "${BIND_ADDRESS}:${GRPC_PORT}:${CONTAINER_GRPC_PORT}" \
    -p "${BIND_ADDRESS}:${METRICS_PORT}:${CONTAINER_METRICS_PORT}" \
    -v "${REPOSITORY}:/models:ro" \
    "${IMAGE}" \
    tritonserver \
    --model-repository=/models \
    --strict-readiness=true \
    --exit-on-error=true \
    --exit-timeout-secs=30 \
    --log-verbose=0 \
    --allow-metrics=true \
    --allow-gpu-metrics=true \
    --metrics-config=summary_latencies=true
}

check_repository() {
  [[ -d "${REPOSITORY}" ]] || die "${REPOSITORY}: no such repository (write it with: ser repository EXPORT_DIR --runtime native --out ${DEFAULT_REPOSITORY})"
  [[ -n "$(models)" ]] || die "${REPOSITORY}: no <model>/config.pbtxt inside"
  REPOSITORY="$(cd "${REPOSITORY}" && pwd)"
}

ready_code() {  # HTTP status of a readiness URL path, 000 when nothing answers
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:${HTTP_PORT}$1" || true
}

wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT_S)) code
  while :; do
    if [[ "$(docker inspect -f '{{.State.Running}}' "${NAME}" 2>/dev/null)" != "true" ]]; then
      docker logs --tail 40 "${NAME}" >&2 || true
      die "container ${NAME} exited while starting (log tail above)"
    fi
    code="$(ready_code /v2/health/ready)"
    [[ "${code}" == "200" ]] && break
    (( SECONDS < deadline )) || { docker logs --tail 40 "${NAME}" >&2 || true; die "not ready after ${READY_TIMEOUT_S} s (last /v2/health/ready: ${code})"; }
    sleep 1
  done
}

cmd_status() {
  echo "server ready: $(ready_code /v2/health/ready)"
  local m
  for m in $(models); do
    echo "model ${m}: $(ready_code "/v2/models/${m}/ready")"
  done
}

cmd_start() {
  check_repository
  command -v docker >/dev/null || die "docker not found (this script is for GPU nodes with the NVIDIA container toolkit)"
  if docker inspect "${NAME}" >/dev/null 2>&1; then
    die "a container named ${NAME} exists already: '$0 stop' first, or set NAME="
  fi
  local args=()
  mapfile -t args < <(docker_args)
  docker "${args[@]}" >/dev/null
  echo "started ${NAME} (${IMAGE}) serving ${REPOSITORY}; waiting for readiness..."
  wait_ready
  cmd_status
  echo "gRPC 127.0.0.1:${GRPC_PORT}  HTTP 127.0.0.1:${HTTP_PORT}  metrics http://127.0.0.1:${METRICS_PORT}/metrics"
}

cmd_stop() {
  docker stop --time 35 "${NAME}" >/dev/null 2>&1 || true
  docker rm -f "${NAME}" >/dev/null 2>&1 || true
  echo "stopped ${NAME}"
}

cmd_print() {
  check_repository
  local args=()
  mapfile -t args < <(docker_args)
  printf 'docker'
  printf ' %q' "${args[@]}"
  printf '\n'
  echo "models: $(models | tr '\n' ' ')"
  echo "ports: http=${HTTP_PORT} grpc=${GRPC_PORT} metrics=${METRICS_PORT}"
}

case "${1:-start}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  logs) exec docker logs -f "${NAME}" ;;
  status) cmd_status ;;
  print) cmd_print ;;
  -h|--help|help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (start, stop, logs, status, print)" ;;
esac
