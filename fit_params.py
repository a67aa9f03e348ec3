"""Re-fit NeuralScale's power law to every iteration of a search record.

Reads <record_dir>/<prune_fname>_<k>.csv for k = 0, 1, ... (consecutive, as many as exist, or
--iterations), fits alpha and beta per layer (the authors' fit), rewrites
<prune_fname>_param<k>.pk and <prune_fname>.pk, and prints the fits. --budget macs: tau is each row's
MACs per image (as a search run with --budget macs), and the records say so; --budget latency: each
row's latency predicted on --device (the table cached under <record_dir>/latency_tables/).
"""
import os

import numpy as np

from model import MODELS, get_spec
from utils import io
from utils.base import UserError, check_run_name, default_device, run_main, writable_dir
from utils.cli import add_budget_arg, check_pair, latency_cost, make_parser
from utils.data import IMAGE_SIZE, NUM_CLASSES
from utils.descent import param_pk_path
from utils.fit import fit_power_law


def parse_args():
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--prune_fname", required=True, help="search name: <record_dir>/<NAME>_<k>.csv")
    parser.add_argument("--model", default="vgg", choices=tuple(MODELS), help="network")
    # The authors' default pair (vgg, tinyimagenet) is one their VGG cannot run; CIFAR10 matches the search.
    parser.add_argument("--dataset", default="CIFAR10", choices=tuple(NUM_CLASSES),
                        help="sets the class count of the parameter formula")
    parser.add_argument("--record_dir", default="prune_record", help="prune records (CSV, .pk)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="fit iterations 0..N-1 (default: every consecutive CSV present)")
    parser.add_argument("--exact", action="store_true",
                        help="tau = the built network's exact parameter count (as a search run with --exact)")
    add_budget_arg(parser, precision=True)
    parser.add_argument("--device", default=default_device(), help="torch device of the latency budget")
    return parser.parse_args()


def fit(path, rows, args, cost=None):
    """(alpha, beta) of one record; a record that cannot be fitted is a UserError naming it."""
    try:
        alpha, beta = fit_power_law(rows, args.model, NUM_CLASSES[args.dataset], exact=args.exact,
                                    budget=args.budget, cost=cost)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    except np.linalg.LinAlgError:  # every row has the same parameter count
        raise UserError(f"{path}: cannot fit a power law (every row has the same parameter count)") from None
    io.check_fit(alpha, beta, path)
    return alpha, beta


def kept_settings(path):
    """The search settings stored in a fit this script rewrites (a re-fit keeps its run's identity)."""
    try:
        data = io.load_pickle(path)
    except UserError:
        return {}
    return {"settings": data["settings"]} if isinstance(data, dict) and "settings" in data else {}


def main():
    args = parse_args()
    check_run_name(args.prune_fname, "--prune_fname")
    check_pair(args.model, args.dataset, tuple(NUM_CLASSES))
    if args.iterations is not None and args.iterations < 1:
        raise UserError(f"--iterations must be at least 1, got {args.iterations}")
    num_layers = len(get_spec(args.model).DEFAULT_WIDTHS)
    paths, k = [], 0
    while args.iterations is None or k < args.iterations:
        path = io.record_csv_path(args.record_dir, args.prune_fname, k)
        if not os.path.exists(path):
            if args.iterations is not None or k == 0:
                io.read_prune_csv(path)  # the one-line "no such prune record" error
            break
        paths.append(path)
        k += 1
    records = [io.read_prune_csv(path, num_layers) for path in paths]
    cost = latency_cost(args, NUM_CLASSES[args.dataset], IMAGE_SIZE[args.dataset])
    fits = [fit(path, rows, args, cost) for path, rows in zip(paths, records)]  # every fit before any write
    writable_dir(args.record_dir)
    with np.printoptions(precision=6, linewidth=200):
        for k, (rows, (alpha, beta)) in enumerate(zip(records, fits)):
            path = param_pk_path(args.record_dir, args.prune_fname, k)
            io.save_pickle(io.with_budget({"train_alpha": alpha, "train_beta": beta, **kept_settings(path)},
                                          args.budget), path)
            note = "" if any(beta) else "  (fewer than 6 rows: fallback, beta = 0)"
            print(f"iteration {k} ({len(rows)} rows){note}\n  alpha = {alpha}\n  beta  = {beta}")
    record = io.record_pk_path(args.record_dir, args.prune_fname)
    io.save_fits(record, fits, kept_settings(record).get("settings"), args.budget)
    print(f"wrote {record} ({len(fits)} iterations, tau = {args.budget})")


if __name__ == "__main__":
    run_main(main)
