"""reproduce.py (issue 21): the plan (utils/plan.py), its job state (utils/jobs.py) and its executors
(utils/executors.py). The fast tests here use the planner in process and executors on stand-in jobs
(`python -c ...`); the end-to-end runs of the real scripts are in test_reproduce_e2e.py."""
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

import pytest

import reproduce
from conftest import REPO
from utils import executors, jobs as J, lock, plan
from utils.base import run_main

PAPER_STAGES = {"search": 2, "pretrain": 5, "uniform": 40, "morphnet": 40, "neuralscale_it1": 40,
                "neuralscale_it15": 40, "finetune": 5, "table": 2}


def in_process(capsys, *argv):
    """reproduce.py run in this process as from the shell: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as stop:
        run_main(lambda: reproduce.main([*map(str, argv)]) or sys.exit(0))
    out = capsys.readouterr()
    return stop.value.code, out.out, out.err


def assert_one_error(code, err):
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), (code, err)


def dry_run(capsys, *argv):
    reproduce.main(["--dry-run", *argv])
    text = capsys.readouterr().out
    return text, [line for line in text.splitlines() if line.startswith('"$PYTHON" ')]


# -- the plan ------------------------------------------------------------------------------------------

def test_the_papers_vgg11_cifar100_protocol_is_174_jobs_in_eight_stages(capsys):
    text, lines = dry_run(capsys)
    assert len(lines) == 174 and "# 174 jobs, one per line" in text
    for stage, count in PAPER_STAGES.items():
        assert re.search(rf"^# {stage}: {count} jobs?$", text, re.M), stage
        assert re.search(rf"^# {stage} +{count} ", text, re.M), stage
    # The size of the work: 300 epochs x 50,000 images per swipe job, 40 jobs per method.
    assert re.search(r"^# uniform +40  600,000,000$", text, re.M)
    assert re.search(r"^# finetune +5  10,000,000$", text, re.M)   # 40 epochs x 50,000 x 5
    assert re.search(r"^# total +174  about 2,545,050,000$", text, re.M)
    searches = [line for line in lines if "architecture_descent.py" in line]
    assert searches == [
        '"$PYTHON" architecture_descent.py --model vgg --dataset CIFAR100 --save vgg_10_eff_c100 --seed 0 --out_dir runs',
        '"$PYTHON" architecture_descent.py --model vgg --dataset CIFAR100 --save vgg_morph_c100 --seed 0 --morph '
        '--out_dir runs']


def test_morphnet_swipes_and_the_table_read_this_plans_own_morph_record(capsys):
    _, lines = dry_run(capsys)
    morph = [line for line in lines if " --morph " in line and "ratio_swipe.py" in line]
    assert len(morph) == 40
    assert all("--morph --prune_fname vgg_morph_c100 --save vgg_pruned_c100_" in line for line in morph)
    table = [line for line in lines if "plot_ratio.py" in line]
    assert len(table) == 2 and all("--morph_record vgg_morph_c100" in line and "--prune_fname vgg_10_eff_c100"
                                   in line for line in table)
    assert table[0].endswith("> runs/table.md") and table[1].endswith("--json --no_figs > runs/table.jsonl")


def test_swipes_li_and_names_are_the_authors(capsys):
    _, lines = dry_run(capsys, "--seeds", "3", "--ratios", "0.25", "0.75")
    body = [line.split(" ", 1)[1] for line in lines]
    assert ("ratio_swipe.py --model vgg --dataset CIFAR100 --prune_fname vgg_10_eff_c100 --descent_idx 0 "
            "--save vgg_10_eff_c100_early_3 --seed 3 --ratios 0.75 --out_dir runs") in body
    assert ("ratio_swipe.py --model vgg --dataset CIFAR100 --prune_fname vgg_10_eff_c100 "
            "--save vgg_10_eff_c100_late_3 --seed 3 --ratios 0.25 --out_dir runs") in body  # descent_idx 14
    assert "ratio_swipe.py --model vgg --dataset CIFAR100 --uniform --save vgg_uni_c100_3 --seed 3 --ratios 0.25 " \
           "--out_dir runs" in body
    assert "train_norm.py --model vgg --dataset CIFAR100 --save vgg_standard_c100_3 --seed 3 --out_dir runs" in body
    assert "fine_tune.py --model vgg --dataset CIFAR100 --resume vgg_standard_c100_3 --save vgg_norm_c100_3 " \
           "--seed 3 --out_dir runs" in body


def test_every_job_comes_after_the_jobs_it_needs_and_names_are_unique():
    protocol = plan.Protocol(model="mobilenetv2", dataset="CIFAR100", methods=plan.PLAN_METHODS, seeds=(0, 1),
                             ratios=(0.5, 1.0), out_dir="o")
    jobs = plan.build(protocol)
    position = {job.name: i for i, job in enumerate(jobs)}
    assert len(position) == len(jobs) == 2 + 2 + 5 * 4 + 2 + 2
    for job in jobs:
        assert all(position[dep] < position[job.name] for dep in job.deps), job.name
    by_name = {job.name: job for job in jobs}
    assert by_name["mobilenetv2_norm_c100_1_75"].deps == ["mobilenetv2_standard_c100_1"]
    assert by_name["mobilenetv2_pruned_c100_0_50"].deps == ["mobilenetv2_morph_c100"]
    assert by_name["mobilenetv2_10_eff_c100_early_0_100"].deps == ["mobilenetv2_10_eff_c100"]
    assert by_name["mobilenetv2_uni_c100_0_50"].deps == [] and by_name["mobilenetv2_convcut_c100_1_100"].deps == []
    assert set(by_name["table"].deps) == set(position) - {"table", "table_json"}
    assert J.dependents(jobs, "mobilenetv2_standard_c100_1") == {"mobilenetv2_norm_c100_1_75", "table",
                                                                     "table_json"}


def test_tinyimagenet_takes_its_scripts_ratios_and_epochs(capsys):
    text, lines = dry_run(capsys, "--model", "resnet18", "--dataset", "tinyimagenet", "--convcut", "--seeds", "0")
    assert sum("imagenet_architecture_descent.py" in line for line in lines) == 2
    swipes = [line for line in lines if "imagenet_ratio_swipe.py" in line]
    assert len(swipes) == 5 * 4 and sum("--convcut" in line for line in swipes) == 4
    assert {re.search(r"--ratios (\S+)", line).group(1) for line in swipes} == {"0.25", "0.5", "0.75", "1"}
    assert re.search(r"^# uniform +4  60,000,000$", text, re.M)    # 150 epochs x 100,000 images x 4
    assert re.search(r"^# finetune +1  2,000,000$", text, re.M)    # 20 epochs x 100,000


def test_options_pass_through_to_the_jobs_they_concern(capsys):
    _, lines = dry_run(capsys, "--seeds", "0", "--ratios", "0.5", "--epochs", "7", "--finetune_epochs", "3",
                       "--search_epochs", "9", "--iterations", "4", "--precision", "bf16", "--scale_schedule",
                       "--subset", "100", "--test_subset", "50", "--batch-size", "64", "--warmup", "2",
                       "--data_dir", "/d", "--no_latency", "--swipe_args", "--lr 0.05", "--table_args=--no_figs")
    kinds = {"search": [l for l in lines if "architecture_descent.py" in l and "--morph" not in l],
             "morph_search": [l for l in lines if "architecture_descent.py" in l and "--morph" in l],
             "swipe": [l for l in lines if "ratio_swipe.py" in l], "pretrain": [l for l in lines if "train_norm" in l],
             "finetune": [l for l in lines if "fine_tune.py" in l], "table": [l for l in lines if "plot_ratio" in l]}
    expect = {"search": ["--epochs 9", "--iterations 4", "--warmup 2", "--subset 100", "--precision bf16", "--data_dir /d"],
              "morph_search": ["--epochs 9", "--warmup 2", "--subset 100", "--precision bf16"],
              "swipe": ["--epochs 7", "--scale_schedule", "--batch-size 64", "--test_subset 50", "--subset 100",
                        "--precision bf16", "--data_dir /d", "--lr 0.05"],
              "pretrain": ["--epochs 7", "--scale_schedule", "--batch-size 64", "--precision bf16"],
              "finetune": ["--epochs 3", "--batch-size 64", "--test_subset 50", "--precision bf16"],
              "table": ["--no_latency", "--no_figs", "--late_idx 3"]}
    never = {"search": ["--epochs 7", "--batch-size 64", "--test_subset", "--lr 0.05"],
             "morph_search": ["--iterations"], "swipe": ["--epochs 9", "--iterations", "--warmup", "--no_latency"],
             "pretrain": ["--lr 0.05", "--epochs 3", "--no_latency"], "finetune": ["--scale_schedule", "--epochs 7"],
             "table": ["--epochs", "--precision", "--subset"]}
    for kind, members in kinds.items():
        assert members, kind
        for line in members:
            assert all(f" {flag}" in line for flag in expect[kind]), (kind, line)
            assert not any(f" {flag}" in line for flag in never[kind]), (kind, line)
    late = [l for l in kinds["swipe"] if "_late_" in l]
    assert late and all("--descent_idx 3" in l for l in late)  # the last of 4 iterations


def test_a_macs_budget_searches_and_tables_neuralscale_for_macs(capsys):
    _, lines = dry_run(capsys, "--budget", "macs", "--methods", "uniform", "neuralscale_it15", "--seeds", "0",
                       "--ratios", "0.5")
    search, uniform, late, table, _ = lines
    assert "--save vgg_10_eff_c100_macs --seed 0 --out_dir runs --budget macs" in search
    assert "--prune_fname vgg_10_eff_c100_macs --budget macs --save vgg_10_eff_c100_macs_0 " in late
    assert "--budget" not in uniform
    assert "--macs_record vgg_10_eff_c100_macs --macs_name vgg_10_eff_c100_macs" in table
    assert "--methods uniform neuralscale_macs" in table


@pytest.mark.parametrize("argv, message", [
    (["--convcut"], "ConvCut applies to resnet18 and mobilenetv2"),
    (["--swipe_args", "--seed 3"], "--swipe_args: --seed is set by the plan"),
    (["--search_args=--epochs=3"], "--search_args: --epochs is set by the plan or has its own"),
    (["--ratios", "0.12", "0.125"], "ratios 0.12 and 0.125 would share"),
    (["--budget", "macs"], "leave neuralscale_it1 out of --methods"),
    (["--seeds", "-1"], "seeds must be non-negative"),
    (["--swipe_args", "--lr '0.1"], "--swipe_args: No closing quotation"),
    (["--search_ratio", "nan"], "--search_ratio must be positive"),
    (["--dataset", "tinyimagenet"], "vgg is the authors' CIFAR-only VGG11"),
])
def test_a_plan_no_job_can_run_is_one_error_line(tmp_path, capsys, argv, message):
    code, _, err = in_process(capsys, "--out_dir", tmp_path / "o", *argv)
    assert_one_error(code, err)
    assert message in err
    assert not (tmp_path / "o").exists()


def test_help_says_it_all(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    code, text, _ = in_process(capsys, "--help")
    assert code == 0
    for words in ("--dry-run", "--status", "--executor {local,slurm}", "--workers", "--jobs_per_gpu",
                  "--slurm_partition", "--slurm_time", "--slurm_gpus", "--slurm_cpus", "--slurm_mem",
                  "--slurm_array_parallelism", "--slurm_args", "--requeue", "afterok", "CUDA_VISIBLE_DEVICES",
                  "logs/<job>.log", "Ctrl-C", "lock", "--prune_fname", "--morph_record", "table.jsonl"):
        assert words in text, words


# -- job state -----------------------------------------------------------------------------------------

def stand_in(tmp_path, name, code="", deps=(), stage="uniform", inputs=()):
    """A job that runs `python -c CODE` and then writes its output file <tmp>/<name>.out."""
    out = str(tmp_path / f"{name}.out")
    body = f"{code}\nopen({out!r}, 'w').write('ok')"
    return J.Job(name, stage, ["-c", body], list(deps), [out], list(inputs))


def test_a_job_is_finished_only_under_its_command_with_its_files_unchanged(tmp_path):
    out_dir = str(tmp_path / "o")
    a = stand_in(tmp_path, "a")
    b = stand_in(tmp_path, "b", deps=["a"], inputs=a.outputs)
    assert not J.finished(out_dir, a)
    for job in (a, b):
        open(job.outputs[0], "w").write("x")
        J.write_exit(out_dir, job, 0, 1.0, "local")
    assert J.finished(out_dir, a) and J.finished_before([a, b], out_dir) == {"a", "b"}
    other = J.Job("a", "uniform", ["-c", "pass"], [], a.outputs)   # same name, another command
    assert not J.finished(out_dir, other)
    time.sleep(0.01)
    os.utime(a.outputs[0])  # the input of b changed after b finished
    assert not J.finished(out_dir, b) and not J.finished(out_dir, a)
    J.write_exit(out_dir, a, 0, 1.0, "local")
    assert J.finished(out_dir, a) and not J.finished(out_dir, b)
    J.write_exit(out_dir, b, 2, 1.0, "slurm")
    assert J.state(out_dir, b) == "failed" and J.state(out_dir, a) == "done"
    time.sleep(0.01)
    with open(J.log_path(out_dir, b), "a") as f:  # a new attempt began after the failed one
        f.write(J.header(b, "local worker 0", "python"))
    assert J.state(out_dir, b, writer_alive=True) == "running" and J.state(out_dir, b) == "failed"
    assert J.state(out_dir, b, live="pending") == "pending"
    os.remove(a.outputs[0])
    assert J.state(out_dir, a) == "pending" and J.finished_before([a, b], out_dir) == set()


def test_status_counts_per_stage_and_shows_the_failed_logs_tail(tmp_path):
    out_dir = str(tmp_path / "o")
    jobs = [stand_in(tmp_path, n, stage=s) for n, s in (("s", "search"), ("u1", "uniform"), ("u2", "uniform"),
                                                        ("u3", "uniform"))]
    open(jobs[0].outputs[0], "w").write("x")
    J.write_exit(out_dir, jobs[0], 0, 1, "local")
    os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)
    with open(J.log_path(out_dir, jobs[1]), "w") as f:
        f.write("".join(f"line {i}\n" for i in range(30)) + "error: something went wrong\n")
    J.write_exit(out_dir, jobs[1], 2, 1, "slurm")
    lines = J.status_lines(J.stages(jobs), out_dir, live={"u2": "running"})
    assert lines[1].split() == ["search", "1", "0", "0", "0"]
    assert lines[2].split() == ["uniform", "0", "1", "1", "1"]
    assert lines[3] == f"failed: u1 (exit 2), log {J.log_path(out_dir, jobs[1])}"
    assert lines[-1] == "  | error: something went wrong" and len(lines) == 4 + J.TAIL_LINES


# -- the local executor --------------------------------------------------------------------------------

def test_workers_default_to_one_per_gpu_and_jobs_per_gpu():
    assert executors.worker_slots([]) == [None]
    assert executors.worker_slots([], workers=3) == [None, None, None]
    assert executors.worker_slots(["0", "1"]) == ["0", "1"]
    assert executors.worker_slots(["0", "1"], jobs_per_gpu=2) == ["0", "0", "1", "1"]
    assert executors.worker_slots(["2", "GPU-ab"], workers=3) == ["2", "GPU-ab", "2"]


def run_pool(jobs, out_dir, capsys, slots=(None, None)):
    rc = executors.run_local(jobs, executors.LocalConfig(out_dir=out_dir, python=sys.executable, slots=list(slots)))
    return rc, capsys.readouterr().out


def test_a_failed_job_stops_only_the_jobs_that_need_it(tmp_path, capsys):
    out_dir = str(tmp_path / "o")
    jobs = [stand_in(tmp_path, "bad", "print('about to fail'); raise SystemExit(3)", stage="search"),
            stand_in(tmp_path, "free", stage="uniform"),
            stand_in(tmp_path, "after_bad", deps=["bad"], stage="morphnet"),
            stand_in(tmp_path, "after_free", deps=["free"], stage="morphnet"),
            stand_in(tmp_path, "last", deps=["after_bad", "after_free"], stage="table")]
    rc, out = run_pool(jobs, out_dir, capsys)
    assert rc == 1
    assert [os.path.exists(j.outputs[0]) for j in jobs] == [False, True, False, True, False]
    assert "summary: 2 done, 0 skipped (finished before), 1 failed, 2 not run (they need a failed job)" in out
    assert f"failed: bad (exit 3), log {out_dir}/logs/bad.log" in out and "  | about to fail" in out
    assert "not run after_bad: it needs bad" in out and "not run last: it needs bad" in out
    # Progress: a timestamp and k/N on every line, an ETA from the finished jobs' durations.
    progress = [line for line in out.splitlines() if line.startswith("[")]
    assert all(re.match(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] \[\d/5\] ", line) for line in progress)
    assert any(re.search(r"\[\d/5\] done free in \d+ s; ETA \d+ s$", line) for line in progress)
    record = J.read_exit(out_dir, jobs[0])
    assert record["rc"] == 3 and record["command"] == jobs[0].fingerprint() and record["executor"] == "local"
    # The same command again runs the failed job and what waits for it, and nothing finished.
    jobs[0] = stand_in(tmp_path, "bad", stage="search")
    rc, out = run_pool(jobs, out_dir, capsys)
    assert rc == 0 and "skipped 2 jobs finished before" in out
    assert all(os.path.exists(j.outputs[0]) for j in jobs)
    with open(J.log_path(out_dir, jobs[1])) as f:
        assert f.read().count("== ") == 2  # one start and one exit line: "free" ran once


def test_each_worker_is_pinned_to_its_gpu_and_jobs_never_exceed_the_workers(tmp_path, capsys):
    out_dir = str(tmp_path / "o")
    code = ("import os, time; open(os.path.join({d!r}, 'gpu_' + str(os.getpid())), 'w')"
            ".write(os.environ.get('CUDA_VISIBLE_DEVICES', '') + ' ' + str(time.time())); time.sleep(0.3)")
    jobs = [stand_in(tmp_path, f"j{i}", code.format(d=str(tmp_path))) for i in range(6)]
    rc, out = run_pool(jobs, out_dir, capsys, slots=("3", "7"))
    assert rc == 0 and out.count(" on GPU 3") + out.count(" on GPU 7") == 6
    seen = [open(tmp_path / name).read().split() for name in os.listdir(tmp_path) if name.startswith("gpu_")]
    assert sorted({gpu for gpu, _ in seen}) == ["3", "7"] and len(seen) == 6
    with open(J.log_path(out_dir, jobs[0])) as f:
        assert re.search(r"\(local worker \d, CUDA_VISIBLE_DEVICES=[37]\)", f.readline())


DRIVER = """import sys
sys.path.insert(0, REPO)
from utils import executors, jobs as J
from utils.base import run_main
executors.GRACE_S = 0.5
code = "import time, sys; time.sleep(float(sys.argv[1])); open(sys.argv[2], 'w').write('ok')"
jobs = [J.Job("slow%d" % i, "uniform", ["-c", code, sys.argv[1], OUT + "/slow%d" % i], [], [OUT + "/slow%d" % i])
        for i in range(3)]
config = executors.LocalConfig(out_dir=OUT, python=sys.executable, slots=[None, None])
run_main(lambda: sys.exit(executors.run_local(jobs, config)))
"""


def test_ctrl_c_stops_the_workers_and_the_same_command_resumes(tmp_path):
    out = str(tmp_path)
    driver = tmp_path / "driver.py"
    driver.write_text(f"REPO, OUT = {str(REPO)!r}, {out!r}\n" + DRIVER)
    proc = subprocess.Popen([sys.executable, str(driver), "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = ""
    while "start slow1" not in line:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)  # the orchestrator alone, as `kill -INT` does
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - started < 15
    assert "interrupted: stopping 2 running job(s)" in stdout and "run the same command to resume" in stdout
    assert stderr.strip().splitlines()[-1] == "interrupted"
    assert not any(os.path.exists(tmp_path / f"slow{i}") for i in range(3))
    assert J.read_exit(out, J.Job("slow0", "", [], [], [])) is None  # an interrupted job is not "failed"
    done = subprocess.run([sys.executable, str(driver), "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "summary: 3 done" in done.stdout
    assert all(os.path.exists(tmp_path / f"slow{i}") for i in range(3))


def test_a_second_reproduce_on_the_same_folder_is_refused_naming_the_holder(tmp_path, capsys):
    out_dir = tmp_path / "o"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]); from utils import lock\n"
         "with lock.hold(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(60)",
         str(out_dir / reproduce.LOCK), str(REPO)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock.holder(str(out_dir / reproduce.LOCK)).startswith(f"PID {holder.pid} on ")
        code, _, err = in_process(capsys, "--out_dir", out_dir, "--dataset", "synthetic", "--device", "cpu")
        assert_one_error(code, err)
        assert f"output folder {out_dir} is in use by PID {holder.pid} on " in err
        assert os.listdir(out_dir) == [reproduce.LOCK]
    finally:
        holder.kill()
        holder.wait()
    assert lock.holder(str(out_dir / reproduce.LOCK)) is None


# -- SLURM, without a cluster ----------------------------------------------------------------------------

FAKE_SBATCH = """#!/bin/sh
# Records its arguments; answers job ids 101, 102, ... (fails on the job named in $FAIL_ON)
n=$(( $(cat "$0.count" 2>/dev/null || echo 100) + 1 )); echo $n > "$0.count"
echo "$@" >> "$0.calls"
case "$*" in *"$FAIL_ON"*) echo "sbatch: error: Invalid partition name specified" >&2; exit 1;; esac
echo "$n;cluster"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("squeue", "#!/bin/sh\nexit 0\n"),
                       ("scancel", '#!/bin/sh\necho "$@" >> "$0.calls"\n')):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAIL_ON", "no-such-job")
    return bin_dir


def slurm_protocol(out_dir):
    return plan.Protocol(model="vgg", dataset="CIFAR100", methods=plan.PAPER_METHODS, seeds=(0, 1),
                         ratios=(0.5, 1.0), out_dir=out_dir)


def test_slurm_submits_one_array_per_stage_chained_by_their_dependencies(tmp_path, fake_slurm):
    out_dir = str(tmp_path / "o")
    jobs = plan.build(slurm_protocol(out_dir))
    config = executors.SlurmConfig(out_dir=out_dir, python="/venv/python", cwd=str(tmp_path), partition="gpu",
                                   time="2-00:00:00", gpus=1, cpus=8, mem="32G", parallelism=3,
                                   extra=("--qos=high",))
    record = executors.submit_slurm(jobs, config)
    arrays = {a["stage"]: a for a in record["arrays"][:-1]}
    assert [a["stage"] for a in record["arrays"]] == list(PAPER_STAGES) + ["table"]
    ids = {stage: a["id"] for stage, a in arrays.items()}
    assert ids["search"] == "101" and arrays["search"]["jobs"] == ["vgg_10_eff_c100", "vgg_morph_c100"]
    expect = {"search": None, "pretrain": None, "uniform": None,
              "morphnet": "afterok:101_1", "neuralscale_it1": "afterok:101_0", "neuralscale_it15": "afterok:101_0",
              "finetune": f"aftercorr:{ids['pretrain']}",
              "table": "afterok:" + ":".join(ids[s] for s in PAPER_STAGES if s != "table")}
    assert {stage: a["dependency"] for stage, a in arrays.items()} == expect
    json_array = record["arrays"][-1]  # the JSON table after the table: one latency measurement at a time
    assert json_array["jobs"] == ["table_json"] and json_array["dependency"] == expect["table"] + ":" + ids["table"]
    calls = (fake_slurm / "sbatch.calls").read_text().splitlines()
    assert all(call.startswith("--parsable --kill-on-invalid-dep=yes") and "--qos=high" in call for call in calls)
    assert "--dependency=afterok:101_1 " in calls[3]
    script = open(os.path.join(out_dir, "slurm", "reproduce_morphnet.sbatch")).read()
    for option in ("--array=0-3%3", "--requeue", "--partition=gpu", "--time=2-00:00:00", "--cpus-per-task=8",
                   "--mem=32G", "--gres=gpu:1", f"--chdir={tmp_path}", "--job-name=reproduce_morphnet"):
        assert f"#SBATCH {option}\n" in script, option
    assert script.count(" run vgg_pruned_c100_") == 4 and "PYTHON=/venv/python" in script
    assert json.load(open(executors.record_path(out_dir)))["arrays"] == record["arrays"]


def test_slurm_leaves_out_finished_jobs_and_splits_a_stage_by_what_it_waits_for(tmp_path, fake_slurm):
    out_dir = str(tmp_path / "o")
    jobs = plan.build(slurm_protocol(out_dir))
    by_name = {job.name: job for job in jobs}
    for name in ("vgg_standard_c100_0", "vgg_uni_c100_0_50"):  # finished before
        for path in by_name[name].outputs:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "w").write("x")
        J.write_exit(out_dir, by_name[name], 0, 1, "local")
    record = executors.submit_slurm(jobs, executors.SlurmConfig(out_dir=out_dir, python="p", cwd=str(tmp_path)))
    assert record["skipped"] == 2
    arrays = [(a["stage"], a["jobs"], a["dependency"]) for a in record["arrays"]]
    pretrain = next(a for a in record["arrays"] if a["stage"] == "pretrain")
    assert pretrain["jobs"] == ["vgg_standard_c100_1"]
    finetune = [a for a in arrays if a[0] == "finetune"]  # one needs nothing, one its pre-training
    assert sorted((jobs_, dep) for _, jobs_, dep in finetune) == [
        (["vgg_norm_c100_0_75"], None), (["vgg_norm_c100_1_75"], f"afterok:{pretrain['id']}")]
    assert ("uniform", ["vgg_uni_c100_0_100", "vgg_uni_c100_1_50", "vgg_uni_c100_1_100"], None) in arrays


def test_a_failed_sbatch_cancels_what_went_in_and_is_one_error(tmp_path, fake_slurm, monkeypatch):
    out_dir = str(tmp_path / "o")
    monkeypatch.setenv("FAIL_ON", "reproduce_uniform")
    with pytest.raises(reproduce.UserError, match="Invalid partition name"):
        executors.submit_slurm(plan.build(slurm_protocol(out_dir)),
                               executors.SlurmConfig(out_dir=out_dir, python="p", cwd=str(tmp_path)))
    assert (fake_slurm / "scancel.calls").read_text().split() == ["101", "102"]
    assert not os.path.exists(executors.record_path(out_dir))


def test_the_array_script_runs_its_task_and_leaves_the_log_and_exit_record(tmp_path):
    out_dir = "o"
    ok = stand_in(tmp_path, "ok", "print('trained')")
    bad = stand_in(tmp_path, "bad", "import sys; print('broken', file=sys.stderr); sys.exit(2)")
    table = J.Job("table", "table", ["-c", "print('| a |')"], [], [str(tmp_path / "o" / "table.md")],
                     stdout=str(tmp_path / "o" / "table.md"))
    config = executors.SlurmConfig(out_dir=out_dir, python=sys.executable, cwd=str(tmp_path), gpus=0)
    script = tmp_path / "a.sbatch"
    script.write_text(executors.sbatch_script("x", [ok, bad, table], config))
    os.makedirs(tmp_path / "o" / "logs")
    for task, rc in ((0, 0), (1, 2), (2, 0)):
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_JOB_ID": "9"}
        assert subprocess.run(["bash", str(script)], cwd=tmp_path, env=env).returncode == rc
    out = str(tmp_path / out_dir)
    assert J.finished(out, ok) and J.state(out, bad) == "failed" and J.finished(out, table)
    assert open(tmp_path / "o" / "table.md").read() == "| a |\n"
    log = open(J.log_path(out, bad)).read().splitlines()
    assert re.match(r"== .* start bad on .* \(SLURM job 9_1\)$", log[0]) and log[-2] == "broken"
    assert re.match(r"== .* exit 2 after \d+ s$", log[-1])
    assert "#SBATCH --gres" not in script.read_text()
    assert stat.S_ISREG(os.stat(J.exit_path(out, ok)).st_mode)


def test_status_reads_the_queue_of_the_last_submission_and_prints_the_finished_table(tmp_path, fake_slurm, capsys):
    out_dir = str(tmp_path / "o")
    jobs = [stand_in(tmp_path, "s0"), stand_in(tmp_path, "s1"), stand_in(tmp_path, "u0")]
    table = J.Job("table", "table", ["-c", ""], [], [str(tmp_path / "table.md")], stdout=str(tmp_path / "table.md"))
    os.makedirs(os.path.join(out_dir, "slurm"))
    with open(executors.record_path(out_dir), "w") as f:
        json.dump({"submitted": "then", "arrays": [{"id": "101", "stage": "search", "jobs": ["s0", "s1"]},
                                                   {"id": "102", "stage": "uniform", "jobs": ["u0"]}]}, f)
    (fake_slurm / "squeue").write_text('#!/bin/sh\necho "$@" > "$0.calls"\nprintf "101_1|RUNNING\\n102|PENDING\\n"\n')
    assert executors.queue_states(out_dir) == {"s1": "running", "u0": "pending"}
    assert (fake_slurm / "squeue.calls").read_text().split() == ["-h", "-r", "-j", "101,102", "-o", "%i|%T"]
    with pytest.raises(reproduce.UserError, match="2 jobs of the last submission from .* are still queued"):
        executors.submit_slurm(jobs, executors.SlurmConfig(out_dir=out_dir, python="p", cwd=str(tmp_path)))
    open(table.stdout, "w").write("| the table |\n")
    J.write_exit(out_dir, table, 0, 1, "slurm")
    reproduce.status(jobs + [table], out_dir)
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["uniform", "0", "1", "0", "2"] and out[2].split() == ["table", "1", "0", "0", "0"]
    assert out[3] == "SLURM: submitted then, arrays 101 (search), 102 (uniform)" and out[-1] == "| the table |"


def test_local_workers_follow_the_visible_gpus_unless_a_device_is_named(monkeypatch):
    import utils.accel
    monkeypatch.setattr(utils.accel, "visible_devices", lambda: ["0", "1"])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    def slots(*argv):
        return reproduce.local_config(reproduce.parse_args(list(argv))).slots
    assert slots() == ["0", "1"] and slots("--device", "cuda") == ["0", "1"]
    assert slots("--jobs_per_gpu", "3") == ["0", "0", "0", "1", "1", "1"]
    assert slots("--device", "cpu") == [None] and slots("--device", "cuda:1", "--workers", "2") == [None, None]
    config = reproduce.local_config(reproduce.parse_args(["--workers", "2", "--device", "cpu"]))
    assert config.env == {"OMP_NUM_THREADS": str(max(1, os.cpu_count() // 2))}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert executors.thread_env(2) == {}
