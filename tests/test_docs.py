"""The README's pictures: every image it shows is a committed file, and the diagrams were
rendered from their current Graphviz sources (scripts/render-diagrams.sh), so a broken or stale
picture fails here rather than on the repository's front page."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
STATE_MACHINE = ROOT / "forecasting" / "aws" / "statemachine.asl.json"

# ![alt](path) or ![alt](<path> "title"); and <img src="path"> for the HTML form.
MD_IMAGE = re.compile(r'!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+(?:"[^"]*"|\'[^\']*\'))?\s*\)')
HTML_IMAGE = re.compile(r'<img\b[^>]*?\bsrc\s*=\s*["\']([^"\']+)["\']', re.IGNORECASE)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
SIGNATURES = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".gif": (b"GIF87a", b"GIF89a"),
    ".svg": (b"<?xml", b"<svg"),
}


def image_refs(markdown: str) -> list[str]:
    """Image targets the Markdown shows, in order; code blocks are text, not pictures."""
    text = FENCE.sub("", markdown)
    return MD_IMAGE.findall(text) + HTML_IMAGE.findall(text)


def broken_images(markdown: str, base: Path) -> list[str]:
    """Why each local image reference would not show: missing, empty or not that image type.
    Remote images are reported too: the docs must render with no network."""
    problems = []
    for ref in image_refs(markdown):
        parts = urlsplit(ref)
        if parts.scheme or parts.netloc:
            problems.append(f"{ref}: remote image (commit the file instead)")
            continue
        path = (base / unquote(parts.path)).resolve()
        if not path.is_file():
            problems.append(f"{ref}: no such file")
            continue
        head = path.read_bytes()[:64].lstrip()
        if not head:
            problems.append(f"{ref}: empty file")
            continue
        signatures = SIGNATURES.get(path.suffix.lower())
        if signatures is None:
            problems.append(f"{ref}: not a picture type this check knows ({path.suffix})")
        elif not head.startswith(signatures):
            problems.append(f"{ref}: not a {path.suffix} file")
    return problems


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_every_readme_image_exists() -> None:
    refs = image_refs(README.read_text(encoding="utf-8"))
    assert refs, "README.md shows no image at all: the image pattern no longer matches it"
    assert broken_images(README.read_text(encoding="utf-8"), README.parent) == []


def test_readme_shows_the_aws_architecture() -> None:
    refs = image_refs(README.read_text(encoding="utf-8"))
    assert "docs/architecture-aws.png" in refs
    width, height = png_size(DOCS / "architecture-aws.png")
    # Legible at README width: not a thumbnail, not a banner many screens wide.
    assert 1000 <= width <= 2000, width
    assert 0.35 <= height / width <= 1.0, (width, height)


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("![ok](docs/architecture-aws.png)", []),
        ('![ok](<docs/architecture-aws.svg> "AWS")', []),
        ("![gone](docs/nothing-here.png)", ["docs/nothing-here.png: no such file"]),
        ('<img src="docs/gone.png" width="600">', ["docs/gone.png: no such file"]),
        (
            "![net](https://example.com/x.png)",
            ["https://example.com/x.png: remote image (commit the file instead)"],
        ),
        (
            "![src](docs/architecture-aws.dot)",
            ["docs/architecture-aws.dot: not a picture type this check knows (.dot)"],
        ),
        ("```\n![in code](docs/nothing-here.png)\n```\n", []),
    ],
)
def test_broken_images_finds_what_would_not_show(markdown: str, expected: list[str]) -> None:
    assert broken_images(markdown, ROOT) == expected


def test_broken_images_checks_the_file_is_that_picture_type(tmp_path: Path) -> None:
    (tmp_path / "fake.png").write_text("not a png")
    (tmp_path / "empty.svg").write_bytes(b"")
    problems = broken_images("![a](fake.png) ![b](empty.svg)", tmp_path)
    assert problems == ["fake.png: not a .png file", "empty.svg: empty file"]


def test_diagrams_are_rendered_from_their_current_source() -> None:
    """Edit a .dot, forget `bash scripts/render-diagrams.sh`, and the README shows the old picture."""
    sources = sorted(DOCS.glob("*.dot"))
    assert sources, "no Graphviz sources under docs/"
    recorded = {}
    for line in (DOCS / "diagrams.sha256").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        recorded[name.lstrip("*")] = digest
    for src in sources:
        name = src.relative_to(ROOT).as_posix()
        assert name in recorded, f"{name} was never rendered: run bash scripts/render-diagrams.sh"
        assert hashlib.sha256(src.read_bytes()).hexdigest() == recorded[name], (
            f"{name} changed since its pictures were rendered: run bash scripts/render-diagrams.sh"
        )
        for suffix in (".png", ".svg"):
            assert src.with_suffix(suffix).is_file(), f"{src.with_suffix(suffix).name} missing"


def state_names(states: dict) -> set[str]:
    """Every state of an Amazon States Language definition, Map item processors included."""
    names = set(states)
    for state in states.values():
        inner = state.get("ItemProcessor") or state.get("Iterator")
        if inner:
            names |= state_names(inner["States"])
        for branch in state.get("Branches", []):
            names |= state_names(branch["States"])
    return names


def test_state_machine_picture_draws_every_state() -> None:
    definition = json.loads(STATE_MACHINE.read_text())
    names = state_names(definition["States"])
    dot = (DOCS / "statemachine.dot").read_text()
    missing = sorted(n for n in names if not re.search(rf"\b{re.escape(n)}\b", dot))
    assert missing == [], f"docs/statemachine.dot does not draw {missing}"


def test_the_cloud_native_table_names_tests_that_exist() -> None:
    """Each of the eight characteristics in the README names a test by ``path::name``; a renamed
    or removed test would leave the claim without proof."""
    text = README.read_text()
    start = text.index("## Cloud-native on AWS: the eight characteristics")
    section = text[start : text.index("\n## ", start + 1)]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "::" in line]
    assert len(rows) == 8
    refs = re.findall(r"`([\w/]+\.py)::(\w+)`", section)
    assert len(refs) >= 8
    for path, name in refs:
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {name}\(", source, re.MULTILINE), f"{path}::{name} is not a test"
