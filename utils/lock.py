"""One writer at a time: an advisory lock file held for the life of a run or an orchestrator.

The lock is an flock(2) on `<path>`: the kernel drops it when its holder exits, however it exits
(SIGKILL, a node's reboot), so a lock is never stale and nothing needs cleaning up by hand. The file
holds who has it (PID, host, start time, command), for the refusal message only. The holder removes
the file when it lets go; a process that opened the file just before that finds, once it has the
lock, that the path no longer names its file, and tries again.

flock works across processes of one machine, and across machines on NFSv4 and most cluster file
systems (Lustre with `flock` mounts, GPFS, BeeGFS); where a file system ignores it, two writers on
different hosts are not caught.
"""
import contextlib
import fcntl
import json
import os
import socket
import sys
import time

from utils.base import UserError


def _holder(path):
    try:
        with open(path) as f:
            info = json.load(f)
        return f"PID {info['pid']} on {info['host']} since {info['since']} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not written its name yet)"


def _acquire(path, what):
    """An open file descriptor holding the lock on `path`, or a UserError naming the holder."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"{what} is in use by {_holder(path)}: lock {path}; wait for it to end, "
                            f"or stop it") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder before us removed the file after we opened it: lock the new one


def lock_file(folder, stem):
    """The lock of the run or search named `stem` in `folder`: a hidden file, which a killed holder
    leaves behind harmlessly (the kernel has dropped its lock)."""
    return os.path.join(folder, f".{stem}.lock")


@contextlib.contextmanager
def hold(path, what):
    """Hold the lock `path` for the block; refuse with one line when a live process holds it. `what`
    names the locked thing in that line ("run vgg_uni_c100_0_25", "output folder runs/"). Folders
    created for the lock file are removed again when the run left them empty (a refused run leaves
    nothing behind)."""
    created = _missing_folders(os.path.dirname(os.path.abspath(path)))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        fd = _acquire(path, what)
    except UserError:
        _remove_empty(created)
        raise
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked: a waiting opener sees the path gone and retries
        os.close(fd)
        _remove_empty(created)


def _missing_folders(folder):
    """The folders makedirs(folder) would create, deepest first."""
    missing = []
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def _remove_empty(folders):
    for folder in folders:  # deepest first; one still in use (not empty) stays
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def holder(path):
    """Who holds the lock `path` (PID, host, start, command), or None when no live process does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(path)
    finally:
        os.close(fd)  # closing drops a shared lock we may have taken
    return None
