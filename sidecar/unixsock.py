"""The unix status/control socket: where it may live, its file mode, who may control.

The socket's file mode is its ACL, so it is never left to the umask: the socket is
bound, chmod-ed (0600, or 0660 with `status_socket_group`) and only then listens, so
no client can connect through a looser mode in between. Its directory must not be
writable by others (they could replace the socket with their own and receive the
operator's `ctl` requests). Control requests are checked once more against the peer's
credentials (SO_PEERCRED), so a socket whose mode was loosened by hand still refuses
state changes from strangers.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OWNER_MODE = 0o600
GROUP_MODE = 0o660


class SocketPathError(ValueError):
    """The socket's path or directory is unsafe or unusable (a config error)."""


def parse_group(value: Any) -> int:
    """A group name or a numeric gid."""
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ValueError(
            f"must be a group name or a numeric gid, got unknown group {text!r}"
        ) from None


def _stat(path: Path) -> os.stat_result:
    # a directory we may not search (e.g. 0770 root-owned, as a non-root daemon) is a
    # config problem to name, not a crash
    try:
        return path.stat()
    except OSError as exc:
        raise SocketPathError(f"cannot use directory {path}: {exc.strerror}") from None


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:  # EACCES: Path.is_dir() would raise it on Python 3.11
        raise SocketPathError(f"cannot use directory {path}: {exc.strerror}") from None


def check_directory(path: str, group: int | None = None) -> None:
    """The socket's directory must be owned by root or this user and not be writable by
    others. Where a shared directory would be refused, a private one is made: when the
    socket's directory is missing and its parent is writable by others (a Kubernetes
    emptyDir is always mode 0777, /tmp), it is created 0700 (0750 with the group)."""
    directory = Path(path).parent
    if not _is_dir(directory):
        parent = directory.parent
        if not _is_dir(parent) or not _stat(parent).st_mode & stat.S_IWOTH:
            raise SocketPathError(f"directory {directory} does not exist")
        try:
            directory.mkdir(mode=0o700)
            if group is not None:
                os.chown(directory, -1, group)
                directory.chmod(0o750)
            else:
                directory.chmod(0o700)
        except FileExistsError:
            pass  # raced with someone: the ownership check below decides
        except OSError as exc:
            raise SocketPathError(f"cannot create directory {directory}: {exc.strerror}") from None
    st = _stat(directory)
    if st.st_uid not in (0, os.geteuid()):
        raise SocketPathError(
            f"directory {directory} is owned by uid {st.st_uid}, not by root or this user"
        )
    if st.st_mode & stat.S_IWOTH:
        raise SocketPathError(
            f"directory {directory} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
            "anyone could replace the socket; use a directory only root or this user can write"
        )


def _remove_stale(path: str) -> None:
    """A socket left by a killed daemon is removed; a live one or another file is not."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise SocketPathError(f"{path}: {exc.strerror}") from None
    else:
        raise SocketPathError(f"{path} is in use by another running process")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _identity(path: str) -> tuple[int, int, int]:
    # inode numbers are reused at once on tmpfs: the change time tells two files apart
    st = os.lstat(path)
    return st.st_dev, st.st_ino, st.st_ctime_ns


@dataclass
class BoundSocket:
    sock: socket.socket
    path: str
    identity: tuple[int, int, int]

    def remove(self) -> None:
        """Unlink the file at exit, unless it is no longer ours (a successor's)."""
        with contextlib.suppress(OSError):
            if _identity(self.path) == self.identity:
                os.unlink(self.path)


def bind(path: str, group: int | None = None) -> BoundSocket:
    """Bind and set the mode (and group) before anyone can connect; the caller listens."""
    path = os.path.abspath(path)  # -B chdirs to /: remove() must still find the file
    check_directory(path, group)
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        if group is not None:
            os.chown(path, -1, group)
        os.chmod(path, GROUP_MODE if group is not None else OWNER_MODE)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise SocketPathError(f"cannot create {path}: {exc.strerror}") from None
    sock.setblocking(False)
    return BoundSocket(sock, path, _identity(path))


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_credentials(sock: Any) -> Peer | None:
    """The connecting process's pid/uid/gid as the kernel recorded them at connect()."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def _supplementary_groups(pid: int) -> set[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return set()


def may_control(peer: Peer | None, group: int | None, euid: int | None = None) -> bool:
    """root, the daemon's own user, or (with status_socket_group) a member of that group."""
    if peer is None:
        return False
    euid = os.geteuid() if euid is None else euid
    if peer.uid in (0, euid):
        return True
    if group is None:
        return False
    return peer.gid == group or group in _supplementary_groups(peer.pid)
