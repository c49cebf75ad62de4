"""One build per group at a time: an exclusive lock on a file in the store's ``.mepipe`` group.

The lock is an exclusive ``flock`` on ``<store>/.mepipe/<group>.lock``, held by the build's
driver for as long as it writes the group (per open file, so it also excludes a second build in
the same process; Linux's NFS client maps it to an NFS byte-range lock). The kernel (or, on NFS, the lock manager)
releases it when the process ends however it ends, so a lock left by a killed build is free at
once and never needs breaking by hand. The file's content says who holds it (host, pid, start
time, a token); it is emptied on a clean release, so content found by the next holder means the
last build stopped without releasing, and that build is named.

The token lets the build's tasks check, before they mark anything done, that their build still
holds the group (:func:`holds`): a task that a killed driver left running on a worker then stops
instead of marking results done under its successor.

Such locks work on local filesystems, on NFSv4 (and NFSv3 with the lock manager running), on
Lustre mounted with ``flock``, on GPFS and on BeeGFS. They do not work on filesystems without
POSIX locks (sshfs, SMB mounts without Unix extensions, object stores behind a FUSE layer); there
:meth:`GroupLock.acquire` fails with a message saying so rather than building unguarded.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from mepipe.pipeline.store import BOOKKEEPING, StoreError


class LockError(StoreError):
    """The group is being built by another build (or cannot be locked); one line that says which."""


def lock_path(store: str | Path, group: str) -> Path:
    return Path(store, BOOKKEEPING, f"{group}.lock")


def holder(path: str | Path) -> dict | None:
    """What the lock file at ``path`` says of its holder, or None when it is empty or unreadable."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    try:
        found = json.loads(text) if text.strip() else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def holds(path: str | Path, token: str) -> bool:
    """True while the lock file at ``path`` names ``token`` as its holder."""
    found = holder(path)
    return found is not None and found.get("token") == token


def describe(found: dict | None) -> str:
    """``pid 4242 on host node07, since 2026-12-01 20:31:02 UTC (3 min ago)``."""
    if not found:
        return "an unknown build"
    since = found.get("since", "")
    try:
        started = datetime.datetime.fromisoformat(since)
        age = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
        since = f"{started:%Y-%m-%d %H:%M:%S} UTC ({_age(age)} ago)"
    except (TypeError, ValueError):
        pass
    return f"pid {found.get('pid', '?')} on host {found.get('host', '?')}, since {since}"


class GroupLock:
    """The exclusive right to write one group of a store; a context manager.

    ``wait``: block until the other build ends (polling every ``poll_s`` seconds) instead of
    failing at once. ``notice`` is told, in one line, of a wait and of a lock left by a build that
    was killed.
    """

    def __init__(self, store: str | Path, group: str, *, wait: bool = False, notice: Callable[[str], None] | None = None,
                 poll_s: float = 0.5, command: str = "build") -> None:
        self.path = lock_path(store, group)
        self.group = group
        self.store = Path(store)
        self.wait = wait
        self.notice = notice or (lambda text: None)
        self.poll_s = poll_s
        self.command = command
        self.token = uuid.uuid4().hex
        self.previous: dict | None = None
        self._fd: int | None = None

    def acquire(self) -> GroupLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        told = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as error:
                    if error.errno not in (errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK):
                        raise LockError(f"cannot lock {self.path}: {error.strerror} (the filesystem may not support POSIX "
                                        "locks; see docs/build.md, 'Two builds at once')") from None
                other = describe(holder(self.path))
                if not self.wait:
                    raise LockError(f"group {self.group} of {self.store} is being written by another mepipe build ({other}); "
                                    "wait for it to end, or pass --wait to start when it does") from None
                if not told:
                    self.notice(f"waiting for the other build of {self.group} ({other}) to end")
                    told = True
                time.sleep(self.poll_s)
            self.previous = holder(self.path)
            if self.previous is not None:
                self.notice(f"took over the lock of {self.group} left by a build that stopped without releasing it "
                            f"({describe(self.previous)}); its unfinished samples are recomputed")
            record = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token, "command": self.command,
                      "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # empty: the next holder knows this build ended cleanly
        except OSError:
            pass
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> GroupLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
