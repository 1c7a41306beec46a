"""Crash-safe writes. A file is written under a recognisable temporary name beside
its target, flushed to disk, given the permissions the user's umask allows, renamed
into place, and the folder is flushed too. Temporary files left by a writer that was
killed are removed by the next write to the same path."""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from pathlib import Path

TMP_TAG = ".lmlab-tmp-"  # .{name}.lmlab-tmp-{pid}-{random}
_umask_lock = threading.Lock()


def _umask() -> int:
    with _umask_lock:
        mask = os.umask(0)
        os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is not ours, or the platform cannot tell
        return True
    return True


def temporaries(path) -> list[Path]:
    """Temporary files of writes to `path` (finished or not)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}{TMP_TAG}*"))


def remove_stale(path) -> None:
    """Remove temporaries of `path` whose writer process is gone."""
    for tmp in temporaries(path):
        try:
            pid = int(tmp.name[len(f".{Path(path).name}{TMP_TAG}"):].split("-")[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its rename is durable enough
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path):
    """Yield a temporary path to write; on success it replaces `path` durably. On an
    error (or a kill) `path` keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = path.with_name(f".{path.name}{TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
