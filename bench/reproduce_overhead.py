"""What reproduce.py adds per job: on the tiny protocol (synthetic data, VGG11, a 2-iteration search, 2
ratios, 2 seeds, 1 epoch, the four methods plus Li et al.: 24 jobs of the real scripts), the wall time
of `reproduce.py --workers 1` minus the jobs' own times (their exit records), divided by the number of
jobs. The claim: under 1 s per job (exit status 1 otherwise).

For comparison it also runs --dry-run's script by hand in another folder (the same 24 commands one after
another, no orchestrator): reproduce.py's wall time minus that one, per job, is the same quantity
measured another way (noisier: two runs of the jobs). And it runs `bench/train_throughput.py --device cpu
--quick` first, for the machine's img/s, the figure every timing in this project names.

    python bench/reproduce_overhead.py            # about 3 min on a quiet 2-core CPU
The last line is always `overhead: X.XX s per job (...)`.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils.base import log, run_main  # noqa: E402
from utils.cli import make_parser  # noqa: E402

# The tiny protocol (tests/test_reproduce_e2e.py runs the same one).
TINY = ["--dataset", "synthetic", "--device", "cpu", "--seeds", "0", "1", "--ratios", "0.25", "0.75",
        "--epochs", "1", "--finetune_epochs", "1", "--subset", "64", "--test_subset", "64", "--batch-size", "32",
        "--iterations", "2", "--warmup", "1", "--search_batch_size", "32", "--prune_every", "1",
        "--prune_per_step", "50", "--search_ratio", "0.25", "--no_latency", "--out_dir", "runs"]
LIMIT_S = 1.0
ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def timed(args, cwd, env=ENV):
    """(wall seconds, CompletedProcess) of one command; a failure stops the benchmark."""
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, **env})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, args[:3]))} ... exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return wall, proc


def bench_img_s():
    # As the project's other figures were measured: the machine's default threads.
    _, proc = timed([sys.executable, str(REPO / "bench" / "train_throughput.py"), "--device", "cpu", "--quick"], REPO,
                    env={})
    found = re.search(r"ours (\d+) img/s", proc.stdout + proc.stderr)
    return int(found.group(1)) if found else None


def jobs_own_seconds(folder):
    logs = Path(folder) / "runs" / "logs"
    records = [json.loads(p.read_text()) for p in logs.glob("*.exit")]
    assert all(r["rc"] == 0 for r in records)
    return sum(r["seconds"] for r in records), len(records)


def main():
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--skip_bench", action="store_true", help="do not run bench/train_throughput.py")
    parser.add_argument("--skip_by_hand", action="store_true", help="do not run the dry-run script by hand")
    args = parser.parse_args()
    img_s = None if args.skip_bench else bench_img_s()
    with tempfile.TemporaryDirectory() as orchestrated, tempfile.TemporaryDirectory() as by_hand:
        wall, _ = timed([sys.executable, str(REPO / "reproduce.py"), *TINY, "--workers", "1"], orchestrated)
        own, count = jobs_own_seconds(orchestrated)
        log(f"reproduce.py --workers 1: {count} jobs, wall {wall:.1f} s, the jobs' own {own:.1f} s")
        hand = None
        if not args.skip_by_hand:
            _, plan = timed([sys.executable, str(REPO / "reproduce.py"), *TINY, "--dry-run"], by_hand)
            Path(by_hand, "plan.sh").write_text(plan.stdout)
            hand, _ = timed(["bash", "plan.sh"], by_hand, env={**ENV, "PYTHON": sys.executable})
            log(f"the dry-run script by hand: wall {hand:.1f} s")
    overhead = (wall - own) / count
    log(f"load average {os.getloadavg()[0]:.1f}; bench/train_throughput.py --device cpu --quick: "
        f"{img_s if img_s is not None else '(skipped)'} img/s")
    log(f"overhead: {overhead:.2f} s per job (wall {wall:.1f} s - jobs' own {own:.1f} s, over {count} jobs, "
        "one worker)" + ("" if hand is None else f"; against the script by hand: "
                                                                 f"{(wall - hand) / count:.2f} s per job")
        + f"; limit {LIMIT_S:g} s")
    if overhead >= LIMIT_S:
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
