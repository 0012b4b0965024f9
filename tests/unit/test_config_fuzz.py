"""Config fuzzing: generated YAML/TOML/JSON config files (wrong types, unicode, huge
numbers, deep nesting, duplicate vhids, YAML aliases), VIP_SIDECAR_* environment values
and argv go through the CLI's own steps before `run` or `check` starts anything (argv
parsed by `cli.build_parser`, `cli.config_request`, then `launch.configure`: the one config
path, providers built; errors printed by `cli.config_error`). The loader either accepts
or exits 2 with one line that names a field; never a traceback, never a hang (a
per-example deadline). A few subprocess runs check the same from the outside. Bounded:
about 20 s in all."""

import io
import json
import os
import re
import subprocess
import sys
import time
from contextlib import redirect_stderr
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vip_sidecar import cli, launch
from vip_sidecar.config import Config

REPO = Path(__file__).resolve().parents[2]
FIELDS = [
    "interface", "srcip", "vhid", "pass", "passfile", "addr", "name", "advbase", "advskew",
    "deadratio", "preempt", "neutral", "mcast", "nomcast", "peers", "upscript", "downscript",
    "xparam", "script_timeout", "ignoreifstate", "disable_garp", "replay_protection",
    "real_mac", "providers", "shutdown", "daemonize", "facility", "debug", "log_format",
    "http", "status_socket", "shutdown_timeout", "provider_hold_s", "provider_hold_max_s",
    "demote_step", "syslog_socket", "vips",
]  # fmt: skip
GOOD = {
    "interface": "eth0",
    "srcip": "10.0.0.2",
    "vhid": 7,
    "pass": "secret",
    "addr": "10.0.0.100",
}

HUGE = st.sampled_from([10**30, -(10**30), 2**63, 1e308, float("inf"), float("nan"), 10**4000])
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30
)  # any unicode, no lone surrogates (not encodable in a file)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    HUGE,
    st.sampled_from(["0x10", "010", "-1", "256", "1e9", "10.0.0.1", "224.0.0.18", "eth0", ""]),
)


def nested(depth: int):
    """Deep nesting: a value wrapped `depth` times in lists or mappings."""
    return st.builds(
        lambda v, kinds: _wrap(v, kinds), SCALAR, st.lists(st.booleans(), min_size=depth,
                                                             max_size=depth)
    )


def _wrap(v, kinds):
    for as_list in kinds:
        v = [v] if as_list else {"k": v}
    return v


VALUE = st.one_of(
    SCALAR,
    st.lists(SCALAR, max_size=4),
    st.dictionaries(TEXT, SCALAR, max_size=3),
    st.integers(1, 8).flatmap(nested),
    st.integers(30, 60).flatmap(nested),
)
FIELD = st.one_of(st.sampled_from(FIELDS), TEXT)
MAPPING = st.dictionaries(FIELD, VALUE, max_size=6)


@st.composite
def config_doc(draw):
    """A mostly sensible base with some fields broken, or pure noise."""
    doc = dict(GOOD) if draw(st.booleans()) else {}
    doc.update(draw(MAPPING))
    if draw(st.booleans()):
        vips = draw(st.lists(st.one_of(MAPPING, VALUE), max_size=3))
        if draw(st.booleans()):
            # duplicate vhids on one interface
            vips = [*vips, {"vhid": 7, "addr": "10.0.0.101"}, {"vhid": 7, "addr": "10.0.0.102"}]
        doc["vips"] = vips
    return doc


def dump(doc, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(doc, allow_nan=True)
    if fmt == "yaml":
        return yaml.safe_dump(doc, allow_unicode=True)
    return to_toml(doc)


def to_toml(doc) -> str:
    """Enough TOML for the fuzz: scalars and arrays as JSON-ish literals, tables inline."""

    def lit(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if v is None:
            return '""'
        if isinstance(v, float):
            return "nan" if v != v else ("inf" if v > 0 else "-inf") if v in (
                float("inf"), float("-inf")) else repr(v)
        if isinstance(v, int):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(lit(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(str(k))} = {lit(x)}" for k, x in v.items()) + "}"
        return json.dumps(str(v))

    return "\n".join(f"{json.dumps(str(k))} = {lit(v)}" for k, v in doc.items()) + "\n"


def outcome(argv: list[str], environ: dict[str, str]) -> tuple[int, str]:
    """(0, "") if the config is accepted, else (exit status, stderr)."""
    err = io.StringIO()
    with redirect_stderr(err):
        try:
            ns = cli.build_parser().parse_args(cli.normalise_argv(argv))
            got = launch.configure(cli.config_request(ns), environ)
        except SystemExit as exc:  # argparse's own one-line exit
            return int(exc.code or 0), err.getvalue()
        except ValueError as exc:  # ConfigError included: main prints it the same way
            return cli.config_error(exc), err.getvalue()
    assert isinstance(got[0], Config)
    return 0, err.getvalue()


def assert_accepted_or_one_line(code: int, err: str) -> None:
    if code == 0:
        return
    assert code == 2, err
    lines = err.rstrip("\n").split("\n")
    assert len(lines) == 1, f"more than one line: {err!r}"
    # config errors, or argparse's (one line too: "vip-sidecar run: error: argument -v...")
    m = re.match(r"vip-sidecar(?: [a-z]+)?: (?:config )?error: (.*)", lines[0])
    assert m, lines[0]
    assert "Traceback" not in err
    # "<field>: <what is wrong>": the field is named before the first colon
    field = m.group(1).split(":", 1)[0]
    assert field.strip(), lines[0]
    assert len(lines[0]) < 2000, "an error line must stay readable"


FUZZ = settings(
    max_examples=100,
    deadline=2000,  # a hang (say, printing a huge YAML alias tree) fails the example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large],
    database=None,
)


@FUZZ
@given(doc=config_doc(), fmt=st.sampled_from(["yaml", "toml", "json"]))
def test_generated_config_files(tmp_path, doc, fmt):
    path = tmp_path / f"c.{fmt}"
    try:
        path.write_text(dump(doc, fmt))
    except (ValueError, yaml.YAMLError):
        pytest.skip("not representable")  # pragma: no cover - the strategies avoid it
    assert_accepted_or_one_line(*outcome(["run", "--config", str(path)], {}))


@FUZZ
@given(text=st.text(max_size=300), fmt=st.sampled_from(["yaml", "toml", "json"]))
def test_garbage_config_files(tmp_path, text, fmt):
    path = tmp_path / f"g.{fmt}"
    path.write_text(text)
    assert_accepted_or_one_line(*outcome(["run", "--config", str(path)], {}))


ENV_VALUE = st.one_of(
    TEXT,
    st.sampled_from(["0x7", "-1", "1" * 5000, "yes", "10.0.0.1,10.0.0.2", "alias script"]),
)


@FUZZ
@given(env=st.dictionaries(st.sampled_from([f.upper() for f in FIELDS] + ["BOGUS", "CONFIG"]),
                           ENV_VALUE, max_size=5))
def test_environment_values(env):
    environ = {f"VIP_SIDECAR_{k}": v.replace("\x00", "") for k, v in env.items()}
    argv = ["run", "-i", "eth0", "-s", "10.0.0.2", "-v", "7", "-p", "pw", "-a", "10.0.0.100"]
    assert_accepted_or_one_line(*outcome(argv, environ))


FLAGS = [
    "-i", "-s", "-v", "-p", "-o", "-a", "-b", "-k", "-r", "-m", "-f", "-x", "-u", "-d",
    "--peer", "--provider", "--name", "--log-format", "--http", "--status-socket",
    "--shutdown-timeout", "--script-timeout", "--from-rc-conf", "--config", "-P", "-n", "-z",
    "-M", "-S", "--real-mac", "--bogus",
]  # fmt: skip
ARG = st.one_of(st.sampled_from(FLAGS), TEXT.filter(lambda s: "\x00" not in s), HUGE.map(str))


@FUZZ
@given(argv=st.lists(ARG, max_size=12), sub=st.sampled_from(["run", "check", None]))
def test_argv(argv, sub):
    args = ([sub] if sub else []) + argv
    if not args or args[0] in ("-h", "--help", "--version", "version", "status", "ctl"):
        return
    assert_accepted_or_one_line(*outcome(args, {}))


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    # nine levels of aliases inside one field: a billion-leaf value. Before the size guard
    # the vhid parser's error message printed it, and the loader hung (> 30 s).
    items = ['&a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("vhid: [" + ", ".join(items) + "]\n")
    started = time.monotonic()
    code, err = outcome(["run", "--config", str(path)], {})
    assert time.monotonic() - started < 5
    assert_accepted_or_one_line(code, err)
    assert code == 2
    assert "config: " in err and "more than 10000 values" in err


@pytest.mark.parametrize(
    ("content", "suffix", "field"),
    [
        ("vhid: [1, 2\n", ".yaml", "config"),  # YAML syntax error: one line, not PyYAML's five
        ('vhid = "x"\nvhid = 2\n', ".toml", "config"),  # TOML duplicate key
        ('{"vhid": 1e999999}', ".json", None),
        ('{"vips": [{"vhid": 7}, {"vhid": 7}]}', ".json", None),
    ],
)
def test_subprocess_runs_exit_2_with_one_line(tmp_path, content, suffix, field):
    path = tmp_path / f"c{suffix}"
    path.write_text(content)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIP_SIDECAR_")}
    res = subprocess.run(
        [sys.executable, "-m", "vip_sidecar", "check", "-i", "lo", "-s", "127.0.0.1", "-p", "x",
         "-a", "127.0.0.9", "--config", str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    assert_accepted_or_one_line(res.returncode, res.stderr)
    if field:
        assert res.stderr.startswith(f"vip-sidecar: config error: {field}:"), res.stderr


def test_subprocess_bad_argv_is_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIP_SIDECAR_")}
    res = subprocess.run(
        [sys.executable, "-m", "vip_sidecar", "run", "-v"],
        cwd=REPO, capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    assert res.returncode == 2
    assert_accepted_or_one_line(res.returncode, res.stderr)
    assert "-v/--vhid" in res.stderr



@pytest.mark.parametrize("doc", [
    # found by the fuzzer: a key that is only a colon ended the field's name in the error line
    {"interface": "eth0", ":": 1},
    # found by the fuzzer: an integer past 1e308 made float() raise OverflowError
    {"interface": "eth0", "script_timeout": 10**400},
])
def test_fuzzer_findings_are_one_line_errors(tmp_path, doc):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    code, err = outcome(["run", "--config", str(path)], {})
    assert code == 2
    assert_accepted_or_one_line(code, err)
