#!/usr/bin/env bash
# The container tests need a real Docker engine and a base image. On a fresh Debian 12 machine
# (root) this installs Debian's docker.io and debootstrap, starts a private dockerd, and builds
# the local base image `capfc-base:bookworm` (no registry is reachable here). Idempotent: when
# the engine answers and the base image of this recipe exists, it returns in well under a second.
#
#   CAPFC_DOCKER_HOST  socket the engine listens on (default unix:///run/capfc-docker/docker.sock)
#   CAPFC_DOCKER_ROOT  engine data root (default /var/lib/capfc-docker: layer cache survives)
#
# The base image trusts the host's extra CA certificates (the package index is reached through
# TLS interception here): it is for tests only, never to publish. Production builds pass a real
# python base by digest as BASE_IMAGE.
set -euo pipefail

HOST="${CAPFC_DOCKER_HOST:-unix:///run/capfc-docker/docker.sock}"
SOCK="${HOST#unix://}"
DATA_ROOT="${CAPFC_DOCKER_ROOT:-/var/lib/capfc-docker}"
EXEC_ROOT="$(dirname "$SOCK")/exec"
LOG="$(dirname "$SOCK")/dockerd.log"
BASE="capfc-base:bookworm"
# Bump when the base recipe below changes: an older base is then rebuilt.
RECIPE=1

docker_() { docker -H "$HOST" "$@"; }

# Quick exit when everything is there; otherwise one caller at a time (make test, CI and the
# test fixture may all call this).
if docker_ image inspect --format '{{ index .Config.Labels "capfc.base.recipe" }}' "$BASE" 2>/dev/null \
  | grep -qx "$RECIPE"; then
  exit 0
fi
exec 9>"/tmp/capfc-ensure-docker.lock"
flock 9

# 1. Packages ---------------------------------------------------------------------------------
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "container tests need: apt-get install ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "ensure-docker: installing ${need[*]}" >&2
  apt-get update -qq
  # docker.io's service is not started by apt here (no systemd); we start our own dockerd below.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need[@]}" pigz >/dev/null
fi

# 2. Engine -----------------------------------------------------------------------------------
if ! docker_ version >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "no Docker engine answers on $HOST and only root can start one" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$SOCK")" "$DATA_ROOT" "$EXEC_ROOT"
  echo "ensure-docker: starting dockerd on $HOST (log: $LOG)" >&2
  # setsid + no tty: the engine survives the shell (and the make/pytest run) that started it.
  # No bridge/iptables: this machine has no netfilter for it; containers use --network host.
  setsid /usr/sbin/dockerd \
    --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" --pidfile "$(dirname "$SOCK")/dockerd.pid" \
    -H "$HOST" --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
    </dev/null >>"$LOG" 2>&1 &
  for _ in $(seq 1 120); do
    docker_ version >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! docker_ version >/dev/null 2>&1; then
    echo "dockerd did not answer on $HOST within 60 s; last log lines:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
fi

# 3. Base image -------------------------------------------------------------------------------
have="$(docker_ image inspect --format '{{ index .Config.Labels "capfc.base.recipe" }}' "$BASE" 2>/dev/null || true)"
[ "$have" = "$RECIPE" ] && exit 0

# The Debian mirror the host itself uses (deb822 or one-line sources), else deb.debian.org.
mirror="$(
  { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
    grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}'
  } | grep -E '/debian/?$' | head -n 1 || true
)"
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs="$(mktemp -d /var/tmp/capfc-rootfs.XXXXXX)"
# debootstrap mounts /proc (and /sys) inside the target; unmount before removing it on failure.
cleanup() {
  local m
  for m in proc sys; do
    if mountpoint -q "$rootfs/$m"; then umount -R "$rootfs/$m" || true; fi
  done
  rm -rf "$rootfs"
}
trap cleanup EXIT
echo "ensure-docker: building $BASE with debootstrap from $mirror" >&2
start=$(date +%s)
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -n 30 "$rootfs.log" >&2
  exit 1
}
rm -f "$rootfs.log"
# bookworm has no `python` and refuses pip into the system Python: a venv on PATH instead.
chroot "$rootfs" python3 -m venv /opt/venv
# The host's extra CAs (TLS interception to the package index): test-only base, never published.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
fi
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
  "$rootfs"/usr/share/man/*
tar -C "$rootfs" -c . | docker_ import \
  --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "LABEL capfc.base.recipe=$RECIPE" \
  --change 'CMD ["python3"]' \
  - "$BASE" >/dev/null
echo "ensure-docker: $BASE built in $(($(date +%s) - start)) s" >&2
