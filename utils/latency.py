"""Latency as the paper defines it: batch 100, 20 warm-up and 80 timed forward passes, eval mode.

The authors timed with time.time() between unsynchronised CUDA launches, which measures launch rate
rather than GPU time; here the clock starts after the warm-up's work has finished and stops after the
timed passes' work has finished (the synchronisation function waits for the device; a no-op on the
CPU). Returns ms per batch.
"""
import time

import torch

from utils import accel
from utils.train import input_format

BATCH, WARMUP, TIMED = 100, 20, 80


@torch.no_grad()
def measure_latency(model, device, image_size, *, batch=BATCH, warmup=WARMUP, timed=TIMED, precision="fp32",
                    synchronize=accel.synchronize, clock=time.perf_counter):
    """Mean milliseconds per forward pass of a (batch, 3, image_size, image_size) input.
    `synchronize(device)` and `clock()` are injectable so the protocol can be tested on the CPU."""
    was_training = model.training
    model.eval()
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    x = x.contiguous(memory_format=input_format(model))  # as the training loop feeds it
    with accel.autocast(device, precision):
        for _ in range(warmup):
            model(x)
        synchronize(device)
        start = clock()
        for _ in range(timed):
            model(x)
        synchronize(device)
        elapsed_ms = (clock() - start) * 1000.0
    model.train(was_training)
    return elapsed_ms / timed
