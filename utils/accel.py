"""Everything that differs on a CUDA device, one small function per concern, so the whole CUDA surface
reads in one place. Each function is a no-op (or the plain CPU behaviour) on other devices; where
PyTorch allows it, the caller can choose the CUDA behaviour on the CPU too (channels_last, bf16
autocast, an injected synchronisation or pinning function), which is how the tests exercise it.

Precision: the authors trained in fp32 on a GTX 1080 Ti, which has no TF32, so `fp32` is the default
and strict (TF32 off for matmul and cuDNN). `tf32` allows TF32 tensor cores on CUDA (no effect
elsewhere). `bf16` runs the forward pass under bfloat16 autocast, on the CPU too: convolutions and
linear layers in bf16; BatchNorm keeps its affine parameters, running statistics and their
accumulation in fp32; the loss is computed on fp32 logits by the caller. It changes the gradients that
feed Taylor-FO (README, faithfulness notes).
"""
import contextlib
import os

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


def is_cuda(device):
    return torch.device(device).type == "cuda"


# Precision ------------------------------------------------------------------------------------------

def autocast(device, precision):
    """bf16: autocast to bfloat16 on this device type (CUDA, and the CPU too); fp32 / tf32: nothing."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return contextlib.nullcontext()


def set_precision(device, precision):
    """On CUDA, TF32 matmuls and convolutions exactly when precision is tf32 (PyTorch leaves cuDNN's
    on by default, so "fp32" there would not be fp32 without this). No-op elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if is_cuda(device):
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"


# Layout and kernels ---------------------------------------------------------------------------------

def prefers_channels_last(device):
    """Tensor-core convolutions want NHWC; on the CPU the default layout is kept (it may be asked for)."""
    return is_cuda(device)


def cudnn_autotune(device):
    """Shapes repeat every batch: let cuDNN time each convolution's kernels once and keep the fastest.
    Not under set_deterministic: the fastest kernel may differ between runs."""
    if is_cuda(device) and not torch.are_deterministic_algorithms_enabled():
        torch.backends.cudnn.benchmark = True


def set_deterministic(device, on):
    """--deterministic: a seed repeats a run bit for bit on CUDA too. cuDNN uses deterministic kernels and
    no autotuning, every operation with a deterministic variant uses it (one without raises rather than
    vary), and cuBLAS gets the fixed workspace that makes it deterministic (CUBLAS_WORKSPACE_CONFIG, read
    when CUDA creates its first cuBLAS handle: call this before any CUDA work). Off: PyTorch's defaults.
    The CPU needs none of it (its kernels repeat given the same thread count) but takes the same switch."""
    if not on:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)


@contextlib.contextmanager
def cudnn_benchmark(device, on):
    """cuDNN autotuning on or off for the block (CUDA only), then as it was: a latency measured as the
    authors did runs without it, whatever a training run in the same process switched on."""
    if not is_cuda(device):
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


# Host <-> device ------------------------------------------------------------------------------------

def synchronize(device):
    """Wait for the device's queued work (CUDA launches are asynchronous; CPU work is already done)."""
    if is_cuda(device):
        torch.cuda.synchronize(device)


def uses_pinned_memory(device):
    """Page-locked host buffers let host -> CUDA copies run asynchronously (needs the CUDA driver)."""
    return is_cuda(device)


def pin_memory(tensor, device):
    """A host `tensor` in page-locked memory when it is bound for `device` on CUDA, else `tensor` itself."""
    if uses_pinned_memory(device) and tensor.device.type == "cpu" and not tensor.is_pinned():
        return tensor.pin_memory()
    return tensor


def to_device(tensor, device, pin=pin_memory):
    """Host tensor -> `device` through `pin(tensor, device)` and a non_blocking copy: on CUDA the host
    does not wait for the copy (from pinned memory it is asynchronous)."""
    return pin(tensor, device).to(device, non_blocking=True)


def empty_cache(device):
    """Hand cached, unused device memory back (between networks of different widths)."""
    if is_cuda(device):
        torch.cuda.empty_cache()


def visible_devices():
    """The CUDA devices this process may use, each as the CUDA_VISIBLE_DEVICES entry that pins a child
    process to it (an index or a UUID); [] without CUDA."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [entry.strip() for entry in listed.split(",") if entry.strip()][:count]


# Reporting ------------------------------------------------------------------------------------------

def device_name(device):
    """The GPU's marketing name on CUDA, None elsewhere."""
    return torch.cuda.get_device_name(device) if is_cuda(device) else None


def count_host_syncs(device, fn):
    """(fn's result, how many times it made the host wait for the CUDA device) via torch's sync debug
    mode; (result, None) on other devices."""
    if not is_cuda(device):
        return fn(), None
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return result, sum("synchroniz" in str(w.message) for w in caught)

