"""Train one network and save its result: the resumable engine that ratio_swipe.py (once per ratio),
train_norm.py and fine_tune.py share.

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

The engine takes its settings as a RunSettings, never a script's flags: the scripts build one with
RunSettings.from_args at their boundary. One network from Python (VGG at ratio 0.25 on the synthetic
data, one epoch; out/plots/vgg/mine_25.pk is its result):

    import torch
    from model import build_model, get_spec
    from utils import run
    from utils.data import NUM_CLASSES
    from utils.train import prepare_model, set_seed

    settings = run.RunSettings(model="vgg", dataset="synthetic", seed=0, subset=64, test_subset=64,
                               batch_size=32, plots_dir="out/plots", models_dir="out/models")
    device, classes = torch.device("cpu"), NUM_CLASSES[settings.dataset]
    widths = get_spec("vgg").prepare_filters(0.25, num_classes=classes)
    set_seed(run.init_seed(settings.seed, 0.25))
    net = prepare_model(build_model("vgg", widths, classes, bn_init=settings.bn_init), device)
    result = run.train_and_save(net, settings, device=device, loaders=run.load_data(settings, device),
                                path="out/plots/vgg/mine_25.pk", stem="mine_25", schedule="cifar", epochs=1,
                                method="uniform", ratio=0.25, widths=widths, name="vgg r=0.25")
    print(result["test_acc"], result["settings"])

Run again, it resumes or (finished) is skipped as ratio_swipe.py's runs are; train_and_save leaves
the best-epoch weights in out/models/vgg/mine_25_best_model.pt.
"""
import contextlib
import dataclasses
import math
import os
import re
import time

import numpy as np
import torch

from model import architecture
from utils import accel, io, lock, scaling
from utils.base import OUTPUT_DIRS, UserError, check_seed, log, writable_dir
from utils.data import IMAGE_SIZE, NUM_CLASSES, get_loaders
from utils.latency import latency_cache_dir, network_latency
from utils.params import actual_params, count_macs
from utils.progress import EpochCSV, timestamp
from utils.train import (RECIPES, choose_seed, evaluate, load_checkpoint, lr_for_epoch, make_optimizer,
                         plateau_gain, set_lr, train_epoch)

CURVE_KEYS = ("train_acc", "train_loss", "test_acc", "test_loss", "train_acc_dataset",
              "test_acc_dataset", "lr")
# The per-epoch CSV beside each result, <plots_dir>/<model>/<stem>.csv: the curves, one row per epoch.
EPOCH_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "train_acc_dataset", "test_loss", "test_acc",
                 "test_acc_dataset")
# What a finished run leaves in <models_dir>: everything, the best-epoch weights (what fine_tune.py
# reads, and what the authors kept), or nothing. The resumable checkpoint is removed only once the
# result is written, so a killed run always resumes.
KEEP_CHECKPOINTS = ("best", "all", "none")
_SCRATCH = RECIPES["scratch_cifar"]


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The settings a training run reads: what train_and_save and its helpers (load_data, with_seed,
    fingerprint_of, latency_of, ...) take instead of a script's flags. The defaults are the flags' in
    ratio_swipe.py; RunSettings.from_args builds them from any training script's parsed flags."""

    # What is trained on what: the network (model.MODELS, or torchvision:NAME) and the data set
    # (utils.data); seed: python, numpy and torch, and the loaders' (seed, epoch) randomness. A run
    # needs one: None is for fingerprint_of only (a seed the user did not give; with_seed chooses one).
    model: str
    dataset: str
    seed: int | None = None

    # The SGD recipe (utils.train.RECIPES): base LR, momentum, weight decay, training minibatch;
    # test_batch_size None: the training one. scale_schedule: the LR decays at the same fractions of
    # the epochs (off: the paper's fixed decay epochs).
    lr: float = _SCRATCH["lr"]
    momentum: float = _SCRATCH["momentum"]
    weight_decay: float = _SCRATCH["weight_decay"]
    batch_size: int = _SCRATCH["batch_size"]
    test_batch_size: int | None = None
    scale_schedule: bool = False

    # The data (utils.data.get_loaders): the first `subset` training and `test_subset` test images only
    # (None: all), the loader ("fast" or "torchvision"), the test set's order ("shuffled" from the seed
    # every epoch, or "fixed"), the data sets' folder and whether a missing one is fetched ("auto",
    # "never").
    subset: int | None = None
    test_subset: int | None = None
    loader: str = "fast"
    test_order: str = "shuffled"
    data_dir: str = "./data"
    download: str = "auto"

    # Arithmetic and init (utils.accel, model.bn_init): precision "fp32", "tf32" or "bf16"; bn_init
    # "uniform" or "ones", as the network was built; deterministic: stored in the settings (the caller
    # sets utils.accel.set_deterministic).
    precision: str = "fp32"
    bn_init: str = "uniform"
    deterministic: bool = False

    # Beyond the paper (train_run): after the schedule's epochs, on at its last LR until the best test
    # accuracy rose by less than `plateau` points over the last quarter of the epochs run, at most
    # `plateau_max` epochs in all (required with plateau). None: exactly the schedule's epochs.
    plateau: float | None = None
    plateau_max: int | None = None

    # Outputs: result pickles and per-epoch CSVs under plots_dir/<model>, checkpoints under
    # models_dir/<model>; overwrite: replace a result or checkpoint of other settings (else refused).
    plots_dir: str = OUTPUT_DIRS["plots_dir"]
    models_dir: str = OUTPUT_DIRS["models_dir"]
    overwrite: bool = False

    # Latency (latency_of): latency=True measures the trained network's latency as plot_ratio.py does.
    # budget: the resource the widths were scaled to ("params", "macs" or "latency"); under "latency" the
    # measurement follows the budget's protocol: images per timed batch (latency_batch) and clock
    # (latency_clock, "wall" or "cpu").
    latency: bool = False
    budget: str = "params"
    latency_batch: int = 100
    latency_clock: str = "wall"

    def __post_init__(self):
        if self.plateau is not None and self.plateau_max is None:
            raise ValueError("plateau needs plateau_max, the most epochs in all")

    @classmethod
    def from_args(cls, args):
        """The settings of a training script's parsed flags (utils.swipe, train_norm.py, fine_tune.py;
        a swipe's after utils.cli.budget_flags resolved --budget). A flag a script lacks keeps the
        default (fine_tune.py: --scale_schedule; only the swipes: --plateau and the latency budget's
        flags); --plateau_max defaults to twice --epochs."""
        optional = {k: getattr(args, k) for k in ("scale_schedule", "budget", "latency_batch", "latency_clock")
                    if hasattr(args, k)}
        plateau = getattr(args, "plateau", None)
        if plateau is not None:
            optional.update(plateau=plateau, plateau_max=int(args.plateau_max or 2 * args.epochs))
        return cls(model=args.model, dataset=args.dataset, seed=args.seed, lr=args.lr, momentum=args.momentum,
                   weight_decay=args.weight_decay, batch_size=args.batch_size, test_batch_size=args.test_batch_size,
                   subset=args.subset, test_subset=args.test_subset, loader=args.loader, test_order=args.test_order,
                   data_dir=args.data_dir, download=args.download, precision=args.precision, bn_init=args.bn_init,
                   deterministic=args.deterministic, plots_dir=args.plots_dir, models_dir=args.models_dir,
                   overwrite=args.overwrite, latency=args.latency, **optional)


# The file-name tag of one budget: int(ratio * 100), or params<N> / macs<N> (utils.io.budget_tag).
_TAG = r"(?:\d+|params\d+|macs\d+)"


def files_of_save(plots_dir, models_dir, model_name, save):
    """(result pickles, checkpoints) of every budget of the run name `save`: <save>_<tag>.pk and
    <save>[_<tag>]_checkpoint.pt (train_norm's stem is the bare name). Another run whose name starts
    with this one (save_0 beside save) is not among them: a tag is digits or params/macs digits."""
    def matching(folder, pattern):
        if not os.path.isdir(folder):
            return []
        return sorted(os.path.join(folder, f) for f in os.listdir(folder) if re.fullmatch(pattern, f))

    stem = re.escape(save)
    return (matching(os.path.join(plots_dir, model_name), rf"{stem}_{_TAG}\.pk"),
            matching(os.path.join(models_dir, model_name), rf"{stem}(?:_{_TAG})?_checkpoint\.pt"))


def stored_seeds(results=(), checkpoints=()):
    """{path: seed} of the existing result pickles and checkpoints among the paths that record one. A
    file that cannot be read, or stores a seed outside 0..2**63-1, records no seed: a note says so (a
    run that replaces it says so too)."""
    found = {}
    for path, read in [(p, io.load_result) for p in results] + [(p, _checkpoint_seed) for p in checkpoints]:
        if not os.path.exists(path):
            continue
        try:
            seed = read(path).get("seed")
            if seed is not None:
                found[str(path)] = check_seed(seed, path)
        except UserError as err:
            log(f"note: no seed taken from {path}: {err}")
    return found


def _checkpoint_seed(path):
    """{"seed": the seed in a checkpoint's fingerprint} (or {})."""
    ckpt = load_checkpoint(path, torch.device("cpu"))
    fingerprint = ckpt.get("fingerprint") if isinstance(ckpt, dict) else None
    return fingerprint if isinstance(fingerprint, dict) else {}


def with_seed(settings, save):
    """The settings with their seed set (utils.train.choose_seed): their own, or the seed stored in the
    results and checkpoints of the run name `save`, at every ratio (a ratio added to a run continues its
    seed), or a fresh one."""
    if settings.seed is not None:
        return settings
    found = stored_seeds(*files_of_save(settings.plots_dir, settings.models_dir, settings.model, save))
    return dataclasses.replace(settings, seed=choose_seed(None, found, log))


def init_seed(seed, ratio, resource=None, target=None):
    """The model-init seed of one ratio: a function of (seed, ratio) only; of an absolute budget, of
    (seed, resource, target)."""
    if target is None:
        return int(np.random.SeedSequence([seed % 2**64, io.ratio_tag(ratio)]).generate_state(1)[0])
    code = 1 + scaling.RESOURCES.index(resource)
    amount = round(target * 1000) if resource == "latency" else int(target)  # a latency in microseconds
    return int(np.random.SeedSequence([seed % 2**64, code, amount]).generate_state(1)[0])


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
    return ", ".join(f"{k}: {stored.get(k)!r} there, {wanted.get(k)!r} now" for k in keys)


def other_settings(path, what, stored, wanted, keys):
    return UserError(f"{path} is {what} of other settings ({describe(stored, wanted, keys)}); use another "
                     f"--save, or --overwrite to replace it")


def finished(path, wanted, overwrite, note=log):
    """True when the result `path` holds this very run (skip it), False when there is none or when
    --overwrite replaces one of other settings; a result of other settings is refused. `wanted` holds
    the run's settings and its ratio (a file name truncates the ratio, the pickle keeps it). A result
    without stored settings (the authors' pickles; ours before they stored them) is compared on all it
    holds; as that cannot show every setting equal, it is refused too, unless --overwrite replaces it."""
    if not os.path.exists(path):
        return False
    try:
        old = io.load_result(path)
    except UserError:
        if overwrite:
            note(f"{path}: unreadable, replacing it (--overwrite)")
            return False
        raise
    if isinstance(old.get("settings"), dict):
        stored, unknown = dict(old["settings"]), []
    else:
        stored, unknown = legacy_settings(old, wanted)
    stored["ratio"] = None if old["ratio"] is None else float(old["ratio"])  # None: an absolute budget
    stored, wanted = {**UNLESS_STORED, **stored}, {**UNLESS_STORED, **wanted}
    if not complete(stored, len(old["test_acc"])) and not overwrite:  # cut short, or edited by hand
        raise UserError(f"{path} holds {len(old['test_acc'])} epochs of curves but says its run had "
                        f"{epochs_said(stored)}: not a finished run; use another --save, or --overwrite to "
                        f"replace it")
    keys = [k for k in differing(stored, wanted) if k not in unknown]
    if keys and overwrite:
        note(f"{path}: replacing a result of other settings ({describe(stored, wanted, keys)})")
        return False
    if keys:
        raise other_settings(path, "a result", stored, wanted, keys)
    if unknown and overwrite:
        note(f"{path}: replacing a result whose settings are unknown (--overwrite)")
        return False
    if unknown:
        raise UserError(f"{path} is a result whose settings are unknown: it stores none, so "
                        f"{', '.join(unknown[:6])}{', ...' if len(unknown) > 6 else ''} cannot be checked "
                        f"(the authors' published results are such files); use another --save, or "
                        f"--overwrite to replace it")
    return True


# Settings a result stores only when they are not these values (so that results written before the flag
# existed still match): one that stores none of them was made with these.
UNLESS_STORED = {"grouping": "traced", "plateau": None, "plateau_max": None}


def complete(stored, n):
    """Whether n epochs of curves finish a run of the settings `stored`: its --epochs, or under --plateau
    (train_run) at least --epochs and at most --plateau_max."""
    if stored.get("plateau") is None:
        return stored.get("epochs") == n
    return isinstance(stored.get("epochs"), int) and stored["epochs"] <= n <= stored.get("plateau_max", -1)


def epochs_said(stored):
    if stored.get("plateau") is None:
        return stored.get("epochs")
    return f"{stored.get('epochs')} to {stored.get('plateau_max')} (--plateau {stored['plateau']:g})"


# What a result without "settings" may still hold about its run (this project wrote them before
# "settings"; the authors' pickles hold none of them).
LEGACY_KEYS = ("seed", "model", "dataset", "method", "epochs", "widths", "precision", "bn_init", "test_order")


def legacy_settings(old, wanted):
    """(what the result `old` shows of its run's settings, the keys of `wanted` it cannot show). Its
    epochs are its curves' length; its LR curve, when stored, stands for the schedule, base LR and
    --scale_schedule together: equal to the curve `wanted` gives, or shown as the curve it is."""
    stored = {k: old[k] for k in LEGACY_KEYS if k in old}
    stored.setdefault("epochs", len(old["test_acc"]))
    schedule_keys = ("lr", "schedule", "scale_schedule")
    if "lr" in old and all(k in wanted for k in schedule_keys) and "epochs" in wanted:
        curve = [float(v) for v in old["lr"]]
        expected = lr_curve(wanted["schedule"], wanted["lr"], wanted["epochs"], wanted["scale_schedule"])
        same = same_lrs(curve, expected)
        for key in schedule_keys:
            stored[key] = wanted[key] if same else f"the LR curve {lr_summary(curve)}"
    # The ratio is always held (finished compares it); a seed the user did not give matches any.
    unknown = [k for k in wanted if k not in stored and k != "ratio" and not (k == "seed" and wanted[k] is None)]
    return stored, unknown


def lr_curve(schedule, lr, epochs, scale_schedule):
    """The learning rate of every epoch 1..epochs of a run (utils.train.lr_for_epoch)."""
    scale_to = epochs if scale_schedule else None
    return [lr_for_epoch(schedule, e, lr, scale_to=scale_to) for e in range(1, int(epochs) + 1)]


def same_lrs(a, b):
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0) for x, y in zip(a, b))


def lr_summary(curve):
    """A learning-rate curve in a few words: each value and how many epochs it lasts (0.1 x100, ...)."""
    runs = []
    for value in curve:
        if runs and math.isclose(runs[-1][0], value, rel_tol=1e-9):
            runs[-1][1] += 1
        else:
            runs.append([value, 1])
    return "[" + ", ".join(f"{v:g} x{n}" for v, n in runs) + "]"


def _resume(net, optimizer, path, device, fingerprint, epochs, lrs):
    """Load a checkpoint of this very run into net and optimizer; (start epoch, curves, best). `lrs`:
    the LR of every epoch of this run, which the checkpoint's past epochs must have had (--epochs
    moves them under --scale_schedule)."""
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
        raise UserError(f"{path} is at epoch {done}, past this run's last possible epoch {epochs}; raise "
                        f"--epochs, use another --save, or --overwrite to start over")
    if not same_lrs(curves["lr"], lrs[:done]):
        raise UserError(f"{path} trained epochs 1..{done} at the LR {lr_summary(curves['lr'])}, this run's "
                        f"schedule gives {lr_summary(lrs[:done])} (--epochs moves the decays under "
                        f"--scale_schedule); use another --save, or --overwrite to start over")
    try:
        net.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise UserError(f"{path}: cannot restore the run: {str(err).splitlines()[0]}") from None
    return done + 1, curves, best


def _start(net, sgd, device, checkpoint_path, fingerprint, lrs, name, overwrite):
    """(optimizer, first epoch, curves, (best acc, best epoch)): from this run's checkpoint, or fresh."""
    initial_state = {k: v.clone() for k, v in net.state_dict().items()} if overwrite else None
    optimizer = make_optimizer(net, *sgd)
    if os.path.exists(checkpoint_path):
        try:
            start, curves, best = _resume(net, optimizer, checkpoint_path, device, fingerprint, len(lrs), lrs)
            log(f"{name}: resuming from {checkpoint_path} at epoch {start}")
            return optimizer, start, curves, best
        except UserError as err:
            if not overwrite:
                raise
            log(f"{name}: starting over, replacing {checkpoint_path} (--overwrite): {err}")
            # _resume may have loaded part of the state before it refused: start from clean state
            net.load_state_dict(initial_state)
            optimizer = make_optimizer(net, *sgd)
    return optimizer, 1, {k: [] for k in CURVE_KEYS}, (-1.0, 0)


def _check_finite(name, epoch, lr, train, test):
    for which, loss in (("training", train["loss"]), ("test", test["loss"])):
        if not np.isfinite(loss):
            raise UserError(f"{name}: the {which} loss became {loss} at epoch {epoch} (lr {lr:g}); lower --lr")


def epoch_rows(curves, first=0):
    """The per-epoch CSV rows (EPOCH_COLUMNS) of `curves` from epoch index `first` on."""
    return [{"epoch": e + 1, **{k: curves[k][e] for k in EPOCH_COLUMNS[1:]}} for e in range(first, len(curves["lr"]))]


def best_state(net, epoch, best_acc, *, arch, fingerprint):
    """What <stem>_best_model.pt holds: the weights of the best test epoch, enough to rebuild the network."""
    return {"epoch": epoch, "state_dict": net.state_dict(), "architecture": arch, "best_prec1": best_acc,
            "fingerprint": fingerprint}


def checkpoint_state(net, optimizer, epoch, curves, best, *, arch, fingerprint):
    """What <stem>_checkpoint.pt holds: everything a resumed run needs (weights, SGD momentum, curves)."""
    return {"epoch": epoch, "state_dict": net.state_dict(), "optimizer": optimizer.state_dict(), "curves": curves,
            "best_acc": best[0], "best_epoch": best[1], "architecture": arch, "fingerprint": fingerprint}


def _save_epoch(net, optimizer, epoch, test_acc, curves, best, *, arch, fingerprint, checkpoint_path, best_path):
    """The best-epoch weights (on a new best, unless best_path is None) and the checkpoint; the best
    (accuracy, epoch) so far. Best file first: if the process dies between the two writes, the resumed
    run redoes this epoch (same batches, same result) and writes both again."""
    if test_acc > best[0]:
        best = (float(test_acc), epoch)
        if best_path is not None:
            io.save_torch(best_state(net, epoch, best[0], arch=arch, fingerprint=fingerprint), best_path)
    io.save_torch(checkpoint_state(net, optimizer, epoch, curves, best, arch=arch, fingerprint=fingerprint),
                  checkpoint_path)
    return best


def _epoch_line(name, epoch, epochs, lr, train, test, best, seconds, position):
    where = f"{position.where} " if position else ""
    clock = f"; {position.clock.summary()}" if position else ""
    return (f"{timestamp()} {name} | {where}epoch {epoch}/{epochs} lr {lr:.4g} | train loss {train['loss']:.4f} "
            f"acc {train['acc']:.2f} | test loss {test['loss']:.4f} acc {test['acc']:.2f} "
            f"({test['acc_dataset']:.2f} dataset) | best {best[0]:.2f} @{best[1]} | {seconds:.1f}s{clock}")


def train_run(net, train_loader, test_loader, *, device, schedule, epochs, lr, momentum, weight_decay,
              checkpoint_path, best_path, fingerprint, name, precision="fp32", scale_schedule=False,
              overwrite=False, csv_path=None, position=None, plateau=None, plateau_max=None):
    """Train `net` (already on `device`, see prepare_model) for `epochs`, resuming from
    `checkpoint_path` when it holds this run (same fingerprint). A checkpoint of another run is
    refused, or with `overwrite` left to be replaced. `best_path` None: no best-epoch file. `csv_path`:
    the per-epoch CSV (utils.progress); `position`: where this run sits in its command (the epoch line's
    ratio k/n, elapsed time and ETA). `plateau` (points, beyond the paper): after the `epochs` of the
    schedule, go on at its last LR one epoch at a time until the best test accuracy rose by less than
    `plateau` over the last quarter of the epochs run (utils.train.plateau_gain), or `plateau_max` epochs
    in all. Returns the curves (lists, one value per epoch) and the best epoch."""
    lrs = lr_curve(schedule, lr, epochs, scale_schedule)
    if plateau is not None:
        lrs += [lrs[-1]] * (plateau_max - epochs)
    optimizer, start, curves, best = _start(net, (lr, momentum, weight_decay), device, checkpoint_path,
                                            fingerprint, lrs, name, overwrite)
    epoch_csv = EpochCSV(csv_path, EPOCH_COLUMNS) if csv_path else None
    if epoch_csv:
        epoch_csv.restart(epoch_rows(curves))  # a resumed run: the checkpoint's epochs, nothing more
    if position:
        position.clock.skip((start - 1) * position.cost)
    arch = architecture(net)
    for epoch in range(start, len(lrs) + 1):
        if epoch > epochs and plateaued(curves["test_acc"], plateau):
            break
        if epoch > epochs and position:
            position.clock.add(position.cost)  # one more epoch than the schedule's
        epoch_lr = lrs[epoch - 1]  # from the epoch number
        set_lr(optimizer, epoch_lr)
        t0 = time.perf_counter()
        train = train_epoch(net, train_loader, epoch, optimizer, device, precision=precision,
                            desc=f"{name} {epoch}")
        test = evaluate(net, test_loader, device, epoch=epoch, precision=precision, desc=f"{name} test")
        _check_finite(name, epoch, epoch_lr, train, test)
        for key, value in (("train_acc", train["acc"]), ("train_loss", train["loss"]),
                           ("test_acc", test["acc"]), ("test_loss", test["loss"]),
                           ("train_acc_dataset", train["acc_dataset"]),
                           ("test_acc_dataset", test["acc_dataset"]), ("lr", epoch_lr)):
            curves[key].append(float(value))
        best = _save_epoch(net, optimizer, epoch, test["acc"], curves, best, arch=arch, fingerprint=fingerprint,
                           checkpoint_path=checkpoint_path, best_path=best_path)
        if epoch_csv:
            epoch_csv.append(epoch_rows(curves, epoch - 1)[0])
        if position:
            position.clock.advance(position.cost)
        log(_epoch_line(name, epoch, epochs if epoch <= epochs else f"{epochs}+", epoch_lr, train, test, best,
                        time.perf_counter() - t0, position))
    accel.empty_cache(device)
    return curves, best[1]


def plateaued(test_acc, plateau):
    """Whether a --plateau run may stop: its best test accuracy rose by less than `plateau` points over
    the last quarter of its epochs."""
    gain = plateau_gain(test_acc)
    return gain is not None and gain < plateau


def make_result(*, ratio, curves, net, widths, latency_ms, settings, method, epochs, extra=None):
    """The result pickle: the authors' five keys first, then this project's."""
    arch = architecture(net)
    result = {"ratio": None if ratio is None else float(ratio)}  # None: an absolute budget
    result.update({k: list(curves[k]) for k in ("train_acc", "train_loss", "test_acc", "test_loss",
                                                "train_acc_dataset", "test_acc_dataset", "lr")})
    result.update({
        "widths": [int(w) for w in widths], "params": int(actual_params(net)),
        "macs": count_macs(settings.model, widths, arch["num_classes"], IMAGE_SIZE[settings.dataset],
                           arch["convcut"], arch.get("grouping", "traced")),
        "latency_ms": None if latency_ms is None else float(latency_ms), "seed": int(settings.seed),
        "model": settings.model, "dataset": settings.dataset, "method": method, "epochs": int(epochs),
        "precision": settings.precision, "bn_init": net.bn_init, "test_order": settings.test_order,
        "final_test_acc": curves["test_acc"][-1], "final_test_acc_dataset": curves["test_acc_dataset"][-1],
        "best_test_acc": max(curves["test_acc"]),
        "best_epoch": int(np.argmax(curves["test_acc"])) + 1,
        "epochs_run": len(curves["test_acc"]), "plateau_gain": plateau_gain(curves["test_acc"]),
    })
    result.update(extra or {})
    return result


def fingerprint_of(settings, **more):
    """What must match for a checkpoint to be resumed: the RunSettings a run's outcome depends on, and
    `more`. A result stores it with "epochs" added as its "settings", and a finished run is skipped only
    when they match (see finished)."""
    fp = {"model": settings.model, "dataset": settings.dataset,
          "seed": None if settings.seed is None else int(settings.seed), "lr": float(settings.lr),
          "momentum": float(settings.momentum), "weight_decay": float(settings.weight_decay),
          "batch_size": int(settings.batch_size),
          "test_batch_size": int(settings.test_batch_size or settings.batch_size),
          "subset": settings.subset, "test_subset": settings.test_subset, "loader": settings.loader,
          "precision": settings.precision, "bn_init": settings.bn_init, "test_order": settings.test_order,
          "scale_schedule": bool(settings.scale_schedule)}
    if settings.deterministic:  # only when on, so the settings of runs before the flag existed still match
        fp["deterministic"] = True
    if settings.plateau is not None:  # likewise
        fp.update(plateau=float(settings.plateau), plateau_max=int(settings.plateau_max))
    fp.update(more)
    return fp


def run_options(settings):
    """train_run's keyword arguments that come straight from the settings."""
    return {"precision": settings.precision, "scale_schedule": bool(settings.scale_schedule),
            "overwrite": settings.overwrite, "plateau": settings.plateau,
            "plateau_max": None if settings.plateau is None else int(settings.plateau_max)}


def load_data(settings, device):
    """(train loader, test loader) of the settings' data (utils.data.get_loaders); the seed must be set."""
    return get_loaders(settings.dataset, settings.data_dir, recipe="train", batch_size=settings.batch_size,
                       test_batch_size=settings.test_batch_size or settings.batch_size, device=device,
                       loader=settings.loader, subset=settings.subset, test_subset=settings.test_subset,
                       seed=settings.seed, download=settings.download, test_order=settings.test_order)


def output_dirs(settings):
    """Prove the output folders writable before any training."""
    writable_dir(os.path.join(settings.plots_dir, settings.model))
    writable_dir(os.path.join(settings.models_dir, settings.model))


def latency_protocol(settings, device):
    """How a latency budget was predicted is how its result's latency is measured (latency_batch,
    precision, latency_clock); every other result: the paper's batch 100 in fp32, wall clock."""
    if settings.budget != "latency":
        return {}
    from utils.latency_model import check_clock
    check_clock(settings.latency_clock, device)
    return {"batch": settings.latency_batch, "precision": settings.precision, "clock": settings.latency_clock}


def latency_of(settings, device, widths, convcut=False, gates=None, grouping="traced"):
    """ms per batch of the network `widths` build, as plot_ratio.py measures it (utils.latency: the
    authors' protocol, or a latency budget's own, latency_protocol; once per configuration and machine),
    or None: a training run measures only with settings.latency. gates=True times it with gates whatever
    the model (fine_tune's masked network)."""
    if not settings.latency:
        return None
    return network_latency(settings.model, widths, NUM_CLASSES[settings.dataset], device,
                           IMAGE_SIZE[settings.dataset], latency_cache_dir(settings.plots_dir), convcut=convcut,
                           gates=gates, grouping=grouping, **latency_protocol(settings, device))


def lock_path(folder, model_name, stem):
    """A lock a run holds for its whole life (utils.lock): <folder>/<model>/.<stem>.lock, beside its
    checkpoint (folder: --models_dir) and beside its result (--plots_dir)."""
    return lock.lock_file(os.path.join(folder, model_name), stem)


def csv_path(plots_dir, model_name, stem):
    """The per-epoch CSV of one run, beside its result <stem>.pk."""
    return os.path.join(plots_dir, model_name, f"{stem}.csv")


def tidy_checkpoints(checkpoint, best, keep):
    """After the result is written: keep both files ("all"), the best-epoch weights ("best") or none."""
    for path in {"all": (), "best": (checkpoint,), "none": (checkpoint, best)}[keep]:
        if os.path.exists(path):
            os.unlink(path)


def train_and_save(net, settings, *, device, loaders, path, stem, schedule, epochs, method, ratio, widths, name,
                   fingerprint=None, extra=None, timed=None, keep="best", position=None):
    """Train `net` (built, seeded and on `device`) under `settings` (a RunSettings whose seed is set),
    resuming its checkpoint <models_dir>/<model>/<stem>_checkpoint.pt; with settings.latency measure the
    latency of the network `timed` describes (latency_of's keywords; default: `widths`); write the result
    pickle `path`, then remove the checkpoints `keep` does not keep (KEEP_CHECKPOINTS). The per-epoch CSV
    goes beside the result. `fingerprint`: more settings a resumed run must match; `extra`: more keys of
    the result; `position`: see train_run. The run holds .<stem>.lock from its first read to its last
    write, so a second live process of the same run is refused; a result written meanwhile by another
    process is checked again. Returns the result (a dict, as io.load_result gives it)."""
    if keep not in KEEP_CHECKPOINTS:
        raise ValueError(f"keep must be one of {KEEP_CHECKPOINTS}, got {keep!r}")
    model, plots_dir, models_dir = settings.model, settings.plots_dir, settings.models_dir
    checkpoint, best = checkpoint_paths(models_dir, model, stem)
    fingerprint = fingerprint_of(settings, method=method, ratio=ratio, widths=widths, schedule=schedule,
                                 **(fingerprint or {}))
    stored = {**fingerprint, "epochs": epochs}  # the result's "settings"
    with contextlib.ExitStack() as held:
        # Beside the checkpoint and beside the result: runs that share either folder are seen.
        for folder in dict.fromkeys((models_dir, plots_dir)):
            held.enter_context(lock.hold(lock_path(folder, model, stem), f"run {stem}"))
        if finished(path, stored, settings.overwrite, note=lambda line: None):
            log(f"{name}: {path} was written meanwhile by another process with these settings; kept")
            return io.load_result(path)
        curves, _ = train_run(net, *loaders, device=device, schedule=schedule, epochs=epochs, lr=settings.lr,
                              momentum=settings.momentum, weight_decay=settings.weight_decay,
                              checkpoint_path=checkpoint, best_path=None if keep == "none" else best,
                              fingerprint=fingerprint, name=name, csv_path=csv_path(plots_dir, model, stem),
                              position=position, **run_options(settings))
        latency = latency_of(settings, device, **(timed or {"widths": widths}))
        result = make_result(ratio=ratio, curves=curves, net=net, widths=widths, latency_ms=latency,
                             settings=settings, method=method, epochs=epochs,
                             extra={**(extra or {}), "settings": stored})
        io.save_result(path, result)
        tidy_checkpoints(checkpoint, best, keep)  # only now: until the result exists, a killed run resumes
    return result
