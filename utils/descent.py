"""Architecture descent, the engine behind architecture_descent.py and imagenet_architecture_descent.py.

Iteration k, as the authors' script runs it: build the gated network (k = 0: the default widths scaled
by --search_ratio; k >= 1: the widths whose parameter count matches that budget under iteration k-1's
power law), train it from scratch with the search LR rule, prune it with Taylor-FO from the end of the
warm-up until the pruner is done, write the record `<save>_<k>.csv`, fit (alpha, beta) and write
`<save>_param<k>.pk`. After the last iteration, `<save>.pk` = {"param": [[alpha, beta], ...]}. Each
iteration also writes `<save>_epochs<k>.csv`, one row per epoch as it goes (utils/progress.py).

--budget macs: the same search for a budget in MACs per image. Every iteration's network matches the
MACs of the default network scaled by --search_ratio, and tau in the fit is each recorded row's MACs;
the per-iteration and final records say "budget": "macs" and are refused by a parameter-budget run.
--budget latency: the same with the latency predicted on --device (utils/latency_model.py; the table is
measured before the first iteration, or found in RECORD_DIR/latency_tables/); tau is each recorded
row's predicted latency and the records say "budget": "latency".

Reproducible and resumable: iteration k seeds everything from (--seed, k) and its data from
(--seed, k, epoch), so an iteration whose CSV and param pickle exist is loaded instead of recomputed
and a resumed search writes the same files as an uninterrupted one. Without --seed a search draws a
fresh seed (the authors' runs were unseeded), prints it and stores it in every `<save>_param<k>.pk`; a
resumed search takes the seed stored there.
"""
import argparse
import os

import numpy as np

from model import build_model, gates_of, get_spec
from utils import accel, data, io, lock, train
from utils.base import (UserError, check_positive, check_seed, check_sgd, log, positive_int, resolve_device,
                        writable_dir)
from utils.cli import (add_budget_arg, add_grouping_arg, add_training_args, authors_name, check_pair, latency_cost,
                       make_parser, require_save)
from utils.fit import MIN_ROWS, fit_power_law
from utils.params import count_macs, count_params
from utils.progress import Clock, EpochCSV, timestamp
from utils.prune import TaylorFOPruner
from utils.scaling import input_size
from utils.train import RECIPES

DEFAULT_ITERATIONS, MORPH_ITERATIONS = 15, 1
DEFAULT_FRACTION, MORPH_FRACTION = 0.95, 0.5
EPOCH_STRIDE = 1_000_000  # iteration k trains on data epochs k * EPOCH_STRIDE + e
# The per-epoch CSV of a search iteration, <record_dir>/<save>_epochs<k>.csv.
SEARCH_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "units_left", "prune_steps")


def add_search_args(parser, recipe, *, datasets, model, dataset):
    """The search flags (the authors' spellings; defaults from utils.train.RECIPES[recipe])."""
    values = RECIPES[recipe]
    add_training_args(parser, recipe, datasets=datasets, dataset=dataset, model=model, outputs=("record_dir",),
                      generic=True,
                      help={"--save": "run name: <record_dir>/<save>_<k>.csv, <save>.pk (required)",
                            "--epochs": "most epochs per iteration (an iteration ends when pruning is done)",
                            "--lr": "base LR of the search rule (the authors reset it to 0.1 every iteration)",
                            "--overwrite": "recompute the iterations of this --save written under other "
                                           "search settings (default: refuse them)"})
    parser.add_argument("--warmup", type=int, default=values["warmup"],
                        help="epochs of training before pruning starts")
    parser.add_argument("--morph", action="store_true",
                        help="MorphNet baseline: one iteration pruned to 50 %% (prints a PRUNED_FILTERS line)")
    parser.add_argument("--iterations", type=positive_int, default=None,
                        help=f"descent iterations (default {DEFAULT_ITERATIONS}; {MORPH_ITERATIONS} with --morph)")
    parser.add_argument("--prune_every", type=positive_int, default=values["prune_every"],
                        help="minibatches per pruning window")
    parser.add_argument("--prune_per_step", type=positive_int, default=values["prune_per_step"],
                        help="units pruned per step (globally)")
    parser.add_argument("--prune_fraction", type=float, default=None,
                        help=f"fraction of units to prune (default {DEFAULT_FRACTION}; {MORPH_FRACTION} with --morph)")
    parser.add_argument("--search_ratio", type=float, default=1.0,
                        help="budget of every iteration's network: the full-width network's scaled by this "
                             "(1.0 = the authors'; lower it for cheap CPU demos)")
    parser.add_argument("--exact", action="store_true",
                        help="tau search and fit count the built network's parameters (opt-in correction; "
                             "off: the authors' formula)")
    add_budget_arg(parser)
    add_grouping_arg(parser)
    return parser


def script_main(doc, recipe, *, datasets, model, dataset):
    """architecture_descent.py / imagenet_architecture_descent.py: parse the flags, run the search."""
    parser = make_parser(doc.splitlines()[0])
    add_search_args(parser, recipe, datasets=datasets, model=model, dataset=dataset)
    run_search(parser.parse_args(), datasets=datasets, schedule=RECIPES[recipe]["schedule"])


def iteration_seed(seed, iteration):
    """The seed of iteration k: a pure function of (--seed, k)."""
    return int(np.random.SeedSequence([seed, iteration]).generate_state(1)[0])


def param_pk_path(record_dir, save, iteration):
    """Per-iteration fit. The authors wrote an unprefixed param<k>.pk, so concurrent searches collided."""
    return os.path.join(record_dir, f"{save}_param{iteration}.pk")


def morph_line(model, dataset, widths):
    return f'("{model}", "{dataset}"): {list(map(int, widths))},'


class _IterationEpochs:
    """A loader whose epoch e is data epoch k * EPOCH_STRIDE + e, so iterations see different batches
    and each batch is still a pure function of (seed, k, e)."""

    def __init__(self, loader, iteration):
        self.loader, self.offset = loader, iteration * EPOCH_STRIDE

    def __len__(self):
        return len(self.loader)

    def epoch(self, epoch):
        return self.loader.epoch(self.offset + epoch)


def _settings(args):
    """The parsed flags with the --morph-dependent defaults filled in (a copy; args stays as parsed)."""
    if args.morph and args.iterations not in (None, MORPH_ITERATIONS):
        raise UserError("--morph runs a single iteration; leave out --iterations")
    args = argparse.Namespace(**vars(args))
    if args.iterations is None:
        args.iterations = MORPH_ITERATIONS if args.morph else DEFAULT_ITERATIONS
    if args.prune_fraction is None:
        args.prune_fraction = MORPH_FRACTION if args.morph else DEFAULT_FRACTION
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size),
                        ("--iterations", args.iterations), ("--prune_every", args.prune_every),
                        ("--prune_per_step", args.prune_per_step)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be non-negative, got {args.warmup}")
    if not 0 < args.prune_fraction < 1:
        raise UserError(f"--prune_fraction must be between 0 and 1, got {args.prune_fraction}")
    check_positive("--search_ratio", args.search_ratio)
    check_sgd(args.lr, args.momentum, args.weight_decay)
    require_save(args.save, authors_name("{model}_morph_{tag}" if args.morph else "{model}_10_eff_{tag}",
                                         args.model, args.dataset, repetition=False))
    return args


# What a finished iteration depends on, stored in every fit it writes. Not --epochs or --iterations:
# they bound the search; a finished iteration is the same under a larger bound.
SEARCH_SETTINGS = ("model", "dataset", "seed", "lr", "momentum", "weight_decay", "warmup", "batch_size",
                   "prune_every", "prune_per_step", "prune_fraction", "search_ratio", "exact", "subset",
                   "loader", "precision", "bn_init", "same_norm", "morph", "budget")


def search_settings(args):
    settings = {k: getattr(args, k) for k in SEARCH_SETTINGS}
    if args.budget == "latency":  # the law's tau is in ms of this latency model
        settings.update(latency_batch=args.latency_batch, latency_clock=args.latency_clock)
    if args.deterministic:  # only when on, so records written before the flag existed still match
        settings["deterministic"] = True
    if args.grouping != "traced":  # likewise: a record that stores none was searched with "traced"
        settings["grouping"] = args.grouping
    return settings


def _other_settings(path, data, args):
    """None when the fit at `path` was written under these settings, else the UserError that refuses
    it. A fit that stores no settings (the authors' records, or ours before they were stored) cannot be
    shown to be this search's, so it is refused too."""
    stored = data.get("settings") if isinstance(data, dict) else None
    if not isinstance(stored, dict):
        return UserError(f"{path} is a search record whose settings are unknown (it stores none: the "
                         f"authors' published records, or ours before records stored them); use another "
                         f"--save, or --overwrite to recompute it")
    stored, wanted = {"grouping": "traced", **stored}, {"grouping": "traced", **search_settings(args)}
    keys = [k for k in wanted if not (k == "seed" and wanted[k] is None) and stored.get(k) != wanted[k]]
    if not keys:
        return None
    changes = ", ".join(f"{k}: {stored.get(k)!r} there, {wanted[k]!r} now" for k in keys)
    return UserError(f"{path} is a search record of other settings ({changes}); use another --save, "
                     f"or --overwrite to recompute it")


def _load_iteration(args, k, num_layers, log):
    """(alpha, beta) of a finished iteration, or None when its files are not both there."""
    csv_path = io.record_csv_path(args.record_dir, args.save, k)
    pk_path = param_pk_path(args.record_dir, args.save, k)
    if not (os.path.exists(csv_path) and os.path.exists(pk_path)):
        return None
    fit = io.load_dict(pk_path, "a per-iteration fit ({'train_alpha', 'train_beta'})")
    try:
        io.check_budget(fit, pk_path, args.budget)
        refusal = _other_settings(pk_path, fit, args)
    except UserError as err:  # fitted on the other resource
        refusal = err
    if refusal is not None and args.overwrite:
        log(f"iteration {k}: {pk_path} has other settings; recomputing from here (--overwrite)")
        return None
    if refusal is not None:
        raise refusal
    io.read_prune_csv(csv_path, num_layers)  # refuse a record of another model
    try:
        alpha, beta = (np.asarray(fit[key], dtype=np.float64) for key in ("train_alpha", "train_beta"))
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{pk_path}: not a per-iteration fit ({{'train_alpha', 'train_beta'}}): {err}") from None
    if alpha.shape != (num_layers,) or beta.shape != (num_layers,):
        raise UserError(f"{pk_path}: holds {alpha.size} layers, {args.model} has {num_layers}; it belongs to "
                        f"another search (choose another --save){io.other_model(alpha.size)}")
    io.check_fit(alpha, beta, pk_path)
    log(f"iteration {k}: resumed from {csv_path} and {pk_path}")
    return alpha, beta


def _stored_seeds(args):
    """{path: seed} of this search's finished iterations (their param pickles record it)."""
    found, k = {}, 0
    while os.path.exists(path := param_pk_path(args.record_dir, args.save, k)):
        fit = io.load_pickle(path)
        if isinstance(fit, dict) and fit.get("seed") is not None:
            found[path] = check_seed(fit["seed"], path)
        k += 1
    return found


def _search_widths(args, k, num_classes, previous, cost=None):
    spec = get_spec(args.model, args.grouping)
    if k == 0:
        return spec.prepare_filters(args.search_ratio, num_classes=num_classes)
    alpha, beta = previous
    return spec.prepare_filters(args.search_ratio, num_classes=num_classes, alpha=alpha, beta=beta,
                                search=True, first_iteration=True, exact=args.exact, budget=args.budget,
                                method="neuralscale", cost=cost)


def epochs_csv_path(record_dir, save, iteration):
    """The per-epoch CSV of search iteration k, beside its fit <save>_param<k>.pk (utils.progress)."""
    return os.path.join(record_dir, f"{save}_epochs{iteration}.csv")


def planned_epochs(args, pruner, batches):
    """The epochs an iteration runs when it takes every allowed prune step: the warm-up, then the first
    window of prune_every + 1 minibatches, prune_every per later step and the call that reports done
    (the last-unit rule can end it sooner); at most --epochs."""
    return min(args.epochs, args.warmup + -(-(pruner.max_steps * args.prune_every + 2) // batches))


class _SearchClock(Clock):
    """The search's clock, in epochs: the iterations not yet started count at the first one's estimate."""

    def __init__(self, iterations):
        super().__init__(0)
        self.iterations, self.estimate = iterations, None

    def begin(self, planned):
        if self.estimate is None:
            self.estimate = planned
            self.add(planned * self.iterations)
        else:
            self.add(planned - self.estimate)


def _new_pruner(args, k, widths, num_classes, device, log, cost=None):
    """The gated network of iteration k, its optimizer and its pruner (seeded from (--seed, k)); `cost`:
    the latency model of --budget latency, for the log line."""
    train.set_seed(iteration_seed(args.seed, k))
    model = train.prepare_model(build_model(args.model, widths, num_classes, gates=True, bn_init=args.bn_init,
                                            grouping=args.grouping), device)
    optimizer = train.make_optimizer(model, args.lr, args.momentum, args.weight_decay)
    pruner = TaylorFOPruner(gates_of(model), prune_fraction=args.prune_fraction,
                            prune_every=args.prune_every, prune_per_step=args.prune_per_step, log=log)
    macs = count_macs(args.model, widths, num_classes, input_size(num_classes), grouping=args.grouping)
    latency = "" if cost is None else f"{cost(widths):.2f} ms predicted, "
    params = count_params(args.model, widths, num_classes, grouping=args.grouping)
    log(f"iteration {k}: widths {widths} ({params:,} formula params, "
        f"{macs:,} MACs, {latency}{pruner.total} units; pruning to {pruner.total - pruner.max_prunable} in at most "
        f"{pruner.max_steps} steps)")
    return model, optimizer, pruner


def _epoch_line(args, k, epoch, lr, stats, pruner, clock):
    return (f"{timestamp()} iteration {k} epoch {epoch}: lr {lr:.4g} loss {stats['loss']:.4f} acc "
            f"{stats['acc']:.2f} units left {pruner.total - pruner.pruned}/{pruner.total} | prune step "
            f"{pruner.steps_done}/{pruner.max_steps}, iteration {k + 1}/{args.iterations}; {clock.summary()}")


def _run_iteration(args, k, widths, num_classes, loader, device, schedule, log, clock, cost=None):
    """Train and prune one network; the pruner's recorded rows. UserError when pruning does not finish,
    and then the iteration leaves no file. `clock`: the search's _SearchClock; `cost`: see _new_pruner."""
    model, optimizer, pruner = _new_pruner(args, k, widths, num_classes, device, log, cost)
    planned = planned_epochs(args, pruner, len(loader))
    clock.begin(planned)
    epoch_csv = EpochCSV(epochs_csv_path(args.record_dir, args.save, k), SEARCH_COLUMNS)
    epoch_csv.restart()  # an interrupted iteration starts over, and so does its CSV
    try:
        epoch = _prune_epochs(args, k, (model, optimizer, pruner), _IterationEpochs(loader, k), device, schedule,
                              log, clock, epoch_csv)
    except UserError:
        if os.path.exists(epoch_csv.path):
            os.unlink(epoch_csv.path)
        raise
    clock.skip(planned - epoch)
    return _stop(pruner, k, epoch, log)


def _prune_epochs(args, k, network, epochs, device, schedule, log, clock, epoch_csv):
    """Train with the search LR rule, pruning after the warm-up; the epoch at which pruning was complete."""
    model, optimizer, pruner = network

    def after_step(_loss):
        return "stop" if pruner.step() == "done" else None

    for epoch in range(1, args.epochs + 1):
        lr = train.lr_for_epoch(schedule, epoch, args.lr, args.warmup)
        train.set_lr(optimizer, lr)
        stats = train.train_epoch(model, epochs, epoch, optimizer, device,
                                  after_step=after_step if epoch > args.warmup else None,
                                  precision=args.precision, desc=f"iteration {k} epoch {epoch}")
        if not np.isfinite(stats["loss"]):  # NaN criteria would prune nothing and record garbage
            raise UserError(f"iteration {k}: the training loss became {stats['loss']} at epoch {epoch} "
                            f"(lr {lr:g}); lower --lr")
        epoch_csv.append({"epoch": epoch, "lr": float(lr), "train_loss": float(stats["loss"]),
                          "train_acc": float(stats["acc"]), "units_left": pruner.total - pruner.pruned,
                          "prune_steps": pruner.steps_done})
        clock.advance(1)
        log(_epoch_line(args, k, epoch, lr, stats, pruner, clock))
        if pruner.complete:
            return epoch
    raise UserError(
        f"iteration {k}: pruning did not finish within --epochs {args.epochs}: {pruner.steps_done} of at most "
        f"{pruner.max_steps} prune steps taken, {pruner.total - pruner.pruned} of {pruner.total} units left (it "
        f"prunes to {pruner.total - pruner.max_prunable}); raise --epochs, or prune faster with a smaller "
        f"--prune_every or a larger --prune_per_step")


def _stop(pruner, k, epoch, log):
    """Say how the pruning of iteration k ended; its recorded rows."""
    pruner.finish()
    why = "the last-unit rule ended it" if pruner.last_unit_rule else "every step taken"
    log(f"iteration {k}: pruning done at epoch {epoch} after {pruner.steps_done} of {pruner.max_steps} steps "
        f"({why}), {pruner.total - pruner.pruned} of {pruner.total} units left")
    return pruner.rows


def _same_fits(record, fits, num_layers, settings, budget):
    """A finished search run again leaves its record untouched (no rewrite, same mtime)."""
    if not os.path.exists(record):
        return False
    try:
        old = io.load_fits(record, num_layers, budget)
    except UserError:
        return False
    if io.load_pickle(record).get("settings") != settings:
        return False
    return len(old) == len(fits) and all(np.array_equal(a, b) and np.array_equal(c, d)
                                         for (a, c), (b, d) in zip(old, fits))


def run_search(args, *, datasets, schedule, log=log):
    """The whole search; `log` prints one line. It holds the lock <record_dir>/.<save>.lock from the first
    read of its files to the last write: a second live search of the same name is refused."""
    args = _settings(args)
    check_pair(args.model, args.dataset, datasets, args.budget, args.grouping)
    device = resolve_device(args.device)
    writable_dir(args.record_dir, create=False)  # created once the data has loaded
    with lock.hold(lock.lock_file(args.record_dir, args.save), f"search {args.save}"):
        return _search(args, device, schedule, log)


def _search(args, device, schedule, log):
    num_classes = data.NUM_CLASSES[args.dataset]
    num_layers = len(get_spec(args.model, args.grouping).DEFAULT_WIDTHS)
    record = io.record_pk_path(args.record_dir, args.save)
    if os.path.exists(record) and not args.overwrite:
        _check_record(record, args)
    if args.seed is None:  # a resumed search keeps the seed its finished iterations stored
        args = argparse.Namespace(**{**vars(args), "seed": train.choose_seed(None, _stored_seeds(args), log)})
    accel.set_precision(device, args.precision)
    accel.set_deterministic(device, args.deterministic)
    fits, k = [], 0
    while k < args.iterations:
        fit = _load_iteration(args, k, num_layers, log)
        if fit is None:
            break
        fits.append(fit)
        k += 1

    if k < args.iterations:
        loader, _ = data.get_loaders(args.dataset, args.data_dir, recipe="search", batch_size=args.batch_size,
                                     device=device, loader=args.loader, subset=args.subset, seed=args.seed,
                                     download=args.download, same_norm=args.same_norm, need_test=False)
    writable_dir(args.record_dir)
    cost = latency_cost(args, num_classes, input_size(num_classes), log=log) if k < args.iterations else None
    clock = _SearchClock(args.iterations - k)
    for k in range(k, args.iterations):
        widths = _search_widths(args, k, num_classes, fits[-1] if fits else None, cost)
        rows = _run_iteration(args, k, widths, num_classes, loader, device, schedule, log, clock, cost)
        alpha, beta = fit_power_law(rows, args.model, num_classes, exact=args.exact, budget=args.budget,
                                    cost=cost, grouping=args.grouping)
        io.write_prune_csv(io.record_csv_path(args.record_dir, args.save, k), rows)
        io.save_pickle(io.with_budget({"train_alpha": alpha, "train_beta": beta, "seed": args.seed,
                                       "settings": search_settings(args)}, args.budget),
                       param_pk_path(args.record_dir, args.save, k))
        log(f"iteration {k}: {len(rows)} rows recorded, final widths {list(rows[-1])}"
            + ("" if any(beta) else f" (fewer than {MIN_ROWS} rows: the authors' fallback fit, beta = 0)"))
        fits.append((alpha, beta))

    _finish(args, record, fits, num_layers, log)
    return fits


def _check_record(path, args):
    """The search record this search would rewrite must be its own: written under these settings. One
    that is unreadable or stores no settings (the authors' published records) is refused too."""
    try:
        refusal = _other_settings(path, io.load_dict(path, "a search record"), args)
    except UserError as err:
        raise UserError(f"{err}; use another --save, or --overwrite to replace it") from None
    if refusal is not None:
        raise refusal


def _finish(args, record, fits, num_layers, log):
    """Write the search record (unless it already holds these fits) and, after --morph, the line to paste."""
    if _same_fits(record, fits, num_layers, search_settings(args), args.budget):
        log(f"{record} is up to date ({len(fits)} iterations)")
    else:
        io.save_fits(record, fits, settings=search_settings(args), budget=args.budget)
        log(f"wrote {record} ({len(fits)} iterations)")
    if args.morph:
        last = io.read_prune_csv(io.record_csv_path(args.record_dir, args.save, 0), num_layers)[-1]
        log(f"50 %-pruned widths; paste this line into PRUNED_FILTERS at the top of ratio_swipe.py "
            f"(or pass --prune_fname {args.save} to ratio_swipe.py --morph):")
        log(morph_line(args.model, args.dataset, last))
