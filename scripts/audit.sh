#!/usr/bin/env bash
# Known vulnerabilities in every locked package (pip-audit, PyPI's vulnerability data).
#
# pip-audit asks PyPI's JSON API for each pinned release (https://pypi.org/pypi/NAME/VERSION/json,
# whose "vulnerabilities" list comes from the OSV database). --strict: a package that could not
# be audited fails the run, so an unreachable database can never pass as "no vulnerabilities".
# When that API does not answer for releases from this machine (it answers 404 here: only the
# package index is reachable), the audit says so on stderr and is not run, unless
# CAPFC_AUDIT_REQUIRED=1 (set it where the API is reachable, e.g. a release pipeline), which
# makes that a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK="${1:-requirements-dev.lock}"
BIN=.venv/bin

# One release from the lock (pip's own pin) as the probe of the per-release API.
version="$(sed -n 's/^pip==\([^ ;\\]*\).*/\1/p' "$LOCK" | head -n 1)"
url="https://pypi.org/pypi/pip/${version}/json"
status="$("$BIN/python" - "$url" <<'PY'
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=20) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError as e:
    print(f"unreachable ({e.__class__.__name__})")
PY
)"
if [ "$status" != "200" ]; then
  echo "pip-audit NOT RUN: PyPI's vulnerability data for releases ($url) answered $status from" \
    "this machine. Run 'make audit' where it is reachable (CAPFC_AUDIT_REQUIRED=1 makes this a failure)." >&2
  [ "${CAPFC_AUDIT_REQUIRED:-0}" = "1" ] && exit 1
  exit 0
fi
exec "$BIN/pip-audit" --strict --progress-spinner off --disable-pip --vulnerability-service pypi -r "$LOCK"
