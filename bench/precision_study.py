"""What --precision bf16 changes against the authors' fp32, measured on the CPU (bf16 autocast runs there).

(a) Taylor-FO: one search iteration of VGG11 on Fashion-MNIST, trained and pruned in fp32. At every
    minibatch of the pruning phase the same batch also goes through a copy of the network under bf16
    autocast (identical weights, no optimizer step), and its gate gradients feed a second criterion
    accumulator. At each prune step the pruner's rule picks a set from each accumulator, starting from
    the same mask; the script reports how much the two sets overlap. For scale, a third accumulator
    reads the same batches horizontally flipped, in fp32 (a draw the training augmentation could have
    made): how much the sets move under noise the method already lives with.
(b) Accuracy: ratio_swipe.py itself (uniform VGG11), the same seeds in fp32 and bf16 (same initial
    weights and batches), best-epoch test accuracy (the paper's statistic) per seed and paired.

    python bench/precision_study.py --out precision_study            # the README's numbers
    python bench/precision_study.py --quick                          # a smoke run (seconds)

Prints both summaries and writes <out>/precision_study.json. Data: real Fashion-MNIST (--data_dir, or
Debian's dataset-fashion-mnist); nothing is downloaded.
"""
import copy
import json
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ratio_swipe  # noqa: E402
from model import build_model, gates_of, get_spec  # noqa: E402
from utils import data, io, train  # noqa: E402
from utils.accel import autocast  # noqa: E402
from utils.base import seed_value  # noqa: E402
from utils.cli import make_parser  # noqa: E402
from utils.prune import TaylorFOPruner  # noqa: E402

CPU = torch.device("cpu")


def shadow_prune_set(pruner, pre, accumulator, window):
    """The units the pruner's rule would zero from the state `pre` (taken before the step) with another
    criterion accumulator: a throw-away copy of the pruner runs its own _prune on cloned gates."""
    shadow = copy.copy(pruner)
    shadow.params = [g.clone() for g in pre["gates"]]
    shadow.mask, shadow.pruned = pre["mask"].clone(), pre["pruned"]
    shadow.begin_prune, shadow.steps_done = list(pre["begin_prune"]), pre["steps_done"]
    shadow.accumulator, shadow.window, shadow.log = accumulator.clone(), window, None
    shadow._prune()
    return pre["mask"].bool() & ~shadow.mask.bool()


SHADOWS = ("bf16", "fp32_flipped")


def prune_set_overlap(args):
    """(a): per prune step, |fp32 set & other set| / |fp32 set| from identical weights, where the other
    criterion comes from the same batch in bf16, or from the same batch flipped in fp32."""
    widths = get_spec("vgg").prepare_filters(args.search_ratio, num_classes=10)
    loader, _ = data.get_loaders("FashionMNIST", args.data_dir, recipe="search", batch_size=args.search_batch,
                                 device=CPU, subset=args.search_subset, seed=args.search_seed,
                                 download="never", need_test=False)
    train.set_seed(args.search_seed)
    model = build_model("vgg", widths, 10, gates=True)
    shadow_model = copy.deepcopy(model)
    optimizer = train.make_optimizer(model, 0.1)
    pruner = TaylorFOPruner(gates_of(model), prune_every=args.prune_every, prune_per_step=args.prune_per_step)
    shadow_gates = gates_of(shadow_model)
    accumulators, window = {k: torch.zeros(pruner.total) for k in SHADOWS}, 0
    overlaps, sizes = {k: [] for k in SHADOWS}, []
    for epoch in range(1, args.search_epochs + 1):
        train.set_lr(optimizer, train.lr_for_epoch("search", epoch, 0.1, args.warmup))
        for x, y in loader.epoch(epoch):
            if epoch > args.warmup:  # the other criteria of this batch, on the current weights
                accumulate_shadows(model, shadow_model, shadow_gates, accumulators, x, y)
                window += 1
            model.train()
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            if epoch <= args.warmup:
                continue
            pre = {"gates": [p.detach().clone() for p in pruner.params], "mask": pruner.mask.clone(),
                   "pruned": pruner.pruned, "begin_prune": list(pruner.begin_prune),
                   "steps_done": pruner.steps_done}
            status = pruner.step()
            if pruner.steps_done > pre["steps_done"]:  # a prune step (the last-unit rule included)
                fp32_set = pre["mask"].bool() & ~pruner.mask.bool()
                if fp32_set.any():
                    sizes.append(int(fp32_set.sum()))
                    for kind in SHADOWS:
                        other = shadow_prune_set(pruner, pre, accumulators[kind], window)
                        overlaps[kind].append(int((fp32_set & other).sum()) / int(fp32_set.sum()))
                for acc in accumulators.values():
                    acc.zero_()
                window = 0
            if status == "done":
                break
        if pruner.finished:
            break
    return overlap_summary(args, widths, pruner, sizes, overlaps)


def accumulate_shadows(model, shadow_model, shadow_gates, accumulators, x, y):
    """Add this batch's Taylor-FO criteria, from the current weights, in bf16 and flipped in fp32."""
    for kind in SHADOWS:
        shadow_model.load_state_dict(model.state_dict())
        shadow_model.train()
        shadow_model.zero_grad(set_to_none=True)
        with autocast(CPU, "bf16" if kind == "bf16" else "fp32"):
            logits = shadow_model(x if kind == "bf16" else x.flip(3))
        F.cross_entropy(logits.float(), y).backward()
        accumulators[kind] += torch.cat([(g.weight.detach() * g.weight.grad) for g in shadow_gates]).square()


def overlap_summary(args, widths, pruner, sizes, overlaps):
    out = {"settings": {"model": "vgg", "search_ratio": args.search_ratio, "widths": [int(w) for w in widths],
                        "units": pruner.total, "subset": args.search_subset, "batch": args.search_batch,
                        "warmup": args.warmup, "prune_every": args.prune_every,
                        "prune_per_step": args.prune_per_step, "seed": args.search_seed},
           "steps": len(sizes), "set_sizes": sizes, "finished": pruner.finished}
    for kind in SHADOWS:
        o = np.array(overlaps[kind])
        out[kind] = {"mean_overlap": float(o.mean()), "min_overlap": float(o.min()),
                     "identical_steps": int((o == 1).sum()), "overlaps": o.tolist()}
    return out


def accuracy_over_seeds(args, folder):
    """(b): ratio_swipe.py --uniform at one ratio, every seed in fp32 and in bf16."""
    best = {}
    for precision in ("fp32", "bf16"):
        for seed in args.seeds:
            name = f"{precision}_{seed}"
            ratio_swipe.main(["--model", "vgg", "--dataset", "FashionMNIST", "--data_dir", args.data_dir,
                              "--download", "never", "--device", "cpu", "--no_latency", "--uniform",
                              "--ratios", str(args.ratio), "--subset", str(args.subset), "--test_subset",
                              str(args.test_subset), "--batch-size", str(args.batch), "--epochs",
                              str(args.epochs), "--scale_schedule", "--seed", str(seed), "--precision",
                              precision, "--save", name, "--plots_dir", os.path.join(folder, "saved_plots"),
                              "--models_dir", os.path.join(folder, "saved_models")])
            result = io.load_result(io.result_path(os.path.join(folder, "saved_plots"), "vgg", name, args.ratio))
            best[precision, seed] = (max(result["test_acc"]), max(result["test_acc_dataset"]))
    out = {"settings": {"model": "vgg", "ratio": args.ratio, "subset": args.subset, "test_subset": args.test_subset,
                        "batch": args.batch, "epochs": args.epochs, "seeds": list(args.seeds)}}
    for i, stat in enumerate(("best_test_acc", "best_test_acc_dataset")):
        a = np.array([best["fp32", s][i] for s in args.seeds])
        b = np.array([best["bf16", s][i] for s in args.seeds])
        out[stat] = {"fp32": a.tolist(), "bf16": b.tolist(), "fp32_mean": a.mean(), "fp32_std": a.std(),
                     "bf16_mean": b.mean(), "bf16_std": b.std(), "diff_mean": (b - a).mean(),
                     "diff_std": (b - a).std()}
    return out


def parse_args():
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="./data")
    parser.add_argument("--out", default="precision_study", help="folder for the runs and the JSON summary")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny settings, two seeds")
    parser.add_argument("--search_ratio", type=float, default=0.25)
    parser.add_argument("--search_subset", type=int, default=4096)
    parser.add_argument("--search_batch", type=int, default=64)
    parser.add_argument("--search_epochs", type=int, default=30, help="at most; the iteration ends with pruning")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--prune_every", type=int, default=4)
    parser.add_argument("--prune_per_step", type=int, default=10)
    parser.add_argument("--search_seed", type=seed_value, default=0)
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--subset", type=int, default=4096)
    parser.add_argument("--test_subset", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=seed_value, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--skip_accuracy", action="store_true", help="measure (a) only")
    args = parser.parse_args()
    if args.quick:
        args.search_subset, args.warmup, args.prune_per_step = 256, 1, 100
        args.subset, args.test_subset, args.epochs, args.seeds, args.ratio = 256, 128, 1, [0, 1], 0.0625
    return args


def main():
    args = parse_args()
    if data._find_fashion_mnist(args.data_dir) is None:
        sys.exit(f"error: no Fashion-MNIST under {args.data_dir} or {data.FASHION_MNIST_SYSTEM_DIR}")
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    overlap = prune_set_overlap(args)
    t1 = time.perf_counter()
    accuracy = accuracy_over_seeds(args, args.out) if not args.skip_accuracy else None
    t2 = time.perf_counter()
    summary = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                          f"torch {torch.__version__}, {torch.get_num_threads()} threads",
               "prune_sets": overlap, "accuracy": accuracy,
               "seconds": {"prune_sets": round(t1 - t0, 1), "accuracy": round(t2 - t1, 1)}}
    with open(os.path.join(args.out, "precision_study.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    report(summary, t1 - t0, t2 - t1)


def report(summary, overlap_seconds, accuracy_seconds):
    overlap, accuracy = summary["prune_sets"], summary["accuracy"]
    print(f"machine: {summary['machine']}")
    s = overlap["settings"]
    print(f"(a) Taylor-FO prune sets from identical weights (VGG11 x {s['search_ratio']}, {s['units']} units, "
          f"{s['subset']} images, batch {s['batch']}, warm-up {s['warmup']}, {s['prune_per_step']} units every "
          f"{s['prune_every']} minibatches, {overlap['steps']} steps)  [{overlap_seconds:.0f} s]")
    for kind, what in (("bf16", "fp32 vs bf16, same batches"), ("fp32_flipped", "fp32 vs fp32, batches flipped")):
        o = overlap[kind]
        print(f"    {what}: mean overlap {o['mean_overlap']:.3f}, min {o['min_overlap']:.3f}, "
              f"identical sets {o['identical_steps']}/{overlap['steps']}")
    if accuracy is None:
        return
    s, acc = accuracy["settings"], accuracy["best_test_acc"]
    print(f"(b) best-epoch test accuracy, VGG11 x {s['ratio']}, {s['subset']} images, {s['epochs']} epochs, "
          f"seeds {s['seeds']}: fp32 {acc['fp32_mean']:.2f} ± {acc['fp32_std']:.2f}, "
          f"bf16 {acc['bf16_mean']:.2f} ± {acc['bf16_std']:.2f}, paired bf16 - fp32 "
          f"{acc['diff_mean']:+.2f} ± {acc['diff_std']:.2f}  [{accuracy_seconds:.0f} s]")
    print(f"    per seed fp32 {[round(v, 2) for v in acc['fp32']]}, bf16 {[round(v, 2) for v in acc['bf16']]}")


if __name__ == "__main__":
    main()
