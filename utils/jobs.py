"""A job of a plan (utils/plan.py builds them), and what an output folder says about it, whichever
executor ran it.

Both executors write, per job:
- `<out_dir>/logs/<job>.log`: everything the job printed, each attempt appended after a header line;
- `<out_dir>/logs/<job>.exit`: the end of its last attempt that ended, one JSON object
  {"rc", "seconds", "command", "executor"}; "command" names the command line (Job.fingerprint), so the
  record of another command does not count.

A job is finished when its record says exit 0 for this very command, its outputs all exist, and no
output or input (a search record it read) changed after the record was written. Such a job is not run
again. Any other job is run, and the script itself then skips or resumes what it had done (the scripts'
run identity): this check only saves starting a process, it never decides that a result is reusable.
"""
import dataclasses
import hashlib
import json
import os
import shlex
import socket
import time

from utils import io

LOGS = "logs"
TAIL_LINES = 15


@dataclasses.dataclass
class Job:
    name: str            # unique; its log is <out_dir>/logs/<name>.log
    stage: str
    argv: list           # the script and its arguments (the interpreter comes from the executor)
    deps: list           # names of the jobs it waits for
    outputs: list        # the files that exist once it has finished
    inputs: list = dataclasses.field(default_factory=list)  # files of other jobs it reads
    images: int = 0      # training images it processes (epochs x images), an estimate for searches
    stdout: str = None   # the file its standard output goes to (the table)

    def command(self):
        line = shlex.join(self.argv)
        return f"{line} > {shlex.quote(self.stdout)}" if self.stdout else line

    def fingerprint(self):
        """Names the command: an exit record of another command does not count for this one."""
        return hashlib.sha1(self.command().encode()).hexdigest()[:16]


def stages(jobs):
    """{stage: [its jobs]}, stages in the order their first jobs come (a plan lists them stage by stage)."""
    out = {}
    for job in jobs:
        out.setdefault(job.stage, []).append(job)
    return out


def dependents(jobs, name):
    """The names of every job that waits, directly or not, for the job `name`."""
    found, frontier = set(), {name}
    while frontier:
        frontier = {j.name for j in jobs if set(j.deps) & frontier} - found
        found |= frontier
    return found


def log_path(out_dir, job):
    return os.path.join(out_dir, LOGS, f"{job.name}.log")


def exit_path(out_dir, job):
    return os.path.join(out_dir, LOGS, f"{job.name}.exit")


def read_exit(out_dir, job):
    """The job's exit record, or None (none yet, or unreadable: then the job runs again)."""
    try:
        with open(exit_path(out_dir, job)) as f:
            record = json.load(f)
        return record if isinstance(record, dict) and isinstance(record.get("rc"), int) else None
    except (OSError, ValueError):
        return None


def write_exit(out_dir, job, rc, seconds, executor):
    record = {"rc": int(rc), "seconds": round(float(seconds), 3), "command": job.fingerprint(),
              "executor": executor}
    with io.atomic_write(exit_path(out_dir, job), "w") as f:
        f.write(json.dumps(record) + "\n")


def _mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def finished(out_dir, job):
    """True when the job ended with exit 0 under this command and its files are as it left them."""
    record = read_exit(out_dir, job)
    if record is None or record["rc"] != 0 or record.get("command") != job.fingerprint():
        return False
    ended = _mtime(exit_path(out_dir, job))
    outputs = [_mtime(path) for path in job.outputs]
    if ended is None or None in outputs:
        return False
    return all(t <= ended for t in outputs + [_mtime(path) or 0 for path in job.inputs])


def finished_before(jobs, out_dir):
    """The names of the finished jobs whose dependencies are all finished too (in plan order: a job
    whose input is about to be remade is not finished)."""
    done = set()
    for job in jobs:
        if all(dep in done for dep in job.deps) and finished(out_dir, job):
            done.add(job.name)
    return done


def header(job, where, python):
    """The lines that open an attempt in the job's log."""
    return f"== {time.strftime('%Y-%m-%d %H:%M:%S')} start {job.name} on {socket.gethostname()} ({where})\n" \
           f"$ {python} {job.command()}\n"


def tail(path, lines=TAIL_LINES):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line.rstrip("\r") for line in text.splitlines()[-lines:]]


def state(out_dir, job, live=None, writer_alive=False):
    """done, running, failed or pending. `live`: the queue's state of the job (SLURM), if it is queued;
    `writer_alive`: a reproduce.py holds the folder (the local executor), so a begun attempt runs."""
    if finished(out_dir, job):
        return "done"
    if live in ("running", "pending"):
        return live
    record, log = read_exit(out_dir, job), _mtime(log_path(out_dir, job))
    begun = log is not None and (record is None or log > _mtime(exit_path(out_dir, job)))
    if writer_alive and begun:
        return "running"
    if record is not None and record["rc"] != 0 and record.get("command") == job.fingerprint():
        return "failed"
    return "pending"


STATES = ("done", "running", "failed", "pending")


def status_lines(stages, out_dir, live=None, writer_alive=False):
    """The --status report: per stage how many jobs are done, running, failed, pending; then each
    failed job with its exit status, its log and the log's last lines."""
    live = live or {}
    lines = [f"{'stage':<18} " + " ".join(f"{s:>8}" for s in STATES)]
    failed = []
    for stage, members in stages.items():
        counts = dict.fromkeys(STATES, 0)
        for job in members:
            found = state(out_dir, job, live.get(job.name), writer_alive)
            counts[found] += 1
            failed += [job] if found == "failed" else []
        lines.append(f"{stage:<18} " + " ".join(f"{counts[s]:>8}" for s in STATES))
    for job in failed:
        lines.append(f"failed: {job.name} (exit {read_exit(out_dir, job)['rc']}), log {log_path(out_dir, job)}")
        lines += [f"  | {line}" for line in tail(log_path(out_dir, job))]
    return lines
