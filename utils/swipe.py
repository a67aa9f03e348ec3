"""Training from scratch: the engine of ratio_swipe.py and imagenet_ratio_swipe.py, and the resumable
training run that train_norm.py and fine_tune.py share.

A run trains one network for `epochs` under one of the authors' LR schedules (utils.train), evaluating
on the test set after every epoch. After each epoch it writes a checkpoint (weights, optimizer state,
epoch, curves so far, the network's constructor arguments) and, on a new best test accuracy, a
best-epoch weights file; both atomically. The same command again continues from the checkpoint: the
loaders' randomness is a pure function of (seed, epoch) and a ratio's model init is seeded from
(seed, ratio), so on the CPU a resumed run ends with the same curves as an uninterrupted one, and a
ratio does not depend on which ratios ran before it. Without --seed a run draws a fresh seed (the
authors' runs were unseeded: their five runs per cell differ), prints it and stores it in its
checkpoints and results; a run that finds its own checkpoint or results continues with their seed.

Results keep the authors' keys (train_acc, train_loss, test_acc, test_loss: one float per epoch,
accuracy as the mean over minibatches of the per-batch %), plus dataset-level accuracy, widths,
params (the built network's trainable parameters, gates excluded), macs (multiply-accumulates per
image, utils.params.count_macs), latency and provenance.
"""
import argparse
import math
import os
import time

import numpy as np
import torch

from model import architecture, build_model, get_spec
from utils import accel, io, scaling
from utils.accel import set_precision
from utils.cli import (UserError, log, add_budget_arg, add_training_args, check_pair, check_positive, check_ratios,
                       check_run_name, check_widths, make_parser, positive_int, resolve_device, writable_dir)
from utils.data import IMAGE_SIZE, NUM_CLASSES, TEST_ORDERS, get_loaders
from utils.fit import MIN_ROWS
from utils.latency import cached_latency, latency_cache_dir
from utils.params import actual_params, count_macs
from utils.train import (RECIPES, choose_seed, evaluate, load_checkpoint, lr_for_epoch, make_optimizer,
                         prepare_model, set_lr, set_seed, train_epoch)

CIFAR_RATIOS = tuple(float(r) for r in np.arange(0.25, 2.1, 0.25))  # the authors' arange: 0.25 .. 2.0
TINY_RATIOS = (0.25, 0.5, 0.75, 1.0)
METHOD_FLAGS = ("uniform", "morph", "convcut")  # NeuralScale when none is given
CURVE_KEYS = ("train_acc", "train_loss", "test_acc", "test_loss", "train_acc_dataset",
              "test_acc_dataset", "lr")


def scratch_recipe(dataset):
    """The authors' from-scratch recipe (utils.train.RECIPES): TinyImageNet's, or the CIFAR one."""
    return RECIPES["scratch_tiny" if dataset == "tinyimagenet" else "scratch_cifar"]


def schedule_for(dataset):
    """The authors' from-scratch schedule: 300 epochs, x0.1 at 100/200/250; TinyImageNet: 150, x0.1
    every 50."""
    return scratch_recipe(dataset)["schedule"]


def stored_seeds(results=(), checkpoints=()):
    """{path: seed} of the existing result pickles and checkpoints among the paths that record one."""
    found = {}
    for path in results:
        if os.path.exists(path):
            seed = io.load_result(path).get("seed")
            if seed is not None:
                found[str(path)] = int(seed)
    for path in checkpoints:
        if os.path.exists(path):
            fingerprint = load_checkpoint(path, torch.device("cpu")).get("fingerprint") or {}
            if fingerprint.get("seed") is not None:
                found[str(path)] = int(fingerprint["seed"])
    return found


def with_seed(args, results=(), checkpoints=()):
    """A copy of args whose seed is set (utils.train.choose_seed): --seed, or the seed stored in this
    run's results and checkpoints, or a fresh one."""
    if args.seed is not None:
        return args
    seed = choose_seed(None, stored_seeds(results, checkpoints), log)
    return argparse.Namespace(**{**vars(args), "seed": seed})


def init_seed(seed, ratio, resource=None, target=None):
    """The model-init seed of one ratio: a function of (seed, ratio) only; of an absolute budget, of
    (seed, resource, target)."""
    if target is None:
        return int(np.random.SeedSequence([seed % 2**64, io.ratio_tag(ratio)]).generate_state(1)[0])
    code = 1 + scaling.RESOURCES.index(resource)
    return int(np.random.SeedSequence([seed % 2**64, code, int(target)]).generate_state(1)[0])


# -- flags --------------------------------------------------------------------------------------------

def add_recipe_args(parser, recipe, *, datasets, dataset, models=None, by_dataset=False, hidden=(),
                    help=None, outputs=("plots_dir", "models_dir")):
    """The training flags (utils.cli.add_training_args) plus those of training from scratch."""
    hidden = ("--same_norm",) + tuple(hidden)  # it changes the search's normalisation only
    add_training_args(parser, recipe, datasets=datasets, dataset=dataset, model="resnet18", models=models,
                      by_dataset=by_dataset, hidden=hidden, outputs=outputs,
                      help={"--model": "network; the default is the authors' for training",
                            **(help or {})})
    parser.add_argument("--test-batch-size", type=positive_int, default=None,
                        help="test minibatch size (default: --batch-size, as the authors' loaders; "
                             "it changes the per-batch-mean accuracy slightly)")
    parser.add_argument("--test_subset", type=positive_int, default=None,
                        help="test on the first N images only (default: all)")
    parser.add_argument("--no_latency", action="store_true", help="skip the latency measurement")
    parser.add_argument("--test_order", choices=TEST_ORDERS, default="shuffled",
                        help="shuffled: the test set in a fresh order each epoch, drawn from --seed (the "
                             "authors' CIFAR/Fashion-MNIST loaders; it moves the per-batch-mean accuracy; "
                             "TinyImageNet is never shuffled, as theirs); fixed: file order")
    parser.add_argument("--scale_schedule", action="store_true",
                        help=argparse.SUPPRESS if "--scale_schedule" in hidden else
                        "put the authors' LR decays at the same fractions of --epochs (for short "
                        "runs; default: the paper's fixed decay epochs)")
    # The authors' spelling of the data folder (imagenet scripts, train_norm, fine_tune).
    parser.add_argument("--data", dest="data_dir", default=argparse.SUPPRESS,
                        help="alias of --data_dir, the authors' spelling (default: --data_dir's)")
    return parser


def check_recipe_args(args, datasets):
    """What argparse cannot check: the model/data pair, the SGD numbers, the run name."""
    check_pair(args.model, args.dataset, datasets)
    check_positive("--lr", args.lr)
    for flag, value in (("--momentum", args.momentum), ("--weight_decay", args.weight_decay)):
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"{flag} must be a finite number of at least 0, got {value:g}")
    check_run_name(args.save)


def add_swipe_args(parser, ratios):
    parser.add_argument("--prune_fname", default=None,
                        help="NeuralScale: the search run under --record_dir (or a .pk path) whose fit "
                             "sets the widths; --morph: the run whose <name>_0.csv last row is the "
                             "pruned width list (or a .csv path)")
    parser.add_argument("--descent_idx", type=int, default=14,
                        help="which search iteration's fit to use (0 = Iteration 1, 14 = Iteration 15)")
    parser.add_argument("--uniform", action="store_true", help="uniform width scaling")
    parser.add_argument("--morph", action="store_true",
                        help="MorphNet-style: the 50%%-pruned widths rescaled to each budget")
    parser.add_argument("--convcut", action="store_true",
                        help="uniform widths, every shortcut a 1x1 conv (resnet18, mobilenetv2)")
    parser.add_argument("--ratios", type=float, nargs="+", default=None,
                        help=f"width ratios to train (a subset shards a swipe; default "
                             f"{' '.join(f'{r:g}' for r in ratios)})")
    parser.add_argument("--target_params", nargs="+", default=None, metavar="N",
                        help="instead of --ratios: absolute budgets in parameters, e.g. 1.5M (suffixes k, M, "
                             "G); results are named <save>_params<N>.pk")
    parser.add_argument("--target_macs", nargs="+", default=None, metavar="N",
                        help="instead of --ratios: absolute budgets in MACs per image, e.g. 300M; results "
                             "are named <save>_macs<N>.pk")
    add_budget_arg(parser, default=None)
    parser.set_defaults(default_ratios=list(ratios))
    parser.add_argument("--exact", action="store_true",
                        help="tau search on the exact parameter count of the built network instead "
                             "of the authors' formula (--budget params at a ratio)")


def budget_points(args):
    """Resolve --budget, --ratios and --target_*: (resource, ratios, targets), one of the last two
    None. The flags' resource must agree with --budget (see scaling.resolve_budget)."""
    args.budget = scaling.resolve_budget(args.budget, args.target_params, args.target_macs)
    given = args.target_params if args.target_params is not None else args.target_macs
    if given is None:
        return args.budget, [float(r) for r in (args.ratios or args.default_ratios)], None
    if args.ratios is not None:
        raise UserError(f"give --ratios or --target_{args.budget}, not both")
    return args.budget, None, [scaling.parse_count(text, f"--target_{args.budget}") for text in given]


# -- width plans --------------------------------------------------------------------------------------

def choose_method(args):
    given = [name for name in METHOD_FLAGS if getattr(args, name)]
    if len(given) > 1:
        raise UserError(f"give at most one of --uniform, --morph, --convcut (got "
                        f"{' and '.join('--' + g for g in given)})")
    return given[0] if given else "neuralscale"


def plan_widths(args, method, ratios, num_classes, pruned_filters, budget="params", targets=None):
    """[(ratio, widths)] for every ratio, or [(target, widths)] for every absolute budget in `targets`
    (a count of `budget`), and the provenance keys of the result. Every one is resolved before anything
    trains, so a bad record or budget fails at once."""
    spec = get_spec(args.model)
    num_layers = len(spec.DEFAULT_WIDTHS)
    kwargs = {"num_classes": num_classes, "search": False, "first_iteration": args.descent_idx == 0,
              "method": "uniform" if method == "convcut" else method,
              "exact": args.exact, "convcut": method == "convcut", "budget": budget}
    info = {}
    if method == "neuralscale":
        if not args.prune_fname:
            raise UserError("NeuralScale (the default method) needs --prune_fname NAME, a search run under "
                            "--record_dir or a .pk path; or choose --uniform, --morph or --convcut")
        path = io.resolve_record(args.record_dir, args.prune_fname)
        alpha, beta = io.select_fit(io.load_fits(path, num_layers, budget), args.descent_idx, path)
        kwargs.update(alpha=alpha, beta=beta)
        info = {"prune_fname": path, "descent_idx": args.descent_idx}
    elif method == "morph":
        kwargs["pruned_widths"], source = io.morph_widths(args.prune_fname, args.record_dir, args.model,
                                                          args.dataset, pruned_filters, num_layers)
        info = {"prune_fname": source, "pruned_widths": list(kwargs["pruned_widths"])}
    elif method == "convcut" and args.model == "vgg":
        raise UserError("--convcut applies to resnet18 and mobilenetv2 (VGG has no shortcuts)")
    if targets is not None:
        points = [(None, target) for target in dict.fromkeys(targets)]
    else:
        points = [(ratio, None) for ratio in io.distinct_ratios(
            check_ratios(ratios), lambda r: io.result_path(args.plots_dir, args.model, args.save, r))]
    plans = []
    for ratio, target in points:
        if target is None:
            check_widths(spec.prepare_filters(ratio, num_classes=num_classes),
                         f"{args.model} at ratio {ratio:g}")  # before a huge tau search
        where = f"ratio {ratio:g}" if target is None else budget_label(ratio, budget, target)
        widths = check_widths([int(w) for w in spec.prepare_filters(ratio, target=target, **kwargs)],
                              f"{args.model} {method} at {where}")
        if method in ("neuralscale", "morph") and target is None:
            flat_fit = method == "neuralscale" and not np.any(kwargs["beta"])
            warn_off_budget(args.model, ratio, widths, num_classes, spec, method, flat_fit, budget)
        plans.append((float(ratio) if target is None else target, widths))
    return plans, info


def warn_off_budget(model_name, ratio, widths, num_classes, spec, method, flat_fit, budget="params"):
    """The authors' searches can miss the budget silently; the one known case is a fit from a record
    with fewer than MIN_ROWS rows (beta == 0), whose VGG widths stay int(alpha) at every ratio (kept quirk).
    Say so rather than train a network of another size under this ratio's name."""
    count = scaling.resource_counter(model_name, budget, num_classes)
    got = count(widths)
    goal = count(spec.prepare_filters(ratio, num_classes=num_classes))
    if abs(got - goal) > 0.1 * goal:
        hint = f" (a beta == 0 fit: the search record has fewer than {MIN_ROWS} rows)" if flat_fit else ""
        log(f"warning: {model_name} {method} at ratio {ratio:g} has {got:,} "
            f"{scaling.RESOURCE_WORDS[budget]}, {got / goal:.0%} of the uniform network's {goal:,}{hint}")


# -- one training run ---------------------------------------------------------------------------------

def checkpoint_paths(models_dir, model_name, stem):
    """(resumable checkpoint, best-epoch weights) of one run."""
    folder = os.path.join(models_dir, model_name)
    return (os.path.join(folder, f"{stem}_checkpoint.pt"), os.path.join(folder, f"{stem}_best_model.pt"))


def differing(stored, wanted):
    """The names of the settings in `wanted` that `stored` holds otherwise (or lacks). A seed the user
    did not give (None) matches any stored seed."""
    return [k for k in wanted if not (k == "seed" and wanted[k] is None)
            and (k not in stored or stored[k] != wanted[k])]


def describe(stored, wanted, keys):
    return ", ".join(f"{k}: {stored.get(k)!r} there, {wanted[k]!r} now" for k in keys)


def other_settings(path, what, stored, wanted, keys):
    return UserError(f"{path} is {what} of other settings ({describe(stored, wanted, keys)}); use another "
                     f"--save, or --overwrite to replace it")


def finished(path, wanted, overwrite):
    """True when the result `path` holds this very run (skip it), False when there is none or when
    --overwrite replaces one of other settings; a result of other settings is refused. `wanted` holds
    the run's settings and its ratio (a file name truncates the ratio, the pickle keeps it)."""
    if not os.path.exists(path):
        return False
    try:
        old = io.load_result(path)
    except UserError:
        if overwrite:
            log(f"{path}: unreadable, replacing it (--overwrite)")
            return False
        raise
    legacy = not isinstance(old.get("settings"), dict)  # written before results stored their settings
    stored = {k: old[k] for k in ("seed", "model", "dataset", "method", "epochs", "widths") if k in old} \
        if legacy else dict(old["settings"])
    stored["ratio"] = None if old["ratio"] is None else float(old["ratio"])  # None: an absolute budget
    # A legacy result is compared on the keys it holds.
    keys = [k for k in differing(stored, wanted) if not legacy or k in stored]
    if keys and overwrite:
        log(f"{path}: replacing a result of other settings ({describe(stored, wanted, keys)})")
        return False
    if keys:
        raise other_settings(path, "a result", stored, wanted, keys)
    return True


def _resume(net, optimizer, path, device, fingerprint, epochs):
    """Load a checkpoint of this very run into net and optimizer; (start epoch, curves, best)."""
    ckpt = load_checkpoint(path, device)
    try:
        old, done = ckpt["fingerprint"], int(ckpt["epoch"])
        curves = {k: [float(v) for v in ckpt["curves"][k]] for k in CURVE_KEYS}
        best = (float(ckpt["best_acc"]), int(ckpt["best_epoch"]))
        old = dict(old)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: not a checkpoint of this project ({err}); delete it to start over") from None
    changed = differing(old, fingerprint) + sorted(set(old) - set(fingerprint))
    if changed:
        raise other_settings(path, "a checkpoint", old, {**dict.fromkeys(old), **fingerprint}, changed)
    if done > epochs:
        raise UserError(f"{path} is at epoch {done}, past --epochs {epochs}; raise --epochs, use another "
                        f"--save, or --overwrite to start over")
    try:
        net.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise UserError(f"{path}: cannot restore the run: {str(err).splitlines()[0]}") from None
    return done + 1, curves, best


def train_run(net, train_loader, test_loader, *, device, schedule, epochs, lr, momentum, weight_decay,
              checkpoint_path, best_path, fingerprint, name, precision="fp32", scale_schedule=False,
              overwrite=False):
    """Train `net` (already on `device`, see prepare_model) for `epochs`, resuming from
    `checkpoint_path` when it holds this run (same fingerprint). A checkpoint of another run is
    refused, or with `overwrite` left to be replaced. Returns the curves (lists, one value per epoch)
    and the best epoch."""
    initial_state = {k: v.clone() for k, v in net.state_dict().items()} if overwrite else None
    optimizer = make_optimizer(net, lr, momentum, weight_decay)
    start, curves, (best_acc, best_epoch) = 1, {k: [] for k in CURVE_KEYS}, (-1.0, 0)
    if os.path.exists(checkpoint_path):
        try:
            start, curves, (best_acc, best_epoch) = _resume(net, optimizer, checkpoint_path, device,
                                                            fingerprint, epochs)
            log(f"{name}: resuming from {checkpoint_path} at epoch {start}")
        except UserError as err:
            if not overwrite:
                raise
            log(f"{name}: starting over, replacing {checkpoint_path} (--overwrite): {err}")
            # _resume may have loaded part of the state before it refused: start from clean state
            net.load_state_dict(initial_state)
            optimizer = make_optimizer(net, lr, momentum, weight_decay)
    arch = architecture(net)
    for epoch in range(start, epochs + 1):
        # From the epoch number; args stay untouched.
        epoch_lr = lr_for_epoch(schedule, epoch, lr, scale_to=epochs if scale_schedule else None)
        set_lr(optimizer, epoch_lr)
        t0 = time.perf_counter()
        train = train_epoch(net, train_loader, epoch, optimizer, device, precision=precision,
                            desc=f"{name} {epoch}")
        test = evaluate(net, test_loader, device, epoch=epoch, precision=precision, desc=f"{name} test")
        for which, loss in (("training", train["loss"]), ("test", test["loss"])):
            if not np.isfinite(loss):
                raise UserError(f"{name}: the {which} loss became {loss} at epoch {epoch} (lr {epoch_lr:g}); "
                                f"lower --lr")
        for key, value in (("train_acc", train["acc"]), ("train_loss", train["loss"]),
                           ("test_acc", test["acc"]), ("test_loss", test["loss"]),
                           ("train_acc_dataset", train["acc_dataset"]),
                           ("test_acc_dataset", test["acc_dataset"]), ("lr", epoch_lr)):
            curves[key].append(float(value))
        weights = net.state_dict()
        # Best file first: if the process dies between the two writes, the resumed run redoes this
        # epoch (same batches, same result) and writes both again.
        if test["acc"] > best_acc:
            best_acc, best_epoch = float(test["acc"]), epoch
            io.save_torch({"epoch": epoch, "state_dict": weights, "architecture": arch,
                           "best_prec1": best_acc, "fingerprint": fingerprint}, best_path)
        io.save_torch({"epoch": epoch, "state_dict": weights, "optimizer": optimizer.state_dict(),
                       "curves": curves, "best_acc": best_acc, "best_epoch": best_epoch,
                       "architecture": arch, "fingerprint": fingerprint}, checkpoint_path)
        log(f"{name} epoch {epoch}/{epochs} lr {epoch_lr:.4g} | train loss {train['loss']:.4f} "
            f"acc {train['acc']:.2f} | test loss {test['loss']:.4f} acc {test['acc']:.2f} "
            f"({test['acc_dataset']:.2f} dataset) | best {best_acc:.2f} @{best_epoch} | "
            f"{time.perf_counter() - t0:.1f}s")
    accel.empty_cache(device)
    return curves, best_epoch


def budget_label(ratio, budget, target):
    return f"r={ratio:g}" if target is None else f"{budget}={target:,}"


def make_result(*, ratio, curves, net, widths, latency_ms, args, method, epochs, extra=None):
    """The result pickle: the authors' five keys first, then this project's."""
    arch = architecture(net)
    result = {"ratio": None if ratio is None else float(ratio)}  # None: an absolute budget
    result.update({k: list(curves[k]) for k in ("train_acc", "train_loss", "test_acc", "test_loss",
                                                "train_acc_dataset", "test_acc_dataset", "lr")})
    result.update({
        "widths": [int(w) for w in widths], "params": int(actual_params(net)),
        "macs": count_macs(args.model, widths, arch["num_classes"], IMAGE_SIZE[args.dataset], arch["convcut"]),
        "latency_ms": None if latency_ms is None else float(latency_ms), "seed": int(args.seed),
        "model": args.model, "dataset": args.dataset, "method": method, "epochs": int(epochs),
        "precision": args.precision, "bn_init": net.bn_init, "test_order": args.test_order,
        "final_test_acc": curves["test_acc"][-1], "final_test_acc_dataset": curves["test_acc_dataset"][-1],
        "best_test_acc": max(curves["test_acc"]),
        "best_epoch": int(np.argmax(curves["test_acc"])) + 1,
    })
    result.update(extra or {})
    return result


def fingerprint_of(args, **more):
    """What must match for a checkpoint to be resumed. A result stores it with "epochs" added as its
    "settings", and a finished run is skipped only when they match (see finished)."""
    fp = {"model": args.model, "dataset": args.dataset,
          "seed": None if args.seed is None else int(args.seed), "lr": float(args.lr),
          "momentum": float(args.momentum), "weight_decay": float(args.weight_decay),
          "batch_size": int(args.batch_size), "test_batch_size": int(args.test_batch_size or args.batch_size),
          "subset": args.subset, "test_subset": args.test_subset, "loader": args.loader,
          "precision": args.precision, "bn_init": args.bn_init, "test_order": args.test_order,
          "scale_schedule": bool(args.scale_schedule)}
    fp.update(more)
    return fp


def run_options(args):
    """train_run's keyword arguments that come straight from the flags."""
    return {"precision": args.precision, "scale_schedule": args.scale_schedule, "overwrite": args.overwrite}


def load_data(args, device):
    return get_loaders(args.dataset, args.data_dir, recipe="train", batch_size=args.batch_size,
                       test_batch_size=args.test_batch_size or args.batch_size, device=device,
                       loader=args.loader, subset=args.subset, test_subset=args.test_subset, seed=args.seed,
                       download=args.download, same_norm=args.same_norm, test_order=args.test_order)


def output_dirs(args):
    """Prove the output folders writable before any training."""
    writable_dir(os.path.join(args.plots_dir, args.model))
    writable_dir(os.path.join(args.models_dir, args.model))


def latency_of(net, args, device):
    """ms per batch of 100, measured once per configuration and machine (the seeds of a swipe share it)."""
    if args.no_latency:
        return None
    return cached_latency(latency_cache_dir(args.plots_dir), net, device, IMAGE_SIZE[args.dataset])


# -- the swipe ----------------------------------------------------------------------------------------

def run_swipe(argv, recipe, *, description, datasets, dataset, ratios, pruned_filters):
    """ratio_swipe.py / imagenet_ratio_swipe.py: train one network per ratio from scratch."""
    parser = make_parser(description)
    add_recipe_args(parser, recipe, datasets=datasets, dataset=dataset,
                    outputs=("record_dir", "plots_dir", "models_dir"))  # the search record of --prune_fname
    add_swipe_args(parser, ratios)
    args = parser.parse_args(argv)
    check_recipe_args(args, datasets)
    device = resolve_device(args.device)
    method = choose_method(args)
    num_classes = NUM_CLASSES[args.dataset]
    budget, ratios, targets = budget_points(args)
    plans, info = plan_widths(args, method, ratios, num_classes, pruned_filters, budget, targets)
    schedule = schedule_for(args.dataset)
    todo = []
    for value, widths in plans:  # every result is checked before anything trains
        ratio, target = (None, value) if targets is not None else (value, None)
        tag = io.budget_tag(ratio, budget, target)
        path = os.path.join(args.plots_dir, args.model, f"{args.save}_{tag}.pk")
        point = {} if budget == "params" and target is None else {"budget": budget, "target": target}
        fingerprint = fingerprint_of(args, method=method, ratio=ratio, widths=widths, schedule=schedule,
                                     **point)
        if finished(path, {**fingerprint, "epochs": args.epochs}, args.overwrite):
            log(f"{budget_label(ratio, budget, target)}: {path} exists, skipped (same settings)")
        else:
            todo.append((ratio, target, tag, widths, path, point))
    if not todo:
        return
    args = with_seed(args, results=[path for *_, path, _ in todo],
                     checkpoints=[checkpoint_paths(args.models_dir, args.model, f"{args.save}_{tag}")[0]
                                  for _, _, tag, *_ in todo])
    set_precision(device, args.precision)
    train_loader, test_loader = load_data(args, device)  # a missing data set fails before anything is created
    output_dirs(args)
    for ratio, target, tag, widths, path, point in todo:
        set_seed(init_seed(args.seed, ratio, budget, target))
        net = prepare_model(build_model(args.model, widths, num_classes, gates=False,
                                        convcut=method == "convcut", bn_init=args.bn_init), device)
        name = f"{args.model} {args.dataset} {method} {budget_label(ratio, budget, target)} seed={args.seed}"
        log(f"{name}: widths {widths}, {actual_params(net):,} parameters")
        checkpoint, best = checkpoint_paths(args.models_dir, args.model, f"{args.save}_{tag}")
        fingerprint = fingerprint_of(args, method=method, ratio=ratio, widths=widths, schedule=schedule,
                                     **point)
        curves, _ = train_run(net, train_loader, test_loader, device=device, schedule=schedule,
                              epochs=args.epochs, lr=args.lr, momentum=args.momentum,
                              weight_decay=args.weight_decay, checkpoint_path=checkpoint, best_path=best,
                              fingerprint=fingerprint, name=name, **run_options(args))
        latency = latency_of(net, args, device)
        result = make_result(ratio=ratio, curves=curves, net=net, widths=widths, latency_ms=latency,
                             args=args, method=method, epochs=args.epochs,
                             extra={**info, **point, "settings": {**fingerprint, "epochs": args.epochs}})
        io.save_result(path, result)
        log(f"{name}: params {result['params']:,}"
            + ("" if latency is None else f", latency {latency:.2f} ms/batch of 100")
            + f", best test acc {result['best_test_acc']:.2f}; wrote {path}")
        del net
        accel.empty_cache(device)

