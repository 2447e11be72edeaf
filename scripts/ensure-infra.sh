#!/usr/bin/env bash
# The infra tests need Node.js (jsii runs aws-cdk-lib in node) and the pinned CDK CLI in
# infra/node_modules (npm ci from infra/package-lock.json). Installs Debian's nodejs/npm when
# missing (root only). Idempotent: returns at once when the lock's tools are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "the infra tests need Node.js: apt-get install nodejs npm (run as root, or install them)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
stamp=infra/node_modules/.capfc-lock
if [ -x infra/node_modules/.bin/cdk ] && [ -f "$stamp" ] && cmp -s infra/package-lock.json "$stamp"; then
  exit 0
fi
npm ci --prefix infra --no-audit --no-fund --loglevel=error
cp infra/package-lock.json "$stamp"
