"""Files shared between scripts, in the authors' formats, so their published records load as ours do.

- `<record_dir>/<save>_<k>.csv`: one row per recorded pruning step, surviving units per gated layer.
- `<record_dir>/<save>.pk`: {"param": [[alpha_0, beta_0], ...]} (float64 arrays, one per iteration);
  a record fitted on MACs (--budget macs) also holds "budget": "macs" (no key: parameters, as the
  authors' records).
- `<plots_dir>/<model>/<save>_<int(ratio*100)>.pk`: {"ratio", "train_acc", "train_loss", "test_acc",
  "test_loss", ...} with one value per epoch (extra keys allowed).

Pickles are read with a restricted unpickler that admits numpy arrays, scalars and dtypes and nothing
else, so a pickle cannot run code; the authors' numpy-1 pickles load on numpy 2. Every write goes to a
temporary file in the same folder and is renamed into place, so a crash never leaves half a file.
"""
import contextlib
import csv
import io
import os
import pickle
import tempfile

import math
import numbers

import numpy as np

from utils.base import MAX_WIDTH, UserError, check_seed

# numpy 2 renamed numpy.core to numpy._core. numpy 1.26.1 added a partial numpy._core shim (multiarray,
# no numeric), so the fallback goes by ImportError, not by version.
try:
    from numpy._core import _multiarray_umath, multiarray, numeric
except ImportError:  # numpy 1.x
    from numpy.core import _multiarray_umath, multiarray, numeric
_NUMPY_MODULES = {"multiarray": multiarray, "numeric": numeric, "_multiarray_umath": _multiarray_umath}

# A width grows like tau^beta; the authors' fits have 0.16 <= beta <= 1.8. Beyond 10, tau^beta overflows
# float64 for a tau of 1e31, which the tau search never reaches.
MAX_BETA = 10.0
RESULT_KEYS = ("ratio", "train_acc", "train_loss", "test_acc", "test_loss")
PICKLE_PROTOCOL = 4  # numpy arrays then pickle via _reconstruct, readable by the authors' numpy 1

# (module, name) pairs a pickle may reference; numpy 1 wrote `numpy.core`, numpy 2 writes `numpy._core`.
_NUMPY_GLOBALS = {
    ("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"),
    ("_multiarray_umath", "_reconstruct"), ("_multiarray_umath", "scalar"),
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays, scalars and dtypes (and the bytes encoder of protocol 2) and nothing else."""

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):  # protocol 2 writes bytes as _codecs.encode(str)
            import _codecs
            return _codecs.encode
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module.startswith("numpy.dtypes") and name.endswith("DType"):
            import numpy.dtypes
            return getattr(numpy.dtypes, name)
        for prefix in ("numpy.core.", "numpy._core."):
            if module.startswith(prefix) and (module[len(prefix):], name) in _NUMPY_GLOBALS:
                return getattr(_NUMPY_MODULES[module[len(prefix):]], name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def load_pickle(path):
    """Load a pickle holding only plain data and numpy arrays; anything else is a UserError."""
    try:
        with open(path, "rb") as f:
            return NumpyOnlyUnpickler(f).load()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            ImportError, KeyError) as err:
        raise UserError(f"{path}: not a NeuralScale pickle (only numpy arrays and plain data are "
                        f"accepted): {err}") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror or err}") from None


def load_dict(path, what):
    """load_pickle of a file that must hold a dict (a search record, a per-iteration fit); anything
    else (a bare array, a list) is a UserError naming `what` the file should be."""
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: not {what} (a dict), got a {type(data).__name__}")
    return data


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Write to a temporary file next to `path`, then rename it into place. A failed write (a full
    disk) removes its temporary file and is a UserError; temporary files of `path` that a killed
    process left behind are removed first."""
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
        _remove_stale_tmps(folder, os.path.basename(path))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.{os.getpid()}.",
                                   suffix=".tmp")
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise UserError(f"cannot write {path}: {err.strerror or err}") from None
        raise


def _remove_stale_tmps(folder, name):
    """Remove .<name>.<pid>.*.tmp files whose writer process is gone (killed mid-write). A live
    writer's file is left alone: its pid still runs."""
    prefix = f".{name}."
    for entry in os.listdir(folder):
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        pid = entry[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, entry))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_pickle(obj, path):
    with atomic_write(path) as f:
        pickle.dump(obj, f, protocol=PICKLE_PROTOCOL)


def save_files(contents):
    """Write several files as one: {path: bytes} all go to temporary files first (written and synced),
    and only once every one is complete are they renamed into place, so a failure (a full disk, a
    folder that cannot be written) leaves every old file as it was and no temporary file behind."""
    for path in contents:
        if os.path.isdir(path):  # found now, not when half the files are renamed
            raise UserError(f"cannot write {path}: it is a folder")
    with contextlib.ExitStack() as stack:
        pending = []
        for path, data in contents.items():
            f = stack.enter_context(_temporary(path))
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            pending.append((f.name, path))
        for tmp, path in pending:
            os.chmod(tmp, 0o666 & ~_umask())
        for tmp, path in pending:
            try:
                os.replace(tmp, path)
            except OSError as err:
                raise UserError(f"cannot write {path}: {err.strerror or err}") from None


@contextlib.contextmanager
def _temporary(path):
    """An open temporary file beside `path`, removed on the way out unless it was renamed."""
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
        _remove_stale_tmps(folder, os.path.basename(path))
        f = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{os.path.basename(path)}.{os.getpid()}.",
                                        suffix=".tmp", delete=False)
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with f:
            try:
                yield f
            except OSError as err:
                raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(f.name)  # already renamed into place: nothing to remove


def pickle_bytes(obj):
    return pickle.dumps(obj, protocol=PICKLE_PROTOCOL)


def pickle_value(data):
    """The value pickled in `data` (bytes), through the same restricted unpickler as load_pickle."""
    return NumpyOnlyUnpickler(io.BytesIO(data)).load()


def save_torch(obj, path):
    """torch.save through the same atomic path (checkpoints)."""
    import torch
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())


# -- prune records -----------------------------------------------------------------------------------

def record_csv_path(record_dir, save, iteration):
    return os.path.join(record_dir, f"{save}_{iteration}.csv")


def record_pk_path(record_dir, save):
    return os.path.join(record_dir, f"{save}.pk")


def write_prune_csv(path, rows):
    with atomic_write(path, "w") as f:
        csv.writer(f).writerows([int(v) for v in row] for row in rows)


def read_prune_csv(path, num_layers=None):
    """The integer matrix (rows x layers) of a pruning record."""
    try:
        with open(path, newline="") as f:
            rows = [[int(v) for v in row] for row in csv.reader(f) if row]
    except FileNotFoundError:
        raise UserError(f"{path}: no such prune record") from None
    except ValueError as err:
        raise UserError(f"{path}: not a prune record (comma-separated integers): {err}") from None
    if not rows:
        raise UserError(f"{path}: the prune record is empty (the search never finished pruning)")
    if len({len(r) for r in rows}) != 1:
        raise UserError(f"{path}: rows must all have the same number of columns")
    if num_layers and len(rows[0]) != num_layers:
        raise UserError(f"{path}: rows of {len(rows[0])} widths, not the {num_layers} of this --model"
                        f"{other_model(len(rows[0]))}")
    return np.array(rows, dtype=np.int64)


def twin_records(record_dir, save, k, num_layers=None):
    """The CSVs of iterations k - 1 and k + 1 that hold exactly iteration k's rows: a copied record,
    whose re-fit is its twin's fit (the authors' vgg_10_eff_c10_0.csv is a copy of _1.csv)."""
    rows = read_prune_csv(record_csv_path(record_dir, save, k), num_layers)
    twins = []
    for j in (k - 1, k + 1):
        path = record_csv_path(record_dir, save, j)
        if j < 0 or not os.path.exists(path):
            continue
        try:
            other = read_prune_csv(path, num_layers)
        except UserError:
            continue
        if other.shape == rows.shape and np.array_equal(other, rows):
            twins.append(path)
    return twins


def twin_note(path, twin):
    return (f"note: {path} and {twin} hold the same rows, so both iterations re-fit to the same power law "
            f"(the authors' published vgg_10_eff_c10 has this defect: its iteration-0 record is a copy of "
            f"iteration 1's, so the fit they stored for iteration 0 cannot be re-fitted from it)")


def morph_widths(name, record_dir, model, dataset, table, num_layers):
    """(the 50 %-pruned widths MorphNet rescales, where they came from): the last row of the --morph
    search record `name` (a run under record_dir, its .pk, or a .csv path), or, without a name,
    table[(model, dataset)] (ratio_swipe.PRUNED_FILTERS, where users edit it)."""
    if name:
        if name.endswith(".csv"):
            path = name
        elif name.endswith(".pk"):
            path = name[:-3] + "_0.csv"
        else:
            path = record_csv_path(record_dir, name, 0)
        return [int(w) for w in read_prune_csv(path, num_layers)[-1]], path
    if (model, dataset) not in table:
        listed = ", ".join(f"{m}/{d}" for m, d in table)
        raise UserError(f"--morph has no pruned widths for {model} on {dataset} (PRUNED_FILTERS in "
                        f"ratio_swipe.py lists {listed}); run architecture_descent.py --morph --save NAME "
                        f"and pass --prune_fname NAME")
    widths = list(table[(model, dataset)])
    if len(widths) != num_layers:
        raise UserError(f"PRUNED_FILTERS[{(model, dataset)}] has {len(widths)} widths, {model} needs {num_layers}")
    return widths, "PRUNED_FILTERS"


def save_fits(path, fits, settings=None, budget="params"):
    """{"param": [[alpha, beta], ...]} as the authors wrote it, plus the search's "settings" if given and
    "budget" when not params."""
    record = {"param": [[np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)] for a, b in fits]}
    if settings is not None:
        record["settings"] = settings
    save_pickle(with_budget(record, budget), path)


def with_budget(record, budget):
    """A fit record marked with its resource; parameter records stay exactly the authors' format."""
    return record if budget == "params" else {**record, "budget": budget}


def check_budget(record, path, budget):
    """Refuse a record fitted on one resource (tau = parameters or MACs) used with the other."""
    fitted = record.get("budget", "params") if isinstance(record, dict) else "params"
    if budget is not None and fitted != budget:
        raise UserError(f"{path} was fitted on {fitted} (tau = the network's {fitted}), not {budget}; "
                        f"use it with --budget {fitted}, or search again with --budget {budget}")


def check_grouping(record, path, grouping):
    """Refuse a record searched under one --grouping (its settings say which; none: "traced") used
    under the other: its widths are other channel groups'."""
    settings = record.get("settings") if isinstance(record, dict) else None
    searched = settings.get("grouping", "traced") if isinstance(settings, dict) else "traced"
    if searched != grouping:
        raise UserError(f"{path} was searched with --grouping {searched}, not {grouping} (its widths are "
                        f"other channel groups); pass --grouping {searched}, or search again")


def resolve_record(record_dir, prune_fname):
    """A run name under record_dir, or a path to a .pk file."""
    if prune_fname.endswith(".pk") or os.sep in prune_fname:
        return prune_fname
    return record_pk_path(record_dir, prune_fname)


def load_fits(path, num_layers=None, budget=None, grouping=None):
    """The list of (alpha, beta) float64 arrays of a search record; with `budget`, the record must
    have been fitted on that resource, with `grouping` searched under that --grouping."""
    data = load_dict(path, "a search record ({'param': [[alpha, beta], ...]})")
    check_budget(data, path, budget)
    if grouping is not None:
        check_grouping(data, path, grouping)
    try:
        fits = [(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
                for a, b in data["param"]]
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: not a search record ({{'param': [[alpha, beta], ...]}}): {err}") from None
    if not fits:
        raise UserError(f"{path}: the search record holds no iterations")
    for k, (alpha, beta) in enumerate(fits):
        if alpha.shape != beta.shape or alpha.ndim != 1:
            raise UserError(f"{path}: alpha/beta must be vectors of equal length, got {alpha.shape} and {beta.shape}")
        if num_layers and alpha.size != num_layers:
            raise UserError(f"{path}: a fit of {alpha.size} layers, not the {num_layers} of this --model"
                            f"{other_model(alpha.size)}")
        check_fit(alpha, beta, f"{path}, iteration {k}")
    return fits


def other_model(num_layers):
    """'; it is a <model> record: pass --model <model>' when `num_layers` is another network's layer
    count (VGG11 8, ResNet18 17, MobileNetV2 19), else ''."""
    from model import MODELS
    names = [name for name, spec in MODELS.items() if len(spec.DEFAULT_WIDTHS) == num_layers]
    return f"; it is a {names[0]} record: pass --model {names[0]}" if len(names) == 1 else ""


def check_fit(alpha, beta, where):
    """alpha in [0, MAX_WIDTH] and |beta| <= MAX_BETA, finite: the widths alpha * tau^beta then stay
    finite numbers for any parameter count the tau search visits (a NaN or 1e308 would not)."""
    ok = np.all(np.isfinite(alpha)) and np.all(np.isfinite(beta))
    if not (ok and np.all(alpha >= 0) and np.all(alpha <= MAX_WIDTH) and np.all(np.abs(beta) <= MAX_BETA)):
        raise UserError(f"{where}: not a usable fit (alpha must lie in [0, {MAX_WIDTH}] and |beta| <= "
                        f"{MAX_BETA:g}, all finite); got alpha {alpha.tolist()}, beta {beta.tolist()}")


def select_fit(fits, descent_idx, path):
    if not -len(fits) <= descent_idx < len(fits):
        raise UserError(f"--descent_idx {descent_idx} is past the record {path}, which holds "
                        f"iterations 0..{len(fits) - 1}")
    return fits[descent_idx]


# -- training curves ---------------------------------------------------------------------------------

def ratio_tag(ratio):
    return int(ratio * 100)  # the authors' file suffix; 0.25 -> 25, and 0.29 -> 28 (truncated)


def result_path(plots_dir, model, save, ratio):
    return os.path.join(plots_dir, model, f"{save}_{ratio_tag(ratio)}.pk")


def distinct_ratios(ratios, path_of):
    """The ratios without repeats; two different ratios whose files have one name (0.12 and 0.125 both
    become _12) are a UserError naming both and the file. path_of(ratio) -> result path."""
    by_tag = {}
    for ratio in ratios:
        other = by_tag.setdefault(ratio_tag(ratio), ratio)
        if other != ratio:
            raise UserError(f"ratios {other:g} and {ratio:g} would share the result file {path_of(ratio)} "
                            f"(named by int(ratio * 100)); run them under different --save names")
    return list(by_tag.values())


def same_ratio(a, b):
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
def budget_tag(ratio=None, resource=None, target=None):
    """The file-name suffix of one budget: int(ratio * 100) (the authors'), or for an absolute budget
    the resource and the amount, e.g. params1500000 or latency12.5ms, which no ratio's all-digit tag
    can equal."""
    if target is None:
        return ratio_tag(ratio)
    return f"latency{float(target):g}ms" if resource == "latency" else f"{resource}{int(target)}"


def save_result(path, result):
    missing = [k for k in RESULT_KEYS if k not in result]
    if missing:
        raise ValueError(f"result lacks {missing}")
    save_pickle(result, path)


# No measurement reaches this: 1e9 ms (11.6 days) per batch of 100, with 100 passes per measurement.
MAX_LATENCY_MS = 1e9


def is_latency(value):
    """A usable latency: a real number of milliseconds above 0 and below MAX_LATENCY_MS (not a bool,
    NaN, inf, -5 or 1e300)."""
    return (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
            and 0 < value < MAX_LATENCY_MS)


def load_result(path, ratio=None):
    """A result pickle, checked: the authors' keys, numeric curves, a numeric or absent latency_ms and,
    when `ratio` is given, the ratio stored in it (file names truncate: 0.29 and 0.285 are both _28)."""
    data = load_pickle(path)
    if not isinstance(data, dict) or any(k not in data for k in RESULT_KEYS):
        raise UserError(f"{path}: not a training-curve pickle (needs keys {', '.join(RESULT_KEYS)})")
    for key in RESULT_KEYS[1:]:
        try:
            curve = np.asarray(data[key], dtype=np.float64)
        except (TypeError, ValueError):
            curve = None
        if curve is None or curve.ndim != 1:
            raise UserError(f"{path}: {key} must be a list of numbers, one per epoch")
    for key in ("latency_ms", "latency_ms_physical"):
        if data.get(key) is not None and not is_latency(data[key]):
            raise UserError(f"{path}: {key} must be a number of milliseconds above 0 and below "
                            f"{MAX_LATENCY_MS:g}, or None, got {data[key]!r}")
    if data.get("seed") is not None:
        check_seed(data["seed"], path)
    widths = data.get("widths")
    if widths is not None and not (isinstance(widths, (list, tuple)) and widths and all(
            isinstance(w, numbers.Integral) and not isinstance(w, bool) and 0 < w <= MAX_WIDTH for w in widths)):
        raise UserError(f"{path}: widths must be a list of whole numbers from 1 to {MAX_WIDTH}, got {widths!r}")
    stored = data["ratio"]  # None: an absolute budget (--target_params / --target_macs)
    if stored is not None and (isinstance(stored, bool) or not isinstance(stored, numbers.Real)):
        raise UserError(f"{path}: ratio must be a number, got {stored!r}")
    if ratio is not None and (stored is None or not same_ratio(stored, ratio)):
        held = "an absolute budget" if stored is None else f"ratio {float(stored):g}"
        raise UserError(f"{path} holds {held}, not {ratio:g} (file names truncate the ratio "
                        f"to int(ratio * 100)); use another --save for one of them")
    return data
