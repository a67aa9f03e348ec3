"""Li et al. baseline: prune a pre-trained network in one shot to the parameter budget of the width
ratio 0.75 (the authors' count of the widths x 0.75, about 56 % of the parameters), then fine-tune.

Loads <models_dir>/<model>/<resume>_best_model.pt (written by train_norm.py --save <resume>), masks it
with utils/oneshot.py (--method l1: filter L1 norm, Li et al.; slim: |BN gamma|, network slimming),
fine-tunes at a constant learning rate (40 epochs, 20 on TinyImageNet) and writes
<plots_dir>/<model>/<save>_75.pk. The pruned network is masked, as the authors did: it keeps the full
size and its pruned units' gates are 0. The result's "params" is the exact parameter count of the
network the surviving widths describe ("widths"); "params_masked" that of the masked full-size one.
"""
import argparse
import contextlib
import hashlib
import os

from model import build_model, get_spec
from model.gate import Gate
from utils import accel, io, lock, oneshot, run, swipe
from utils.base import CIFAR_LIKE, RESUMES_EPOCH, UserError, log, resolve_device, run_main
from utils.cli import make_parser
from utils.data import IMAGE_SIZE, NUM_CLASSES
from utils.params import actual_params, count_macs, count_params
from utils.progress import Clock, Position
from utils.train import RECIPES, evaluate, load_checkpoint, prepare_model, set_seed

DATASETS = CIFAR_LIKE + ("tinyimagenet",)
RECIPE = RECIPES["fine_tune"]
BEST_SUFFIX = "_best_model.pt"  # utils.run.checkpoint_paths


def pretrained_path(args):
    """The checkpoint to prune: --resume NAME (or its alias --prune_fname: the authors' README passed only
    --prune_fname, so their command fine-tuned a random network)."""
    name = args.resume
    if not name:
        raise UserError("fine_tune.py needs a pre-trained network: --resume NAME loads "
                        f"{os.path.join(args.models_dir, args.model, 'NAME_best_model.pt')} "
                        "(train_norm.py --save NAME writes it)")
    if name.endswith((".pt", ".t7")) or os.sep in name:
        return name
    return os.path.join(args.models_dir, args.model, f"{name}{BEST_SUFFIX}")


def check_pretrained(path, args):
    name = args.resume
    if not os.path.isfile(path):
        raise UserError(f"no pre-trained checkpoint {path}; run train_norm.py --model {args.model} "
                        f"--dataset {args.dataset} --save {name} first (its --keep_checkpoints best or all keeps "
                        f"this file), or fix --resume/--models_dir")
    return path


def pretrained_lock(source):
    """The lock train_norm.py holds while it writes <stem>_best_model.pt: a network still being trained
    is refused rather than read half-way through its run. A folder we cannot write holds no lock."""
    folder, name = os.path.split(source)
    if not name.endswith(BEST_SUFFIX) or not os.access(folder or ".", os.W_OK):
        return contextlib.nullcontext()
    stem = name[:-len(BEST_SUFFIX)]
    return lock.hold(lock.lock_file(folder, stem), f"pre-trained run {stem}")


def content_hash(path):
    """The SHA-256 of a file's bytes: which pre-trained network a fine-tuned result starts from (its
    path says only where it was: a train_norm.py --overwrite puts another network there)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    return digest.hexdigest()


def load_pretrained(path, args, num_classes, device):
    """The checkpoint's network, rebuilt from its stored constructor arguments, with gates."""
    ckpt = load_checkpoint(path, device)
    arch = ckpt.get("architecture") if isinstance(ckpt, dict) else None
    if not isinstance(arch, dict) or "state_dict" not in ckpt:
        raise UserError(f"{path}: not a checkpoint of this project (no architecture/state_dict)")
    if arch.get("model") != args.model:
        raise UserError(f"{path} holds a {arch.get('model')} network, not --model {args.model}")
    default = list(get_spec(args.model).DEFAULT_WIDTHS)
    if list(arch.get("widths") or []) != default:
        # The budget and the result's name (ratio 0.75) are relative to the default network.
        raise UserError(f"{path} holds a {args.model} of widths {list(arch.get('widths') or [])}, not the "
                        f"default widths {default}; fine_tune.py prunes a pre-trained default network "
                        f"(train_norm.py writes one)")
    if arch.get("num_classes") != num_classes:
        raise UserError(f"{path} was trained for {arch.get('num_classes')} classes, --dataset {args.dataset} "
                        f"has {num_classes}")
    # The init is overwritten by the weights; bn_init only records how they started (before this
    # project recorded it, ResNet18 and MobileNetV2 started from ones).
    net = prepare_model(build_model(args.model, arch["widths"], num_classes, gates=True,
                                    convcut=bool(arch.get("convcut")), bn_init=arch.get("bn_init", "ones")),
                        device)
    gate_keys = {f"{n}.weight" for n, m in net.named_modules() if isinstance(m, Gate)}
    try:
        missing, unexpected = net.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as err:
        raise UserError(f"{path}: weights do not fit the network: {str(err).splitlines()[0]}") from None
    if unexpected or set(missing) - gate_keys:
        raise UserError(f"{path}: weights do not fit the network (missing {sorted(set(missing) - gate_keys)[:3]}, "
                        f"unexpected {unexpected[:3]})")
    return net, arch


def parse_args(argv):
    parser = swipe.add_recipe_args(
        make_parser(__doc__), "fine_tune", datasets=DATASETS, dataset="CIFAR10", by_dataset=True,
        hidden=("--scale_schedule",),
        help={"--epochs": f"fine-tuning epochs at constant --lr (default: {RECIPE['epochs']}, or "
                          f"{RECIPE['tiny_epochs']} on tinyimagenet)"})
    parser.add_argument("--resume", default=None, help="the pre-trained run: train_norm.py's --save name "
                                                     "(or a checkpoint path; --prune_fname, the authors' "
                                                     "spelling, is the same flag)")
    parser.add_argument("--prune_fname", dest="resume", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)  # an alias of --resume: the authors' README spelling
    parser.add_argument("--descent_idx", type=int, default=14, ignored=True)  # in the authors' CLI; unused
    parser.add_argument("--method", default="l1",
                        help="l1 (or 1): filter L1 norm, Li et al.; slim (or 0): |BN gamma|, network slimming")
    parser.add_argument("--ratio", type=float, default=0.75,
                        help="budget: the parameter count of the pre-trained widths x this "
                             "ratio (0.75: about 56 %% of the parameters); names the result")
    args = parser.parse_args(argv)
    swipe.check_recipe_args(args, DATASETS, "{model}_norm_{tag}")
    if not 0 < args.ratio < 1:
        raise UserError(f"--ratio must be between 0 and 1, got {args.ratio:g}")
    return args


def prune_pretrained(net, arch, args, method, num_classes, name):
    """Mask `net` in one shot to the --ratio budget; (surviving widths, the facts the result keeps).
    `name`: the run's, which the log line starts with."""
    def count(widths):  # the authors' formula for the right model and class count
        return count_params(args.model, widths, num_classes)

    dense = oneshot.surviving_widths(net)
    widths = oneshot.prune(net, method, count, args.ratio)
    convcut = arch.get("convcut", False)
    params = count_params(args.model, widths, num_classes, exact=True, convcut=convcut)
    dense_params = count_params(args.model, dense, num_classes, exact=True, convcut=convcut)
    log(f"{name}: pruned {dense} -> {widths}: "
        f"{params:,} of {dense_params:,} parameters ({100 * params / dense_params:.1f} %), masked in the "
        f"full network")
    return widths, {"params": int(params), "params_masked": int(actual_params(net)), "dense_widths": dense,
                    # The masked network computes as the dense one: its zeroed units still multiply.
                    "macs_masked": count_macs(args.model, arch["widths"], num_classes, IMAGE_SIZE[args.dataset],
                                              convcut),
                    "dense_params": int(dense_params), "masked": True}


def main(argv=None):
    args = parse_args(argv)
    method = oneshot.method_name(args.method)
    device = resolve_device(args.device)
    epochs = args.epochs or RECIPE["tiny_epochs" if args.dataset == "tinyimagenet" else "epochs"]
    num_classes = NUM_CLASSES[args.dataset]
    path = io.result_path(args.plots_dir, args.model, args.save, args.ratio)
    source = check_pretrained(pretrained_path(args), args)
    stem = f"{args.save}_{io.ratio_tag(args.ratio)}"
    with pretrained_lock(source):  # the bytes hashed are the bytes loaded
        # The pre-trained network is identified by its content: the widths follow from it and --method.
        identity = {"pretrained_sha256": content_hash(source)}
        settings = run.RunSettings.from_args(args)
        stored = {**run.fingerprint_of(settings, method=method, ratio=args.ratio, schedule=RECIPE["schedule"],
                                       **identity), "epochs": epochs}
        if run.finished(path, stored, settings.overwrite):
            log(f"{path} exists, nothing to do (same settings)")
            return
        settings = run.with_seed(settings, args.save)
        accel.set_precision(device, settings.precision)
        accel.set_deterministic(device, settings.deterministic)
        set_seed(settings.seed)
        net, arch = load_pretrained(source, args, num_classes, device)
    name = f"{args.model} {args.dataset} fine_tune {method} seed={settings.seed}"
    widths, facts = prune_pretrained(net, arch, args, method, num_classes, name)
    loaders = run.load_data(settings, device)
    run.output_dirs(settings)
    pruned_test = evaluate(net, loaders[1], device, epoch=0, precision=settings.precision)
    log(f"{name}: before fine-tuning test acc {pruned_test['acc']:.2f}")
    convcut = bool(arch.get("convcut", False))
    physical = run.latency_of(settings, device, widths, convcut)
    result = run.train_and_save(
        net, settings, device=device, loaders=loaders, path=path, stem=stem, schedule=RECIPE["schedule"],
        epochs=epochs, method=method, ratio=args.ratio, widths=widths, name=name, fingerprint=identity,
        timed={"widths": arch["widths"], "convcut": convcut, "gates": True},
        extra={**facts, "pretrained": source, "pruned_test_acc": float(pruned_test["acc"]),
               "pruned_test_acc_dataset": float(pruned_test["acc_dataset"]), "latency_ms_physical": physical},
        keep=args.keep_checkpoints, position=Position("ratio 1/1", Clock(epochs)))
    log(f"{name}: best test acc {result['best_test_acc']:.2f}; wrote {path}")
    del net
    accel.empty_cache(device)


if __name__ == "__main__":
    run_main(main, RESUMES_EPOCH)
