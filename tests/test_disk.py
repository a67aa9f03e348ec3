"""bench/disk_use.py measures what runs leave on disk: its per-file sizes are those of a real run's
files, and its totals follow the --keep_checkpoints rules."""
import os

import pytest

from conftest import load_bench, run_script

pytestmark = pytest.mark.slow  # a script runs end to end


def test_the_measured_sizes_are_a_real_runs(tmp_path):
    disk_use = load_bench("disk_use")
    run_script("ratio_swipe.py", "--model", "vgg", "--dataset", "synthetic", "--device", "cpu", "--no_latency",
               "--subset", "16", "--test_subset", "8", "--batch-size", "8", "--uniform", "--ratios", "0.125",
               "--epochs", "3", "--seed", "0", "--keep_checkpoints", "all", "--save", "run",
               "--plots_dir", tmp_path / "plots", "--models_dir", tmp_path / "models")
    measured = disk_use.run_files("vgg", "synthetic", 0.125, epochs=3)
    real = {"checkpoint": os.path.getsize(tmp_path / "models/vgg/run_12_checkpoint.pt"),
            "best_model": os.path.getsize(tmp_path / "models/vgg/run_12_best_model.pt"),
            "result_and_csv": sum(os.path.getsize(tmp_path / "plots/vgg" / f) for f in ("run_12.pk", "run_12.csv"))}
    assert measured["checkpoint"] > 1_000_000  # weights and momentum of 145,146 parameters: 1.16 MB
    for kind, size in real.items():
        assert abs(measured[kind] - size) <= 0.01 * size + 512, (kind, measured[kind], size)
    files = {"checkpoint": 300, "best_model": 100, "result_and_csv": 7}
    assert [disk_use.left_on_disk(files, keep) for keep in ("all", "best", "none")] == [407, 107, 7]
