"""Training from scratch over width ratios: the engine of ratio_swipe.py and imagenet_ratio_swipe.py
(its flags, its width plans, its loop); one ratio is one utils.run.train_and_save.

Resuming, seeds and the result pickle are utils/run.py's.
"""
import argparse
import os

import numpy as np

from model import build_model, get_spec
from utils import accel, io, run, scaling
from utils.accel import set_deterministic, set_precision
from utils.base import (UserError, check_positive, check_ratios, check_sgd, check_widths, log, positive_int,
                        resolve_device)
from utils.cli import (add_budget_arg, add_grouping_arg, add_round_to_arg, add_training_args, authors_name,
                       budget_flags, check_pair, latency_cost, latency_flags, make_parser, require_save)
from utils.data import IMAGE_SIZE, NUM_CLASSES, TEST_ORDERS
from utils.fit import MIN_ROWS
from utils.params import actual_params, count_macs
from utils.progress import Clock, Position
from utils.train import RECIPES, prepare_model, set_seed

CIFAR_RATIOS = tuple(float(r) for r in np.arange(0.25, 2.1, 0.25))  # the authors' arange: 0.25 .. 2.0
TINY_RATIOS = (0.25, 0.5, 0.75, 1.0)
METHOD_FLAGS = ("uniform", "morph", "convcut")  # NeuralScale when none is given


def scratch_recipe(dataset):
    """The authors' from-scratch recipe (utils.train.RECIPES): TinyImageNet's, or the CIFAR one."""
    return RECIPES["scratch_tiny" if dataset == "tinyimagenet" else "scratch_cifar"]


def schedule_for(dataset):
    """The authors' from-scratch schedule: 300 epochs, x0.1 at 100/200/250; TinyImageNet: 150, x0.1
    every 50."""
    return scratch_recipe(dataset)["schedule"]


# -- flags --------------------------------------------------------------------------------------------

def add_recipe_args(parser, recipe, *, datasets, dataset, models=None, by_dataset=False, hidden=(),
                    help=None, outputs=("plots_dir", "models_dir"), generic=False):
    """The training flags (utils.cli.add_training_args) plus those of training from scratch."""
    hidden = ("--same_norm",) + tuple(hidden)  # it changes the search's normalisation only
    add_training_args(parser, recipe, datasets=datasets, dataset=dataset, model="resnet18", models=models,
                      by_dataset=by_dataset, hidden=hidden, outputs=outputs, generic=generic,
                      help={"--model": "network (default: %(default)s, the authors' for training)",
                            **(help or {})})
    parser.add_argument("--test-batch-size", type=positive_int, default=None,
                        help="test minibatch size (default: --batch-size, as the authors' loaders; "
                             "it changes the per-batch-mean accuracy slightly)")
    parser.add_argument("--test_subset", type=positive_int, default=None,
                        help="test on the first N images only (default: all)")
    parser.add_argument("--latency", action="store_true",
                        help="also measure the trained network's latency as plot_ratio.py does (the authors' "
                             "protocol, once per configuration; off: plot_ratio.py measures it)")
    # The default since latency moved to plot_ratio.py: accepted so that older command lines still run.
    parser.add_argument("--no_latency", action="store_true", ignored=True)
    parser.add_argument("--keep_checkpoints", choices=run.KEEP_CHECKPOINTS, default="best",
                        help="what a finished run leaves in --models_dir: best, its best-epoch weights "
                             "(what fine_tune.py reads; the resumable checkpoint is removed once the result "
                             "is written); all, the checkpoint too; none, neither")
    parser.add_argument("--test_order", choices=TEST_ORDERS, default="shuffled",
                        help="shuffled: the test set in a fresh order each epoch, drawn from --seed (the "
                             "authors' CIFAR/Fashion-MNIST loaders; it moves the per-batch-mean accuracy; "
                             "TinyImageNet is never shuffled, as theirs); fixed: file order")
    parser.add_argument("--scale_schedule", action="store_true", ignored="--scale_schedule" in hidden,
                        help="put the authors' LR decays at the same fractions of --epochs (for short "
                             "runs; off: the paper's fixed decay epochs)")
    # The authors' spelling of the data folder (imagenet scripts, train_norm, fine_tune): an alias.
    parser.add_argument("--data", dest="data_dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def check_recipe_args(args, datasets, name_stem, grouping="traced"):
    """What argparse cannot check: the model/data pair (and its --grouping), the SGD numbers, the run name
    (`name_stem`: the authors' name for such a run, as cli.authors_name takes it)."""
    check_pair(args.model, args.dataset, datasets, grouping=grouping)
    check_sgd(args.lr, args.momentum, args.weight_decay)
    require_save(args.save, authors_name(name_stem, args.model, args.dataset))


def swipe_name_stem(args):
    """The authors' result name of this swipe's method (utils.report.default_names)."""
    methods = [m for m in METHOD_FLAGS if getattr(args, m)]
    key = {"uniform": "{model}_uni_{tag}", "morph": "{model}_pruned_{tag}", "convcut": "{model}_convcut_{tag}"}
    if methods:
        return key[methods[0]]
    return "{model}_10_eff_{tag}_" + ("early" if args.descent_idx == 0 else "late")


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
                        help=f"width ratios to train; a subset shards a swipe (default: "
                             f"{' '.join(f'{r:g}' for r in ratios)})")
    parser.add_argument("--target_params", nargs="+", default=None, metavar="N",
                        help="instead of --ratios: absolute budgets in parameters, e.g. 1.5M (suffixes k, M, "
                             "G); results are named <save>_params<N>.pk")
    parser.add_argument("--target_macs", nargs="+", default=None, metavar="N",
                        help="instead of --ratios: absolute budgets in MACs per image, e.g. 300M; results "
                             "are named <save>_macs<N>.pk")
    parser.add_argument("--target_latency", nargs="+", default=None, metavar="MS",
                        help="instead of --ratios: absolute budgets in predicted ms per batch of "
                             "--latency_batch images on --device, e.g. 12ms; results are named "
                             "<save>_latency<MS>ms.pk")
    add_budget_arg(parser, default=None)
    add_round_to_arg(parser)
    add_grouping_arg(parser)
    parser.set_defaults(default_ratios=list(ratios))
    parser.add_argument("--exact", action="store_true",
                        help="tau search on the exact parameter count of the built network instead "
                             "of the authors' formula (--budget params at a ratio)")
    parser.add_argument("--plateau", type=float, default=None, metavar="POINTS",
                        help="beyond the paper: after --epochs, go on at the schedule's last LR one epoch at a "
                             "time until the best test accuracy rose by less than POINTS over the last quarter "
                             "of the epochs run; the result stores epochs_run and plateau_gain (default: off, "
                             "exactly --epochs)")
    parser.add_argument("--plateau_max", type=positive_int, default=None, metavar="EPOCHS",
                        help="with --plateau: at most this many epochs in all (default: twice --epochs)")


def check_plateau(args):
    """--plateau: a positive number of points; --plateau_max: with it, and not below --epochs."""
    if args.plateau is None:
        if args.plateau_max is not None:
            raise UserError("--plateau_max needs --plateau")
        return
    check_positive("--plateau", args.plateau)
    if args.plateau_max is not None and args.plateau_max < args.epochs:
        raise UserError(f"--plateau_max {args.plateau_max} is below --epochs {args.epochs}")


# -- width plans --------------------------------------------------------------------------------------

def choose_method(args):
    given = [name for name in METHOD_FLAGS if getattr(args, name)]
    if len(given) > 1:
        raise UserError(f"give at most one of --uniform, --morph, --convcut (got "
                        f"{' and '.join('--' + g for g in given)})")
    return given[0] if given else "neuralscale"


def plan_widths(args, method, ratios, num_classes, pruned_filters, budget="params", targets=None, cost=None,
                round_to=1):
    """[(ratio, widths)] for every ratio, or [(target, widths)] for every absolute budget in `targets`
    (an amount of `budget`; `cost`: the latency model's prediction for a latency budget; every width a
    multiple of `round_to`), and the provenance keys of the result. Every one is resolved before
    anything trains, so a bad record or budget fails at once."""
    spec = get_spec(args.model, args.grouping)
    num_layers = len(spec.DEFAULT_WIDTHS)
    kwargs = {"num_classes": num_classes, "search": False, "first_iteration": args.descent_idx == 0,
              "method": "uniform" if method == "convcut" else method, "exact": args.exact,
              "convcut": method == "convcut", "budget": budget, "cost": cost, "round_to": round_to}
    info = {}
    if method == "neuralscale":
        if not args.prune_fname:
            raise UserError("NeuralScale (the default method) needs --prune_fname NAME, a search run under "
                            "--record_dir or a .pk path; or choose --uniform, --morph or --convcut")
        path = io.resolve_record(args.record_dir, args.prune_fname)
        alpha, beta = io.select_fit(io.load_fits(path, num_layers, budget, args.grouping), args.descent_idx, path)
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
            warn_off_budget(args.model, ratio, widths, num_classes, spec, method, flat_fit, budget, cost,
                            args.grouping)
        plans.append((float(ratio) if target is None else target, widths))
    return plans, info


def warn_off_budget(model_name, ratio, widths, num_classes, spec, method, flat_fit, budget="params", cost=None,
                    grouping="traced"):
    """The authors' searches can miss the budget silently; the one known case is a fit from a record
    with fewer than MIN_ROWS rows (beta == 0), whose VGG widths stay int(alpha) at every ratio (kept quirk).
    Say so rather than train a network of another size under this ratio's name."""
    count = scaling.resource_counter(model_name, budget, num_classes, cost=cost, grouping=grouping)
    got = count(widths)
    goal = count(spec.prepare_filters(ratio, num_classes=num_classes))
    if abs(got - goal) > 0.1 * goal:
        hint = f" (a beta == 0 fit: the search record has fewer than {MIN_ROWS} rows)" if flat_fit else ""
        log(f"warning: {model_name} {method} at ratio {ratio:g} has {got:,.6g} "
            f"{scaling.RESOURCE_WORDS[budget]}, {got / goal:.0%} of the uniform network's {goal:,.6g}{hint}")


def budget_label(ratio, budget, target):
    if target is None:
        return f"r={ratio:g}"
    return f"latency={target:g}ms" if budget == "latency" else f"{budget}={target:,}"


# -- the swipe ----------------------------------------------------------------------------------------

def predicted(cost, args, ratio, target, widths, num_classes):
    """The result keys of a latency budget: its predicted latency and the budget it met (ms per batch of
    --latency_batch); nothing for the other budgets."""
    if cost is None:
        return {}
    goal = target if target is not None else cost(get_spec(args.model).prepare_filters(ratio, num_classes=num_classes))
    return {"latency_predicted_ms": float(cost(widths)), "latency_budget_ms": float(goal),
            "latency_batch": args.latency_batch, "latency_clock": args.latency_clock}


def pending(args, settings, method, budget, plans, targets):
    """The (k, ratio, target, tag, widths, path, point) of every plan not already finished (k: its place
    among the plans, from 1); every result is checked before anything trains. `settings`: the
    utils.run.RunSettings of the flags."""
    schedule, todo = schedule_for(args.dataset), []
    for k, (value, widths) in enumerate(plans, 1):
        ratio, target = (None, value) if targets is not None else (value, None)
        tag = io.budget_tag(ratio, budget, target)
        path = os.path.join(args.plots_dir, args.model, f"{args.save}_{tag}.pk")
        point = {} if budget == "params" and target is None else {"budget": budget, "target": target}
        if args.round_to != 1:
            point.update(budget=budget, target=target, round_to=args.round_to)
        if args.grouping != "traced":  # a result that stores none was trained under "traced"
            point["grouping"] = args.grouping
        fingerprint = run.fingerprint_of(settings, method=method, ratio=ratio, widths=widths, schedule=schedule,
                                         **point)
        if run.finished(path, {**fingerprint, "epochs": args.epochs}, settings.overwrite):
            log(f"{budget_label(ratio, budget, target)}: {path} exists, skipped (same settings)")
        else:
            todo.append((k, ratio, target, tag, widths, path, point))
    return todo


def epoch_cost(model_name, dataset, widths, convcut, grouping="traced"):
    """What one epoch of a network costs on the command's clock (utils.progress): its MACs per image,
    which the epoch time follows far better than a count of epochs across a swipe's ratios."""
    return count_macs(model_name, widths, NUM_CLASSES[dataset], IMAGE_SIZE[dataset], convcut, grouping)


def parse_swipe_args(argv, recipe, *, description, datasets, dataset, ratios):
    """The checked flags of ratio_swipe.py / imagenet_ratio_swipe.py."""
    parser = make_parser(description)
    add_recipe_args(parser, recipe, datasets=datasets, dataset=dataset,
                    outputs=("record_dir", "plots_dir", "models_dir"), generic=True)  # record: --prune_fname
    add_swipe_args(parser, ratios)
    args = parser.parse_args(argv)
    check_recipe_args(args, datasets, swipe_name_stem(args), args.grouping)
    check_plateau(args)
    return args


def run_swipe(argv, recipe, *, description, datasets, dataset, ratios, pruned_filters):
    """ratio_swipe.py / imagenet_ratio_swipe.py: train one network per ratio from scratch."""
    args = parse_swipe_args(argv, recipe, description=description, datasets=datasets, dataset=dataset,
                            ratios=ratios)
    device = resolve_device(args.device)
    method = choose_method(args)
    num_classes = NUM_CLASSES[args.dataset]
    budget, ratios, targets = budget_flags(args, args.default_ratios)
    cost = latency_cost(args.budget, args.model, num_classes, IMAGE_SIZE[args.dataset],
                        convcut=method == "convcut", **latency_flags(args))
    plans, info = plan_widths(args, method, ratios, num_classes, pruned_filters, budget, targets, cost,
                              args.round_to)
    settings = run.RunSettings.from_args(args)  # after budget_flags: it resolves --budget
    todo = pending(args, settings, method, budget, plans, targets)
    if not todo:
        return
    settings = run.with_seed(settings, args.save)
    set_precision(device, settings.precision)
    set_deterministic(device, settings.deterministic)
    loaders = run.load_data(settings, device)  # a missing data set fails before anything is created
    run.output_dirs(settings)
    costs = [epoch_cost(args.model, args.dataset, widths, method == "convcut", args.grouping)
             for *_, widths, _, _ in todo]
    clock = Clock(args.epochs * sum(costs))
    for (k, ratio, target, tag, widths, path, point), work in zip(todo, costs):
        position = Position(f"{'ratio' if target is None else 'budget'} {k}/{len(plans)}", clock, work)
        set_seed(run.init_seed(settings.seed, ratio, budget, target))
        net = prepare_model(build_model(args.model, widths, num_classes, gates=False, convcut=method == "convcut",
                                        bn_init=args.bn_init, grouping=args.grouping), device)
        name = f"{args.model} {args.dataset} {method} {budget_label(ratio, budget, target)} seed={settings.seed}"
        log(f"{name}: widths {widths}, {actual_params(net):,} parameters")
        result = run.train_and_save(net, settings, device=device, loaders=loaders, path=path,
                                    stem=f"{args.save}_{tag}", schedule=schedule_for(args.dataset),
                                    epochs=args.epochs, method=method, ratio=ratio, widths=widths, name=name,
                                    fingerprint=point,
                                    extra={**info, **point, **predicted(cost, args, ratio, target, widths, num_classes)},
                                    timed={"widths": widths, "convcut": method == "convcut",
                                           "grouping": args.grouping},
                                    keep=args.keep_checkpoints, position=position)
        latency = result["latency_ms"]
        log(f"{name}: params {result['params']:,}"
            + ("" if latency is None else f", latency {latency:.2f} ms/batch")
            + ("" if cost is None else f" ({result['latency_predicted_ms']:.2f} ms predicted)")
            + f", best test acc {result['best_test_acc']:.2f}; wrote {path}")
        del net
        accel.empty_cache(device)
