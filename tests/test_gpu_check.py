"""bench/gpu_check.py on the CPU: --help, checks (a)-(c) on small settings, its verdicts and exit status."""
import contextlib
import re

import pytest

from conftest import assert_one_line_error, load_bench, run_script
from utils.base import UserError

SMALL = ("--device", "cpu", "--threads", "1", "--ratio", "0.125", "--images", "32", "--batch-size", "16",
         "--minibatches", "6", "--steps", "1", "--reps", "1", "--descent-steps", "1", "--descent-batch-size", "32")


def test_help_works_without_a_gpu():
    proc = run_script("bench/gpu_check.py", "--help", timeout=60)
    assert "Run this first on a new GPU" in proc.stdout and "--checks" in proc.stdout


@pytest.mark.slow  # about 30 s on one thread; the timeout holds the README's 2-minute promise for (a)-(c)
def test_all_checks_run_on_the_cpu_on_small_settings():
    proc = run_script("bench/gpu_check.py", *SMALL, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("gpu_check on cpu (no GPU)")
    assert [line[:8] for line in lines[1:6]] == ["(a) PASS", "(b) PASS", "(c) PASS", "(d) INFO", "(e) INFO"]
    assert lines[-1].startswith("gpu_check: all passed") and len(lines) == 7
    for name in ("vgg", "resnet18", "mobilenetv2"):
        assert re.search(rf"{name} fp32 loss \d+\.\d+ \(\d+ img/s\), bf16 loss \d+\.\d+", lines[1]), name
        assert re.search(rf"{name} loss \d\.\d{{3}} -> \d\.\d{{3}}, largest gap 0\.0[0-4]\d\d", lines[2]), name
        assert re.search(rf"{name} (\d+)/10 of \d+ units \(need 4\)", lines[3]), name
        assert re.search(rf"{name} \d+\.\d\dx \(ours \d+ vs \d+ img/s; target \d+x", lines[4]), name
    assert "over 6 minibatches" in lines[2] and "after 6 minibatches" in lines[3]
    # at least 6 of 10 units in common (bench/overlap_sweep.py: 5 to 10 over 200 seeds)
    assert all(int(m) >= 6 for m in re.findall(r"(\d+)/10 of", lines[3]))
    assert re.search(r"EXTRAPOLATED from 1-minibatch windows: ours \d+ s, authors' pipeline \d+ s", lines[5])


def test_a_failing_check_fails_the_run(monkeypatch, capsys):
    """A check that finds a problem, or crashes, prints FAIL and makes the exit status 1; (d) and (e)
    only report."""
    gpu_check = load_bench("gpu_check")

    def broken(args, device):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore detail")

    monkeypatch.setitem(gpu_check.CHECKS, "b", broken)
    monkeypatch.setitem(gpu_check.CHECKS, "c", lambda args, device: (False, "overlap 2/10"))
    monkeypatch.setitem(gpu_check.CHECKS, "e", broken)
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--device", "cpu", "--checks", "bce"])
    assert exit_info.value.code == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].startswith("(b) FAIL RuntimeError: CUDA error: an illegal memory access was encountered [")
    assert lines[2].startswith("(c) FAIL overlap 2/10 [")
    assert lines[3].startswith("(e) FAIL RuntimeError")
    assert lines[-1].startswith("gpu_check: FAILED b, c, e")


def test_b_fails_when_bf16_does_not_run(monkeypatch, capsys):
    gpu_check = load_bench("gpu_check")
    monkeypatch.setattr(gpu_check.accel, "autocast", lambda device, precision: contextlib.nullcontext())
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--checks", "b", "--models", "vgg", "--ratio", "0.125",
                        "--batch-size", "8", "--minibatches", "2"])
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith("(b) FAIL") and "largest gap 0.0000 (identical: bf16 did not run)" in line


def test_report_checks_do_not_set_the_exit_status(monkeypatch, capsys):
    gpu_check = load_bench("gpu_check")
    monkeypatch.setitem(gpu_check.CHECKS, "d", lambda args, device: (None, "speedup 3.00x"))
    monkeypatch.setitem(gpu_check.CHECKS, "e", lambda args, device: (_ for _ in ()).throw(ValueError("x")))
    gpu_check.main(["--device", "cpu", "--checks", "de"])  # returns: no SystemExit
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].startswith("(d) INFO speedup 3.00x") and lines[2].startswith("(e) FAIL ValueError: x")


def test_bad_argument_is_a_one_line_error():
    assert_one_line_error(run_script("bench/gpu_check.py", "--checks", "abx", check=False, timeout=60))


@pytest.mark.parametrize("args", [["--checks", "abx"], ["--checks", ""], ["--minibatches", "1"], ["--images", "0"],
                                  ["--ratio", "0"], ["--images", "50001"], ["--device", "cuda:7x"]])
def test_bad_arguments_are_refused_before_any_work(args, capsys):
    with pytest.raises(UserError):
        load_bench("gpu_check").main(["--device", "cpu", *args])
    assert capsys.readouterr().out == ""
