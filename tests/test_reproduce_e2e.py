"""reproduce.py end to end on a tiny protocol (issue 21): synthetic data, VGG11, a 2-iteration search,
2 ratios, 2 seeds, 1 epoch, the four methods plus Li et al. (24 jobs of the real scripts). Locally with
2 workers, killed mid-run with its workers and resumed; by hand from --dry-run's script; on a real
single-node SLURM cluster; with a job made to fail."""
import os
import signal
import subprocess
import sys
import time

import pytest

import slurm_cluster
from conftest import REPO, load_bench
from utils import jobs as J

pytestmark = pytest.mark.slow  # the real scripts, 24 jobs: `make test-fast` leaves them out

TINY = load_bench("reproduce_overhead").TINY  # the benchmark measures the same protocol
ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # one thread per job: the same arithmetic everywhere
TABLE_ROWS = ("| Uniform Scale (Baseline) | 0.25 |", "| Li et al. * | 0.75 |", "| MorphNet (Taylor-FO) | 0.25 |",
              "| NeuralScale (Iteration = 1) | 0.25 |", "| NeuralScale (Iteration = 2) | 0.25 |")


def reproduce(cwd, *argv, env=None, timeout=900):
    return subprocess.run([sys.executable, str(REPO / "reproduce.py"), *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **ENV, **(env or {})})


def results(folder):
    """{path under runs/: bytes} of every record, result and table file."""
    found = {}
    for sub in ("prune_record", "saved_plots"):
        for root, _, files in os.walk(os.path.join(folder, "runs", sub)):
            for name in files:
                path = os.path.join(root, name)
                found[os.path.relpath(path, folder)] = open(path, "rb").read()
    for name in ("table.md", "table.jsonl"):
        found[os.path.join("runs", name)] = open(os.path.join(folder, "runs", name), "rb").read()
    return found


def snapshot(paths):
    return {p: (open(p, "rb").read(), os.stat(p).st_mtime_ns) for p in paths}


def plan_of(*argv):
    """reproduce.py's jobs for these flags (as planned from the repository root)."""
    import reproduce
    return reproduce.plan.build(reproduce.protocol_of(reproduce.parse_args(list(argv))))


@pytest.fixture(scope="module")
def by_hand(tmp_path_factory):
    """--dry-run's script run by hand with bash, one job at a time, in its own folder; started at once so
    that it runs beside the local executor (the cores of a small machine stay busy)."""
    folder = tmp_path_factory.mktemp("by_hand")
    plan = reproduce(folder, *TINY, "--dry-run")
    assert plan.returncode == 0 and "# 24 jobs" in plan.stdout, plan.stderr
    (folder / "plan.sh").write_text(plan.stdout)
    with open(folder / "plan.log", "w") as output:
        proc = subprocess.Popen(["bash", "plan.sh"], cwd=folder, stdout=output, stderr=subprocess.STDOUT,
                                env={**os.environ, **ENV, "PYTHON": sys.executable})
    yield folder, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, by_hand):
    """The tiny protocol with --executor local --workers 2, from a fresh folder: SIGKILLed with its
    workers once three jobs have finished, then the same command again, to the end. Returns the folder,
    the jobs finished before the kill, their outputs then (bytes, mtime) and the second run."""
    folder = tmp_path_factory.mktemp("local")
    argv = [*TINY, "--workers", "2"]
    proc = subprocess.Popen([sys.executable, str(REPO / "reproduce.py"), *argv], cwd=folder, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **ENV})
    logs, deadline = folder / "runs" / "logs", time.monotonic() + 900
    while len(list(logs.glob("*.exit"))) < 3:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator and its workers
    proc.wait()
    finished = sorted(path.name[:-5] for path in logs.glob("*.exit"))
    outputs = [folder / path for job in plan_of(*argv) if job.name in finished for path in job.outputs]
    before = snapshot(outputs)
    again = reproduce(folder, *argv)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    return folder, finished, before, again


def test_the_tiny_protocol_runs_on_two_local_workers_resumes_after_a_kill_and_prints_the_table(local_run):
    folder, finished, before, proc = local_run
    for row in TABLE_ROWS:
        assert row in proc.stdout, row
    assert proc.stdout.count("| 2/2 |") == 9  # 4 methods x 2 ratios + Li et al., two seeds each
    # Killed with its workers: the jobs finished before are skipped, their files untouched, and
    # nothing finished is trained again (each of their logs holds one start).
    assert len(finished) >= 3 and len(before) >= 3
    assert f"summary: {24 - len(finished)} done, {len(finished)} skipped (finished before), 0 failed, 0 not run" \
        in proc.stdout
    assert snapshot(list(before)) == before
    for name in finished:
        assert (folder / "runs" / "logs" / f"{name}.log").read_text().count(" start ") == 1, name
    assert len(list((folder / "runs" / "logs").glob("*.exit"))) == 24
    # The same command once more: every job is skipped without starting a process.
    files = results(folder)
    assert len([p for p in files if p.endswith(".pk") and "saved_plots" in p]) == 16 + 2 + 2
    kept = snapshot([folder / p for p in files])
    again = reproduce(folder, *TINY, "--workers", "2")
    assert again.returncode == 0 and "skipped 24 jobs finished before" in again.stdout
    assert "start " not in again.stdout and TABLE_ROWS[0] in again.stdout
    assert snapshot([folder / p for p in files]) == kept


def test_its_results_are_byte_identical_to_the_dry_run_script_run_by_hand(local_run, by_hand):
    folder, proc = by_hand
    assert proc.wait(timeout=1800) == 0, (folder / "plan.log").read_text()[-3000:]
    mine, theirs = results(local_run[0]), results(folder)
    assert sorted(mine) == sorted(theirs)
    epoch_logs = [p for p in mine if p.endswith(".csv") and "saved_plots" in p]  # one per result, no times in it
    assert len(epoch_logs) == 20 and len(mine) == 53  # and 33 records, search logs, results and tables
    assert [p for p in mine if mine[p] != theirs[p]] == []


def test_a_failing_job_is_reported_with_its_log_and_the_jobs_that_do_not_need_it_finish(tmp_path):
    record = tmp_path / "runs" / "prune_record"
    record.mkdir(parents=True)
    (record / "vgg_morph_synthetic_0.csv").write_text("this is not a prune record\n")  # a corrupted record
    (record / "vgg_morph_synthetic_param0.pk").write_bytes(b"garbage")
    argv = [*TINY, "--methods", "uniform", "morphnet", "--seeds", "0", "--ratios", "0.25"]
    proc = reproduce(tmp_path, *argv)
    assert proc.returncode == 1
    assert "failed: vgg_morph_synthetic (exit 2), log runs/logs/vgg_morph_synthetic.log" in proc.stdout
    assert "  | error: " in proc.stdout and "vgg_morph_synthetic_param0.pk: not a NeuralScale pickle" in proc.stdout
    assert "not run vgg_pruned_synthetic_0_25: it needs vgg_morph_synthetic" in proc.stdout
    assert "summary: 1 done, 0 skipped (finished before), 1 failed, 3 not run" in proc.stdout
    assert (tmp_path / "runs" / "saved_plots" / "vgg" / "vgg_uni_synthetic_0_25.pk").exists()
    assert not (tmp_path / "runs" / "saved_plots" / "vgg" / "vgg_pruned_synthetic_0_25.pk").exists()
    status = reproduce(tmp_path, *argv, "--status")
    lines = status.stdout.splitlines()
    assert status.returncode == 0 and lines[1].split() == ["search", "0", "0", "1", "0"]
    assert lines[2].split() == ["uniform", "1", "0", "0", "0"] and lines[3].split() == ["morphnet", "0", "0", "0", "1"]
    assert "failed: vgg_morph_synthetic (exit 2)" in status.stdout


# -- on a real SLURM ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A single-node SLURM cluster (slurm_cluster.py), started as root, stopped afterwards."""
    folder = str(tmp_path_factory.mktemp("slurm"))
    try:
        env = slurm_cluster.start(folder)
    except slurm_cluster.Unavailable as why:
        slurm_cluster.stop(folder)
        pytest.skip(str(why))
    yield {"SLURM_CONF": env["SLURM_CONF"]}
    slurm_cluster.stop(folder)


def slurm_cmd(env, *args):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, env={**os.environ, **env}).stdout


def test_the_tiny_protocol_on_slurm_chains_array_jobs_and_gives_the_local_results(slurm, local_run, tmp_path):
    submit = reproduce(tmp_path, *TINY, "--executor", "slurm", "--slurm_gpus", "0", "--slurm_args=--hold",
                       env=slurm)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    arrays = [(line.split(": array job ")[0].split()[-1], line.split(": array job ")[1].split()[0])
              for line in submit.stdout.splitlines() if ": array job " in line]
    assert [stage for stage, _ in arrays] == ["search", "pretrain", "uniform", "morphnet", "neuralscale_it1",
                                              "neuralscale_it15", "finetune", "table", "table"]
    ids = dict(arrays[:-1])
    queue = slurm_cmd(slurm, "squeue", "-h", "-r", "-o", "%i %j %E")  # held: every task is still queued
    assert len(queue.splitlines()) == 24
    assert f"{ids['morphnet']}_3 reproduce_vgg_synthetic_morphnet afterok:{ids['search']}_1(unfulfilled)" in queue
    assert f"{ids['neuralscale_it1']}_0 reproduce_vgg_synthetic_neuralscale_it1 afterok:{ids['search']}_0" in queue
    assert f"reproduce_vgg_synthetic_finetune aftercorr:{ids['pretrain']}_*(unfulfilled)" in queue
    job = slurm_cmd(slurm, "scontrol", "show", "job", ids["morphnet"])
    assert f"ArrayJobId={ids['morphnet']} ArrayTaskId=0-3" in job and f"Dependency=afterok:{ids['search']}_1" in job
    job = slurm_cmd(slurm, "scontrol", "show", "job", ids["table"])
    assert f"afterok:{ids['search']}_*" in job and f"afterok:{ids['finetune']}_*" in job
    pending = reproduce(tmp_path, *TINY, "--status", env=slurm).stdout.splitlines()
    assert pending[1].split() == ["search", "0", "0", "0", "2"] and pending[3].split() == ["uniform", "0", "0", "0", "4"]
    slurm_cmd(slurm, "scontrol", "release", ",".join(array for _, array in arrays))
    deadline = time.monotonic() + 900
    while slurm_cmd(slurm, "squeue", "-h").strip():
        assert time.monotonic() < deadline, slurm_cmd(slurm, "squeue")
        time.sleep(1)
    status = reproduce(tmp_path, *TINY, "--status", env=slurm).stdout.splitlines()
    assert [line.split()[1:] for line in status[1:9]] == [[str(n), "0", "0", "0"] for n in (2, 2, 4, 4, 4, 4, 2, 2)]
    assert J.read_exit(str(tmp_path / "runs"), J.Job("table", "", [], [], []))["executor"] == "slurm"
    mine, theirs = results(tmp_path), results(local_run[0])
    assert sorted(mine) == sorted(theirs) and [p for p in mine if mine[p] != theirs[p]] == []
