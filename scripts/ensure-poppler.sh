#!/usr/bin/env bash
# The report-pack tests render each PDF page to PNG with pdftoppm (Debian's poppler-utils) and
# check the pages are not blank; install it when missing (root only).
set -euo pipefail
command -v pdftoppm >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "the report-pack tests need: apt-get install poppler-utils (run as root, or install it)" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends poppler-utils >/dev/null
command -v pdftoppm >/dev/null
