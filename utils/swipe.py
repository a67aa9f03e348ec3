"""Training from scratch: the engine of ratio_swipe.py and imagenet_ratio_swipe.py, and the resumable
training run that train_norm.py and fine_tune.py share.

A run trains one network for `epochs` under one of the authors' LR schedules (utils.train), evaluating
on the test set after every epoch. After each epoch it writes a checkpoint (weights, optimizer state,
epoch, curves so far, the network's constructor arguments) and, on a new best test accuracy, a
best-epoch weights file; both atomically. The same command again continues from the checkpoint: the
loaders' randomness is a pure function of (seed, epoch) and a ratio's model init is seeded from
(seed, ratio), so on the CPU a resumed run ends with the same curves as an uninterrupted one, and a
ratio does not depend on which ratios ran before it.

Results keep the authors' keys (train_acc, train_loss, test_acc, test_loss: one float per epoch,
accuracy as the mean over minibatches of the per-batch %), plus dataset-level accuracy, widths,
params (the built network's trainable parameters, gates excluded), macs (multiply-accumulates per
image, utils.params.count_macs), latency and provenance.
"""
import argparse
import os
import time

import numpy as np
import torch

from model import architecture, build_model, get_spec
from utils import io
from utils.cli import UserError, add_common_args, check_pair, make_parser, resolve_device, writable_dir
from utils.data import IMAGE_SIZE, NUM_CLASSES, get_loaders
from utils.latency import cached_latency, latency_cache_dir
from utils.params import actual_params, count_macs, count_params
from utils.train import (evaluate, load_checkpoint, lr_for_epoch, make_optimizer, prepare_model, set_lr,
                         set_seed, train_epoch)

CIFAR_RATIOS = tuple(float(r) for r in np.arange(0.25, 2.1, 0.25))  # the authors' arange: 0.25 .. 2.0
TINY_RATIOS = (0.25, 0.5, 0.75, 1.0)
METHOD_FLAGS = ("uniform", "morph", "convcut")  # NeuralScale when none is given
CURVE_KEYS = ("train_acc", "train_loss", "test_acc", "test_loss", "train_acc_dataset",
              "test_acc_dataset", "lr")


def log(message):
    print(message, flush=True)


def schedule_for(dataset):
    """The authors' from-scratch schedule: 300 epochs, x0.1 at 100/200/250; TinyImageNet: 150, x0.1
    every 50."""
    return "tiny" if dataset == "tinyimagenet" else "cifar"


def default_epochs(dataset, cifar, tiny):
    return tiny if dataset == "tinyimagenet" else cifar


def init_seed(seed, ratio):
    """The model-init seed of one ratio: a function of (seed, ratio) only."""
    return int(np.random.SeedSequence([seed % 2**64, io.ratio_tag(ratio)]).generate_state(1)[0])


# -- flags --------------------------------------------------------------------------------------------

def add_recipe_args(parser, *, datasets, default_dataset, models, default_model, epochs, lr,
                    epochs_help=None):
    """The authors' training flags (spellings and defaults) plus this project's data flags."""
    parser.add_argument("--batch-size", type=int, default=128, help="training minibatch size")
    parser.add_argument("--test-batch-size", type=int, default=None,
                        help="test minibatch size (default: --batch-size, as the authors' loaders; "
                             "it changes the per-batch-mean accuracy slightly)")
    parser.add_argument("--epochs", type=int, default=epochs, help=epochs_help or "training epochs")
    parser.add_argument("--lr", type=float, default=lr, help="base learning rate")
    parser.add_argument("--weight_decay", type=float, default=5e-4, help="SGD weight decay")
    parser.add_argument("--momentum", type=float, default=0.5, help="SGD momentum (the authors' 0.5)")
    parser.add_argument("--dataset", default=default_dataset, help=f"one of {', '.join(datasets)}")
    parser.add_argument("--model", default=default_model, help=f"one of {', '.join(models)}")
    parser.add_argument("--save", default="model", help="run name: the stem of every output file")
    parser.add_argument("--subset", type=int, default=None, help="train on the first N images only")
    parser.add_argument("--test_subset", type=int, default=None, help="test on the first N images only")
    parser.add_argument("--loader", default="fast", choices=("fast", "torchvision"),
                        help="fast: data on the device, batch augmentation; torchvision: the authors' "
                             "PIL pipeline")
    parser.add_argument("--same_norm", action="store_true",
                        help="use the training normalisation everywhere (no effect on training runs)")
    parser.add_argument("--no_latency", action="store_true", help="skip the latency measurement")
    parser.add_argument("--amp", choices=("on", "off"), default="on",
                        help="bfloat16 autocast on CUDA (BatchNorm and the loss stay fp32); off: exact "
                             "fp32. No effect on the CPU")
    parser.add_argument("--scale_schedule", action="store_true",
                        help="put the authors' LR decays at the same fractions of --epochs (for short "
                             "runs; default: the paper's fixed decay epochs)")
    add_common_args(parser)
    # The authors' spelling of the data folder (imagenet scripts, train_norm, fine_tune).
    parser.add_argument("--data", dest="data_dir", default=argparse.SUPPRESS,
                        help="alias of --data_dir")
    return parser


def check_recipe_args(args, datasets, models):
    if args.model not in models:
        raise UserError(f"this script does not take model {args.model!r}; choose one of {', '.join(models)}")
    check_pair(args.model, args.dataset, datasets)
    for flag, value in (("--batch-size", args.batch_size), ("--test-batch-size", args.test_batch_size),
                        ("--epochs", args.epochs), ("--subset", args.subset),
                        ("--test_subset", args.test_subset)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if args.lr <= 0:
        raise UserError(f"--lr must be positive, got {args.lr}")


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
    parser.add_argument("--ratios", type=float, nargs="+", default=list(ratios),
                        help="width ratios to train (a subset shards a swipe)")
    parser.add_argument("--exact", action="store_true",
                        help="tau search on the exact parameter count of the built network instead "
                             "of the authors' formula")


# -- width plans --------------------------------------------------------------------------------------

def choose_method(args):
    given = [name for name in METHOD_FLAGS if getattr(args, name)]
    if len(given) > 1:
        raise UserError(f"give at most one of --uniform, --morph, --convcut (got "
                        f"{' and '.join('--' + g for g in given)})")
    return given[0] if given else "neuralscale"


def morph_source(args, pruned_filters, num_layers):
    """(pruned width list, where it came from): the last row of a --morph search record, or the table."""
    if args.prune_fname:
        name = args.prune_fname
        if name.endswith(".csv"):
            path = name
        elif name.endswith(".pk"):
            path = name[:-3] + "_0.csv"
        else:
            path = io.record_csv_path(args.record_dir, name, 0)
        return [int(w) for w in io.read_prune_csv(path, num_layers)[-1]], path
    key = (args.model, args.dataset)
    if key not in pruned_filters:
        listed = ", ".join(f"{m}/{d}" for m, d in pruned_filters)
        raise UserError(f"--morph has no pruned widths for {args.model} on {args.dataset} (PRUNED_FILTERS "
                        f"in ratio_swipe.py lists {listed}); run architecture_descent.py --morph --save NAME "
                        f"and pass --prune_fname NAME")
    widths = list(pruned_filters[key])
    if len(widths) != num_layers:
        raise UserError(f"PRUNED_FILTERS[{key}] has {len(widths)} widths, {args.model} needs {num_layers}")
    return widths, "PRUNED_FILTERS"


def plan_widths(args, method, ratios, num_classes, pruned_filters):
    """[(ratio, widths)] for every ratio, and the provenance keys of the result. Every ratio is
    resolved before anything trains, so a bad record or budget fails at once."""
    spec = get_spec(args.model)
    num_layers = len(spec.DEFAULT_WIDTHS)
    kwargs = {"num_classes": num_classes, "search": False, "descent_idx": args.descent_idx,
              "exact": args.exact, "convcut": method == "convcut"}
    info = {}
    if method == "neuralscale":
        if not args.prune_fname:
            raise UserError("NeuralScale (the default method) needs --prune_fname NAME, a search run under "
                            "--record_dir or a .pk path; or choose --uniform, --morph or --convcut")
        path = io.resolve_record(args.record_dir, args.prune_fname)
        alpha, beta = io.select_fit(io.load_fits(path, num_layers), args.descent_idx, path)
        kwargs.update(alpha=alpha, beta=beta)
        info = {"prune_fname": path, "descent_idx": args.descent_idx}
    elif method == "morph":
        kwargs["pruned_widths"], source = morph_source(args, pruned_filters, num_layers)
        info = {"prune_fname": source, "pruned_widths": list(kwargs["pruned_widths"])}
    elif method == "convcut" and args.model == "vgg":
        raise UserError("--convcut applies to resnet18 and mobilenetv2 (VGG has no shortcuts)")
    plans, seen = [], set()
    for ratio in ratios:
        if not ratio > 0:
            raise UserError(f"--ratios must be positive, got {ratio:g}")
        if io.ratio_tag(ratio) in seen:
            continue
        seen.add(io.ratio_tag(ratio))
        widths = [int(w) for w in spec.prepare_filters(ratio, **kwargs)]
        if method in ("neuralscale", "morph"):
            flat_fit = method == "neuralscale" and not np.any(kwargs["beta"])
            warn_off_budget(args.model, ratio, widths, num_classes, spec, method, flat_fit)
        plans.append((float(ratio), widths))
    return plans, info


def warn_off_budget(model_name, ratio, widths, num_classes, spec, method, flat_fit):
    """The authors' searches can miss the budget silently; the one known case is a fit from a record
    with fewer than 6 rows (beta == 0), whose VGG widths stay int(alpha) at every ratio (kept quirk).
    Say so rather than train a network of another size under this ratio's name."""
    got = count_params(model_name, widths, num_classes, exact=True)
    budget = count_params(model_name, spec.prepare_filters(ratio, num_classes=num_classes), num_classes,
                          exact=True)
    if abs(got - budget) > 0.1 * budget:
        hint = " (a beta == 0 fit: the search record has fewer than 6 rows)" if flat_fit else ""
        log(f"warning: {model_name} {method} at ratio {ratio:g} has {got:,} parameters, "
            f"{got / budget:.0%} of the uniform network's {budget:,}{hint}")


# -- one training run ---------------------------------------------------------------------------------

def checkpoint_paths(models_dir, model_name, stem):
    """(resumable checkpoint, best-epoch weights) of one run."""
    folder = os.path.join(models_dir, model_name)
    return (os.path.join(folder, f"{stem}_checkpoint.pt"), os.path.join(folder, f"{stem}_best_model.pt"))


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
    changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
    if changed:
        key = changed[0]
        raise UserError(f"{path} belongs to a different run ({key}: {old.get(key)!r} there, "
                        f"{fingerprint.get(key)!r} now); use the same flags, another --save, or delete it")
    if done > epochs:
        raise UserError(f"{path} is at epoch {done}, past --epochs {epochs}; delete it or raise --epochs")
    try:
        net.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise UserError(f"{path}: cannot restore the run: {str(err).splitlines()[0]}") from None
    return done + 1, curves, best


def train_run(net, train_loader, test_loader, *, device, schedule, epochs, lr, momentum, weight_decay,
              checkpoint_path, best_path, fingerprint, name, amp=False, scale_schedule=False):
    """Train `net` (already on `device`, see prepare_model) for `epochs`, resuming from
    `checkpoint_path` when it holds this run (same fingerprint). Returns the curves (lists, one value per
    epoch) and the best epoch."""
    optimizer = make_optimizer(net, lr, momentum, weight_decay)
    start, curves, (best_acc, best_epoch) = 1, {k: [] for k in CURVE_KEYS}, (-1.0, 0)
    if os.path.exists(checkpoint_path):
        start, curves, (best_acc, best_epoch) = _resume(net, optimizer, checkpoint_path, device,
                                                        fingerprint, epochs)
        log(f"{name}: resuming from {checkpoint_path} at epoch {start}")
    arch = architecture(net)
    for epoch in range(start, epochs + 1):
        # From the epoch number; args stay untouched.
        epoch_lr = lr_for_epoch(schedule, epoch, lr, scale_to=epochs if scale_schedule else None)
        set_lr(optimizer, epoch_lr)
        t0 = time.perf_counter()
        train = train_epoch(net, train_loader, epoch, optimizer, device, amp=amp, desc=f"{name} {epoch}")
        test = evaluate(net, test_loader, device, amp=amp, desc=f"{name} test")
        if not (np.isfinite(train["loss"]) and np.isfinite(test["loss"])):
            raise UserError(f"{name}: the loss became {train['loss']} at epoch {epoch} (lr {epoch_lr:g}); "
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
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return curves, best_epoch


def make_result(*, ratio, curves, net, widths, latency_ms, args, method, epochs, extra=None):
    """The result pickle: the authors' five keys first, then this project's."""
    arch = architecture(net)
    result = {"ratio": float(ratio)}
    result.update({k: list(curves[k]) for k in ("train_acc", "train_loss", "test_acc", "test_loss",
                                                "train_acc_dataset", "test_acc_dataset", "lr")})
    result.update({
        "widths": [int(w) for w in widths], "params": int(actual_params(net)),
        "macs": count_macs(args.model, widths, arch["num_classes"], IMAGE_SIZE[args.dataset], arch["convcut"]),
        "latency_ms": None if latency_ms is None else float(latency_ms), "seed": int(args.seed),
        "model": args.model, "dataset": args.dataset, "method": method, "epochs": int(epochs),
        "final_test_acc": curves["test_acc"][-1], "final_test_acc_dataset": curves["test_acc_dataset"][-1],
        "best_test_acc": max(curves["test_acc"]),
        "best_epoch": int(np.argmax(curves["test_acc"])) + 1,
    })
    result.update(extra or {})
    return result


def fingerprint_of(args, **more):
    """What must match for a checkpoint to be resumed."""
    fp = {"model": args.model, "dataset": args.dataset, "seed": int(args.seed), "lr": float(args.lr),
          "momentum": float(args.momentum), "weight_decay": float(args.weight_decay),
          "batch_size": int(args.batch_size), "test_batch_size": int(args.test_batch_size or args.batch_size),
          "subset": args.subset, "test_subset": args.test_subset, "loader": args.loader, "amp": args.amp,
          "scale_schedule": bool(args.scale_schedule)}
    fp.update(more)
    return fp


def run_options(args):
    """train_run's keyword arguments that come straight from the flags."""
    return {"amp": args.amp == "on", "scale_schedule": args.scale_schedule}


def load_data(args, device):
    return get_loaders(args.dataset, args.data_dir, recipe="train", batch_size=args.batch_size,
                       test_batch_size=args.test_batch_size or args.batch_size, device=device,
                       loader=args.loader, subset=args.subset, test_subset=args.test_subset, seed=args.seed,
                       download=args.download, same_norm=args.same_norm)


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

def run_swipe(argv, *, description, datasets, default_dataset, models, default_model, epochs, ratios,
              pruned_filters):
    """ratio_swipe.py / imagenet_ratio_swipe.py: train one network per ratio from scratch."""
    parser = make_parser(description)
    add_recipe_args(parser, datasets=datasets, default_dataset=default_dataset, models=models,
                    default_model=default_model, epochs=epochs, lr=0.1)
    add_swipe_args(parser, ratios)
    args = parser.parse_args(argv)
    check_recipe_args(args, datasets, models)
    device = resolve_device(args.device)
    method = choose_method(args)
    num_classes = NUM_CLASSES[args.dataset]
    plans, info = plan_widths(args, method, args.ratios, num_classes, pruned_filters)
    todo = []
    for ratio, widths in plans:
        path = io.result_path(args.plots_dir, args.model, args.save, ratio)
        if os.path.exists(path):
            log(f"ratio {ratio:g}: {path} exists, skipped")
        else:
            todo.append((ratio, widths, path))
    if not todo:
        return
    train_loader, test_loader = load_data(args, device)  # a missing data set fails before anything is created
    output_dirs(args)
    schedule = schedule_for(args.dataset)
    for ratio, widths, path in todo:
        set_seed(init_seed(args.seed, ratio))
        net = prepare_model(build_model(args.model, widths, num_classes, gates=False,
                                        convcut=method == "convcut"), device)
        name = f"{args.model} {args.dataset} {method} r={ratio:g} seed={args.seed}"
        log(f"{name}: widths {widths}, {actual_params(net):,} parameters")
        checkpoint, best = checkpoint_paths(args.models_dir, args.model, f"{args.save}_{io.ratio_tag(ratio)}")
        fingerprint = fingerprint_of(args, method=method, ratio=ratio, widths=widths, schedule=schedule)
        curves, _ = train_run(net, train_loader, test_loader, device=device, schedule=schedule,
                              epochs=args.epochs, lr=args.lr, momentum=args.momentum,
                              weight_decay=args.weight_decay, checkpoint_path=checkpoint, best_path=best,
                              fingerprint=fingerprint, name=name, **run_options(args))
        latency = latency_of(net, args, device)
        result = make_result(ratio=ratio, curves=curves, net=net, widths=widths, latency_ms=latency,
                             args=args, method=method, epochs=args.epochs, extra=info)
        io.save_result(path, result)
        log(f"{name}: params {result['params']:,}"
            + ("" if latency is None else f", latency {latency:.2f} ms/batch of 100")
            + f", best test acc {result['best_test_acc']:.2f}; wrote {path}")
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()

