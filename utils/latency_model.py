"""A latency model of the target device: predicted ms per batch of a width configuration, without
building or timing the network (beyond the paper: --budget latency).

A network is a chain of units: a VGG conv+BN+ReLU(+pool), a ResNet18 BN+ReLU+conv, a shortcut conv,
a residual addition, a MobileNetV2 block's expansion, depthwise and projection convs, a head. Each
unit's cost depends on its input and output widths (a, b) at its resolution, so the table times every
unit kind once on a grid of widths (the default network's widths at that position times GRID_RATIOS,
and 1) and interpolates bilinearly, which is exact for a cost of the form p + q*a + r*b + s*a*b (a
convolution's MACs) and extrapolates the outermost cell beyond the grid. The grid is made
non-decreasing along both widths (a wider layer is never predicted faster), which keeps the budget
bisections monotone. A measured constant and scale cover what the units leave out (the network's own
overhead, and units that run faster or slower in sequence than alone): measured = constant + scale *
sum of units, fitted over a few uniformly scaled whole networks by the median of pairwise slopes
(Theil-Sen, robust to one disturbed measurement).

Timing (time_forward): on --device, in --precision, at the process's thread count, batch --latency_batch,
NCHW input, eval mode, UNIT_WARMUP warm-up passes then the mean of UNIT_TIMED passes, synchronised, on
the wall clock or (--latency_clock cpu) the process's CPU time. utils/latency.py keeps the paper's whole-network protocol, the
ground truth that bench/latency_model.py checks this model against.

A table is kept as JSON, <cache_dir>/<model>_<hash of the key>.json, under a key of everything its
timings depend on (model, classes, input size, batch, precision, gates, device and its name, host,
threads, torch, the grid and the timing protocol); it is reused only when every field matches, and
written atomically once complete. `measure` is injectable: tests never time anything.
"""
import bisect
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import platform
import statistics
import time

import numpy as np
import torch
from torch import nn

from model import build_model, get_spec
from model.gate import gate_or_identity
from utils import accel
from utils.base import UserError
from utils.base import log as default_log
from utils.latency import CLOCKS, device_name, timed_passes

FORMAT = 2
GRID_RATIOS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2)  # each axis: the default width times these, and 1
REFERENCE_RATIOS = (1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2)  # whole uniform networks timed for the calibration
UNIT_WARMUP, UNIT_TIMED = 2, 5


# -- the units of each network --------------------------------------------------------------------------
# plan(widths, num_classes, size, convcut, every) yields (unit, a, b): the unit is a tuple (kind,
# resolution, fixed settings), a and b its input and output widths (b = 0 for a unit of one width).
# every=True yields both alternatives of a block's shortcut (the conv and the identity), so that the
# grid covers every configuration.

def _vgg_plan(widths, num_classes, size, convcut, every):
    pools = get_spec("vgg").POOL_AFTER
    c_in = 3
    for i, w in enumerate(widths):
        yield ("vgg_conv", size, i in pools), c_in, w
        size //= 2 if i in pools else 1
        c_in = w
    yield ("linear",), c_in, num_classes


def _resnet_plan(widths, num_classes, size, convcut, every):
    strides = get_spec("resnet18").block_strides(num_classes)
    yield ("res_stem", size), 3, widths[0]
    for b, stride in enumerate(strides):
        c_in, mid, out = widths[2 * b], widths[2 * b + 1], widths[2 * b + 2]
        size_out = (size - 1) // stride + 1
        yield ("res_conv", size, stride), c_in, mid  # bn1, gate1, ReLU, conv1
        yield ("res_conv", size_out, 1), mid, out  # bn2, gate2, ReLU, conv2
        if every or stride != 1 or c_in != out or convcut:
            yield ("res_shortcut", size, stride), c_in, out
        yield ("add", size_out), out, 0
        size = size_out
    yield ("res_head", size), widths[16], num_classes


def _mobilenet_plan(widths, num_classes, size, convcut, every):
    yield ("mb_stem", size), 3, widths[0]
    prev = widths[0]
    for j, (stride, t) in enumerate(get_spec("mobilenetv2").block_plan(num_classes), start=1):
        out, mid = widths[j], prev * t
        size_out = (size - 1) // stride + 1
        yield ("mb_expand", size, t), prev, mid
        yield ("mb_depthwise", size, stride), mid, 0
        yield ("mb_project", size_out), mid, out
        if every or stride != 1 or prev != out or convcut:
            yield ("mb_shortcut", size, stride), prev, out
        yield ("add_gate", size_out), out, 0
        prev, size = out, size_out
    yield ("mb_head", size), widths[17], widths[18]
    yield ("mb_classifier", size), widths[18], num_classes


PLANS = {"vgg": _vgg_plan, "resnet18": _resnet_plan, "mobilenetv2": _mobilenet_plan}


def plan(model, widths, num_classes, size, convcut=False, every=False):
    """[(unit, a, b)] of the network these widths build (every: both alternatives of each shortcut)."""
    return list(PLANS[model]([int(w) for w in widths], num_classes, size, convcut, every))


# -- the modules that are timed -------------------------------------------------------------------------

class Add(nn.Module):
    """x + y for a y of x's shape (a residual addition); y is made at the first (warm-up) pass."""

    def __init__(self, gate=None):
        super().__init__()
        self.other, self.gate = None, gate or nn.Identity()

    def forward(self, x):
        if self.other is None or self.other.shape != x.shape:
            self.other = torch.randn_like(x)
        return self.gate(x + self.other)


def _unit_layers(unit, a, b, gates):
    """The layers of one unit, as the model files build them."""
    kind, gate = unit[0], (lambda w: gate_or_identity(w, gates))
    if kind == "vgg_conv":
        pool = [nn.MaxPool2d(2, 2)] if unit[2] else []
        return [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), gate(b), nn.ReLU(inplace=True)] + pool
    if kind == "linear":
        return [nn.Flatten(), nn.Linear(a, b)]
    if kind == "res_stem":
        return [nn.Conv2d(a, b, 3, 1, 1, bias=False)]
    if kind == "res_conv":
        return [nn.BatchNorm2d(a), gate(a), nn.ReLU(), nn.Conv2d(a, b, 3, unit[2], 1, bias=False)]
    if kind == "res_shortcut":
        return [nn.Conv2d(a, b, 1, unit[2], bias=False)]
    if kind == "add":
        return [Add()]
    if kind == "res_head":
        return [nn.BatchNorm2d(a), nn.AdaptiveAvgPool2d(1), gate(a), nn.Flatten(), nn.Linear(a, b)]
    if kind in ("mb_stem", "mb_head"):
        conv = nn.Conv2d(a, b, 3, padding=1) if kind == "mb_stem" else nn.Conv2d(a, b, 1)
        return [conv, nn.BatchNorm2d(b), gate(b), nn.ReLU6(inplace=True)]
    if kind == "mb_expand":
        return [nn.Conv2d(a, b, 1), nn.BatchNorm2d(b), nn.ReLU6(inplace=True)]
    if kind == "mb_depthwise":
        return [nn.Conv2d(a, a, 3, unit[2], 1, groups=a), nn.BatchNorm2d(a), nn.ReLU6(inplace=True)]
    if kind in ("mb_project", "mb_shortcut"):
        stride = unit[2] if kind == "mb_shortcut" else 1
        return [nn.Conv2d(a, b, 1, stride), nn.BatchNorm2d(b)]
    if kind == "add_gate":
        return [Add(gate(a))]
    if kind == "mb_classifier":
        return [nn.AdaptiveAvgPool2d(1), nn.Conv2d(a, b, 1), nn.Flatten()]
    raise ValueError(f"unknown unit {unit!r}")


@dataclasses.dataclass(frozen=True)
class Probe:
    """One thing the table times: a unit at widths (a, b), or a whole network (unit ("network", model),
    widths its width list). build() -> (module, input shape without the batch)."""
    unit: tuple
    widths: tuple
    num_classes: int
    size: int
    gates: bool = False

    def build(self):
        if self.unit[0] == "network":
            return (build_model(self.unit[1], list(self.widths), self.num_classes, gates=self.gates),
                    (3, self.size, self.size))
        a, b = self.widths
        shape = (a,) if self.unit[0] == "linear" else (a, self.unit[1], self.unit[1])
        return nn.Sequential(*_unit_layers(self.unit, a, b, self.gates)), shape


@torch.no_grad()
def time_forward(module, shape, *, device, precision, batch, warmup=UNIT_WARMUP, timed=UNIT_TIMED,
                 synchronize=accel.synchronize, clock=time.perf_counter):
    """Mean ms of `timed` forward passes of a (batch, *shape) input, after `warmup` passes (the mean, as
    the paper's protocol that the constant calibrates against)."""
    module = module.to(device).eval()
    x = torch.randn(batch, *shape, device=device)
    return timed_passes(module, x, device=device, precision=precision, warmup=warmup, timed=timed,
                        synchronize=synchronize, clock=clock)


# -- the table --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Target:
    """What a table is measured for. device_name, host, threads and torch default to this process's."""
    model: str
    num_classes: int
    input_size: int
    device: str = "cpu"
    precision: str = "fp32"
    batch: int = 100
    gates: bool = False
    clock: str = "wall"
    device_name: str = None
    host: str = None
    threads: int = None
    torch: str = None

    def check(self):
        check_clock(self.clock, self.device, self.threads)
        return self

    def key(self):
        """Everything the timings depend on, as stored in the cache file."""
        fields = dataclasses.asdict(self)
        fields.update(device=str(torch.device(self.device)),
                      device_name=self.device_name or device_name(self.device),
                      host=self.host or platform.node(), threads=self.threads or torch.get_num_threads(),
                      torch=self.torch or torch.__version__)
        fields.update(format=FORMAT, grid_ratios=list(GRID_RATIOS), reference_ratios=list(REFERENCE_RATIOS),
                      warmup=UNIT_WARMUP, timed=UNIT_TIMED)
        return json.loads(json.dumps(fields))


def check_clock(clock, device, threads=None):
    """The cpu clock measures a latency only on the CPU at one thread (more threads spin and add up)."""
    threads = threads or torch.get_num_threads()
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}")
    if clock == "cpu" and (torch.device(device).type != "cpu" or threads != 1):
        raise UserError(f"--latency_clock cpu is the latency of the CPU at one thread only; here the device is "
                        f"{device} with {threads} threads (set OMP_NUM_THREADS=1, or use the wall clock)")


def grid_axes(model, num_classes, size):
    """{unit: (a values, b values)}: the widths each unit kind takes in the default network scaled by
    GRID_RATIOS, and 1 on every axis that scales (an axis that does not, the 3 input channels or the
    classes, keeps its one value)."""
    template = get_spec(model).DEFAULT_WIDTHS
    seen = {}
    for ratio in GRID_RATIOS:
        widths = [max(1, round(w * ratio)) for w in template]
        for unit, a, b in plan(model, widths, num_classes, size, every=True):
            axes = seen.setdefault(unit, (set(), set()))
            axes[0].add(a)
            axes[1].add(b)
    return {unit: tuple(sorted(values | {1}) if len(values) > 1 else sorted(values) for values in axes)
            for unit, axes in seen.items()}


def _locate(axis, value):
    """(i, u): the cell [axis[i], axis[i + 1]] for `value` and its position u in it (u < 0 or u > 1:
    extrapolated from the outermost cell). An axis of one value: (0, 0.0)."""
    if len(axis) == 1:
        return 0, 0.0
    i = min(max(bisect.bisect_left(axis, value) - 1, 0), len(axis) - 2)
    return i, (value - axis[i]) / (axis[i + 1] - axis[i])


class LatencyTable:
    """Predicted ms per batch: the measured constant plus the scale times the units' interpolated times."""

    def __init__(self, key, units, constant_ms, scale=1.0):
        self.key, self.constant_ms, self.scale = key, float(constant_ms), float(scale)
        self.units = {unit: (list(a), list(b), np.asarray(ms, dtype=np.float64)) for unit, (a, b, ms) in units.items()}
        self.grids = {unit: (a, b, ms.tolist()) for unit, (a, b, ms) in self.units.items()}  # fast to index

    def unit_ms(self, unit, a, b):
        axis_a, axis_b, ms = self.grids[unit]
        i, u = _locate(axis_a, a)
        j, v = _locate(axis_b, b)
        i1, j1 = min(i + 1, len(axis_a) - 1), min(j + 1, len(axis_b) - 1)
        return ((1 - u) * (1 - v) * ms[i][j] + u * (1 - v) * ms[i1][j] + (1 - u) * v * ms[i][j1]
                + u * v * ms[i1][j1])

    def units_ms(self, widths, convcut=False):
        key = self.key
        return sum(self.unit_ms(unit, a, b)
                   for unit, a, b in plan(key["model"], widths, key["num_classes"], key["input_size"], convcut))

    def predict(self, widths, convcut=False):
        """Predicted ms per batch of key["batch"] images of the network these widths build."""
        return self.constant_ms + self.scale * self.units_ms(widths, convcut)

    def to_json(self):
        return {"key": self.key, "constant_ms": self.constant_ms, "scale": self.scale,
                "units": [{"unit": list(unit), "a": a, "b": b, "ms": ms.tolist()}
                          for unit, (a, b, ms) in self.units.items()]}

    @classmethod
    def from_json(cls, data):
        units = {tuple(entry["unit"]): (entry["a"], entry["b"], entry["ms"]) for entry in data["units"]}
        return cls(data["key"], units, data["constant_ms"], data["scale"])


def real_measure(target):
    """measure(probe) -> ms for this target: time_forward on its device, precision, batch and clock."""
    def measure(probe):
        module, shape = probe.build()
        return time_forward(module, shape, device=target.device, precision=target.precision, batch=target.batch,
                            clock=CLOCKS[target.clock])
    return measure


def _measure_units(target, measure, log):
    """{unit: (a values, b values, ms grid made non-decreasing along both widths)}."""
    axes = grid_axes(target.model, target.num_classes, target.input_size)
    total, done, units = sum(len(a) * len(b) for a, b in axes.values()), 0, {}
    for n, (unit, (axis_a, axis_b)) in enumerate(axes.items(), 1):
        ms = np.array([[measure(Probe(unit, (a, b), target.num_classes, target.input_size, target.gates))
                        for b in axis_b] for a in axis_a], dtype=np.float64)
        # A wider layer is never faster: noise would otherwise make the prediction non-monotone.
        ms = np.maximum.accumulate(np.maximum.accumulate(ms, axis=0), axis=1)
        units[unit] = (axis_a, axis_b, ms)
        done += ms.size
        log(f"latency table {target.model}: unit {n}/{len(axes)} {' '.join(map(str, unit))}: "
            f"{ms.size} widths timed ({done}/{total})")
    return units


def build_table(target, measure=None, log=default_log):
    """Time every unit on its grid and the reference networks; the LatencyTable."""
    measure = measure or real_measure(target)
    key = target.key()
    log(f"latency table {target.model}: measuring on {key['device_name']} ({key['device']}, {key['precision']}, "
        f"{key['threads']} threads, batch {key['batch']}); done once, then reused")
    start = time.perf_counter()
    table = LatencyTable(key, _measure_units(target, measure, log), 0.0)
    template = get_spec(target.model).DEFAULT_WIDTHS
    units, whole = [], []
    for ratio in REFERENCE_RATIOS:
        widths = tuple(max(1, int(w * ratio)) for w in template)
        whole.append(measure(Probe(("network", target.model), widths, target.num_classes, target.input_size,
                                   target.gates)))
        units.append(table.units_ms(widths))
    table.constant_ms, table.scale = calibration(units, whole)
    log(f"latency table {target.model}: whole network = {table.constant_ms:+.3f} ms + {table.scale:.3f} x units; "
        f"built in {time.perf_counter() - start:.0f} s")
    return table


def calibration(units, whole):
    """(constant, scale) of whole = constant + scale * units: the median of the pairwise slopes and of
    the residuals (Theil-Sen). A slope that is not positive (noise) falls back to 1: the prediction
    must grow with the units."""
    slopes = [(whole[i] - whole[j]) / (units[i] - units[j]) for i in range(len(units)) for j in range(i)
              if units[i] != units[j]]
    scale = statistics.median(slopes) if slopes else 1.0
    scale = scale if scale > 0 else 1.0
    return float(statistics.median(w - scale * u for u, w in zip(units, whole))), float(scale)


def cache_path(cache_dir, key):
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"{key['model']}_{digest}.json")


def load_table(cache_dir, target, measure=None, log=default_log):
    """The table of `target`: from the cache when its key matches in every field, else built (with
    progress lines) and written there atomically. A cache that cannot be written is reported and the
    table used anyway."""
    from utils import io
    key = target.check().key()
    path = cache_path(cache_dir, key)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        with open(path) as f:
            data = json.load(f)
        if data["key"] == key:
            return LatencyTable.from_json(data)
    table = build_table(target, measure, log)
    try:
        with io.atomic_write(path, "w") as f:
            json.dump(table.to_json(), f)
        log(f"latency table {target.model}: wrote {path}")
    except UserError as err:
        log(f"latency table {target.model}: not kept ({err})")
    return table


def table_dir(record_dir):
    """Where the scripts keep latency tables: beside the search records they scale."""
    return os.path.join(record_dir, "latency_tables")


def timed_gates(model):
    """Whether the timed network has its gates: VGG11 yes, as the authors timed it (their VGG always
    had them in its forward pass); ResNet18 and MobileNetV2 no."""
    return model == "vgg"


def predictor(*, cache_dir, model, num_classes, input_size, device, precision, batch, clock, convcut=False,
              measure=None, log=default_log):
    """widths -> predicted ms per batch on this target. The table is loaded (or built once and cached)
    at the first call, so that a run refused for another reason never times anything."""
    target = Target(model, num_classes, input_size, str(device), precision, batch, timed_gates(model), clock)
    target.check()
    load = functools.lru_cache(maxsize=1)(lambda: load_table(cache_dir, target, measure, log))
    return lambda widths: load().predict(widths, convcut)
