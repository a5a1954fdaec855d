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
#   TRITON_TAG   NGC release (default: deploy/triton.env, the one place it is named; 26.07 = tritonserver 2.71.0)
#   NAME         container name (default: ser-triton)
#   GPUS         value of --gpus (default: all; e.g. '"device=0"')
#   SHM_SIZE     --shm-size (default: 1g; the python backend and pinned buffers use /dev/shm)
#   HTTP_PORT, GRPC_PORT, METRICS_PORT   host ports (defaults 8000, 8001, 8002)
#   READY_TIMEOUT_S                      seconds to wait for readiness (default 300)
#   BIND_ADDRESS                         host address the ports are published on (default 0.0.0.0)
#   MODELS       models to load at start, space-separated (default: every model in REPOSITORY)
#   EXIT_TIMEOUT_S  seconds in-flight requests get on stop (default 30, deploy/flags.py)
#   ADMIN_KEY_FILE  key guarding load/unload, repository index, shared memory, trace, logging
#                (default: ~/.config/ser-triton/admin-key, created with a random key, mode 600)
#   GRPC_TLS_DIR    if set: gRPC over TLS with DIR/tls.crt + DIR/tls.key (+ DIR/ca.crt: mutual)
#   ORT_THREADS     width of the one ONNX Runtime thread pool all models share
#                (default: the CPUs the container may use, `nproc` inside it)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TRITON_ENV="${ROOT}/deploy/triton.env"
_tag_override="${TRITON_TAG:-}"
# shellcheck source=../triton.env
source "${TRITON_ENV}"
TRITON_TAG="${_tag_override:-${TRITON_TAG}}"
: "${TRITON_HTTP_MAX_INPUT_SIZE:?deploy/triton.env must set TRITON_HTTP_MAX_INPUT_SIZE}"
IMAGE="nvcr.io/nvidia/tritonserver:${TRITON_TAG}-py3"
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
EXIT_TIMEOUT_S="${EXIT_TIMEOUT_S:-30}"
ADMIN_KEY_FILE="${ADMIN_KEY_FILE:-${HOME}/.config/ser-triton/admin-key}"
GRPC_TLS_DIR="${GRPC_TLS_DIR:-}"
ORT_THREADS="${ORT_THREADS:-}"
MODELS="${MODELS:-}"
# Guarded APIs and the key's header: as deploy/flags.py (RESTRICTED_APIS, ADMIN_HEADER).
RESTRICTED_APIS="model-repository,shared-memory,trace,logging"
ADMIN_HEADER="admin-key"
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

# Production flags (why each: deploy/flags.py and deploy/gpu/README.md). The admin key is not on
# the docker command line: `-e TRITON_ADMIN_KEY` passes it from this script's environment, and
# the container's shell expands it into the restricted-API flags.
server_args() {
  local m
  printf '%s\n' \
    --model-repository=/models \
    --model-control-mode=explicit \
    --strict-readiness=true \
    --exit-on-error=true \
    --disable-auto-complete-config \
    "--exit-timeout-secs=${EXIT_TIMEOUT_S}" \
    "--http-max-input-size=${TRITON_HTTP_MAX_INPUT_SIZE}" \
    --log-verbose=0 \
    --allow-metrics=true \
    --allow-gpu-metrics=true \
    --allow-cpu-metrics=true \
    --metrics-config=summary_latencies=true \
    --backend-config=onnxruntime,enable-global-threadpool=1 \
    --backend-config=onnxruntime,inter_op_thread_count=1
  for m in ${MODELS:-$(models)}; do printf '%s\n' "--load-model=${m}"; done
  if [[ -n "${GRPC_TLS_DIR}" ]]; then
    printf '%s\n' --grpc-use-ssl=true --grpc-server-cert=/tls/tls.crt --grpc-server-key=/tls/tls.key
    [[ -f "${GRPC_TLS_DIR}/ca.crt" ]] && printf '%s\n' --grpc-use-ssl-mutual=true --grpc-root-cert=/tls/ca.crt
  fi
  return 0
}

docker_args() {
  printf '%s\n' run -d --name "${NAME}" \
    --restart unless-stopped \
    --gpus "${GPUS}" \
    --shm-size "${SHM_SIZE}" \
    --ulimit memlock=-1 --ulimit stack=67108864 \
    --stop-timeout "$((EXIT_TIMEOUT_S + 5))" \
    -e TRITON_ADMIN_KEY \
    -e "ORT_THREADS=${ORT_THREADS}" \
    -p "${BIND_ADDRESS}:${HTTP_PORT}:${CONTAINER_HTTP_PORT}" \
    -p "${BIND_ADDRESS}:${GRPC_PORT}:${CONTAINER_GRPC_PORT}" \
    -p "${BIND_ADDRESS}:${METRICS_PORT}:${CONTAINER_METRICS_PORT}" \
    -v "${REPOSITORY}:/models:ro"
  [[ -n "${GRPC_TLS_DIR}" ]] && printf '%s\n' -v "${GRPC_TLS_DIR}:/tls:ro"
  printf '%s\n' "${IMAGE}" \
    sh -c "exec tritonserver \"\$@\" --http-restricted-api=${RESTRICTED_APIS}:${ADMIN_HEADER}=\"\${TRITON_ADMIN_KEY}\" --grpc-restricted-protocol=${RESTRICTED_APIS}:${ADMIN_HEADER}=\"\${TRITON_ADMIN_KEY}\" --backend-config=onnxruntime,intra_op_thread_count=\"\${ORT_THREADS:-\$(nproc)}\"" \
    tritonserver
  server_args
}

admin_key() {  # the key from ADMIN_KEY_FILE, created (random, mode 600) on first use
  if [[ ! -s "${ADMIN_KEY_FILE}" ]]; then
    mkdir -p "$(dirname "${ADMIN_KEY_FILE}")"
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "${ADMIN_KEY_FILE}")
    echo "created admin key ${ADMIN_KEY_FILE}" >&2
  fi
  tr -d ' \n\t' < "${ADMIN_KEY_FILE}"
}

check_repository() {
  [[ -d "${REPOSITORY}" ]] || die "${REPOSITORY}: no such repository (write it with: ser repository EXPORT_DIR --runtime native --out ${DEFAULT_REPOSITORY})"
  [[ -n "$(models)" ]] || die "${REPOSITORY}: no <model>/config.pbtxt inside"
  REPOSITORY="$(cd "${REPOSITORY}" && pwd)"
  local m
  for m in ${MODELS}; do
    [[ -f "${REPOSITORY}/${m}/config.pbtxt" ]] || die "MODELS: ${m} is not in ${REPOSITORY}"
  done
  if [[ -n "${GRPC_TLS_DIR}" ]]; then
    [[ -f "${GRPC_TLS_DIR}/tls.crt" && -f "${GRPC_TLS_DIR}/tls.key" ]] || die "GRPC_TLS_DIR=${GRPC_TLS_DIR}: needs tls.crt and tls.key"
    GRPC_TLS_DIR="$(cd "${GRPC_TLS_DIR}" && pwd)"
  fi
}

# The int8 class of this host's CPU, as export/cpu_class.py tells it (amx, vnni, avx2, other).
host_cpu_class() {
  local flags
  flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
  if [[ "${flags}" == *" amx_int8 "* ]]; then echo amx
  elif [[ "${flags}" == *" avx512_vnni "* || "${flags}" == *" avx_vnni "* ]]; then echo vnni
  elif [[ "${flags}" == *" avx2 "* ]]; then echo avx2
  else echo other; fi
}

# Triton's ONNX Runtime backend does not read ser.verified_cpu_classes: say here, as the portable model
# does when it loads, which int8 models were never checked against fp32 on this CPU class.
warn_unverified() {
  local host m classes
  host="$(host_cpu_class)"
  for m in ${MODELS:-$(models)}; do
    classes="$( { grep -A2 '"ser.verified_cpu_classes"' "${REPOSITORY}/${m}/config.pbtxt" || true; } | sed -n 's/.*string_value: "\(.*\)".*/\1/p')"
    [[ -z "${classes}" || ",${classes}," == *",${host},"* ]] && continue
    echo "run-triton: warning: model '${m}': int8 parity with fp32 was verified on CPU class(es) ${classes}, not on this host's class '${host}'; answers may differ (re-check with: ser repository --verify-cpu-class ${host})" >&2
  done
  return 0
}

ready_code() {  # HTTP status of a readiness URL path, 000 when nothing answers
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:${HTTP_PORT}$1" || true
}

wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT_S)) code
  while :; do
    if [[ "$(docker inspect -f '{{.State.Running}} {{.RestartCount}}' "${NAME}" 2>/dev/null)" != "true 0" ]]; then
      docker logs --tail 40 "${NAME}" >&2 || true
      docker update --restart no "${NAME}" >/dev/null 2>&1 || true   # no crash loop of a server that cannot start
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
  warn_unverified
  local args=()
  mapfile -t args < <(docker_args)
  TRITON_ADMIN_KEY="$(admin_key)" docker "${args[@]}" >/dev/null
  echo "started ${NAME} (${IMAGE}) serving ${REPOSITORY}; waiting for readiness..."
  wait_ready
  cmd_status
  echo "gRPC 127.0.0.1:${GRPC_PORT}  HTTP 127.0.0.1:${HTTP_PORT}  metrics http://127.0.0.1:${METRICS_PORT}/metrics"
}

cmd_stop() {
  docker stop --time "$((EXIT_TIMEOUT_S + 5))" "${NAME}" >/dev/null 2>&1 || true
  docker rm -f "${NAME}" >/dev/null 2>&1 || true
  echo "stopped ${NAME}"
}

cmd_print() {
  check_repository
  warn_unverified
  local args=()
  mapfile -t args < <(docker_args)
  printf 'docker'
  printf ' %q' "${args[@]}"
  printf '\n'
  echo "models: $(models | tr '\n' ' ')"
  echo "ports: http=${HTTP_PORT} grpc=${GRPC_PORT} metrics=${METRICS_PORT}"
  echo "admin key: ${ADMIN_KEY_FILE} (header ${ADMIN_HEADER}; gRPC triton-grpc-protocol-${ADMIN_HEADER})"
}

case "${1:-start}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  logs) exec docker logs -f "${NAME}" ;;
  status) cmd_status ;;
  print) cmd_print ;;
  -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (start, stop, logs, status, print)" ;;
esac
