#!/usr/bin/env bash
# The web-tier tests start their own redis-server (Debian's) on a free loopback port; install it
# when missing (root only). Nothing is started here and no system service is relied on.
set -euo pipefail
command -v redis-server >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "the web-tier tests need: apt-get install redis-server (run as root, or install it)" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# Debian's package may start its own service (when an init system runs); the tests never use it.
command -v redis-server >/dev/null
