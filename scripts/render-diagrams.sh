#!/usr/bin/env bash
# Render every docs/*.dot (Graphviz) to PNG and SVG next to it, and record each source's
# sha256 in docs/diagrams.sha256: the pictures are committed so the README shows them without
# tools, and tests/test_docs.py fails when a .dot changed but was not rendered again.
# Installs Debian's graphviz when `dot` is missing (root only), like ensure-browser.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dot >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "rendering diagrams needs Graphviz: apt-get install graphviz (run as root, or install it)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends graphviz >/dev/null
fi
shopt -s nullglob
sources=(docs/*.dot)
[ ${#sources[@]} -gt 0 ] || { echo "no docs/*.dot to render" >&2; exit 1; }
for src in "${sources[@]}"; do
  base="${src%.dot}"
  # Write to temporary names and rename, so a failed render never leaves half a picture.
  dot -Tpng -Gdpi=96 "$src" -o "$base.png.tmp"
  dot -Tsvg "$src" -o "$base.svg.tmp"
  mv "$base.png.tmp" "$base.png"
  mv "$base.svg.tmp" "$base.svg"
  echo "rendered $base.png, $base.svg"
done
sha256sum "${sources[@]}" > docs/diagrams.sha256.tmp
mv docs/diagrams.sha256.tmp docs/diagrams.sha256
