"""List the width configurations a search record gives, per descent iteration and ratio.

    python list_architecture.py --model vgg --dataset CIFAR10 --prune_fname vgg_10_eff_c10
    python list_architecture.py --model vgg --dataset CIFAR10 --prune_fname run.pk --json
    python list_architecture.py --model mobilenetv2 --dataset CIFAR100 --prune_fname NAME --plot
    python list_architecture.py --model vgg --dataset CIFAR10 --target_params 1.5M
    python list_architecture.py --model vgg --dataset CIFAR10 --prune_fname NAME --budget macs
    python list_architecture.py --model vgg --dataset CIFAR10 --target_latency 12ms --round_to 8

`params` is the trainable parameter count of the network the widths build (gates excluded), `macs`
its multiply-accumulates per image in the conv and linear layers at the data set's input size;
with --budget latency also `latency_predicted_ms`, per batch of --latency_batch images on --device.
"""
import json
import os

import numpy as np

from model import ModelChoices, get_spec
from utils import io
from utils.base import UserError, check_ratios, check_widths, run_main, writable_dir
from utils.cli import (add_budget_arg, add_common_args, add_grouping_arg, add_round_to_arg, budget_flags, check_pair,
                       latency_cost, latency_flags, make_parser)
from utils.data import IMAGE_SIZE, NUM_CLASSES
from utils.params import built_params, count_macs

CIFAR_RATIOS = (0.25, 0.75, 1.25, 2.0)  # the authors' list_architecture.py
TINY_RATIOS = (0.25, 0.5, 0.75, 1.0)


def parse_args(argv=None):
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg", choices=ModelChoices(), help="network (torchvision:NAME: any torchvision CNN, docs/generic.md)")
    p.add_argument("--dataset", default="CIFAR10", choices=sorted(NUM_CLASSES), help="data set")
    p.add_argument("--method", choices=("neuralscale", "uniform", "morph"), default=None,
                   help="width rule (default: neuralscale when --prune_fname is given, else uniform)")
    p.add_argument("--prune_fname", help="search record: a run name under --record_dir or a .pk path")
    p.add_argument("--descent_idx", type=int, nargs="+", help="iterations to list (default: all)")
    p.add_argument("--ratios", type=float, nargs="+", help="width ratios (default: 0.25 0.75 1.25 2, or "
                                                           "0.25 0.5 0.75 1 on tinyimagenet)")
    p.add_argument("--target_params", nargs="+", metavar="N",
                   help="instead of --ratios: absolute budgets in parameters, e.g. 1.5M (suffixes k, M, G)")
    p.add_argument("--target_macs", nargs="+", metavar="N",
                   help="instead of --ratios: absolute budgets in MACs per image, e.g. 300M")
    p.add_argument("--target_latency", nargs="+", metavar="MS",
                   help="instead of --ratios: absolute budgets in predicted ms per batch on --device, e.g. 12ms")
    add_budget_arg(p, default=None, precision=True)
    add_round_to_arg(p)
    add_grouping_arg(p)
    p.add_argument("--exact", action="store_true", help="tau search on the exact parameter count")
    p.add_argument("--convcut", action="store_true", help="all shortcuts convolutional")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--plot", action="store_true", help="layers x iterations picture per ratio")
    add_common_args(p, outputs=("record_dir", "figs_dir"), inputs=("device",))  # --budget latency's device
    return p.parse_args(argv)


def configurations(args, ratios, targets, cost=None):
    """Yield (descent_idx, ratio, target, widths) for every requested ratio, or absolute budget in
    `targets` (`cost`: the latency model of a latency budget)."""
    spec, num_classes = get_spec(args.model, args.grouping), NUM_CLASSES[args.dataset]
    points = [(None, t) for t in targets] if targets is not None else [(r, None) for r in check_ratios(ratios)]
    common = dict(num_classes=num_classes, exact=args.exact, convcut=args.convcut, budget=args.budget,
                  method=args.method, cost=cost, round_to=args.round_to)
    if args.method == "uniform":
        for r, t in points:
            yield None, r, t, spec.prepare_filters(r, target=t, **common)
    elif args.method == "morph":
        from ratio_swipe import PRUNED_FILTERS
        pruned, _ = io.morph_widths(args.prune_fname, args.record_dir, args.model, args.dataset, PRUNED_FILTERS,
                                    len(spec.DEFAULT_WIDTHS))
        for r, t in points:
            yield None, r, t, spec.prepare_filters(r, target=t, pruned_widths=pruned, **common)
    else:
        path = io.resolve_record(args.record_dir, args.prune_fname)
        fits = io.load_fits(path, num_layers=len(spec.DEFAULT_WIDTHS), budget=args.budget, grouping=args.grouping)
        indices = args.descent_idx if args.descent_idx is not None else range(len(fits))
        for idx in indices:
            alpha, beta = io.select_fit(fits, idx, path)
            for r, t in points:
                yield idx, r, t, spec.prepare_filters(r, target=t, alpha=alpha, beta=beta,
                                                      first_iteration=idx == 0, **common)


def plot(rows, args):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    ratios = sorted({r for _, r, _ in rows})
    # As the authors' figure: MobileNetV2's last two widths (320, 1280 by default) would swamp the scale.
    shown = slice(0, -2) if args.model == "mobilenetv2" else slice(None)
    fig, axes = plt.subplots(1, len(ratios), figsize=(3.2 * len(ratios), 3.6), squeeze=False)
    for ax, ratio in zip(axes[0], ratios):
        picked = [(idx, w) for idx, r, w in rows if r == ratio]
        grid = np.array([w[shown] for _, w in picked]).T  # (layers, iterations)
        image = ax.imshow(grid, aspect="auto", cmap="viridis", origin="upper")
        ax.set_title(f"Ratio={ratio:g}")
        ax.set_xlabel("iteration")
        ax.set_xticks(range(0, len(picked), 2), [str(idx + 1) for idx, _ in picked[::2]], fontsize=7)
        ax.set_yticks(range(grid.shape[0]), [str(i + 1) for i in range(grid.shape[0])], fontsize=6)
        ax.set_ylabel("layer")
        fig.colorbar(image, ax=ax, label="filters")
    fig.tight_layout()
    stem = os.path.join(args.figs_dir, f"architecture_{args.model}_{args.dataset}")
    for ext in ("png", "pdf"):
        with io.atomic_write(f"{stem}.{ext}") as f:
            fig.savefig(f, format=ext, dpi=150)
    plt.close(fig)
    return [f"{stem}.png", f"{stem}.pdf"]


def point_name(ratio, target, budget):
    if target is None:
        return f"ratio {ratio:<5g}"
    return f"target_latency {target:g}ms" if budget == "latency" else f"target_{budget} {target:,}"


def print_row(args, idx, ratio, target, widths, cost):
    """One configuration: a JSON object (--json) or a line of text."""
    num_classes = NUM_CLASSES[args.dataset]
    params = built_params(args.model, widths, num_classes, convcut=args.convcut, grouping=args.grouping)
    macs = count_macs(args.model, widths, num_classes, IMAGE_SIZE[args.dataset], args.convcut, args.grouping)
    latency = None if cost is None else round(float(cost(widths)), 4)
    if args.json:
        print(json.dumps({"model": args.model, "dataset": args.dataset, "method": args.method,
                          "descent_idx": idx, "ratio": ratio, "widths": widths, "params": params,
                          "macs": macs, "budget": args.budget,
                          **({} if target is None else {"target": target}),
                          **({} if latency is None else {"latency_predicted_ms": latency}),
                          **({} if args.round_to == 1 else {"round_to": args.round_to}),
                          **({} if args.grouping == "traced" else {"grouping": args.grouping})}))
        return
    where = f"iteration {idx + 1:2d} (descent_idx {idx:2d})  " if idx is not None else ""
    predicted = "" if latency is None else f"  latency {latency:8.2f} ms (predicted)"
    print(f"{where}{point_name(ratio, target, args.budget)} params {params:>12,}  MACs {macs:>14,}{predicted}  "
          f"widths {widths}")


def main(argv=None):
    args = parse_args(argv)
    check_pair(args.model, args.dataset, tuple(NUM_CLASSES), grouping=args.grouping)
    if args.method is None:
        args.method = "neuralscale" if args.prune_fname else "uniform"
    if args.method == "neuralscale" and not args.prune_fname:
        raise UserError("--method neuralscale needs --prune_fname (a search record)")
    if args.plot and args.method != "neuralscale":
        raise UserError("--plot draws iterations of a search record: give --prune_fname")
    if args.plot and (args.target_params or args.target_macs or args.target_latency):
        raise UserError("--plot draws one panel per ratio; leave out --target_params/--target_macs/--target_latency")
    _, ratios, targets = budget_flags(args, TINY_RATIOS if args.dataset == "tinyimagenet" else CIFAR_RATIOS)
    if args.plot:
        writable_dir(args.figs_dir)
    num_classes = NUM_CLASSES[args.dataset]
    cost = latency_cost(args.budget, args.model, num_classes, IMAGE_SIZE[args.dataset], convcut=args.convcut,
                        **latency_flags(args))
    rows = list(configurations(args, ratios, targets, cost))
    for idx, ratio, target, widths in rows:  # before building anything
        check_widths(widths, f"{args.model} at {point_name(ratio, target, args.budget)}")
    for idx, ratio, target, widths in rows:
        print_row(args, idx, ratio, target, widths, cost)
    if args.plot:
        rows = [(idx, ratio, widths) for idx, ratio, _, widths in rows]
        for path in plot(rows, args):
            print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
