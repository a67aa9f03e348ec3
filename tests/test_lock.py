"""utils/lock.py: one live holder; a second is refused naming it; a killed holder frees the lock."""
import os
import signal
import socket
import subprocess
import sys

import pytest

from conftest import REPO
from utils import lock
from utils.base import UserError

HOLDER = ("import sys, time; sys.path.insert(0, sys.argv[2]); from utils import lock\n"
          "with lock.hold(sys.argv[1], 'the test run'):\n    print('held', flush=True); time.sleep(60)")


def start_holder(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(REPO)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder_until_it_is_killed(tmp_path):
    path = tmp_path / "run.lock"
    proc = start_holder(path)
    try:
        with pytest.raises(UserError) as err:
            with lock.hold(str(path), "the test run"):
                pass
        message = str(err.value)
        assert f"PID {proc.pid} on {socket.gethostname()}" in message and "the test run is in use" in message
        assert "\n" not in message
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert path.exists()  # SIGKILL left the file, but not the lock
    with lock.hold(str(path), "the test run"):
        assert f'"pid": {os.getpid()}' in path.read_text()
    assert not path.exists()  # a normal release removes the file


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    path = str(tmp_path / "sub" / "x.lock")
    with pytest.raises(RuntimeError):
        with lock.hold(path, "x"):
            raise RuntimeError("boom")
    with lock.hold(path, "x"):
        pass
    assert not os.path.exists(path)


def test_waiting_opener_of_a_removed_lock_file_takes_the_new_one(tmp_path, monkeypatch):
    """A process that opened the file just before the holder removed it must not hold a lock on a
    file that no longer has a name (a third process could then lock the new file too)."""
    path = str(tmp_path / "r.lock")
    real_stat, calls = os.stat, []

    def stat_after_removal(p, *a, **k):
        if p == path and not calls:  # first check: the holder removed and a newcomer re-created it
            calls.append(p)
            os.unlink(path)
            open(path, "w").close()
        return real_stat(p, *a, **k)

    monkeypatch.setattr(lock.os, "stat", stat_after_removal)
    with lock.hold(path, "r"):
        assert calls == [path]
        with open(path) as f:  # we hold (and wrote our name into) the file the path names now
            assert f'"pid": {os.getpid()}' in f.read()
