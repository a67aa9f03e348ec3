"""Residual filters per layer against parameters, with the fitted power laws (the paper's Figure 2).

    python plot_filters.py --model vgg --dataset CIFAR10 --prune_fname vgg_10_eff_c10
    python plot_filters.py --model vgg --dataset CIFAR100 --prune_fname vgg2_10_eff_c100 --descent_idx 14

Reads the pruning records <record_dir>/<prune_fname>_<k>.csv of the chosen search iterations k
(--descent_idx, as in the other scripts: 0 is "Iteration 1", 14 "Iteration 15"; --iterations, the
spelling this script had, still works, while everywhere else --iterations is a count of iterations). tau of each row is the authors' parameter counter of that row, as
the fit uses it; each layer's widths are fitted with width = alpha * tau^beta (utils/fit.py, the
authors' fit, including its fallback for records of fewer than 6 rows). Prints alpha and beta per layer
and, when <prune_fname>.pk exists, how far the stored fit of that iteration is from the re-fit.
Figure: <figs_dir>/growth_<model>_<dataset>.{png,pdf}, log-log, one panel per iteration.
"""
import argparse
import json
import os
import sys

import numpy as np

from model import MODELS
from utils import io, report
from utils.base import UserError, run_main, writable_dir
from utils.cli import add_common_args, check_pair, make_parser
from utils.data import NUM_CLASSES
from utils.fit import fit_power_law


def parse_args(argv=None):
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg", choices=tuple(MODELS), help="network")
    p.add_argument("--dataset", default="CIFAR10", choices=sorted(NUM_CLASSES), help="data set")
    p.add_argument("--prune_fname", required=True,
                   help="search run name under --record_dir (or a path prefix of its CSV files)")
    p.add_argument("--descent_idx", type=int, nargs="+", default=[0, 14],
                   help="search iterations k whose records <prune_fname>_<k>.csv are drawn (0 = Iteration 1)")
    p.add_argument("--iterations", type=int, nargs="+", dest="descent_idx", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)  # an alias: this script's former spelling
    p.add_argument("--json", action="store_true", help="one JSON object per iteration and layer")
    p.add_argument("--no_figs", action="store_true", help="do not write the figure")
    add_common_args(p, outputs=("record_dir", "figs_dir"), inputs=())
    return p.parse_args(argv)


def stored_fits(record_dir, name, layers):
    path = io.record_pk_path(record_dir, name)
    return (path, io.load_fits(path, layers)) if os.path.isfile(path) else (path, None)


def main(argv=None):
    args = parse_args(argv)
    check_pair(args.model, args.dataset, tuple(NUM_CLASSES))
    if any(k < 0 for k in args.descent_idx):
        raise UserError(f"--descent_idx must be non-negative, got {args.descent_idx}")
    name = args.prune_fname[:-3] if args.prune_fname.endswith(".pk") else args.prune_fname
    layers = len(MODELS[args.model].DEFAULT_WIDTHS)
    num_classes = NUM_CLASSES[args.dataset]
    pk_path, stored = stored_fits(args.record_dir, name, layers)
    panels, lines = [], []
    for k in args.descent_idx:
        csv_path = io.record_csv_path(args.record_dir, name, k)
        rows = io.read_prune_csv(csv_path, layers)
        for twin in io.twin_records(args.record_dir, name, k, layers):
            print(io.twin_note(csv_path, twin), file=sys.stderr)
        taus = report.record_taus(args.model, args.dataset, rows)
        alpha, beta = fit_power_law(rows, args.model, num_classes)
        panels.append((f"Iteration {k + 1} ({os.path.basename(csv_path)}, {len(rows)} rows)",
                       rows, taus, alpha, beta))
        if args.json:
            for layer in range(layers):
                print(json.dumps({"iteration": k, "layer": layer, "alpha": float(alpha[layer]),
                                  "beta": float(beta[layer]), "rows": int(len(rows)),
                                  "tau_min": float(taus.min()), "tau_max": float(taus.max())}))
            continue
        lines += [f"## {report.title(args.model, args.dataset)}: {os.path.basename(csv_path)} "
                  f"(Iteration {k + 1}), {len(rows)} rows, tau {taus.min():,.0f}..{taus.max():,.0f}",
                  "", "| Layer | alpha | beta | first row | last row |", "|---|---|---|---|---|"]
        lines += [f"| {layer + 1} | {alpha[layer]:.6g} | {beta[layer]:.6g} | {rows[0, layer]} | "
                  f"{rows[-1, layer]} |" for layer in range(layers)]
        if len(rows) < 6:
            lines.append("(fewer than 6 rows: the authors' fallback, alpha = first row, beta = 0)")
        if stored is not None and k < len(stored):
            da = np.max(np.abs(stored[k][0] - alpha))
            db = np.max(np.abs(stored[k][1] - beta))
            lines.append(f"stored fit {os.path.basename(pk_path)}[{k}]: max |delta alpha| = {da:.3g}, "
                         f"max |delta beta| = {db:.3g}")
        lines.append("")
    if lines:
        print("\n".join(lines))
    if not args.no_figs:
        writable_dir(args.figs_dir)
        fig = report.plot_growth(panels, heading=f"{report.title(args.model, args.dataset)}: "
                                                 f"residual filters of {name}")
        for path in report.save_figure(fig, args.figs_dir, f"growth_{args.model}_{args.dataset}"):
            print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
