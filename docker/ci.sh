#!/usr/bin/env bash
# Proves the deployment on a real Docker engine (called by .ci/run; about 5 minutes on 2 cores):
#   1. installs docker.io (and debootstrap) when missing, and starts a private dockerd when none answers:
#      its own data root, socket and exec root under a temp dir, no bridge and no iptables rules;
#   2. builds a local base image equivalent to the Dockerfile's (Debian bookworm + python3, by debootstrap and
#      `docker import`, tagged python:3.11-slim-bookworm so FROM resolves with no pull) unless one is there;
#   3. downloads the wheelhouse on the host (pip inside a container has no network) and builds the image
#      offline (`--network none`, WHEELHOUSE=/wheels);
#   4. runs docker/compose.yaml with docker/compose.ci.yaml (host networking on 127.0.0.1, the bootstrap's quick
#      versions only, data mounted from the mirror, API keys made by docker/keys.py as the secrets) until the api
#      is healthy, then
#      checks /ready, /sentiment and /generate on 127.0.0.1 (/tag and the TGI, OpenAI and Inference API routes
#      included), the keys (none or a wrong one: 401; an inference key cannot reload, the admin key can), the
#      non-root user and the read-only root filesystem, that the trainer skips existing models, and that a new
#      version the trainer writes while the api runs is served without a restart;
#   5. crashes the api under load (SIGKILL to its process, as an OOM kill does): the restart policy brings it back
#      ready, with the same answers. (`docker kill` itself counts as a manual stop, which the restart policy
#      leaves alone.) Then `docker stop` (SIGTERM) under streaming load: every stream already under way finishes,
#      and the api exits 0;
#   6. tears everything down: the stack and its volumes, the images it made, the dockerd it started, temp files.
# Nothing here talks to anything but 127.0.0.1 and the Debian and PyPI mirrors that apt and pip use.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-.venv/bin/python}"
DATA_DIR="$(cd "${RNN_DATA_DIR:-../shared/data}" && pwd)"
BASE_IMAGE="python:3.11-slim-bookworm"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
WORK="$(mktemp -d /tmp/rnn-docker-ci.XXXXXX)"
PROJECT="rnn-ci-$$"
IMAGE="rnn-nlp-service:ci-$$"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
COMPOSE_BIN="$("$PY" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')"
STARTED_DOCKERD=0
MADE_BASE=0
MADE_WHEELHOUSE=0
DOCKER_UP=0

log() { echo "[docker-ci $(date +%H:%M:%S)] $*"; }
docker() { DOCKER_BUILDKIT=0 "$DOCKER_BIN" "$@"; }
compose() {
  RNN_IMAGE="$IMAGE" RNN_TRAIN_PRESET=quick RNN_DATA_HOST_DIR="$DATA_DIR" RNN_CI_PORT="$PORT" \
    RNN_API_KEYS_FILE="$WORK/secrets/api_keys" RNN_ADMIN_API_KEYS_FILE="$WORK/secrets/admin_api_keys" \
    RNN_METRICS_KEY_FILE="$WORK/secrets/metrics_key" \
    "$COMPOSE_BIN" -p "$PROJECT" -f docker/compose.yaml -f docker/compose.ci.yaml "$@"
}
checks() { "$PY" docker/ci_checks.py "$1" "$PORT" "$WORK/secrets" "${@:2}"; }
wait_ready() {  # until /ready answers 200 on 127.0.0.1:$PORT, up to $1 seconds
  for _ in $(seq "$1"); do
    "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
      "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && return 0
    sleep 1
  done
  return 1
}

cleanup() {
  local rc=$?
  set +e
  if [ "$DOCKER_UP" = 1 ]; then
    if [ "$rc" != 0 ]; then
      log "failed (status $rc): the stack's last logs"
      compose logs --no-color --tail 60
    fi
    log "tearing down"
    compose down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1
    docker rmi --force "$IMAGE" >/dev/null 2>&1
    [ "$MADE_BASE" = 1 ] && docker rmi --force "$BASE_IMAGE" >/dev/null 2>&1
  fi
  if [ "$STARTED_DOCKERD" = 1 ]; then
    kill "$(cat "$WORK/dockerd.pid")" 2>/dev/null
    for _ in $(seq 30); do [ -e "$WORK/dockerd.pid" ] || break; sleep 1; done
    grep " $WORK/" /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r umount -l 2>/dev/null
  fi
  [ "$MADE_WHEELHOUSE" = 1 ] && rm -rf docker/wheelhouse
  rm -rf "$WORK"
  log "done (status $rc)"
  exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. engine
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  log "installing docker.io and debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io debootstrap >/dev/null
fi
DOCKER_BIN="$(command -v /usr/bin/docker || command -v docker)"
if ! docker info >/dev/null 2>&1; then
  log "starting a private dockerd in $WORK"
  export DOCKER_HOST="unix://$WORK/docker.sock"
  dockerd --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" -H "$DOCKER_HOST" \
    --bridge=none --iptables=false --ip6tables=false >"$WORK/dockerd.log" 2>&1 &
  STARTED_DOCKERD=1
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null || { tail -20 "$WORK/dockerd.log"; exit 1; }
fi
DOCKER_UP=1
log "engine: $(docker version --format '{{.Server.Version}}'), compose: $("$COMPOSE_BIN" version --short)"

# ---------------------------------------------------------------- 2. base image
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "building $BASE_IMAGE locally: debootstrap bookworm + python3"
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$WORK/rootfs" "$DEBIAN_MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; exit 1; }
  tar -C "$WORK/rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
  MADE_BASE=1
  rm -rf "$WORK/rootfs"
fi

# ---------------------------------------------------------------- 3. wheelhouse and image
if [ ! -d docker/wheelhouse ]; then
  log "downloading the wheelhouse"
  MADE_WHEELHOUSE=1
  "$PY" docker/requirements.py >"$WORK/requirements.txt"
  "$PY" -m pip download --quiet --dest docker/wheelhouse -r "$WORK/requirements.txt" "setuptools>=68"
fi
log "building $IMAGE offline"
docker build --quiet --network none --build-arg WHEELHOUSE=/wheels -t "$IMAGE" . >/dev/null

# ---------------------------------------------------------------- 4. the stack
"$PY" docker/keys.py "$WORK/secrets" >/dev/null
log "compose up: the trainer (quick preset) first, then the api on 127.0.0.1:$PORT"
compose up --detach --no-build --pull never
API="$(compose ps --all --quiet api)"
for _ in $(seq 120); do
  status="$(docker inspect --format '{{.State.Health.Status}}' "$API")"
  [ "$status" = healthy ] && break
  [ "$(docker inspect --format '{{.State.Running}}' "$API")" = true ] || { log "api exited"; exit 1; }
  sleep 2
done
[ "$status" = healthy ] || { log "api not healthy: $status"; exit 1; }
log "api healthy; checking it on 127.0.0.1:$PORT"
checks routes
[ "$(docker inspect --format '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}' "$API")" = "10001:10001 true" ]
if docker exec "$API" touch /srv/written 2>/dev/null; then log "the api's root filesystem is writable"; exit 1; fi
log "non-root and read-only: checked"
kinds="$("$PY" -m model kinds | wc -l)"  # every kind has its quick version: each one skipped
compose run --rm --no-deps trainer 2>/dev/null | grep -c '"skipped"' | grep -qx "$kinds"
log "the trainer leaves trained models alone: checked"
restarts="$(docker inspect --format '{{.RestartCount}}' "$API")"
log "a new sentiment version trained while the api runs"
compose run --rm --no-deps trainer python -m model train sentiment --preset quick --threads 2 --new-version \
  --out /artifacts/sentiment 2>/dev/null | tail -1
checks version 2
[ "$(docker inspect --format '{{.RestartCount}}' "$API")" = "$restarts" ] || { log "the api restarted"; exit 1; }
log "swapped in live, no restart: checked"
checks answers "$WORK/answers.json"

# ---------------------------------------------------------------- 5. a crash, then a stop, under load
checks load 6 &
LOAD=$!
sleep 2
log "SIGKILL to the api's process under load"
kill -KILL "$(docker inspect --format '{{.State.Pid}}' "$API")"
wait "$LOAD"
wait_ready 120 || { log "the api did not come back"; exit 1; }
[ "$(docker inspect --format '{{.RestartCount}}' "$API")" -gt "$restarts" ] || { log "not restarted by policy"; exit 1; }
log "restarted by its policy and ready again"
checks answers "$WORK/answers.json" --compare
checks streams &
STREAMS=$!
sleep 3
log "docker stop (SIGTERM) under streaming load"
docker stop --time 40 "$API" >/dev/null
wait "$STREAMS" || { log "a stream under way was cut by the stop"; exit 1; }
[ "$(docker inspect --format '{{.State.ExitCode}}' "$API")" = 0 ] || { log "the api did not exit 0"; exit 1; }
log "the streams under way finished and the api exited 0"
log "passed"
