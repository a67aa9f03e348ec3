"""Latency as the paper defines it: batch 100, 20 warm-up and 80 timed forward passes, eval mode.

The authors timed with time.time() between unsynchronised CUDA launches, which measures launch rate
rather than GPU time; here each timed pass is synchronised (events on CUDA). Returns ms per batch.
"""
import time

import torch

from utils.accel import autocast

BATCH, WARMUP, TIMED = 100, 20, 80


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_latency(model, device, image_size, *, batch=BATCH, warmup=WARMUP, timed=TIMED,
                    precision="fp32"):
    """Mean milliseconds per forward pass of a (batch, 3, image_size, image_size) input."""
    was_training = model.training
    model.eval()
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    with autocast(device, precision):
        for _ in range(warmup):
            model(x)
        synchronize(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(timed):
                model(x)
            end.record()
            synchronize(device)
            elapsed_ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            for _ in range(timed):
                model(x)
            elapsed_ms = (time.perf_counter() - t0) * 1000.0
    model.train(was_training)
    return elapsed_ms / timed
