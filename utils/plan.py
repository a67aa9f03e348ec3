"""The paper's protocol for one table as a plan: a graph of jobs, each a command line of this
project's scripts with the authors' run names, exactly what a user would type by hand.

For a model and a data set (VGG11 on CIFAR100 by default in reproduce.py):
- stage `search`: the NeuralScale search (architecture_descent.py, 15 iterations) and the MorphNet-style
  search (`--morph`);
- one swipe job per (method, seed, ratio) (ratio_swipe.py --ratios R), stage = method: uniform,
  morphnet (from the user's own --morph record: --prune_fname), neuralscale_it1 (--descent_idx 0),
  neuralscale_it15 (the last iteration), convcut; each NeuralScale or MorphNet swipe waits for the search
  whose record it reads;
- Li et al. per seed: stage `pretrain` (train_norm.py), then stage `finetune` (fine_tune.py), each
  fine-tuning waiting for its own pre-training;
- stage `table`: plot_ratio.py, the table (table.md) and its JSON (table.jsonl), after every other job.
TinyImageNet takes imagenet_architecture_descent.py and imagenet_ratio_swipe.py, its ratios and recipe.

Pure: building a plan reads and writes nothing. reproduce.py prints it (`--dry-run`), and
utils/executors.py runs it on local workers or submits it to SLURM.
"""
import dataclasses
import math
import os
import shlex

from utils import io, report
from utils.base import OUTPUT_DIRS, UserError
from utils.jobs import Job, stages
from utils.train import RECIPES

CIFAR_SCRIPTS = {"search": "architecture_descent.py", "swipe": "ratio_swipe.py"}
TINY_SCRIPTS = {"search": "imagenet_architecture_descent.py", "swipe": "imagenet_ratio_swipe.py"}
SWIPE_METHODS = ("uniform", "morphnet", "neuralscale_it1", "neuralscale_it15", "convcut")
PAPER_METHODS = ("uniform", "li_magnitude", "morphnet", "neuralscale_it1", "neuralscale_it15")
PLAN_METHODS = PAPER_METHODS + ("convcut",)  # the table's methods a plan can train (utils/report.py keys)
SWIPE_FLAGS = {"uniform": ["--uniform"], "morphnet": ["--morph"], "convcut": ["--convcut"],
               "neuralscale_it1": [], "neuralscale_it15": []}
# In the order their jobs can start: the longest first (a search's 15 iterations, a pre-training at
# ratio 1), the jobs that wait for them after.
STAGES = ("search", "pretrain", "uniform", "convcut", "morphnet", "neuralscale_it1", "neuralscale_it15",
          "finetune", "table")
TRAINING = ("swipe", "pretrain", "finetune")
EVERY_RUN = ("search", "morph_search") + TRAINING
DEFAULT_ITERATIONS = 15
# Training images of each data set (the whole training split), for the size of the work.
TRAIN_IMAGES = {"CIFAR10": 50_000, "CIFAR100": 50_000, "tinyimagenet": 100_000, "FashionMNIST": 60_000,
                "synthetic": 50_000}

# reproduce.py's options that change a result, and where each goes: (its dest, the scripts' flag,
# the job families that take it). A value of None is not passed (the scripts' default holds).
PASS_THROUGH = (
    ("epochs", "--epochs", ("swipe", "pretrain")),
    ("finetune_epochs", "--epochs", ("finetune",)),
    ("search_epochs", "--epochs", ("search", "morph_search")),
    ("iterations", "--iterations", ("search",)),  # the --morph search is one iteration by definition
    ("warmup", "--warmup", ("search", "morph_search")),
    ("search_batch_size", "--batch-size", ("search", "morph_search")),
    ("prune_every", "--prune_every", ("search", "morph_search")),
    ("prune_per_step", "--prune_per_step", ("search", "morph_search")),
    ("search_ratio", "--search_ratio", ("search", "morph_search")),
    ("same_norm", "--same_norm", ("search", "morph_search")),
    ("budget", "--budget", ("search",)),
    ("batch_size", "--batch-size", TRAINING),
    ("test_batch_size", "--test-batch-size", TRAINING),
    ("test_subset", "--test_subset", TRAINING),
    ("test_order", "--test_order", TRAINING),
    ("scale_schedule", "--scale_schedule", ("swipe", "pretrain")),  # fine-tuning's LR is constant
    ("no_latency", "--no_latency", ("table",)),  # the training jobs measure none unless --swipe_args=--latency
    ("subset", "--subset", EVERY_RUN),
    ("precision", "--precision", EVERY_RUN),
    ("bn_init", "--bn_init", EVERY_RUN),
    ("loader", "--loader", EVERY_RUN),
    ("data_dir", "--data_dir", EVERY_RUN),
    ("download", "--download", EVERY_RUN),
    ("device", "--device", EVERY_RUN + ("table",)),
)
# Flags the plan sets itself: extra arguments (--swipe_args ...) may not set them another way.
PLANNED = {"--save", "--seed", "--ratios", "--prune_fname", "--descent_idx", "--uniform", "--morph", "--convcut",
           "--resume", "--model", "--dataset", "--out_dir", "--record_dir", "--plots_dir", "--models_dir",
           "--figs_dir", "--methods", "--seeds", "--morph_record", "--macs_record", "--json",
           "--target_params", "--target_macs", "--late_idx", "--early_idx", "--overwrite", "--ratio",
           "--data"} | {flag for _, flag, _ in PASS_THROUGH}


@dataclasses.dataclass
class Protocol:
    """What to plan. `values`: {PASS_THROUGH dest: value or None}; `extra`: {family: [arguments]},
    appended verbatim to every job of that family."""
    model: str
    dataset: str
    methods: tuple
    seeds: tuple
    ratios: tuple
    out_dir: str
    search_seed: int = 0
    values: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)
    script_dir: str = "."

    @property
    def iterations(self):
        return self.values.get("iterations") or DEFAULT_ITERATIONS

    @property
    def budget(self):
        return self.values.get("budget") or "params"


# -- names ---------------------------------------------------------------------------------------------

def names(model, dataset, budget="params"):
    """The authors' run names: result prefixes per method (utils.report.default_names), the two searches
    and the Li et al. pre-training; with --budget macs the NeuralScale runs take the `_macs` names."""
    tag = report.DATASET_TAGS[dataset]
    out = report.default_names(model, dataset)
    series = out["neuralscale_it15"][:-len("_late")]
    out.update(search=series, morph_search=f"{model}_morph_{tag}", pretrain=f"{model}_standard_{tag}")
    if budget != "params":
        out.update(search=f"{series}_{budget}", neuralscale_it15=out[f"neuralscale_{budget}"])
    return out


def folders(out_dir):
    return {key: os.path.join(out_dir, name) for key, name in OUTPUT_DIRS.items()}


# -- checks --------------------------------------------------------------------------------------------

def check(protocol):
    """Refuse what no plan can run, before anything is written."""
    p = protocol
    unknown = [m for m in p.methods if m not in PLAN_METHODS]
    if unknown:
        raise UserError(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(PLAN_METHODS)}")
    if "convcut" in p.methods and p.model == "vgg":
        raise UserError("ConvCut applies to resnet18 and mobilenetv2 (VGG has no shortcuts)")
    if p.budget != "params" and "neuralscale_it1" in p.methods:
        raise UserError(f"--budget {p.budget}: the table has NeuralScale's last iteration only "
                        "(plot_ratio.py --macs_record); leave neuralscale_it1 out of --methods")
    if not p.seeds or not p.ratios or not p.methods:
        raise UserError("--seeds, --ratios and --methods need at least one value each")
    if any(s < 0 for s in list(p.seeds) + [p.search_seed]):
        raise UserError("seeds must be non-negative")
    io.distinct_ratios(p.ratios, lambda r: f"<name>_<seed>_{io.ratio_tag(r)}.pk")
    for family, tokens in p.extra.items():
        for token in tokens:
            flag = token.split("=", 1)[0].replace("-", "_")
            if token.startswith("--") and flag in {f.replace("-", "_") for f in PLANNED}:
                raise UserError(f"--{family}_args: {token.split('=', 1)[0]} is set by the plan or has its "
                                f"own reproduce.py flag; give it there")
    return p


def pass_through(protocol, family):
    """The arguments of reproduce.py's options that concern `family`, then its extra arguments."""
    out = []
    for dest, flag, families in PASS_THROUGH:
        value = protocol.values.get(dest)
        if family not in families or value is None or value is False:
            continue
        out += [flag] if value is True else [flag, str(value)]
    return out + list(protocol.extra.get(family, ()))


def fmt_ratio(ratio):
    return f"{ratio:g}"


def script(protocol, name):
    return os.path.join(protocol.script_dir, name) if protocol.script_dir != "." else name


# -- the size of the work ------------------------------------------------------------------------------

def train_images(protocol):
    full = TRAIN_IMAGES[protocol.dataset]
    subset = protocol.values.get("subset")
    return min(subset, full) if subset else full


def _value(protocol, dest, default):
    value = protocol.values.get(dest)
    return default if value is None else value


def search_images(protocol, morph):
    """About how many training images a search processes: per iteration the warm-up, then one pruning
    step of --prune_per_step units every --prune_every minibatches until 95 % (50 %: --morph) of the
    units of its first network are gone, capped by the epoch bound. An estimate: later iterations have
    other widths, and the last-unit rule can end one sooner."""
    from model import get_spec
    from utils.data import NUM_CLASSES
    p, tiny = protocol, protocol.dataset == "tinyimagenet"
    recipe = RECIPES["search_tiny" if tiny else "search_cifar"]
    images = train_images(p)
    units = sum(get_spec(p.model).prepare_filters(_value(p, "search_ratio", 1.0),
                                                  num_classes=NUM_CLASSES[p.dataset]))
    steps = math.ceil(int(units * (0.5 if morph else 0.95)) / _value(p, "prune_per_step", recipe["prune_per_step"]))
    batches = math.ceil(images / _value(p, "search_batch_size", recipe["batch_size"]))  # per epoch
    pruning = math.ceil((steps * _value(p, "prune_every", recipe["prune_every"]) + 1) / batches)
    epochs = min(_value(p, "search_epochs", recipe["epochs"]), _value(p, "warmup", recipe["warmup"]) + pruning)
    return (1 if morph else p.iterations) * epochs * images


def training_epochs(protocol, family):
    tiny = protocol.dataset == "tinyimagenet"
    if family == "finetune":
        default = RECIPES["fine_tune"]["tiny_epochs" if tiny else "epochs"]
        return _value(protocol, "finetune_epochs", default)
    return _value(protocol, "epochs", RECIPES["scratch_tiny" if tiny else "scratch_cifar"]["epochs"])


# -- the jobs ------------------------------------------------------------------------------------------

def _head(protocol, script_name):
    return [script(protocol, script_name), "--model", protocol.model, "--dataset", protocol.dataset]


def search_job(protocol, run, morph):
    p, dirs = protocol, folders(protocol.out_dir)
    scripts = TINY_SCRIPTS if p.dataset == "tinyimagenet" else CIFAR_SCRIPTS
    family = "morph_search" if morph else "search"
    save = run[family]
    argv = _head(p, scripts["search"]) + ["--save", save, "--seed", str(p.search_seed)] + \
        (["--morph"] if morph else []) + ["--out_dir", p.out_dir] + pass_through(p, family)
    return Job(save, "search", argv, [], [io.record_pk_path(dirs["record_dir"], save)],
               images=search_images(p, morph))


def swipe_job(protocol, run, method, seed, ratio, searches):
    """One ratio of one seed of one method; NeuralScale and MorphNet read their search's record."""
    p, dirs = protocol, folders(protocol.out_dir)
    scripts = TINY_SCRIPTS if p.dataset == "tinyimagenet" else CIFAR_SCRIPTS
    argv, deps, inputs = _head(p, scripts["swipe"]) + SWIPE_FLAGS[method], [], []
    if method.startswith("neuralscale"):
        search = searches["search"]
        idx = 0 if method == "neuralscale_it1" else p.iterations - 1
        argv += ["--prune_fname", search.name] + ([] if idx == DEFAULT_ITERATIONS - 1 else ["--descent_idx", str(idx)])
        argv += [] if p.budget == "params" else ["--budget", p.budget]
        deps, inputs = [search.name], list(search.outputs)
    elif method == "morphnet":
        search = searches["morph_search"]
        argv += ["--prune_fname", search.name]
        deps, inputs = [search.name], [io.record_csv_path(dirs["record_dir"], search.name, 0)]
    save = f"{run[method]}_{seed}"
    argv += ["--save", save, "--seed", str(seed), "--ratios", fmt_ratio(ratio), "--out_dir", p.out_dir]
    return Job(f"{save}_{io.ratio_tag(ratio)}", method, argv + pass_through(p, "swipe"), deps,
               [io.result_path(dirs["plots_dir"], p.model, save, ratio)], inputs,
               images=training_epochs(p, "swipe") * train_images(p))


def li_jobs(protocol, run, seed):
    """Li et al. for one seed: pre-train the default network, then prune and fine-tune it."""
    p, dirs = protocol, folders(protocol.out_dir)
    save = f"{run['pretrain']}_{seed}"
    best = os.path.join(dirs["models_dir"], p.model, f"{save}_best_model.pt")
    pretrain = Job(save, "pretrain", _head(p, "train_norm.py") + [
        "--save", save, "--seed", str(seed), "--out_dir", p.out_dir] + pass_through(p, "pretrain"), [],
        [io.result_path(dirs["plots_dir"], p.model, save, 1.0), best],
        images=training_epochs(p, "pretrain") * train_images(p))
    tuned = f"{run['li_magnitude']}_{seed}"
    finetune = Job(f"{tuned}_{io.ratio_tag(report.LI_RATIO)}", "finetune", _head(p, "fine_tune.py") + [
        "--resume", save, "--save", tuned, "--seed", str(seed), "--out_dir", p.out_dir] + pass_through(p, "finetune"),
        [pretrain.name], [io.result_path(dirs["plots_dir"], p.model, tuned, report.LI_RATIO)], [best],
        images=training_epochs(p, "finetune") * train_images(p))
    return [pretrain, finetune]


def table_jobs(protocol, run, others):
    """plot_ratio.py: the table (table.md, figures) and its --json (table.jsonl), after every other job."""
    p = protocol
    methods = [m for m in PLAN_METHODS if m in p.methods]
    argv = _head(p, "plot_ratio.py") + ["--out_dir", p.out_dir, "--ratios", *map(fmt_ratio, p.ratios),
                                        "--seeds", *map(str, p.seeds)]
    if p.budget != "params":  # the NeuralScale rows of a MACs search (plot_ratio.py --macs_record)
        methods = [f"neuralscale_{p.budget}" if m == "neuralscale_it15" else m for m in methods]
        argv += [f"--{p.budget}_record", run["search"], f"--{p.budget}_name", run["neuralscale_it15"]]
    elif {"neuralscale_it1", "neuralscale_it15"} & set(methods):
        argv += ["--prune_fname", run["search"]]
    if p.iterations != DEFAULT_ITERATIONS:
        argv += ["--late_idx", str(p.iterations - 1)]
    if "morphnet" in methods:
        argv += ["--morph_record", run["morph_search"]]
    argv += ["--methods", *methods] + pass_through(p, "table")
    deps, inputs = [j.name for j in others], [f for j in others for f in j.outputs]
    table = Job("table", "table", argv, deps, [os.path.join(p.out_dir, "table.md")], inputs,
                stdout=os.path.join(p.out_dir, "table.md"))
    # After the table, not beside it: two latency measurements at once on one device would disturb
    # each other; the second finds the first's in the latency cache.
    return [table, Job("table_json", "table", argv + ["--json", "--no_figs"], deps + [table.name],
                       [os.path.join(p.out_dir, "table.jsonl")], inputs + table.outputs,
                       stdout=os.path.join(p.out_dir, "table.jsonl"))]


def build(protocol):
    """The jobs of the protocol, each after the jobs it waits for, in the order they best start."""
    p = check(protocol)
    run = names(p.model, p.dataset, p.budget)
    searches = {}
    if {"neuralscale_it1", "neuralscale_it15"} & set(p.methods):
        searches["search"] = search_job(p, run, morph=False)
    if "morphnet" in p.methods:
        searches["morph_search"] = search_job(p, run, morph=True)
    li = [li_jobs(p, run, seed) for seed in p.seeds] if "li_magnitude" in p.methods else []
    swipes = {m: [swipe_job(p, run, m, seed, ratio, searches) for seed in p.seeds for ratio in p.ratios]
              for m in SWIPE_METHODS if m in p.methods}
    by_stage = {"search": list(searches.values()), "pretrain": [pre for pre, _ in li],
                "finetune": [tuned for _, tuned in li], **swipes}
    jobs = [job for stage in STAGES for job in by_stage.get(stage, [])]
    return jobs + table_jobs(p, run, jobs)


# -- the plan as a shell script (--dry-run) ------------------------------------------------------------

def fmt_images(count, estimate=False):
    return ("about " if estimate else "") + f"{count:,}"


def work_table(jobs):
    """Lines of the plan's size: jobs and training images per stage, and the total."""
    lines = [f"{'stage':<18} {'jobs':>5}  training images (epochs x images x runs)"]
    for stage, members in stages(jobs).items():
        images = sum(j.images for j in members)
        lines.append(f"{stage:<18} {len(members):>5}  {fmt_images(images, stage == 'search') if images else '-'}")
    lines.append(f"{'total':<18} {len(jobs):>5}  {fmt_images(sum(j.images for j in jobs), True)}")
    return lines


def render_script(jobs, *, python, cwd, command):
    """The plan as a runnable bash script: one job per line in dependency order, with the job count
    and the size of each stage. Every job resumes and skips what it has finished, so a stopped script
    can be run again."""
    lines = ["#!/usr/bin/env bash",
             f"# The plan of: {command}",
             f"# {len(jobs)} jobs, one per line, each after the jobs it needs. Run it from {cwd}",
             "# (relative paths). Every job skips what it finished and resumes what it began, so running",
             "# the script again continues it.", "#"]
    lines += [f"# {line}" for line in work_table(jobs)]
    lines += ["", "set -euo pipefail", f"PYTHON=${{PYTHON:-{shlex.quote(python)}}}"]
    for stage, members in stages(jobs).items():
        lines += ["", f"# {stage}: {len(members)} job{'s' if len(members) > 1 else ''}"]
        lines += [f'"$PYTHON" {job.command()}' for job in members]
    return "\n".join(lines) + "\n"
