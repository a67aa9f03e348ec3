"""Re-fit NeuralScale's power law to every iteration of a search record.

Reads <record_dir>/<prune_fname>_<k>.csv for k = 0, 1, ... (consecutive, as many as exist, or
--iterations), fits alpha and beta per layer (the authors' fit) and prints the fits. It writes
<save>_param<k>.pk and <save>.pk (with copies of the CSVs under the new name) when --save names a new
record; without --save it rewrites the record itself, which takes --overwrite once the new fits differ
from the stored ones (a re-fit that changes nothing writes nothing). --budget macs: tau is each row's
MACs per image (as a search run with --budget macs), and the records say so; --budget latency: each
row's latency predicted on --device (the table cached under <record_dir>/latency_tables/).

--model, --dataset, --budget and --exact default to the settings the search stored in its record; a
--model or --dataset other than the stored one is refused (the rows were recorded on that network). The
seed and settings of the search stay in every file, with the budget and --exact of this fit. Every file
is written, or none.
"""
import os
import sys

import numpy as np

from model import MODELS, get_spec
from utils import io, lock
from utils.base import UserError, check_run_name, check_seed, default_device, run_main, writable_dir
from utils.cli import add_budget_arg, add_output_dirs, check_pair, latency_cost, latency_flags, make_parser
from utils.data import IMAGE_SIZE, NUM_CLASSES
from utils.descent import param_pk_path
from utils.fit import fit_power_law

FALLBACK = {"model": "vgg", "dataset": "CIFAR10", "budget": "params", "exact": False}  # no stored settings


def parse_args(argv=None):
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--prune_fname", required=True, help="search name: <record_dir>/<NAME>_<k>.csv")
    parser.add_argument("--save", default=None,
                        help="write the re-fit as this new record name (default: rewrite --prune_fname)")
    parser.add_argument("--model", default=None, choices=tuple(MODELS),
                        help="network (default: the record's, else vgg)")
    # The authors' default pair (vgg, tinyimagenet) is one their VGG cannot run; CIFAR10 matches the search.
    parser.add_argument("--dataset", default=None, choices=tuple(NUM_CLASSES),
                        help="sets the class count of the parameter formula (default: the record's, else CIFAR10)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="fit iterations 0..N-1 (default: every consecutive CSV present)")
    parser.add_argument("--exact", action="store_true", default=None,
                        help="tau = the built network's exact parameter count, as a search run with --exact "
                             "(default: the record's, else off)")
    add_budget_arg(parser, default=None, default_text="the record's, else params", precision=True)
    parser.add_argument("--device", default=default_device(), help="torch device of the latency budget")
    parser.add_argument("--overwrite", action="store_true",
                        help="rewrite the record's fits when they differ from the re-fit (default: refuse)")
    add_output_dirs(parser, used=("record_dir",))
    return parser.parse_args(argv)


def stored(record_dir, name):
    """(settings, {k: seed}) the search stored: <name>.pk's settings, else <name>_param0.pk's; the seed
    of every iteration's fit. Both empty for the authors' records."""
    settings, seeds, k = {}, {}, 0
    record = io.record_pk_path(record_dir, name)
    if os.path.exists(record):
        settings = io.load_dict(record, "a search record").get("settings") or {}
    while os.path.exists(path := param_pk_path(record_dir, name, k)):
        fit = io.load_dict(path, "a per-iteration fit")
        settings = settings or fit.get("settings") or {}
        if fit.get("seed") is not None:
            seeds[k] = check_seed(fit["seed"], path)
        k += 1
    if not isinstance(settings, dict):
        raise UserError(f"{record}: its settings are not a dict: {settings!r}")
    return settings, seeds


def choose(args, settings, record):
    """model, dataset, budget, exact: each from the flags, else the record's settings, else FALLBACK. A
    --model or --dataset other than the record's is refused."""
    chosen = {}
    for key in ("model", "dataset", "budget", "exact"):
        given, kept = getattr(args, key), settings.get(key)
        if key in ("model", "dataset") and given is not None and kept is not None and given != kept:
            raise UserError(f"{record} was searched with --{key} {kept}, not {given}: its rows were recorded "
                            f"on that {'network' if key == 'model' else 'data set'}; leave out --{key}")
        chosen[key] = given if given is not None else kept if kept is not None else FALLBACK[key]
    chosen["exact"] = bool(chosen["exact"])
    if chosen["budget"] == "latency":  # the law's tau is in ms of one latency model: the record's
        for key in ("latency_batch", "latency_clock"):
            if settings.get("budget") == "latency" and settings.get(key, getattr(args, key)) != getattr(args, key):
                raise UserError(f"{record} was searched with --{key} {settings[key]}, not {getattr(args, key)}: "
                                f"its tau is that latency model's; give --{key} {settings[key]}")
            chosen[key] = getattr(args, key)
    return chosen


def fit(path, rows, chosen, cost=None):
    """(alpha, beta) of one record; a record that cannot be fitted is a UserError naming it."""
    try:
        alpha, beta = fit_power_law(rows, chosen["model"], NUM_CLASSES[chosen["dataset"]], exact=chosen["exact"],
                                    budget=chosen["budget"], cost=cost)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    except np.linalg.LinAlgError:  # every row has the same parameter count
        raise UserError(f"{path}: cannot fit a power law (every row has the same parameter count)") from None
    io.check_fit(alpha, beta, path)
    return alpha, beta


def record_paths(args):
    """The CSVs of iterations 0, 1, ... of --prune_fname (all consecutive ones, or --iterations)."""
    paths, k = [], 0
    while args.iterations is None or k < args.iterations:
        path = io.record_csv_path(args.record_dir, args.prune_fname, k)
        if not os.path.exists(path):
            if args.iterations is not None or k == 0:
                io.read_prune_csv(path)  # the one-line "no such prune record" error
            break
        paths.append(path)
        k += 1
    return paths


def contents(args, target, paths, fits, settings, seeds, chosen):
    """{path: bytes} of every file the re-fit writes under the record name `target`."""
    refit = {**settings, "budget": chosen["budget"], "exact": chosen["exact"]} if settings else \
        {k: chosen[k] for k in ("model", "dataset", "budget", "exact")}
    refit.update({k: chosen[k] for k in ("latency_batch", "latency_clock") if k in chosen})
    out = {}
    for k, (alpha, beta) in enumerate(fits):
        entry = {"train_alpha": alpha, "train_beta": beta, "settings": refit}
        if k in seeds:
            entry["seed"] = seeds[k]
        out[param_pk_path(args.record_dir, target, k)] = io.pickle_bytes(io.with_budget(entry, chosen["budget"]))
    if target != args.prune_fname:
        for k, path in enumerate(paths):
            with open(path, "rb") as f:
                out[io.record_csv_path(args.record_dir, target, k)] = f.read()
    record = {"param": [[a, b] for a, b in fits], "settings": refit}
    out[io.record_pk_path(args.record_dir, target)] = io.pickle_bytes(io.with_budget(record, chosen["budget"]))
    return out


def same_file(path, data):
    """Whether `path` already holds `data`: the same bytes, or a pickle of the same values."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        old = f.read()
    if old == data or not path.endswith(".pk"):
        return old == data
    try:
        return same_value(io.load_pickle(path), io.pickle_value(data))
    except UserError:
        return False


def same_value(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.shape(a) == np.shape(b) and bool(np.array_equal(a, b))
    return type(a) is type(b) and a == b


def note_twins(args, paths, num_layers, log):
    """Name every record that is a copy of the next one: both re-fit to one fit (the authors'
    vgg_10_eff_c10_0.csv is byte-identical to vgg_10_eff_c10_1.csv)."""
    for k, path in enumerate(paths[:-1]):
        if paths[k + 1] in io.twin_records(args.record_dir, args.prune_fname, k, num_layers):
            log(io.twin_note(path, paths[k + 1]))


def write(args, target, out, budget):
    """Write every file of `out`, or none; refuse to replace files that differ without --overwrite."""
    for path in out:
        if os.path.isdir(path):
            raise UserError(f"cannot write {path}: it is a folder")
    changed = [path for path, data in out.items() if not same_file(path, data)]
    if not changed:
        print(f"{io.record_pk_path(args.record_dir, target)} is up to date: the re-fit changes nothing")
        return
    existing = [path for path in changed if os.path.exists(path)]
    if existing and not args.overwrite:
        raise UserError(f"{existing[0]} holds other fits than this re-fit ({len(existing)} such files); "
                        f"write a new record with --save NAME, or --overwrite to replace them")
    io.save_files(out)
    print(f"wrote {io.record_pk_path(args.record_dir, target)} ({len(out)} files, tau = {budget})")


def main(argv=None):
    args = parse_args(argv)
    check_run_name(args.prune_fname, "--prune_fname")
    target = check_run_name(args.save, "--save") if args.save is not None else args.prune_fname
    if args.iterations is not None and args.iterations < 1:
        raise UserError(f"--iterations must be at least 1, got {args.iterations}")
    settings, seeds = stored(args.record_dir, args.prune_fname)
    chosen = choose(args, settings, io.record_pk_path(args.record_dir, args.prune_fname))
    check_pair(chosen["model"], chosen["dataset"], tuple(NUM_CLASSES))
    num_layers = len(get_spec(chosen["model"]).DEFAULT_WIDTHS)
    paths = record_paths(args)
    records = [io.read_prune_csv(path, num_layers) for path in paths]
    dataset = chosen["dataset"]
    cost = latency_cost(chosen["budget"], chosen["model"], NUM_CLASSES[dataset], IMAGE_SIZE[dataset],
                        **latency_flags(args))
    fits = [fit(path, rows, chosen, cost) for path, rows in zip(paths, records)]  # every fit before any write
    note_twins(args, paths, num_layers, lambda line: print(line, file=sys.stderr))
    with np.printoptions(precision=6, linewidth=200):
        for k, (rows, (alpha, beta)) in enumerate(zip(records, fits)):
            note = "" if any(beta) else "  (fewer than 6 rows: fallback, beta = 0)"
            print(f"iteration {k} ({len(rows)} rows){note}\n  alpha = {alpha}\n  beta  = {beta}")
    writable_dir(args.record_dir)
    with lock.hold(lock.lock_file(args.record_dir, target), f"search record {target}"):
        write(args, target, contents(args, target, paths, fits, settings, seeds, chosen), chosen["budget"])


if __name__ == "__main__":
    run_main(main)
