"""The status/control socket's ACL: explicit mode, safe directory, peer credentials."""

import asyncio
import os
import shutil
import socket
import stat
import tempfile
from types import SimpleNamespace

import pytest

from vip_sidecar import launch, unixsock
from vip_sidecar.config import ConfigError, build_config
from vip_sidecar.http import start_server
from vip_sidecar.unixsock import Peer, SocketPathError

ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
BASE = {"interface": "eth0", "srcip": "10.0.0.2", "vhid": "7", "pass": "pw", "addr": "10.0.0.9"}


@pytest.fixture
def loose_umask():
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.fixture
def private_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    return d


def test_socket_mode_is_explicit_whatever_the_umask(private_dir, loose_umask):
    bound = unixsock.bind(str(private_dir / "s.sock"))
    try:
        st = os.stat(bound.path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    finally:
        bound.sock.close()
        bound.remove()
    assert not os.path.exists(bound.path)


@ROOT
def test_socket_group_mode(private_dir, loose_umask):
    bound = unixsock.bind(str(private_dir / "s.sock"), group=65534)
    try:
        st = os.stat(bound.path)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 65534
    finally:
        bound.sock.close()
        bound.remove()


def test_group_by_name_or_gid():
    assert unixsock.parse_group("0") == 0
    assert unixsock.parse_group("root") == 0
    with pytest.raises(ConfigError, match="status_socket_group: must be a group name"):
        build_config(overrides={**BASE, "status_socket_group": "no-such-group-xyz"})


def test_directory_writable_by_others_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(SocketPathError, match=r"writable by others \(mode 0777\)"):
        unixsock.bind(str(shared / "s.sock"))
    shared.chmod(0o1777)  # sticky or not: others could still plant files
    with pytest.raises(SocketPathError, match="writable by others"):
        unixsock.check_directory(str(shared / "s.sock"))


def test_missing_directory_is_an_error_unless_its_parent_is_shared(tmp_path):
    tmp_path.chmod(0o755)
    with pytest.raises(SocketPathError, match=f"directory {tmp_path}/nope does not exist"):
        unixsock.check_directory(str(tmp_path / "nope" / "s.sock"))
    assert not (tmp_path / "nope").exists()
    # a Kubernetes emptyDir is 0777: a private subdirectory of it is made
    shared = tmp_path / "emptydir"
    shared.mkdir()
    shared.chmod(0o777)
    unixsock.check_directory(str(shared / "ctl" / "s.sock"))
    assert stat.S_IMODE((shared / "ctl").stat().st_mode) == 0o700


def test_stale_socket_replaced_live_one_and_other_files_refused(private_dir):
    path = str(private_dir / "s.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # what a SIGKILLed daemon leaves behind
    bound = unixsock.bind(path)
    bound.sock.listen()
    with pytest.raises(SocketPathError, match="in use by another running process"):
        unixsock.bind(path)
    bound.sock.close()
    bound.remove()
    (private_dir / "s.sock").write_text("x")
    with pytest.raises(SocketPathError, match="exists and is not a socket"):
        unixsock.bind(path)


def test_remove_leaves_a_successors_socket_alone(private_dir):
    first = unixsock.bind(str(private_dir / "s.sock"))
    first.sock.close()
    second = unixsock.bind(first.path)  # the first one's file was replaced
    first.remove()
    assert os.path.exists(second.path)
    second.sock.close()
    second.remove()


def test_status_socket_in_missing_directory_is_one_config_error(tmp_path):
    tmp_path.chmod(0o755)
    cfg = build_config(overrides={**BASE, "status_socket": str(tmp_path / "a" / "s.sock")})
    with pytest.raises(ConfigError) as exc:
        launch.bind_unix_sockets(cfg)
    assert str(exc.value) == f"status_socket: directory {tmp_path}/a does not exist"


def test_who_may_control():
    me = os.geteuid()
    assert unixsock.may_control(Peer(1, 0, 0), None, euid=1000)
    assert unixsock.may_control(Peer(1, 1000, 1000), None, euid=1000)
    assert not unixsock.may_control(Peer(1, 2000, 2000), None, euid=1000)
    assert unixsock.may_control(Peer(1, 2000, 3000), 3000, euid=1000)
    assert not unixsock.may_control(Peer(1, 2000, 2000), 3000, euid=1000)
    assert not unixsock.may_control(None, None, euid=me)


CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(f"{sys.argv[2]} {sys.argv[3]} HTTP/1.0\\r\\n\\r\\n".encode())
print(s.recv(4096).decode().split()[1])
"""


class _StubRuntime(SimpleNamespace):
    def status(self):
        return {"vips": []}


@ROOT
@pytest.mark.skipif(shutil.which("python3", path="/usr/bin") is None, reason="needs /usr/bin")
async def test_control_needs_the_right_peer_even_through_a_loosened_mode():
    d = tempfile.mkdtemp(prefix="vs-acl-", dir="/tmp")  # pytest's tmp_path is root-only
    os.chmod(d, 0o755)
    bound = unixsock.bind(f"{d}/s.sock")
    runtime = _StubRuntime(config=SimpleNamespace(status_socket_group=None), instances=[])
    server = await start_server(runtime, [bound.sock])
    os.chmod(bound.path, 0o666)  # someone loosened the file mode by hand

    async def as_user(uid, method, path):
        proc = await asyncio.create_subprocess_exec(
            "/usr/bin/python3", "-I", "-c", CLIENT, bound.path, method, path,
            user=uid, group=uid, extra_groups=[], stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        return out.decode().strip()

    try:
        assert await as_user(65534, "GET", "/status") == "200"  # reading is the mode's call
        assert await as_user(65534, "POST", "/v1/vips/all/maintenance/on") == "403"
        assert await as_user(0, "POST", "/v1/vips/all/maintenance/on") == "404"  # no VIPs
    finally:
        await server.cleanup()
        shutil.rmtree(d)


def test_relative_path_is_made_absolute(private_dir, monkeypatch):
    monkeypatch.chdir(private_dir)
    bound = unixsock.bind("s.sock")
    monkeypatch.chdir("/")  # what -B (daemonize) does
    bound.sock.close()
    bound.remove()
    assert bound.path == str(private_dir / "s.sock") and not (private_dir / "s.sock").exists()


@ROOT
@pytest.mark.skipif(shutil.which("python3", path="/usr/bin") is None, reason="needs /usr/bin")
def test_a_directory_the_daemon_may_not_search_is_one_line_not_a_traceback():
    """Found by running the image as the chart's non-root user on a 0770 root-owned run
    directory: stat() of the socket's directory raised PermissionError out of bind()."""
    import subprocess

    d = tempfile.mkdtemp(prefix="vs-search-", dir="/tmp")
    os.chmod(d, 0o755)
    # the module alone (stdlib only), where the unprivileged user can read it
    shutil.copy(unixsock.__file__, f"{d}/unixsock.py")
    os.mkdir(f"{d}/run", 0o770)  # root's, no access for others
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import unixsock\n"
             "try:\n    unixsock.bind(sys.argv[2])\n"
             "except unixsock.SocketPathError as exc:\n    print('refused:', exc)\n")
    try:
        done = subprocess.run(
            ["/usr/bin/python3", "-I", "-c", probe, d, f"{d}/run/ctl/status.sock"],
            user=65534, group=65534, extra_groups=[], capture_output=True, text=True,
            timeout=60)
    finally:
        shutil.rmtree(d)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.startswith("refused: cannot use directory"), done.stdout
