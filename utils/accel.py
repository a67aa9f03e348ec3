"""Accelerator concerns in one place: the arithmetic precision of training and evaluation.

The authors trained in fp32 on a GTX 1080 Ti, which has no TF32, so `fp32` is the default and strict:
TF32 is off for matmul and cuDNN. `tf32` allows TF32 tensor cores on CUDA (no effect elsewhere).
`bf16` runs the forward pass under bfloat16 autocast, on the CPU too: convolutions and linear layers in
bf16; BatchNorm keeps its affine parameters, running statistics and their accumulation in fp32; the
loss is computed on fp32 logits by the caller. It changes the gradients that feed Taylor-FO.
"""
import contextlib

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


def autocast(device, precision):
    """The context a forward pass runs in: bf16 autocast on `device` (CPU or CUDA), else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return contextlib.nullcontext()


def set_precision(device, precision):
    """On CUDA, allow TF32 for matmul and cuDNN exactly when precision == "tf32"; elsewhere nothing."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
