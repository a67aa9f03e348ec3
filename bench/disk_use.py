"""Disk use: what one run, and one table's protocol, leave on disk under each --keep_checkpoints.

For every network at every ratio of the protocol this measures the bytes of each file a training run
writes: the checkpoint and the best-epoch weights as torch.save serialises utils.run.checkpoint_state
and best_state (weights, SGD momentum, the curves of a whole run), the result pickle of
utils.run.make_result and the per-epoch CSV, with the curves of a full run (300 epochs; 150 on
TinyImageNet). Uniform widths stand for every method at a ratio: NeuralScale and MorphNet meet the same
parameter budget, so their files differ by the difference in parameters (about 1 %).

The protocol of one model and data set, as the README runs it: 4 methods trained from scratch
(uniform, MorphNet, NeuralScale iterations 1 and 15) x 5 seeds x every ratio (8 on CIFAR-like data, 4 on
TinyImageNet), plus 5 train_norm.py and 5 fine_tune.py runs of the default network (with gates). The
searches' records (prune_record/) are a few hundred kB and are left out.

    python bench/disk_use.py                          # every model and data set of the paper
    python bench/disk_use.py --model vgg --dataset CIFAR100
"""
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/disk_use.py`

from model import MODELS, architecture, build_model, get_spec  # noqa: E402
from utils import io, run, swipe  # noqa: E402
from utils.base import run_main  # noqa: E402
from utils.cli import make_parser  # noqa: E402
from utils.data import NUM_CLASSES  # noqa: E402
from utils.progress import EpochCSV  # noqa: E402
from utils.train import RECIPES, make_optimizer  # noqa: E402

PAPER = {"vgg": ("CIFAR10", "CIFAR100"), "resnet18": ("CIFAR10", "CIFAR100", "tinyimagenet"),
         "mobilenetv2": ("CIFAR10", "CIFAR100", "tinyimagenet")}
METHODS, SEEDS = 4, 5  # swipes per seed (uniform, MorphNet, NeuralScale it. 1 and 15); seeds per cell


class ByteCounter:
    """A file-like sink that only counts what is written to it."""

    def __init__(self):
        self.size = 0

    def write(self, data):
        self.size += len(data)
        return len(data)

    def flush(self):
        pass


def torch_size(obj):
    counter = ByteCounter()
    torch.save(obj, counter)
    return counter.size


def run_files(model_name, dataset, ratio, epochs, gates=False):
    """{file kind: bytes} of one finished run of `epochs` epochs at `ratio` (uniform widths)."""
    widths = get_spec(model_name).prepare_filters(ratio, num_classes=NUM_CLASSES[dataset])
    net = build_model(model_name, widths, NUM_CLASSES[dataset], gates=gates)
    optimizer = make_optimizer(net, 0.1)
    for p in net.parameters():  # one step, so that SGD holds its momentum buffers as after any epoch
        p.grad = torch.zeros_like(p)
    optimizer.step()
    curves = {k: [0.1 * (e + 1) / 3 for e in range(epochs)] for k in run.CURVE_KEYS}
    settings = run.RunSettings(model=model_name, dataset=dataset, seed=0)  # the scratch recipe's defaults
    fingerprint = run.fingerprint_of(settings, method="uniform", ratio=ratio, widths=widths, schedule="cifar")
    arch, best = architecture(net), (1 / 3, epochs)
    sizes = {"checkpoint": torch_size(run.checkpoint_state(net, optimizer, epochs, curves, best, arch=arch,
                                                           fingerprint=fingerprint)),
             "best_model": torch_size(run.best_state(net, epochs, best[0], arch=arch, fingerprint=fingerprint))}
    result = run.make_result(ratio=ratio, curves=curves, net=net, widths=widths, latency_ms=None, settings=settings,
                             method="uniform", epochs=epochs, extra={"settings": {**fingerprint, "epochs": epochs}})
    with tempfile.TemporaryDirectory() as tmp:
        io.save_result(os.path.join(tmp, "r.pk"), result)
        EpochCSV(os.path.join(tmp, "r.csv"), run.EPOCH_COLUMNS).restart(run.epoch_rows(curves))
        sizes["result_and_csv"] = sum(os.path.getsize(os.path.join(tmp, f)) for f in ("r.pk", "r.csv"))
    sizes["params"] = sum(p.numel() for p in net.parameters())
    return sizes


def left_on_disk(files, keep):
    """Bytes a finished run leaves under --keep_checkpoints `keep`."""
    kept = {"all": ("checkpoint", "best_model"), "best": ("best_model",), "none": ()}[keep]
    return files["result_and_csv"] + sum(files[k] for k in kept)


def gb(n):
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def measure(model_name, dataset, ratios):
    """Print one line per ratio, then one swipe's and the protocol's totals; returns the protocol's
    {keep: bytes}."""
    recipe = swipe.scratch_recipe(dataset)
    ratios = ratios or (swipe.TINY_RATIOS if dataset == "tinyimagenet" else swipe.CIFAR_RATIOS)
    per_ratio = [run_files(model_name, dataset, r, recipe["epochs"]) for r in ratios]
    tune_epochs = RECIPES["fine_tune"]["tiny_epochs" if dataset == "tinyimagenet" else "epochs"]
    norm = run_files(model_name, dataset, 1.0, recipe["epochs"], gates=True)
    tune = run_files(model_name, dataset, 1.0, tune_epochs, gates=True)
    for ratio, files in zip(ratios, per_ratio):
        print(f"{model_name:<12} {dataset:<13} ratio {ratio:<5g} {files['params']:>11,} params  checkpoint "
              f"{gb(files['checkpoint']):>9}  best_model {gb(files['best_model']):>9}  result+csv "
              f"{files['result_and_csv'] / 1e3:.0f} kB")
    totals = {}
    for keep in run.KEEP_CHECKPOINTS:
        one = sum(left_on_disk(files, keep) for files in per_ratio)
        totals[keep] = SEEDS * (METHODS * one + left_on_disk(norm, keep) + left_on_disk(tune, keep))
        print(f"{model_name:<12} {dataset:<13} --keep_checkpoints {keep:<4}: one swipe ({len(ratios)} ratios, "
              f"one seed) {gb(one):>9}; the protocol ({METHODS} methods x {SEEDS} seeds x {len(ratios)} ratios, "
              f"{SEEDS} train_norm + {SEEDS} fine_tune) {gb(totals[keep]):>9}")
    return totals


def main(argv=None):
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", choices=tuple(MODELS), default=list(PAPER), help="networks")
    parser.add_argument("--dataset", nargs="+", choices=sorted(NUM_CLASSES), default=None,
                        help="data sets (default: each network's in the paper)")
    parser.add_argument("--ratios", type=float, nargs="+", default=None,
                        help="width ratios (default: the protocol's, 0.25 .. 2 or 0.25 .. 1 on tinyimagenet)")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    for model_name in args.model:
        for dataset in args.dataset or PAPER[model_name]:
            if (model_name, dataset) != ("vgg", "tinyimagenet"):
                measure(model_name, dataset, args.ratios)


if __name__ == "__main__":
    run_main(main)
