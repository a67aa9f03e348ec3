"""The paper's tables and figures from result pickles: gather, summarise, print, plot.

Shared by plot_ratio.py (Table 1, Supplementary Tables 2, 5 and 6), plot_ratio_warmup.py (Tables 3-4)
and plot_filters.py (Figure 2). The statistics are the paper's: per seed the best test accuracy over
epochs (max of `test_acc`, i.e. model selection on the test set, as the authors did), then the mean and
the population std (ddof 0) over seeds; the final-epoch mean is reported beside it. Parameters are the
trainable parameters of the built network, gates excluded; MACs the multiply-accumulates per image
of its conv and linear layers (utils.params.count_macs); latency is measured here, once per
configuration, as the authors measured it (utils/latency.py: network_latency); with --no_latency, a
`latency_ms` stored in the result pickles is shown instead.

Nothing is ever invented: a missing seed lowers `n_seeds`, a ratio with no files has no accuracy.
"""
import dataclasses
import json
import math
import os

import numpy as np

from model import get_spec
from utils import io
from utils.base import UserError, check_ratios, check_widths, resolve_device, seed_value, writable_dir
from utils.cli import add_common_args
from utils.data import IMAGE_SIZE, NUM_CLASSES
from utils.params import built_params, count_macs, count_params
from utils.train import plateau_gain

# Table order follows the paper (Table 1, then ConvCut as in Supplementary Table 5).
METHOD_LABELS = {
    "uniform": "Uniform Scale (Baseline)",
    "li_magnitude": "Li et al.",
    "morphnet": "MorphNet (Taylor-FO)",
    "convcut": "Uniform Scale (ConvCut)",
    "neuralscale_it1": "NeuralScale (Iteration = 1)",
    "neuralscale_it15": "NeuralScale (Iteration = 15)",
    "neuralscale_macs": "NeuralScale, MACs budget",  # beyond the paper: a --budget macs search
}
METHODS = tuple(METHOD_LABELS)
STYLES = {  # (colour, marker) per method; pre-training runs cycle through the rest of the palette
    "uniform": ("tab:blue", "o"), "li_magnitude": ("tab:purple", "*"), "morphnet": ("tab:orange", "s"),
    "convcut": ("tab:brown", "v"), "neuralscale_it1": ("tab:green", "^"),
    "neuralscale_it15": ("tab:red", "D"), "neuralscale_macs": ("tab:pink", "P"),
}
PALETTE = ("tab:green", "tab:orange", "tab:purple", "tab:red", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:gray")

MODEL_TITLES = {"vgg": "VGG11", "resnet18": "ResNet18", "mobilenetv2": "MobileNetV2"}
DATASET_TITLES = {"CIFAR10": "CIFAR10", "CIFAR100": "CIFAR100", "tinyimagenet": "TinyImageNet",
                  "FashionMNIST": "FashionMNIST", "synthetic": "synthetic"}
DATASET_TAGS = {"CIFAR10": "c10", "CIFAR100": "c100", "tinyimagenet": "tinyimagenet",
                "FashionMNIST": "fashionmnist", "synthetic": "synthetic"}  # the authors' file-name tags

CIFAR_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
TINY_RATIOS = (0.25, 0.5, 0.75, 1.0)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
LI_RATIO = 0.75  # the magnitude-pruning baseline exists at one ratio only
IT1_IDX, IT15_IDX = 0, 14  # descent_idx of "Iteration = 1" and "Iteration = 15"

# The records behind the authors' plots. NOTE: the VGG CIFAR100 accuracies
# are named vgg_10_eff_c100_{early,late} but their configurations come from vgg2_10_eff_c100; that
# record reproduces the paper's parameter counts (Supplementary Table 2).
DEFAULT_RECORDS = {
    ("vgg", "CIFAR10"): "vgg_10_eff_c10",
    ("vgg", "CIFAR100"): "vgg2_10_eff_c100",
    ("resnet18", "CIFAR100"): "resnet18_10_eff_c100",
    ("resnet18", "tinyimagenet"): "resnet18_10_eff_tinyimagenet",
    ("mobilenetv2", "CIFAR100"): "mobilenetv2_10_eff_c100",
    ("mobilenetv2", "tinyimagenet"): "mobilenetv2_15_eff_tinyimagenet",
}


def default_ratios(dataset):
    return TINY_RATIOS if dataset == "tinyimagenet" else CIFAR_RATIOS


def default_record(model, dataset):
    return DEFAULT_RECORDS.get((model, dataset), f"{model}_10_eff_{DATASET_TAGS[dataset]}")


def default_names(model, dataset):
    """Result-file prefixes per method: the names of the authors' published result files."""
    tag = DATASET_TAGS[dataset]
    series = "mobilenetv2_15_eff_tinyimagenet" if (model, dataset) == ("mobilenetv2", "tinyimagenet") \
        else f"{model}_10_eff_{tag}"
    return {"uniform": f"{model}_uni_{tag}", "li_magnitude": f"{model}_norm_{tag}",
            "morphnet": f"{model}_pruned_{tag}", "convcut": f"{model}_convcut_{tag}",
            "neuralscale_it1": f"{series}_early", "neuralscale_it15": f"{series}_late",
            "neuralscale_macs": f"{series}_macs"}


def title(model, dataset):
    return f"{MODEL_TITLES.get(model, model)} {DATASET_TITLES[dataset]}"


# -- what to gather ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Method:
    """One group of table rows: a result-file prefix and the widths each ratio builds."""
    key: str                   # the JSON name: uniform, morphnet, neuralscale_it15, neuralscale_p0, ...
    label: str                 # the legend / table name
    name: str                  # result files <plots_dir>/<model>/<name>_<seed>_<int(ratio*100)>.pk
    widths: object             # ratio -> flat width list
    convcut: bool = False
    ratios: tuple = None       # restrict to these ratios (Li et al.: 0.75 only)
    note: str = ""             # a footnote printed under the table
    trained_widths: bool = True  # the result files were trained with these widths (not Li et al.)
    budget: str = "params"     # the resource its widths were searched for; its rows sort by it


@dataclasses.dataclass
class Row:
    method: str
    label: str
    ratio: float
    widths: list
    params: int
    latency_ms: float = None
    acc_mean: float = None
    acc_std: float = None
    acc_final_mean: float = None
    n_seeds: int = 0
    seeds: list = dataclasses.field(default_factory=list)     # seeds found
    missing_seeds: list = dataclasses.field(default_factory=list)
    best: list = dataclasses.field(default_factory=list)      # per-seed best test accuracy
    latency_source: str = None                                # "pickle", "measured", "measured_fast" or None
    macs: int = None                                          # multiply-accumulates per image
    latency_predicted_ms: float = None                        # the latency model's (--budget latency)
    epochs: list = dataclasses.field(default_factory=list)   # per seed: epochs trained
    plateau_gain: float = None  # largest over seeds: best accuracy minus the best before the last quarter

    def to_json(self):
        """The row as one line of strict JSON: a value that is missing is null, never a bare NaN."""
        row = {"method": self.method, "ratio": self.ratio, "params": self.params, "macs": self.macs,
               "latency_ms": self.latency_ms, "latency_source": self.latency_source, "acc_mean": self.acc_mean,
               "acc_std": self.acc_std, "acc_final_mean": self.acc_final_mean, "n_seeds": self.n_seeds,
               "missing_seeds": self.missing_seeds, "widths": self.widths,
               "latency_predicted_ms": self.latency_predicted_ms, "epochs": self.epochs,
               "plateau_gain": self.plateau_gain}
        row = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
        return json.dumps(row, allow_nan=False)


def neuralscale_widths(model, dataset, record_path, descent_idx, budget="params", grouping="traced", **scaling):
    """ratio -> widths from iteration `descent_idx` of a search record (the file is read once), which
    must have been fitted on `budget` under `grouping`. `scaling`: prepare_filters' cost (a latency
    budget's model) and round_to."""
    spec, num_classes = get_spec(model, grouping), NUM_CLASSES[dataset]
    fits = io.load_fits(record_path, num_layers=len(spec.DEFAULT_WIDTHS), budget=budget, grouping=grouping)
    alpha, beta = io.select_fit(fits, descent_idx, record_path)
    return lambda r: spec.prepare_filters(r, num_classes=num_classes, alpha=alpha, beta=beta,
                                          first_iteration=descent_idx == 0, budget=budget, method="neuralscale",
                                          **scaling)


def uniform_widths(model, dataset, grouping="traced", **scaling):
    """ratio -> uniform widths (`scaling`: budget, cost, round_to; only round_to changes them)."""
    spec, num_classes = get_spec(model, grouping), NUM_CLASSES[dataset]
    return lambda r: spec.prepare_filters(r, num_classes=num_classes, method="uniform", **scaling)


def morph_widths(model, dataset, pruned, grouping="traced", **scaling):
    """ratio -> the pruned widths rescaled to the budget (`scaling`: budget, cost, round_to)."""
    spec, num_classes = get_spec(model, grouping), NUM_CLASSES[dataset]
    return lambda r: spec.prepare_filters(r, num_classes=num_classes, pruned_widths=list(pruned), method="morph",
                                          **scaling)


def try_record(path, why, log):
    """True when the search record exists; otherwise one note and the rows are left out."""
    if os.path.isfile(path):
        return True
    log(f"note: {why} left out: no search record {path}")
    return False


# -- reading results ---------------------------------------------------------------------------------

def result_file(plots_dir, model, name, seed, ratio):
    return io.result_path(plots_dir, model, f"{name}_{seed}", ratio)


def has_results(plots_dir, model, name, seeds, ratios):
    return any(os.path.isfile(result_file(plots_dir, model, name, s, r)) for s in seeds for r in ratios)


def method_ratios(method, ratios):
    return [r for r in ratios if method.ratios is None or any(math.isclose(r, x) for x in method.ratios)]


def any_results(methods, plots_dir, model, ratios, seeds):
    """Whether any method has any result file: checked before anything is written or measured."""
    return any(has_results(plots_dir, model, m.name, seeds, method_ratios(m, ratios)) for m in methods)


def read_seeds(plots_dir, model, name, ratio, seeds, widths=None, log=None, grouping="traced"):
    """{seed: (best test acc, final test acc, latency_ms or None)} for the files that exist; a file
    trained under another --grouping (a result that stores none: "traced") is refused.

    A pickle that records the widths it was trained with (this project's ratio_swipe does) and
    disagrees with `widths` gets a note: its accuracy then belongs to another configuration. Two files
    of one cell that record the same run seed get a warning (e.g. five runs all given --seed 0).
    """
    found, run_seeds = {}, {}
    for seed in seeds:
        path = result_file(plots_dir, model, name, seed, ratio)
        if not os.path.isfile(path):
            continue
        curve = io.load_result(path, ratio)
        trained = curve.get("grouping", "traced")
        if trained != grouping:
            raise UserError(f"{path} was trained with --grouping {trained}, not {grouping} (another network "
                            f"at these widths); pass --grouping {trained}")
        stored = curve.get("seed")  # the seed the run used (the authors' pickles have none)
        if stored is not None and log is not None:
            if int(stored) in run_seeds:
                log(f"warning: {run_seeds[int(stored)]} and {path} were trained with the same seed "
                    f"{int(stored)}: identical runs, so the std over seeds understates the spread")
            run_seeds.setdefault(int(stored), path)
        test_acc = np.asarray(curve["test_acc"], dtype=np.float64).ravel()
        if test_acc.size == 0 or not np.all(np.isfinite(test_acc)):
            raise UserError(f"{path}: test_acc is empty or not finite")
        latency = curve.get("latency_ms")
        trained = curve.get("widths")
        if widths is not None and trained is not None and log is not None and \
                [int(w) for w in trained] != list(widths):
            log(f"note: {path} was trained with widths {[int(w) for w in trained]}, not the {list(widths)} "
                "this table counts (another record, --exact or --convcut?)")
        found[seed] = (float(test_acc.max()), float(test_acc[-1]),
                       None if latency is None else float(latency), test_acc.size, plateau_gain(test_acc))
    return found


def summarise(row, found):
    """Fill the accuracy fields of `row` from read_seeds(); nothing when no seed was found."""
    row.seeds = sorted(found)
    row.n_seeds = len(found)
    if not found:
        return row
    best = np.array([found[s][0] for s in row.seeds])
    final = np.array([found[s][1] for s in row.seeds])
    row.best = best.tolist()
    row.acc_mean, row.acc_std = float(best.mean()), float(best.std(ddof=0))  # population std, as the paper
    row.acc_final_mean = float(final.mean())
    row.epochs = [found[s][3] for s in row.seeds]
    gains = [found[s][4] for s in row.seeds if found[s][4] is not None]
    row.plateau_gain = max(gains) if gains else None
    latencies = [found[s][2] for s in row.seeds if found[s][2] is not None]
    if latencies:
        row.latency_ms, row.latency_source = float(np.mean(latencies)), "pickle"
    return row


def measure(model, dataset, widths, convcut, device, plots_dir, fast=False, protocol=None, grouping="traced"):
    """Latency (ms per batch) of the network these widths build, on `device`, as the authors measured it
    (fast: the opt-in fast layout; VGG11 with its gates); a measurement of the same configuration on this
    machine under plots_dir is reused. `protocol`: batch, precision and clock of cached_latency (default:
    the paper's 100, fp32, wall clock), a latency budget's own."""
    from utils.latency import latency_cache_dir, network_latency
    return network_latency(model, widths, NUM_CLASSES[dataset], device, IMAGE_SIZE[dataset],
                           latency_cache_dir(plots_dir), convcut=convcut, fast=fast, grouping=grouping,
                           **(protocol or {}))


def gather(methods, *, model, dataset, plots_dir, ratios, seeds, device=None, log=lambda message: None,
           fast_latency=False, protocol=None, cost=None, grouping="traced"):
    """The table's rows, method by method and ratio by ratio (`grouping`: a torchvision:NAME model's
    channel groups, which its results must have been trained under).

    A method with no result file at any requested ratio and seed is left out with a note; a ratio
    with no file keeps its row (configuration and parameters) with n_seeds 0 and no accuracy.
    With a `device` every configuration's latency is measured there (once), as the authors did, and a
    `latency_ms` stored in the pickles is not used (a training run may have timed another layout);
    `device` None skips the measurement and shows the stored one. A latency budget: `protocol` measures
    as its model predicts, `cost` fills latency_predicted_ms.
    """
    num_classes = NUM_CLASSES[dataset]
    ratios, seeds = list(dict.fromkeys(ratios)), list(dict.fromkeys(seeds))  # a repeat counts once
    rows, latency_cache = [], {}
    for m in methods:
        m_ratios = method_ratios(m, ratios)
        if not m_ratios:
            continue
        if not has_results(plots_dir, model, m.name, seeds, m_ratios):
            example = result_file(plots_dir, model, m.name, "<seed>", m_ratios[0])
            log(f"note: {m.label} left out: no result files like {example}")
            continue
        first = len(rows)
        for r in m_ratios:
            widths = check_widths([int(w) for w in m.widths(r)], f"{m.label} at ratio {r:g}")
            row = Row(m.key, m.label, float(r), widths,
                      built_params(model, widths, num_classes, convcut=m.convcut, grouping=grouping),
                      macs=count_macs(model, widths, num_classes, IMAGE_SIZE[dataset], m.convcut, grouping),
                      latency_predicted_ms=None if cost is None else float(cost(widths)))
            summarise(row, read_seeds(plots_dir, model, m.name, r, seeds,
                                      widths if m.trained_widths else None, log, grouping))
            row.missing_seeds = [s for s in seeds if s not in row.seeds]
            key = (tuple(widths), m.convcut)
            if not m.trained_widths or device is not None:  # Li et al.: the uniform network's, as the authors
                row.latency_ms = row.latency_source = None
            if row.latency_ms is None and key in latency_cache:
                row.latency_ms, row.latency_source = latency_cache[key]
            elif row.latency_ms is None and device is not None:
                log(f"measuring latency: {m.label} at ratio {r:g} on {device}")
                row.latency_ms = measure(model, dataset, widths, m.convcut, device, plots_dir, fast_latency,
                                         protocol, grouping)
                row.latency_source = "measured_fast" if fast_latency else "measured"
            if row.latency_ms is not None:
                latency_cache.setdefault(key, (row.latency_ms, row.latency_source))
            rows.append(row)
        order = "latency_predicted_ms" if m.budget == "latency" else m.budget
        rows[first:] = sorted(rows[first:], key=lambda row: getattr(row, order))  # stable
    return rows


# -- the table ---------------------------------------------------------------------------------------

def fmt_params(params):
    return f"{params / 1e6:.2f}M"


def fmt_num(value, unit=""):
    return "—" if value is None else f"{value:.2f}{unit}"


def table_cells(row, predicted=False):
    """The printed cells of one row (the table and --json share these numbers); predicted: a column of
    the latency model's prediction after the measured latency."""
    acc = "—" if row.acc_mean is None else f"{row.acc_mean:.2f} ± {row.acc_std:.2f}"
    latency = [fmt_num(row.latency_ms, "ms")] + ([fmt_num(row.latency_predicted_ms, "ms")] if predicted else [])
    return [f"{row.ratio:g}", fmt_params(row.params), fmt_params(row.macs), *latency, acc,
            fmt_num(row.acc_final_mean), f"{row.n_seeds}/{row.n_seeds + len(row.missing_seeds)}"]


def format_table(rows, heading, notes=(), marked=()):
    """Markdown in the paper's layout: the method name on the first row of its group; methods in
    `marked` get a ' *' that refers to a note. A latency in the fast layout says so in its header; rows
    with a predicted latency add its column."""
    fast = any(r.latency_source == "measured_fast" for r in rows)
    predicted = any(row.latency_predicted_ms is not None for row in rows)
    header = ["Method", "Ratio", "Params", "MACs", "Latency (fast layout)" if fast else "Latency",
              *(["Predicted"] if predicted else []),
              "Accuracy (%) mean ± std", "final-epoch mean", "seeds"]
    lines = [f"## {heading}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    previous = None
    for row in rows:
        name = "" if row.method == previous else row.label + (" *" if row.method in marked else "")
        previous = row.method
        lines.append("| " + " | ".join([name] + table_cells(row, predicted)) + " |")
    lines += [""] + list(notes)
    return "\n".join(lines)


def table_notes(rows, methods, device_name, protocol=None):
    used = {r.method for r in rows}
    notes = ["Accuracy: mean ± population std (ddof 0) over seeds of the best test accuracy over "
             "epochs (the paper's statistic); final-epoch mean beside it. Params: trainable "
             "parameters of the built network, gates excluded. MACs: multiply-accumulates per image "
             "in its conv and linear layers."]
    sources = {r.latency_source for r in rows}
    if "measured" in sources:
        how = protocol or {}
        clock = " of this process's CPU time (one thread)" if how.get("clock") == "cpu" else ""
        notes.append(f"Latency: ms{clock} per batch of {how.get('batch', 100)} (20 warm-up + 80 timed passes, "
                     f"{how.get('precision', 'fp32')}), measured on {device_name} as the authors measured it "
                     f"(contiguous NCHW, no cuDNN autotuning; VGG11 with its gates).")
    if "measured_fast" in sources:
        notes.append(f"Latency (fast layout): ms per batch of 100 (20 warm-up + 80 timed passes), measured on "
                     f"{device_name} in the layout training uses (channels_last on CUDA, cuDNN autotuning), "
                     f"not the authors' protocol (--fast_latency).")
    if any(r.latency_predicted_ms is not None for r in rows):
        notes.append("Predicted: the latency model's prediction (utils/latency_model.py) that the latency "
                     "budget was met on.")
    gains = [r.plateau_gain for r in rows if r.plateau_gain is not None]
    if gains:
        epochs = sorted({e for r in rows for e in r.epochs})
        notes.append(f"Plateau: over the last quarter of the {'/'.join(map(str, epochs))} epochs the best test "
                     f"accuracy rose by at most {max(gains):.2f} points (largest over every row and seed).")
    if "pickle" in sources:
        notes.append("Latency: the latency_ms stored in the result pickles where present (--no_latency).")
    if sources == {None}:
        notes.append("Latency: not measured (--no_latency).")
    notes += [m.note for m in methods if m.note and m.key in used]
    if any(r.missing_seeds for r in rows):
        notes.append("Seeds: found/asked; rows with fewer seeds average only the files present.")
    return notes


# -- figures -----------------------------------------------------------------------------------------

def _style(key, index):
    if key in STYLES:
        return STYLES[key]
    return PALETTE[index % len(PALETTE)], "o"


X_LABELS = {"params": "Parameters (M)", "macs": "MACs per image (M)",
            "latency_ms": "Latency (ms per batch of 100)"}


def plot_accuracy(rows, x="params", heading=""):
    """Accuracy against parameters (millions), MACs per image (millions) or latency (ms): mean line
    and min-max band over seeds.

    Returns the matplotlib Figure (its single Axes is fig.axes[0]), or None when no row has an x value.
    """
    import matplotlib
    from matplotlib import ticker
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend needed
    with matplotlib.rc_context({"text.usetex": False}):
        fig = Figure(figsize=(5.0, 3.6), dpi=150)
        ax = fig.add_subplot()
        keys = list(dict.fromkeys(r.method for r in rows))
        drawn = 0
        for i, key in enumerate(keys):
            pts = [r for r in rows if r.method == key and r.n_seeds and getattr(r, x) is not None]
            if not pts:
                continue
            pts.sort(key=lambda r: getattr(r, x))
            xs = np.array([getattr(r, x) for r in pts], dtype=np.float64)
            if x in ("params", "macs"):
                xs = xs / 1e6
            mean = np.array([r.acc_mean for r in pts])
            lo = np.array([min(r.best) for r in pts])
            hi = np.array([max(r.best) for r in pts])
            colour, marker = _style(key, i)
            single = len(pts) == 1  # e.g. Li et al. at 0.75: a large marker drawn on top
            ax.plot(xs, mean, color=colour, marker=marker, markersize=9 if single else 4, linewidth=1.2,
                    label=pts[0].label, zorder=4 if single else 2)
            ax.fill_between(xs, lo, hi, color=colour, alpha=0.2, linewidth=0)
            drawn += 1
        if not drawn:
            return None
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(X_LABELS[x])
        ax.set_ylabel("Accuracy (%)")
        ax.set_title(heading, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
    return fig


def save_figure(fig, figs_dir, stem):
    """Write <figs_dir>/<stem>.png and .pdf atomically; returns the two paths."""
    import matplotlib
    paths = []
    for ext in ("png", "pdf"):
        path = os.path.join(writable_dir(figs_dir), f"{stem}.{ext}")
        with io.atomic_write(path) as f, matplotlib.rc_context({"text.usetex": False}):
            fig.savefig(f, format=ext)  # text is laid out here: never LaTeX, whatever matplotlibrc says
        paths.append(path)
    return paths


def accuracy_figures(rows, *, figs_dir, model, dataset, kind="acc", only=None):
    """The accuracy-vs-params figure, accuracy-vs-MACs beside it and, when latency is known,
    accuracy-vs-latency.

    kind "acc" names them param_acc_<model>_<dataset> / macs_acc_... / latency_acc_... (param_ and
    latency_ as the authors' plot_ratio.py), "pretrain" names them param_pretrain_... and so on (their
    pre-training study). Returns {"params": (fig, paths), "macs": ..., "latency_ms": ...} for the
    figures written.
    """
    written = {}
    for x, prefix in (("params", "param"), ("macs", "macs"), ("latency_ms", "latency")):
        if only is not None and x != only:
            continue
        fig = plot_accuracy(rows, x=x, heading=title(model, dataset))
        if fig is not None:
            written[x] = (fig, save_figure(fig, figs_dir, f"{prefix}_{kind}_{model}_{dataset}"))
    return written


# -- Figure 2: residual filters against parameters ---------------------------------------------------

def record_taus(model, dataset, rows):
    """tau of each recorded row: the authors' counter, as the fit uses it."""
    return np.array([count_params(model, [int(w) for w in row], NUM_CLASSES[dataset]) for row in rows],
                    dtype=np.float64)


def plot_growth(panels, heading=""):
    """Residual filters per layer against tau (log-log), dots measured, dashed lines fitted.

    panels: list of (panel title, rows R x L, taus R, alpha L, beta L). Returns the Figure.
    """
    import matplotlib
    from matplotlib import ticker
    from matplotlib.figure import Figure
    with matplotlib.rc_context({"text.usetex": False}):
        fig = Figure(figsize=(4.6 * len(panels) + 1.6, 4.0), dpi=150)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (panel_title, rows, taus, alpha, beta) in zip(axes, panels):
            layers = rows.shape[1]
            cmap = matplotlib.colormaps["tab10" if layers <= 10 else "tab20"]  # qualitative: one per layer
            grid = np.geomspace(taus.min(), taus.max(), 100)
            for layer in range(layers):
                colour = cmap(layer % cmap.N)
                ax.plot(taus, rows[:, layer], "o", color=colour, markersize=2, alpha=0.6,
                        label=f"layer {layer + 1}")
                ax.plot(grid, alpha[layer] * grid ** beta[layer], "--", color=colour, linewidth=1)
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_minor_formatter(ticker.NullFormatter())
            ax.set_xlabel(r"$\tau$ (parameters, the authors' counter)")
            ax.set_ylabel("residual filters")
            ax.set_title(panel_title, fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
        axes[-1].legend(fontsize=6, ncol=2 if rows.shape[1] > 10 else 1, loc="upper left",
                        bbox_to_anchor=(1.02, 1.0), markerscale=2, borderaxespad=0)
        if heading:
            fig.suptitle(heading, fontsize=10)
        fig.tight_layout()
    return fig


# -- the scripts' shared flags and output --------------------------------------------------------------

def add_output_args(parser):
    """--ratios, --seeds, --json, --no_latency, --no_figs and the common flags."""
    parser.add_argument("--ratios", type=float, nargs="+",
                        help="width ratios; the paper's tables show 0.25 0.75 2 (0.25 0.75 on tinyimagenet) "
                             "(default: 0.25 to 2 by 0.25, or to 1 on tinyimagenet)")
    parser.add_argument("--seeds", type=seed_value, nargs="+", default=list(DEFAULT_SEEDS),
                        help="the seed suffixes of the result files (<name>_<seed>_<ratio>.pk)")
    parser.add_argument("--json", action="store_true", help="one JSON object per method and ratio")
    parser.add_argument("--no_latency", action="store_true",
                        help="do not measure latency (a latency_ms stored in the result pickles is shown)")
    parser.add_argument("--fast_latency", action="store_true",
                        help="measure latency in the layout training uses (channels_last on CUDA, cuDNN "
                             "autotuning) instead of the authors' contiguous NCHW; labelled in the table")
    parser.add_argument("--no_figs", action="store_true", help="do not write figures")
    add_common_args(parser, outputs=("record_dir", "plots_dir", "figs_dir"), inputs=("device",))  # latency


def checked_ratios(args, dataset):
    ratios = io.distinct_ratios(check_ratios(args.ratios or default_ratios(dataset)),
                                lambda r: f"<name>_<seed>_{io.ratio_tag(r)}.pk")
    return ratios


def emit(args, methods, *, model, dataset, ratios, heading, log, extra_notes=(), kind="acc", only=None,
         protocol=None, cost=None, grouping="traced"):
    """Gather the rows, print the table (or --json), write the figures (`only`: just the one against
    that x, "params", "macs" or "latency_ms"); the rows are returned. `protocol`, `cost`: a latency
    budget's measurement settings and model (see gather); `grouping`: see gather."""
    if only == "latency_ms" and args.no_latency:
        raise UserError("--x latency_ms draws accuracy against the latency, which --no_latency does not "
                        "measure; leave out one of them")
    if args.fast_latency and args.no_latency:
        raise UserError("--fast_latency chooses how latency is measured and --no_latency measures none; "
                        "leave out one of them")
    device = None if args.no_latency else resolve_device(args.device)
    if not any_results(methods, args.plots_dir, model, ratios, args.seeds):
        raise UserError(f"no result files for {model} on {dataset} under {args.plots_dir}/{model}/ "
                        f"(names like {methods[0].name}_0_{io.ratio_tag(ratios[0])}.pk)")
    if not args.no_figs:
        writable_dir(args.figs_dir)  # before the long part, after the inputs are known to be good
    rows = gather(methods, model=model, dataset=dataset, plots_dir=args.plots_dir, ratios=ratios,
                  seeds=args.seeds, device=device, log=log, fast_latency=args.fast_latency, protocol=protocol,
                  cost=cost, grouping=grouping)
    if args.json:
        for row in rows:
            print(row.to_json())
    else:
        notes = table_notes(rows, methods, str(device) if device else None, protocol) + list(extra_notes)
        print(format_table(rows, heading, notes, {m.key for m in methods if m.note}))
    if not args.no_figs:
        written = accuracy_figures(rows, figs_dir=args.figs_dir, model=model, dataset=dataset, kind=kind,
                                   only=only)
        for _, paths in written.values():
            for path in paths:
                log(f"wrote {path}")
        if only is not None and not written:
            log(f"note: no figure against {only}: no row with results has a value for it")
    return rows
