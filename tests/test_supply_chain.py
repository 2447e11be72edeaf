"""Supply chain: the hash-pinned lock files agree with the pins, and the installs use them.

`requirements*.txt` say which versions we chose; `requirements*.lock` (made by `make lock`) are
what `make install` and the Dockerfile actually install, with `--require-hashes`. A pin changed
without re-running `make lock` would silently not reach a fresh machine or the image: these
tests fail instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIN_FILES = ["requirements.txt", "requirements-dev.txt", "infra/requirements.txt"]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#\\]+)")


def _norm(name: str) -> str:
    """PEP 503 name: what pip compares (Flask-Caching == flask_caching)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """`name==version` lines of a requirements file (comments, -r includes and blanks skipped)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = _PIN.match(line.strip())
        if match:
            found[_norm(match.group(1))] = match.group(3)
    return found


def lock_entries(text: str) -> dict[str, tuple[str, list[str]]]:
    """Each locked package: version and its sha256 hashes (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    entries: dict[str, tuple[str, list[str]]] = {}
    for line in joined.splitlines():
        if not line or line.startswith((" ", "#")):
            continue
        match = _PIN.match(line)
        assert match, f"lock line is not an exact pin: {line[:80]!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})\b", line)
        entries[_norm(match.group(1))] = (match.group(3), hashes)
    return entries


def disagreements(pinned: dict[str, str], locked: dict[str, tuple[str, list[str]]]) -> list[str]:
    """Pins the lock does not carry at the same version, one sentence each."""
    out = []
    for name, version in sorted(pinned.items()):
        if name not in locked:
            out.append(f"{name}=={version} is pinned but not in the lock")
        elif locked[name][0] != version:
            out.append(f"{name}=={version} is pinned but the lock has {locked[name][0]}")
    return out


@pytest.fixture(scope="module")
def dev_lock() -> dict[str, tuple[str, list[str]]]:
    return lock_entries((ROOT / "requirements-dev.lock").read_text())


@pytest.fixture(scope="module")
def runtime_lock() -> dict[str, tuple[str, list[str]]]:
    return lock_entries((ROOT / "requirements.lock").read_text())


def test_every_pin_is_in_the_dev_lock_at_its_version(dev_lock):
    for name in PIN_FILES:
        assert disagreements(pins((ROOT / name).read_text()), dev_lock) == [], name


def test_every_runtime_pin_is_in_the_image_lock_at_its_version(runtime_lock):
    assert disagreements(pins((ROOT / "requirements.txt").read_text()), runtime_lock) == []


def test_the_image_runs_the_versions_the_tests_ran(runtime_lock, dev_lock):
    """The runtime lock is a subset of the dev lock: same package, same version."""
    assert len(runtime_lock) > 50
    differ = {n: (v, dev_lock.get(n, ("absent",))[0]) for n, (v, _) in runtime_lock.items()}
    assert {n: vs for n, vs in differ.items() if vs[0] != vs[1]} == {}


def test_every_locked_package_carries_hashes(dev_lock, runtime_lock):
    for lock in (dev_lock, runtime_lock):
        assert [name for name, (_, hashes) in lock.items() if not hashes] == []
    # pip itself is locked, so `make install` upgrades the venv's pip to a hashed one
    assert "pip" in dev_lock


def test_the_check_catches_a_pin_the_lock_does_not_have(dev_lock):
    """The comparison can fail: a bumped pin, a new pin, and the exact sentence for each."""
    text = (ROOT / "requirements.txt").read_text()
    bumped = re.sub(r"^pandas==\S+", "pandas==0.0.1", text, flags=re.MULTILINE)
    assert disagreements(pins(bumped), dev_lock) == [
        f"pandas==0.0.1 is pinned but the lock has {dev_lock['pandas'][0]}"
    ]
    assert disagreements(pins(text + "\nleft-pad==1.0\n"), dev_lock) == [
        "left-pad==1.0 is pinned but not in the lock"
    ]
    with pytest.raises(AssertionError, match="not an exact pin"):
        lock_entries("requests>=2\n")


def test_installs_require_hashes_from_the_locks():
    makefile = (ROOT / "Makefile").read_text()
    stamp = makefile.split("\n$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "requirements-dev.lock" in stamp.splitlines()[0]
    assert "--require-hashes --no-deps -r requirements-dev.lock" in stamp
    assert "--upgrade" not in stamp  # nothing unhashed is installed
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements.lock ./" in dockerfile
    assert "pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock" in dockerfile
    assert "COPY requirements.txt" not in dockerfile and "-r requirements.txt" not in dockerfile


def test_the_default_base_image_is_pinned_by_digest():
    dockerfile = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert match
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", match.group(1))


def test_the_audit_runs_from_make_test():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: .*\baudit\b", makefile, re.MULTILINE)
    assert "scripts/audit.sh" in makefile.split("\naudit:", 1)[1].split("\n\n", 1)[0]
