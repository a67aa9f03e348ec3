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
"""
import argparse
import os
import time

import numpy as np
import torch

from model import architecture
from utils import accel, io, scaling
from utils.base import UserError, log, writable_dir
from utils.data import IMAGE_SIZE, get_loaders
from utils.latency import cached_latency, latency_cache_dir
from utils.params import actual_params, count_macs
from utils.progress import EpochCSV, timestamp
from utils.train import (choose_seed, evaluate, load_checkpoint, lr_for_epoch, make_optimizer, set_lr,
                         train_epoch)

CURVE_KEYS = ("train_acc", "train_loss", "test_acc", "test_loss", "train_acc_dataset",
              "test_acc_dataset", "lr")
# The per-epoch CSV beside each result, <plots_dir>/<model>/<stem>.csv: the curves, one row per epoch.
EPOCH_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "train_acc_dataset", "test_loss", "test_acc",
                 "test_acc_dataset")
# What a finished run leaves in <models_dir>: everything, the best-epoch weights (what fine_tune.py
# reads, and what the authors kept), or nothing. The resumable checkpoint is removed only once the
# result is written, so a killed run always resumes.
KEEP_CHECKPOINTS = ("best", "all", "none")


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


def _start(net, sgd, device, checkpoint_path, fingerprint, epochs, name, overwrite):
    """(optimizer, first epoch, curves, (best acc, best epoch)): from this run's checkpoint, or fresh."""
    initial_state = {k: v.clone() for k, v in net.state_dict().items()} if overwrite else None
    optimizer = make_optimizer(net, *sgd)
    if os.path.exists(checkpoint_path):
        try:
            start, curves, best = _resume(net, optimizer, checkpoint_path, device, fingerprint, epochs)
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
              overwrite=False, csv_path=None, position=None):
    """Train `net` (already on `device`, see prepare_model) for `epochs`, resuming from
    `checkpoint_path` when it holds this run (same fingerprint). A checkpoint of another run is
    refused, or with `overwrite` left to be replaced. `best_path` None: no best-epoch file. `csv_path`:
    the per-epoch CSV (utils.progress); `position`: where this run sits in its command (the epoch line's
    ratio k/n, elapsed time and ETA). Returns the curves (lists, one value per epoch) and the best epoch."""
    optimizer, start, curves, best = _start(net, (lr, momentum, weight_decay), device, checkpoint_path,
                                            fingerprint, epochs, name, overwrite)
    epoch_csv = EpochCSV(csv_path, EPOCH_COLUMNS) if csv_path else None
    if epoch_csv:
        epoch_csv.restart(epoch_rows(curves))  # a resumed run: the checkpoint's epochs, nothing more
    if position:
        position.clock.skip((start - 1) * position.cost)
    arch = architecture(net)
    for epoch in range(start, epochs + 1):
        # From the epoch number; args stay untouched.
        epoch_lr = lr_for_epoch(schedule, epoch, lr, scale_to=epochs if scale_schedule else None)
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
        log(_epoch_line(name, epoch, epochs, epoch_lr, train, test, best, time.perf_counter() - t0, position))
    accel.empty_cache(device)
    return curves, best[1]


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
          # fine_tune.py's constant LR has no decays to scale: it takes no --scale_schedule
          "scale_schedule": bool(getattr(args, "scale_schedule", False))}
    if args.deterministic:  # only when on, so the settings of runs before the flag existed still match
        fp["deterministic"] = True
    fp.update(more)
    return fp


def run_options(args):
    """train_run's keyword arguments that come straight from the flags."""
    return {"precision": args.precision, "scale_schedule": bool(getattr(args, "scale_schedule", False)),
            "overwrite": args.overwrite}


def load_data(args, device):
    return get_loaders(args.dataset, args.data_dir, recipe="train", batch_size=args.batch_size,
                       test_batch_size=args.test_batch_size or args.batch_size, device=device,
                       loader=args.loader, subset=args.subset, test_subset=args.test_subset, seed=args.seed,
                       download=args.download, test_order=args.test_order)


def output_dirs(args):
    """Prove the output folders writable before any training."""
    writable_dir(os.path.join(args.plots_dir, args.model))
    writable_dir(os.path.join(args.models_dir, args.model))


def latency_of(net, args, device):
    """ms per batch of 100, measured once per configuration and machine (the seeds of a swipe share it)."""
    if args.no_latency:
        return None
    return cached_latency(latency_cache_dir(args.plots_dir), net, device, IMAGE_SIZE[args.dataset])


def csv_path(plots_dir, model_name, stem):
    """The per-epoch CSV of one run, beside its result <stem>.pk."""
    return os.path.join(plots_dir, model_name, f"{stem}.csv")


def tidy_checkpoints(checkpoint, best, keep):
    """After the result is written: keep both files ("all"), the best-epoch weights ("best") or none."""
    for path in {"all": (), "best": (checkpoint,), "none": (checkpoint, best)}[keep]:
        if os.path.exists(path):
            os.unlink(path)


def train_and_save(net, args, *, device, loaders, path, stem, schedule, epochs, method, ratio, widths, name,
                   fingerprint=None, extra=None, keep="best", position=None):
    """Train `net` (built, seeded and on `device`) under the flags in `args`, resuming its checkpoint
    <models_dir>/<model>/<stem>_checkpoint.pt; measure its latency; write the result pickle `path`, then
    remove the checkpoints `keep` does not keep (KEEP_CHECKPOINTS). The per-epoch CSV goes beside the
    result. `fingerprint`: more settings a resumed run must match; `extra`: more keys of the result;
    `position`: see train_run."""
    if keep not in KEEP_CHECKPOINTS:
        raise ValueError(f"keep must be one of {KEEP_CHECKPOINTS}, got {keep!r}")
    checkpoint, best = checkpoint_paths(args.models_dir, args.model, stem)
    fingerprint = fingerprint_of(args, method=method, ratio=ratio, widths=widths, schedule=schedule,
                                 **(fingerprint or {}))
    curves, _ = train_run(net, *loaders, device=device, schedule=schedule, epochs=epochs, lr=args.lr,
                          momentum=args.momentum, weight_decay=args.weight_decay, checkpoint_path=checkpoint,
                          best_path=None if keep == "none" else best, fingerprint=fingerprint, name=name,
                          csv_path=csv_path(args.plots_dir, args.model, stem), position=position,
                          **run_options(args))
    latency = latency_of(net, args, device)
    result = make_result(ratio=ratio, curves=curves, net=net, widths=widths, latency_ms=latency, args=args,
                         method=method, epochs=epochs,
                         extra={**(extra or {}), "settings": {**fingerprint, "epochs": epochs}})
    io.save_result(path, result)
    tidy_checkpoints(checkpoint, best, keep)  # only now: until the result exists, a killed run resumes
    return result
