"""Run a plan (utils/plan.py): on this machine's workers, or submitted to SLURM.

Local: a pool of worker processes, one per visible CUDA device (x --jobs_per_gpu), each job pinned to
its worker's GPU with CUDA_VISIBLE_DEVICES; one worker without a GPU. A job starts once every job it
waits for has finished; a failed job stops only the jobs that wait for it. Ctrl-C (or SIGTERM) stops
the workers and leaves every finished file in place: the same command resumes.

SLURM: plain `sbatch`, one job array per stage (a stage whose jobs wait for different jobs is split:
one array per set), chained with afterok dependencies: on a whole array when a job waits for all of
it, on its tasks (`afterok:ID_3`) or task by task (`aftercorr`) when it waits for some. Each task runs
one job's command line; a task SLURM requeues runs it again and the script resumes from its checkpoint.
No accounting database is needed: states come from squeue and from the output folder (utils/jobs.py).
"""
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time

from utils import io, jobs as J
from utils.base import UserError, log

GRACE_S, STOP_S = 3, 15  # Ctrl-C: seconds for the jobs to stop by themselves, then after a SIGINT
SLURM_DIR = "slurm"


def worker_slots(gpus, workers=None, jobs_per_gpu=1):
    """Per worker, the CUDA_VISIBLE_DEVICES value that pins it (None without a GPU): one worker per GPU
    and per --jobs_per_gpu, or `workers` of them spread over the GPUs in turn; 1 worker without a GPU."""
    if not gpus:
        return [None] * (workers or 1)
    per_gpu = [gpu for gpu in gpus for _ in range(jobs_per_gpu)]
    return [per_gpu[i % len(per_gpu)] for i in range(workers or len(per_gpu))]


def thread_env(workers):
    """OMP_NUM_THREADS for each job unless the user set it: the CPU cores shared among the workers."""
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}


def fmt_seconds(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


@dataclasses.dataclass
class LocalConfig:
    out_dir: str
    python: str
    slots: list                 # per worker: its CUDA_VISIBLE_DEVICES value, or None
    cwd: str = "."
    env: dict = dataclasses.field(default_factory=dict)  # added to every job's environment


@dataclasses.dataclass
class Running:
    job: object
    popen: subprocess.Popen
    start: float
    slot: int


class LocalRun:
    """One pass over a plan with a pool of worker processes; `run()` returns the exit status."""

    def __init__(self, jobs, config):
        from tqdm import tqdm
        self.jobs, self.cfg = jobs, config
        self.outcome, self.seconds, self.running = {}, {}, {}
        self.free = list(range(len(config.slots)))
        self.bar = tqdm(total=len(jobs), unit="job", disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True)

    # -- progress -------------------------------------------------------------------------------------
    def eta(self):
        remaining = len(self.jobs) - len(self.outcome)
        if not self.seconds or not remaining:
            return ""
        mean = sum(self.seconds.values()) / len(self.seconds)
        return f"; ETA {fmt_seconds(mean * remaining / len(self.cfg.slots))}"

    def line(self, text):
        log(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] [{len(self.outcome)}/{len(self.jobs)}] {text}")

    def settle(self, job, outcome, text):
        self.outcome[job.name] = outcome
        self.bar.update(1)
        self.line(text + self.eta())

    # -- one job --------------------------------------------------------------------------------------
    def start(self, job):
        slot = self.free.pop(0)
        gpu = self.cfg.slots[slot]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.cfg.env}
        where = f"local worker {slot}" + ("" if gpu is None else f", CUDA_VISIBLE_DEVICES={gpu}")
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        path = J.log_path(self.cfg.out_dir, job)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "ab") as logf:
            logf.write(J.header(job, where, self.cfg.python).encode())
            logf.flush()
            out = open(job.stdout + ".tmp", "wb") if job.stdout else logf
            with out:
                popen = subprocess.Popen([self.cfg.python, *job.argv], cwd=self.cfg.cwd, env=env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=logf)
        self.running[popen.pid] = Running(job, popen, time.monotonic(), slot)
        self.line(f"start {job.name} ({job.stage})" + ("" if gpu is None else f" on GPU {gpu}"))

    def reap(self):
        """Wait for any job to end and record it."""
        pid, status = os.waitpid(-1, 0)
        entry = self.running.pop(pid, None)
        if entry is None:
            return
        rc = entry.popen.returncode = os.waitstatus_to_exitcode(status)
        job, seconds = entry.job, time.monotonic() - entry.start
        self.free.append(entry.slot)
        with open(J.log_path(self.cfg.out_dir, job), "a") as logf:
            logf.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} exit {rc} after {seconds:.1f} s\n")
        if job.stdout and rc == 0:
            os.replace(job.stdout + ".tmp", job.stdout)
        J.write_exit(self.cfg.out_dir, job, rc, seconds, "local")
        if rc == 0:
            self.seconds[job.name] = seconds
            self.settle(job, "done", f"done {job.name} in {fmt_seconds(seconds)}")
            return
        self.settle(job, "failed", f"FAILED {job.name} (exit {rc}), log {J.log_path(self.cfg.out_dir, job)}")
        for name in sorted(J.dependents(self.jobs, job.name) - set(self.outcome)):
            self.settle(self.by_name(name), "blocked", f"not run {name}: it needs {job.name}")

    def by_name(self, name):
        return next(job for job in self.jobs if job.name == name)

    # -- the pool -------------------------------------------------------------------------------------
    def ready(self):
        ok = {name for name, outcome in self.outcome.items() if outcome in ("done", "skipped")}
        busy = {entry.job.name for entry in self.running.values()}
        return [job for job in self.jobs if job.name not in self.outcome and job.name not in busy
                and set(job.deps) <= ok]

    def run(self):
        before = J.finished_before(self.jobs, self.cfg.out_dir)
        for job in self.jobs:
            if job.name in before:
                self.outcome[job.name] = "skipped"
                self.bar.update(1)
        if before:
            self.line(f"skipped {len(before)} jobs finished before (same commands, files unchanged)")
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            while len(self.outcome) < len(self.jobs):
                for job in self.ready()[:len(self.free)]:
                    self.start(job)
                if not self.running:
                    break
                self.reap()
        except KeyboardInterrupt:
            self.stop()
            self.summary(interrupted=True)
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.bar.close()
        return self.summary()

    def stop(self):
        """Ctrl-C: the jobs got the terminal's SIGINT and stop by themselves; those that do not get a
        SIGINT (a kill of this process alone), then SIGKILL. A second Ctrl-C kills them at once."""
        entries = list(self.running.values())
        self.line(f"interrupted: stopping {len(entries)} running job(s)")
        try:
            for signum, wait_s in ((None, GRACE_S), (signal.SIGINT, STOP_S)):
                alive = [e for e in entries if e.popen.poll() is None]
                for entry in alive if signum else []:
                    entry.popen.send_signal(signum)
                deadline = time.monotonic() + wait_s
                while any(e.popen.poll() is None for e in alive) and time.monotonic() < deadline:
                    time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        for entry in entries:
            if entry.popen.poll() is None:
                entry.popen.kill()
            entry.popen.wait()
            with open(J.log_path(self.cfg.out_dir, entry.job), "a") as logf:
                logf.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} interrupted\n")
        self.running.clear()

    def summary(self, interrupted=False):
        """One summary; the exit status: 1 when a job failed (or could not run), else 0."""
        count = {k: sum(v == k for v in self.outcome.values()) for k in ("done", "skipped", "failed", "blocked")}
        left = len(self.jobs) - len(self.outcome)
        log(f"summary: {count['done']} done, {count['skipped']} skipped (finished before), {count['failed']} "
            f"failed, {count['blocked']} not run (they need a failed job)"
            + (f", {left} left for the next run (interrupted: run the same command to resume)" if interrupted else "")
            + f"; logs in {os.path.join(self.cfg.out_dir, J.LOGS)}")
        for job in self.jobs:
            if self.outcome.get(job.name) == "failed":
                path = J.log_path(self.cfg.out_dir, job)
                log(f"failed: {job.name} (exit {J.read_exit(self.cfg.out_dir, job)['rc']}), log {path}")
                for text in J.tail(path):
                    log(f"  | {text}")
        return 1 if count["failed"] or count["blocked"] else 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_local(jobs, config):
    return LocalRun(jobs, config).run()


# -- SLURM ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SlurmConfig:
    out_dir: str
    python: str
    cwd: str
    name: str = "reproduce"     # job names: <name>_<stage>
    partition: str = None
    time: str = None            # --time, e.g. 2-00:00:00
    gpus: int = 1               # GPUs per task (--gres=gpu:N); 0: none
    cpus: int = None            # --cpus-per-task
    mem: str = None             # --mem per task, e.g. 32G
    parallelism: int = None     # at most this many tasks of one array at once (--array=0-N%P)
    extra: tuple = ()           # more sbatch arguments, verbatim
    setup: str = None           # a shell line run before each job (module load ..., source venv)


RUN_FUNCTION = r'''run() {  # run NAME COMMAND_ID STDOUT_FILE|- COMMAND...: one job, logged as utils/jobs.py reads it
  local name=$1 id=$2 out=$3 start=$SECONDS rc
  shift 3
  printf '== %s start %s on %s (SLURM job %s_%s)\n$ %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$name" \
    "$(hostname)" "${SLURM_ARRAY_JOB_ID:-?}" "${SLURM_ARRAY_TASK_ID:-?}" "$*" >> "$LOGS/$name.log"
  if [ "$out" = - ]; then
    "$@" >> "$LOGS/$name.log" 2>&1; rc=$?
  else
    "$@" > "$out.tmp" 2>> "$LOGS/$name.log"; rc=$?
    if [ $rc = 0 ]; then mv -f "$out.tmp" "$out"; fi
  fi
  printf '== %s exit %d after %d s\n' "$(date '+%Y-%m-%d %H:%M:%S')" $rc $((SECONDS - start)) >> "$LOGS/$name.log"
  printf '{"rc": %d, "seconds": %d, "command": "%s", "executor": "slurm"}\n' $rc $((SECONDS - start)) "$id" \
    > "$LOGS/.$name.exit.tmp" && mv -f "$LOGS/.$name.exit.tmp" "$LOGS/$name.exit"
  return $rc
}'''


def sbatch_script(name, members, cfg):
    """An array job: task i runs members[i]."""
    cwd = os.path.abspath(cfg.cwd)
    array = f"0-{len(members) - 1}" + (f"%{cfg.parallelism}" if cfg.parallelism else "")
    head = [f"--job-name={name}", f"--array={array}",
            f"--output={os.path.join(cwd, cfg.out_dir, J.LOGS, SLURM_DIR, '%x_%A_%a.out')}",
            f"--chdir={cwd}", "--requeue", "--open-mode=append"]
    head += [f"--{flag}={value}" for flag, value in (("partition", cfg.partition), ("time", cfg.time),
                                                      ("cpus-per-task", cfg.cpus), ("mem", cfg.mem)) if value]
    head += [f"--gres=gpu:{cfg.gpus}"] if cfg.gpus else []
    lines = ["#!/bin/bash"] + [f"#SBATCH {option}" for option in head]
    lines += ["# One job of the plan per task (reproduce.py --dry-run lists them all). A task SLURM requeues",
              "# runs its command again, and the script resumes from its checkpoint.",
              "set -u", "export PYTHONUNBUFFERED=1"] + ([cfg.setup] if cfg.setup else [])
    lines += [f"PYTHON={shlex.quote(cfg.python)}", f"LOGS={shlex.quote(os.path.join(cfg.out_dir, J.LOGS))}",
              RUN_FUNCTION, 'case "$SLURM_ARRAY_TASK_ID" in']
    for i, job in enumerate(members):
        out = shlex.quote(job.stdout) if job.stdout else "-"
        lines.append(f'  {i}) run {shlex.quote(job.name)} {job.fingerprint()} {out} "$PYTHON" {shlex.join(job.argv)} ;;')
    lines += ['  *) echo "no task $SLURM_ARRAY_TASK_ID in this array" >&2; exit 2 ;;', "esac"]
    return "\n".join(lines) + "\n"


def _afterok(deps, submitted, sizes):
    """afterok on whole arrays where every task is needed, else on the tasks needed."""
    by_array = {}
    for dep in deps:
        array, task = submitted[dep]
        by_array.setdefault(array, set()).add(task)
    parts = [array if len(tasks) == sizes[array] else ":".join(f"{array}_{t}" for t in sorted(tasks))
             for array, tasks in sorted(by_array.items(), key=lambda item: int(item[0]))]
    return "afterok:" + ":".join(parts) if parts else None


def _aftercorr(members, deps, submitted, sizes):
    """aftercorr:ID when task i waits for task i of one array of the same size, and nothing else."""
    if any(len(d) != 1 for d in deps):
        return None
    arrays = {submitted[d[0]][0] for d in deps}
    if len(arrays) != 1:
        return None
    array = arrays.pop()
    same = sizes[array] == len(members) and all(submitted[d[0]][1] == i for i, d in enumerate(deps))
    return f"aftercorr:{array}" if same else None


def _waves(members):
    """The jobs of a stage in rounds: each round waits only for jobs outside the stage or in earlier rounds
    (the JSON table waits for the table)."""
    while members:
        names = {job.name for job in members}
        wave = [job for job in members if not set(job.deps) & names]
        members = [job for job in members if job not in wave]
        yield wave


def arrays_of(members, submitted, sizes):
    """[(jobs, dependency or None)]: one array for a stage whose jobs wait for the same jobs (or each
    for the same task of one array), else one array per set of jobs waited for."""
    deps = [tuple(sorted(d for d in job.deps if d in submitted)) for job in members]
    if len(set(deps)) == 1:
        return [(members, _afterok(deps[0], submitted, sizes))]
    corr = _aftercorr(members, deps, submitted, sizes)
    if corr:
        return [(members, corr)]
    groups = {}
    for job, d in zip(members, deps):
        groups.setdefault(d, []).append(job)
    return [(group, _afterok(d, submitted, sizes)) for d, group in groups.items()]


def _slurm(args, what):
    """Run a SLURM command; its stdout, or a UserError naming what failed."""
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError(f"{args[0]} not found: SLURM's client commands must be on PATH for --executor slurm") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"{what}: {args[0]} did not answer within 60 s") from None
    if proc.returncode != 0:
        message = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise UserError(f"{what}: {message[-1] if message else f'{args[0]} exited {proc.returncode}'}")
    return proc.stdout


def record_path(out_dir):
    return os.path.join(out_dir, SLURM_DIR, "jobs.json")


def read_record(out_dir):
    """The last submission: {"arrays": [{"id", "stage", "jobs": [names]}]}, or None."""
    try:
        with open(record_path(out_dir)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def queue_states(out_dir):
    """{job name: "running" or "pending"} of the last submission's tasks still in SLURM's queue; {}
    without a submission or without squeue."""
    record = read_record(out_dir)
    if not record or not record.get("arrays"):
        return {}
    ids = ",".join(str(a["id"]) for a in record["arrays"])
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-j", ids, "-o", "%i|%T"], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    tasks = {(str(a["id"]), str(i)): name for a in record["arrays"] for i, name in enumerate(a["jobs"])}
    states = {}
    for line in proc.stdout.splitlines():  # "123_4|RUNNING"; an array of one task can show as "123"
        task, _, slurm_state = line.strip().partition("|")
        array, _, index = task.partition("_")
        name = tasks.get((array, index or "0"))
        if name:
            states[name] = "running" if slurm_state in ("RUNNING", "COMPLETING") else "pending"
    return states


def submit_slurm(jobs, config):
    """Submit every job not finished before, one array per stage (see arrays_of), chained by
    dependencies; returns the submission record. Refused while the last submission is still queued."""
    queued = queue_states(config.out_dir)
    if queued:
        raise UserError(f"{len(queued)} jobs of the last submission from {config.out_dir} are still queued or "
                        f"running; --status shows them (scancel stops them)")
    before = J.finished_before(jobs, config.out_dir)
    todo = [job for job in jobs if job.name not in before]
    folder = os.path.join(config.out_dir, SLURM_DIR)
    os.makedirs(os.path.join(config.out_dir, J.LOGS, SLURM_DIR), exist_ok=True)
    submitted, sizes, arrays = {}, {}, []
    try:
        for stage, members in J.stages(todo).items():
            k = 0
            for wave in _waves(members):  # a round's arrays are submitted before the next round is planned
                for group, dependency in arrays_of(wave, submitted, sizes):
                    name = f"{config.name}_{stage}" + (f"_{k}" if k else "")
                    array = _submit_array(name, group, dependency, config, folder)
                    sizes[array], k = len(group), k + 1
                    submitted.update({job.name: (array, i) for i, job in enumerate(group)})
                    arrays.append({"id": array, "stage": stage, "jobs": [job.name for job in group],
                                   "dependency": dependency})
    except UserError:
        if arrays:  # nothing half-submitted: what went in comes out
            subprocess.run(["scancel", *[a["id"] for a in arrays]], capture_output=True)
        raise
    record = {"submitted": time.strftime("%Y-%m-%d %H:%M:%S"), "skipped": len(before), "arrays": arrays}
    with io.atomic_write(record_path(config.out_dir), "w") as f:
        f.write(json.dumps(record, indent=1) + "\n")
    return record


def _submit_array(name, members, dependency, config, folder):
    path = os.path.join(folder, f"{name}.sbatch")
    with io.atomic_write(path, "w") as f:
        f.write(sbatch_script(name, members, config))
    args = ["sbatch", "--parsable", "--kill-on-invalid-dep=yes"]
    args += [f"--dependency={dependency}"] if dependency else []
    out = _slurm(args + list(config.extra) + [path], f"sbatch {path}")
    return out.strip().split(";")[0]
