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

The engine takes its settings as a SearchSettings, never a script's flags: the search scripts build one
with SearchSettings.from_args where they parse them (each field is the flag of the same name). A search
from Python (two iterations of VGG at a quarter of its budget on the synthetic data, a few seconds on a
CPU; out/records/demo.pk is its record):

    from utils import descent

    settings = descent.SearchSettings(model="vgg", dataset="synthetic", save="demo", record_dir="out/records",
                                      seed=0, subset=64, batch_size=32, warmup=0, iterations=2, prune_every=1,
                                      prune_per_step=100, search_ratio=0.25)
    fits = descent.run_search(settings, datasets=("synthetic",), schedule="search")
    print(fits[-1])  # (alpha, beta) of the last iteration: out/records/demo_param1.pk holds them too

Run again, it finds both iterations finished and leaves the record as it is, as the scripts do.
"""
import dataclasses
import os

import numpy as np

from model import build_model, gates_of, get_spec
from utils import accel, data, io, lock, train
from utils.base import (OUTPUT_DIRS, UserError, check_at_least_one, check_positive, check_seed, check_sgd, log,
                        positive_int, resolve_device, writable_dir)
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
    settings = SearchSettings.from_args(parser.parse_args())
    run_search(settings, datasets=datasets, schedule=RECIPES[recipe]["schedule"])


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


_SEARCH = RECIPES["search_cifar"]


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """The settings a search reads: what run_search and its helpers take instead of a script's flags.
    The defaults are architecture_descent.py's (utils.train.RECIPES["search_cifar"]); from_args builds
    them from either search script's parsed flags. run_search checks them first (checked)."""

    # What is searched, and where it is written: the network (model.MODELS, or torchvision:NAME, whose
    # channel groups `grouping` chooses, model/generic.py) and the data set (utils.data); save: the run's
    # name, the stem of its files <record_dir>/<save>_<k>.csv, <save>_param<k>.pk and <save>.pk;
    # overwrite: recompute the iterations of this save written under other settings (else refused).
    model: str
    dataset: str
    save: str
    grouping: str = "traced"
    record_dir: str = OUTPUT_DIRS["record_dir"]
    overwrite: bool = False

    # Iteration k seeds python, numpy and torch from (seed, k), its data from (seed, k, epoch). None: a
    # fresh seed, or the one a resumed search's finished iterations stored.
    seed: int | None = None

    # The SGD recipe of every iteration under the search LR rule (utils.train): base LR, momentum, weight
    # decay, minibatch; at most `epochs` epochs (pruning ends an iteration sooner), the first `warmup`
    # ones without pruning.
    lr: float = _SEARCH["lr"]
    momentum: float = _SEARCH["momentum"]
    weight_decay: float = _SEARCH["weight_decay"]
    batch_size: int = _SEARCH["batch_size"]
    epochs: int = _SEARCH["epochs"]
    warmup: int = _SEARCH["warmup"]

    # The descent (utils.prune.TaylorFOPruner): `iterations` iterations, each pruning prune_per_step units
    # (globally) every prune_every minibatches until prune_fraction of them are gone. None: the defaults,
    # DEFAULT_ITERATIONS and DEFAULT_FRACTION, or with morph (the MorphNet baseline, one iteration to 50 %)
    # MORPH_ITERATIONS and MORPH_FRACTION.
    iterations: int | None = None
    prune_every: int = _SEARCH["prune_every"]
    prune_per_step: int = _SEARCH["prune_per_step"]
    prune_fraction: float | None = None
    morph: bool = False

    # The budget every iteration's network meets: the full-width network's scaled by search_ratio, in
    # parameters, MACs per image or latency predicted on `device` (budget "params", "macs" or "latency";
    # the latency model times latency_batch images per batch on latency_clock, "wall" or "cpu"). exact:
    # tau counts the built network's parameters (off: the authors' formula).
    search_ratio: float = 1.0
    exact: bool = False
    budget: str = "params"
    latency_batch: int = 100
    latency_clock: str = "wall"

    # The data (utils.data.get_loaders): the first `subset` images only (None: all), the loader ("fast"
    # or "torchvision"), same_norm: the training scripts' normalisation (off: the authors' search's), the
    # data sets' folder and whether a missing one is fetched ("auto", "never").
    subset: int | None = None
    loader: str = "fast"
    same_norm: bool = False
    data_dir: str = "./data"
    download: str = "auto"

    # Where and how it computes (utils.accel, model.bn_init): a torch device name ("cpu", "cuda[:i]"; the
    # scripts' default is cuda when there is one), precision "fp32", "tf32" or "bf16", bn_init "uniform"
    # or "ones", deterministic CUDA algorithms (stored in the settings).
    device: str = "cpu"
    precision: str = "fp32"
    bn_init: str = "uniform"
    deterministic: bool = False

    @classmethod
    def from_args(cls, args):
        """The settings of a search script's parsed flags (add_search_args): every field is a flag."""
        return cls(**{field.name: getattr(args, field.name) for field in dataclasses.fields(cls)})

    def checked(self):
        """These settings with the morph-dependent defaults filled in (a copy), or the UserError that
        refuses them."""
        if self.morph and self.iterations not in (None, MORPH_ITERATIONS):
            raise UserError("--morph runs a single iteration; leave out --iterations")
        iterations, fraction = (MORPH_ITERATIONS, MORPH_FRACTION) if self.morph else \
            (DEFAULT_ITERATIONS, DEFAULT_FRACTION)
        settings = dataclasses.replace(
            self, iterations=iterations if self.iterations is None else self.iterations,
            prune_fraction=fraction if self.prune_fraction is None else self.prune_fraction)
        check_at_least_one((("--epochs", settings.epochs), ("--batch-size", settings.batch_size),
                            ("--iterations", settings.iterations), ("--prune_every", settings.prune_every),
                            ("--prune_per_step", settings.prune_per_step)))
        if settings.warmup < 0:
            raise UserError(f"--warmup must be non-negative, got {settings.warmup}")
        if not 0 < settings.prune_fraction < 1:
            raise UserError(f"--prune_fraction must be between 0 and 1, got {settings.prune_fraction}")
        check_positive("--search_ratio", settings.search_ratio)
        check_sgd(settings.lr, settings.momentum, settings.weight_decay)
        stem = "{model}_morph_{tag}" if settings.morph else "{model}_10_eff_{tag}"
        require_save(settings.save, authors_name(stem, settings.model, settings.dataset, repetition=False))
        return settings


# What a finished iteration depends on, stored in every fit it writes. Not --epochs or --iterations:
# they bound the search; a finished iteration is the same under a larger bound.
SEARCH_SETTINGS = ("model", "dataset", "seed", "lr", "momentum", "weight_decay", "warmup", "batch_size",
                   "prune_every", "prune_per_step", "prune_fraction", "search_ratio", "exact", "subset",
                   "loader", "precision", "bn_init", "same_norm", "morph", "budget")


def search_settings(settings):
    """What the search records store as their "settings": SEARCH_SETTINGS of the checked settings (see
    SearchSettings.checked), and the latency model, --deterministic and --grouping where they matter."""
    stored = {k: getattr(settings, k) for k in SEARCH_SETTINGS}
    if settings.budget == "latency":  # the law's tau is in ms of this latency model
        stored.update(latency_batch=settings.latency_batch, latency_clock=settings.latency_clock)
    if settings.deterministic:  # only when on, so records written before the flag existed still match
        stored["deterministic"] = True
    if settings.grouping != "traced":  # likewise: a record that stores none was searched with "traced"
        stored["grouping"] = settings.grouping
    return stored


def _other_settings(path, data, settings):
    """None when the fit at `path` was written under these settings, else the UserError that refuses
    it. A fit that stores no settings (the authors' records, or ours before they were stored) cannot be
    shown to be this search's, so it is refused too."""
    stored = data.get("settings") if isinstance(data, dict) else None
    if not isinstance(stored, dict):
        return UserError(f"{path} is a search record whose settings are unknown (it stores none: the "
                         f"authors' published records, or ours before records stored them); use another "
                         f"--save, or --overwrite to recompute it")
    stored, wanted = {"grouping": "traced", **stored}, {"grouping": "traced", **search_settings(settings)}
    keys = [k for k in wanted if not (k == "seed" and wanted[k] is None) and stored.get(k) != wanted[k]]
    if not keys:
        return None
    changes = ", ".join(f"{k}: {stored.get(k)!r} there, {wanted[k]!r} now" for k in keys)
    return UserError(f"{path} is a search record of other settings ({changes}); use another --save, "
                     f"or --overwrite to recompute it")


def _load_iteration(settings, k, num_layers, log):
    """(alpha, beta) of a finished iteration, or None when its files are not both there."""
    csv_path = io.record_csv_path(settings.record_dir, settings.save, k)
    pk_path = param_pk_path(settings.record_dir, settings.save, k)
    if not (os.path.exists(csv_path) and os.path.exists(pk_path)):
        return None
    fit = io.load_dict(pk_path, "a per-iteration fit ({'train_alpha', 'train_beta'})")
    try:
        io.check_budget(fit, pk_path, settings.budget)
        refusal = _other_settings(pk_path, fit, settings)
    except UserError as err:  # fitted on the other resource
        refusal = err
    if refusal is not None and settings.overwrite:
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
        raise UserError(f"{pk_path}: holds {alpha.size} layers, {settings.model} has {num_layers}; it belongs "
                        f"to another search (choose another --save){io.other_model(alpha.size)}")
    io.check_fit(alpha, beta, pk_path)
    log(f"iteration {k}: resumed from {csv_path} and {pk_path}")
    return alpha, beta


def _stored_seeds(settings):
    """{path: seed} of this search's finished iterations (their param pickles record it)."""
    found, k = {}, 0
    while os.path.exists(path := param_pk_path(settings.record_dir, settings.save, k)):
        fit = io.load_pickle(path)
        if isinstance(fit, dict) and fit.get("seed") is not None:
            found[path] = check_seed(fit["seed"], path)
        k += 1
    return found


def _search_widths(settings, k, num_classes, previous, cost=None):
    spec = get_spec(settings.model, settings.grouping)
    if k == 0:
        return spec.prepare_filters(settings.search_ratio, num_classes=num_classes)
    alpha, beta = previous
    return spec.prepare_filters(settings.search_ratio, num_classes=num_classes, alpha=alpha, beta=beta,
                                search=True, first_iteration=True, exact=settings.exact,
                                budget=settings.budget, method="neuralscale", cost=cost)


def epochs_csv_path(record_dir, save, iteration):
    """The per-epoch CSV of search iteration k, beside its fit <save>_param<k>.pk (utils.progress)."""
    return os.path.join(record_dir, f"{save}_epochs{iteration}.csv")


def planned_epochs(settings, pruner, batches):
    """The epochs an iteration runs when it takes every allowed prune step: the warm-up, then the first
    window of prune_every + 1 minibatches, prune_every per later step and the call that reports done
    (the last-unit rule can end it sooner); at most --epochs."""
    steps = pruner.max_steps * settings.prune_every + 2
    return min(settings.epochs, settings.warmup + -(-steps // batches))


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


def _new_pruner(settings, k, widths, num_classes, device, log, cost=None):
    """The gated network of iteration k, its optimizer and its pruner (seeded from (--seed, k)); `cost`:
    the latency model of --budget latency, for the log line."""
    train.set_seed(iteration_seed(settings.seed, k))
    model = train.prepare_model(build_model(settings.model, widths, num_classes, gates=True,
                                            bn_init=settings.bn_init, grouping=settings.grouping), device)
    optimizer = train.make_optimizer(model, settings.lr, settings.momentum, settings.weight_decay)
    pruner = TaylorFOPruner(gates_of(model), prune_fraction=settings.prune_fraction,
                            prune_every=settings.prune_every, prune_per_step=settings.prune_per_step, log=log)
    macs = count_macs(settings.model, widths, num_classes, input_size(num_classes),
                      grouping=settings.grouping)
    latency = "" if cost is None else f"{cost(widths):.2f} ms predicted, "
    params = count_params(settings.model, widths, num_classes, grouping=settings.grouping)
    log(f"iteration {k}: widths {widths} ({params:,} formula params, "
        f"{macs:,} MACs, {latency}{pruner.total} units; pruning to {pruner.total - pruner.max_prunable} in at most "
        f"{pruner.max_steps} steps)")
    return model, optimizer, pruner


def _epoch_line(settings, k, epoch, lr, stats, pruner, clock):
    return (f"{timestamp()} iteration {k} epoch {epoch}: lr {lr:.4g} loss {stats['loss']:.4f} acc "
            f"{stats['acc']:.2f} units left {pruner.total - pruner.pruned}/{pruner.total} | prune step "
            f"{pruner.steps_done}/{pruner.max_steps}, iteration {k + 1}/{settings.iterations}; {clock.summary()}")


def _run_iteration(settings, k, widths, num_classes, loader, device, schedule, log, clock, cost=None):
    """Train and prune one network; the pruner's recorded rows. UserError when pruning does not finish,
    and then the iteration leaves no file. `clock`: the search's _SearchClock; `cost`: see _new_pruner."""
    model, optimizer, pruner = _new_pruner(settings, k, widths, num_classes, device, log, cost)
    planned = planned_epochs(settings, pruner, len(loader))
    clock.begin(planned)
    epoch_csv = EpochCSV(epochs_csv_path(settings.record_dir, settings.save, k), SEARCH_COLUMNS)
    epoch_csv.restart()  # an interrupted iteration starts over, and so does its CSV
    try:
        epoch = _prune_epochs(settings, k, (model, optimizer, pruner), _IterationEpochs(loader, k), device,
                              schedule, log, clock, epoch_csv)
    except UserError:
        if os.path.exists(epoch_csv.path):
            os.unlink(epoch_csv.path)
        raise
    clock.skip(planned - epoch)
    return _stop(pruner, k, epoch, log)


def _prune_epochs(settings, k, network, epochs, device, schedule, log, clock, epoch_csv):
    """Train with the search LR rule, pruning after the warm-up; the epoch at which pruning was complete."""
    model, optimizer, pruner = network

    def after_step(_loss):
        return "stop" if pruner.step() == "done" else None

    for epoch in range(1, settings.epochs + 1):
        lr = train.lr_for_epoch(schedule, epoch, settings.lr, settings.warmup)
        train.set_lr(optimizer, lr)
        stats = train.train_epoch(model, epochs, epoch, optimizer, device,
                                  after_step=after_step if epoch > settings.warmup else None,
                                  precision=settings.precision, desc=f"iteration {k} epoch {epoch}")
        if not np.isfinite(stats["loss"]):  # NaN criteria would prune nothing and record garbage
            raise UserError(f"iteration {k}: the training loss became {stats['loss']} at epoch {epoch} "
                            f"(lr {lr:g}); lower --lr")
        epoch_csv.append({"epoch": epoch, "lr": float(lr), "train_loss": float(stats["loss"]),
                          "train_acc": float(stats["acc"]), "units_left": pruner.total - pruner.pruned,
                          "prune_steps": pruner.steps_done})
        clock.advance(1)
        log(_epoch_line(settings, k, epoch, lr, stats, pruner, clock))
        if pruner.complete:
            return epoch
    raise UserError(
        f"iteration {k}: pruning did not finish within --epochs {settings.epochs}: {pruner.steps_done} of at "
        f"most {pruner.max_steps} prune steps taken, {pruner.total - pruner.pruned} of {pruner.total} units left (it "
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


def run_search(settings, *, datasets, schedule, log=log):
    """The whole search under `settings` (a SearchSettings; checked first, SearchSettings.checked) on one
    of `datasets`, its LR rule `schedule` (utils.train.lr_for_epoch); `log` prints one line. Returns the
    fits, [(alpha, beta)] per iteration. It holds the lock <record_dir>/.<save>.lock from the first read
    of its files to the last write: a second live search of the same name is refused."""
    settings = settings.checked()
    check_pair(settings.model, settings.dataset, datasets, settings.budget, settings.grouping)
    device = resolve_device(settings.device)
    writable_dir(settings.record_dir, create=False)  # created once the data has loaded
    with lock.hold(lock.lock_file(settings.record_dir, settings.save), f"search {settings.save}"):
        return _search(settings, device, schedule, log)


def _search(settings, device, schedule, log):
    num_classes = data.NUM_CLASSES[settings.dataset]
    num_layers = len(get_spec(settings.model, settings.grouping).DEFAULT_WIDTHS)
    record = io.record_pk_path(settings.record_dir, settings.save)
    if os.path.exists(record) and not settings.overwrite:
        _check_record(record, settings)
    if settings.seed is None:  # a resumed search keeps the seed its finished iterations stored
        settings = dataclasses.replace(settings, seed=train.choose_seed(None, _stored_seeds(settings), log))
    accel.set_precision(device, settings.precision)
    accel.set_deterministic(device, settings.deterministic)
    fits, k = [], 0
    while k < settings.iterations:
        fit = _load_iteration(settings, k, num_layers, log)
        if fit is None:
            break
        fits.append(fit)
        k += 1

    if k < settings.iterations:
        loader, _ = data.get_loaders(settings.dataset, settings.data_dir, recipe="search",
                                     batch_size=settings.batch_size, device=device, loader=settings.loader,
                                     subset=settings.subset, seed=settings.seed, download=settings.download,
                                     same_norm=settings.same_norm, need_test=False)
    writable_dir(settings.record_dir)
    cost = _latency_cost(settings, num_classes, log) if k < settings.iterations else None
    clock = _SearchClock(settings.iterations - k)
    for k in range(k, settings.iterations):
        widths = _search_widths(settings, k, num_classes, fits[-1] if fits else None, cost)
        rows = _run_iteration(settings, k, widths, num_classes, loader, device, schedule, log, clock, cost)
        alpha, beta = fit_power_law(rows, settings.model, num_classes, exact=settings.exact,
                                    budget=settings.budget, cost=cost, grouping=settings.grouping)
        io.write_prune_csv(io.record_csv_path(settings.record_dir, settings.save, k), rows)
        io.save_pickle(io.with_budget({"train_alpha": alpha, "train_beta": beta, "seed": settings.seed,
                                       "settings": search_settings(settings)}, settings.budget),
                       param_pk_path(settings.record_dir, settings.save, k))
        log(f"iteration {k}: {len(rows)} rows recorded, final widths {list(rows[-1])}"
            + ("" if any(beta) else f" (fewer than {MIN_ROWS} rows: the authors' fallback fit, beta = 0)"))
        fits.append((alpha, beta))

    _finish(settings, record, fits, num_layers, log)
    return fits


def _latency_cost(settings, num_classes, log):
    """budget "latency": widths -> the latency predicted on the settings' device (utils.cli.latency_cost,
    the table cached under <record_dir>/latency_tables/); None for the other budgets."""
    return latency_cost(settings.budget, settings.model, num_classes, input_size(num_classes),
                        record_dir=settings.record_dir, device=settings.device, precision=settings.precision,
                        batch=settings.latency_batch, clock=settings.latency_clock, log=log)


def _check_record(path, settings):
    """The search record this search would rewrite must be its own: written under these settings. One
    that is unreadable or stores no settings (the authors' published records) is refused too."""
    try:
        refusal = _other_settings(path, io.load_dict(path, "a search record"), settings)
    except UserError as err:
        raise UserError(f"{err}; use another --save, or --overwrite to replace it") from None
    if refusal is not None:
        raise refusal


def _finish(settings, record, fits, num_layers, log):
    """Write the search record (unless it already holds these fits) and, after --morph, the line to paste."""
    if _same_fits(record, fits, num_layers, search_settings(settings), settings.budget):
        log(f"{record} is up to date ({len(fits)} iterations)")
    else:
        io.save_fits(record, fits, settings=search_settings(settings), budget=settings.budget)
        log(f"wrote {record} ({len(fits)} iterations)")
    if settings.morph:
        last = io.read_prune_csv(io.record_csv_path(settings.record_dir, settings.save, 0), num_layers)[-1]
        log(f"50 %-pruned widths; paste this line into PRUNED_FILTERS at the top of ratio_swipe.py "
            f"(or pass --prune_fname {settings.save} to ratio_swipe.py --morph):")
        log(morph_line(settings.model, settings.dataset, last))
