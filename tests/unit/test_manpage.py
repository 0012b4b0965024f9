"""vip-sidecar(8) is generated from the argparse definition; the committed page (the
one the wheel installs) must be exactly the generator's output, and man must read it."""

import argparse
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

import vip_sidecar
from vip_sidecar import manpage
from vip_sidecar.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / manpage.MAN_PATH


def test_committed_page_is_the_generated_one():
    assert PAGE.read_text() == manpage.render(), (
        f"{manpage.MAN_PATH} is stale: run `python -m vip_sidecar.manpage > {manpage.MAN_PATH}`"
    )


def test_every_option_of_every_command_is_in_the_page():
    text = manpage.render().replace("\\-", "-")
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, cmd in sub.choices.items():
        assert f"\\fB{name}\\fR" in text
        for action in cmd._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                assert f"\\fB{flag}\\fR" in text, (name, flag)


def test_roff_escaping():
    assert manpage.roff(".start") == "\\&.start"
    assert manpage.roff("a\\b-c") == "a\\eb\\-c"


@pytest.mark.skipif(shutil.which("man") is None, reason="needs man-db")
def test_man_reads_it_without_warnings():
    res = subprocess.run(
        ["man", "--warnings", "-l", str(PAGE)],
        capture_output=True,
        text=True,
        env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        timeout=60,
    )
    assert res.returncode == 0 and res.stderr == "", res.stderr
    out = res.stdout
    assert re.search(r"^VIP-SIDECAR\(8\)", out, re.M)
    assert "--from-interfaces INTERFACES_FILE" in out
    assert f"vip-sidecar {vip_sidecar.__version__}" in out


def test_the_version_is_written_once():
    """pyproject reads vip_sidecar.__version__; the chart's appVersion must follow it."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    dynamic = pyproject["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "vip_sidecar.__version__"}
    chart = yaml.safe_load((REPO / "helm" / "vip-sidecar" / "Chart.yaml").read_text())
    assert chart["appVersion"] == vip_sidecar.__version__
    out = subprocess.run(
        [shutil.which("python3") or "python3", "-m", "vip_sidecar", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    ).stdout
    assert out.strip() == f"vip-sidecar {vip_sidecar.__version__}"
