"""Latency as the paper defines it: batch 100, 20 warm-up and 80 timed forward passes, eval mode.

The authors timed with time.time() between unsynchronised CUDA launches, which measures launch rate
rather than GPU time; here the clock starts after the warm-up's work has finished and stops after the
timed passes' work has finished (the synchronisation function waits for the device; a no-op on the
CPU). Returns ms per batch.

What is timed is the authors' network as they timed it (network_latency): built fresh from its widths
in plot_ratio.py, in contiguous NCHW, without cuDNN autotuning, VGG11 with its 8 gates (their VGG always
had them in its forward pass; ResNet18 and MobileNetV2 were built without). fast=True is the opt-in
fast layout (channels_last on CUDA and cuDNN autotuning, as training runs), kept apart in the cache.
"""
import contextlib
import hashlib
import json
import os
import platform
import time

import torch

from utils import accel
from utils.train import input_format

BATCH, WARMUP, TIMED = 100, 20, 80
# wall: elapsed time, what a user waits for. cpu: this process's CPU time, which other jobs on a shared
# machine do not inflate; it equals a quiet machine's wall time on the CPU at one thread only.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


@torch.no_grad()
def measure_latency(model, device, image_size, *, batch=BATCH, warmup=WARMUP, timed=TIMED, precision="fp32",
                    synchronize=accel.synchronize, clock=time.perf_counter):
    """Mean milliseconds per forward pass of a (batch, 3, image_size, image_size) input.
    `synchronize(device)` and `clock()` are injectable so the protocol can be tested on the CPU."""
    was_training = model.training
    model.eval()
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    x = x.contiguous(memory_format=input_format(model))  # as the training loop feeds it
    ms = timed_passes(model, x, device=device, precision=precision, warmup=warmup, timed=timed,
                      synchronize=synchronize, clock=clock)
    model.train(was_training)
    return ms


def timed_passes(module, x, *, device, precision, warmup, timed, synchronize, clock):
    """Mean ms of `timed` forward passes of `x` after `warmup` untimed ones, synchronised before and after
    the timed ones: the protocol of a whole network (measure_latency) and of one unit of the latency
    model (utils.latency_model.time_forward)."""
    with accel.autocast(device, precision):
        for _ in range(warmup):
            module(x)
        synchronize(device)
        start = clock()
        for _ in range(timed):
            module(x)
        synchronize(device)
        return (clock() - start) * 1000.0 / timed


# -- one measurement per configuration ----------------------------------------------------------------
# A swipe's seeds run as separate processes and train identical widths, and latency does not depend on
# the weights, so the first measurement of a configuration is stored and reused. The key holds
# everything the time depends on; any difference (another machine, thread count, batch, torch) measures
# again.

def latency_cache_dir(plots_dir):
    """Where measured latencies are kept for reuse, beside the results that carry them."""
    return os.path.join(plots_dir, "latency_cache")


def device_name(device):
    """The GPU's name (utils.accel), else the CPU's model name."""
    if accel.is_cuda(device):
        return accel.device_name(device)
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def latency_key(architecture, device, image_size, *, batch=BATCH, warmup=WARMUP, timed=TIMED, precision="fp32",
                layout="contiguous", cudnn_benchmark=False):
    """What a latency depends on: the network (model.architecture(): model, widths, classes, gates,
    convcut), the input and its memory layout, cuDNN autotuning, the protocol, the precision, the
    device and host, the thread count and torch."""
    key = {"architecture": architecture, "input_size": int(image_size), "batch": batch, "warmup": warmup,
           "timed": timed, "precision": precision, "layout": layout, "cudnn_benchmark": bool(cudnn_benchmark),
           "device": str(device),
           "device_name": device_name(device),
           "host": platform.node(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    return json.loads(json.dumps(key))  # the form it has after a round trip through the file


def cached_latency(cache_dir, model, device, image_size, clock="wall", cudnn_benchmark=False, **protocol):
    """measure_latency(model, ...) once per key: <cache_dir>/<hash of the key>.json holds the key and
    the milliseconds (one file per configuration: concurrent runs never rewrite each other's). `clock`
    names one of CLOCKS; a clock other than the wall clock is part of the key. A cached value that is
    not a positive, finite number (a NaN, -5, true, a hand-edited file) is a miss: the latency is
    measured again and the entry rewritten."""
    from model import architecture
    from utils import io
    from utils.base import UserError
    layout = "channels_last" if input_format(model) == torch.channels_last else "contiguous"
    key = latency_key(architecture(model), device, image_size, layout=layout, cudnn_benchmark=cudnn_benchmark,
                      **protocol)
    key.update({} if clock == "wall" else {"clock": clock})
    text = json.dumps(key, sort_keys=True)
    path = os.path.join(cache_dir, hashlib.sha256(text.encode()).hexdigest()[:20] + ".json")
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        with open(path) as f:
            entry = json.load(f)
        if entry["key"] == key and io.is_latency(entry["latency_ms"]):
            return float(entry["latency_ms"])
    ms = measure_latency(model, device, image_size, clock=CLOCKS[clock], **protocol)
    if not io.is_latency(ms):
        raise UserError(f"the latency measurement on {device} gave {ms!r} ms; the clock cannot time this "
                        f"network")
    with contextlib.suppress(UserError, OSError):  # a read-only results folder: measure, keep nothing
        with io.atomic_write(path, "w") as f:
            json.dump({"key": key, "latency_ms": ms}, f, sort_keys=True, indent=1)
    return ms


def latency_network(model_name, widths, num_classes, convcut=False, gates=None, grouping="traced"):
    """The network the authors timed for these widths: built fresh, with gates only in VGG11 (whose
    gates always existed; ResNet18 and MobileNetV2 were timed without). gates=True/False overrides;
    grouping: a torchvision:NAME model's channel groups (model/generic.py)."""
    from model import build_model
    gates = model_name == "vgg" if gates is None else gates
    return build_model(model_name, widths, num_classes, gates=gates, convcut=convcut, grouping=grouping)


def network_latency(model_name, widths, num_classes, device, image_size, cache_dir, *, convcut=False,
                    fast=False, gates=None, grouping="traced", **protocol):
    """ms per batch of 100 of the network `widths` build, on `device`, measured once per configuration
    (cached_latency): as the authors measured (contiguous NCHW, no cuDNN autotuning), or with fast=True
    in the layout training uses (utils.train.prepare_model: channels_last on CUDA, cuDNN autotuning).
    `protocol`: cached_latency's batch, precision and clock, for a latency budget's own protocol."""
    from utils.train import prepare_model
    with accel.cudnn_benchmark(device, fast):
        net = latency_network(model_name, widths, num_classes, convcut, gates, grouping)
        net = prepare_model(net, device) if fast else net.to(device)
        ms = cached_latency(cache_dir, net, device, image_size, cudnn_benchmark=fast, **protocol)
    del net
    accel.empty_cache(device)
    return ms
