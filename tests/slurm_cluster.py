"""A single-node SLURM cluster for the tests: Debian's slurm-wlm (slurmctld, slurmd) and munge, started
as root from a configuration written to a temporary folder, stopped afterwards. No accounting
database: sacct does not work, squeue and scontrol do.

start(folder) returns the environment the clients need (SLURM_CONF) or raises Unavailable with one
line saying why the cluster cannot run here (not root, not installed, a daemon that would not start).
"""
import os
import shutil
import socket
import subprocess
import time

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "scancel")
START_S = 60


class Unavailable(Exception):
    """SLURM cannot run here; the message says why, in one line."""


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _memory_mb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 1024


def config(folder, host, ctld_port, slurmd_port):
    """slurm.conf for one node with this machine's CPUs, one partition, no accounting, no cgroups."""
    f = str(folder)
    return "\n".join([
        f"ClusterName=nstest{ctld_port}", f"SlurmctldHost={host}", f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}", "AuthType=auth/munge", "CredType=cred/munge",
        f"AuthInfo=socket={f}/munge/munge.sock", "SlurmUser=root", "SlurmdUser=root",
        f"StateSaveLocation={f}/state", f"SlurmdSpoolDir={f}/spool",
        f"SlurmctldPidFile={f}/slurmctld.pid", f"SlurmdPidFile={f}/slurmd.pid",
        f"SlurmctldLogFile={f}/log/slurmctld.log", f"SlurmdLogFile={f}/log/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none", "MpiDefault=none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "ReturnToService=2",
        "SchedulerType=sched/backfill", "SchedulerParameters=sched_interval=1,bf_interval=1",
        "MinJobAge=600", "KillWait=5",
        f"NodeName={host} CPUs={os.cpu_count() or 1} RealMemory={int(_memory_mb() * 0.8)} State=UNKNOWN",
        "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""])


def _daemon(args, what, env, folder):
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    if proc.returncode != 0:
        why = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[-1]
        raise Unavailable(f"{what} did not start: {why} (logs in {folder})")


def start(folder):
    """Start munged, slurmctld and slurmd under `folder`; the clients' environment once the node is idle."""
    if os.geteuid() != 0:
        raise Unavailable("the test cluster needs root (it starts munged, slurmctld and slurmd)")
    missing = [name for name in DAEMONS + CLIENTS if shutil.which(name) is None]
    if missing:
        raise Unavailable(f"SLURM is not installed ({', '.join(missing)} missing; apt-get install slurm-wlm munge)")
    for sub in ("munge", "state", "spool", "log"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    os.chmod(os.path.join(folder, "munge"), 0o711)
    key = os.path.join(folder, "munge", "munge.key")
    with open(key, "wb") as f:
        f.write(os.urandom(1024))
    os.chmod(key, 0o400)
    host = socket.gethostname()
    conf = os.path.join(folder, "slurm.conf")
    with open(conf, "w") as f:
        f.write(config(folder, host, *_free_ports(2)))
    env = {**os.environ, "SLURM_CONF": conf}
    m = os.path.join(folder, "munge")
    _daemon(["munged", "--force", f"--key-file={key}", f"--socket={m}/munge.sock", f"--pid-file={m}/munged.pid",
             f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed"], "munged", env, folder)
    _daemon(["slurmctld", "-f", conf, "-c"], "slurmctld", env, folder)
    _daemon(["slurmd", "-f", conf], "slurmd", env, folder)
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env).stdout.strip()
        if state == "idle":
            return env
        time.sleep(0.5)
    raise Unavailable(f"the test node did not become idle within {START_S} s (sinfo: {state!r}; logs in {folder})")


def stop(folder):
    """Stop the daemons this module started, by the PIDs in their pid files."""
    for pid_file in ("slurmd.pid", "slurmctld.pid", os.path.join("munge", "munged.pid")):
        try:
            with open(os.path.join(folder, pid_file)) as f:
                pid = int(f.read().strip())
            os.kill(pid, 15)
        except (OSError, ValueError):
            continue
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
