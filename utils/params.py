"""Parameter counting: the authors' formula, the exact count of a width vector, and of a built network."""
from model import get_spec
from model.gate import Gate


def count_params(model_name, widths, num_classes, exact=False, convcut=False, grouping="traced"):
    """Trainable parameters of `model_name` with these widths: the authors' formula (default, with its
    quirks, as the tau search and the fit use it) or the exact count of the network that gets built.
    grouping: a torchvision:NAME model's channel groups (model/generic.py)."""
    spec = get_spec(model_name, grouping)
    if exact:
        return spec.exact_params(widths, num_classes, convcut)
    return spec.formula_params(widths, num_classes)


def count_macs(model_name, widths, num_classes, input_size, convcut=False, grouping="traced"):
    """Multiply-accumulates per image of the network these widths build, from the widths and the
    input size alone: conv and linear layers only, the usual convention (torch.utils.flop_counter
    counts the same operations, at 2 FLOPs per MAC)."""
    return get_spec(model_name, grouping).exact_macs(widths, num_classes, input_size, convcut)


def actual_params(module):
    """sum(numel) over trainable parameters, gates excluded (the authors' compute_params_)."""
    gate_params = {id(p) for m in module.modules() if isinstance(m, Gate) for p in m.parameters()}
    return sum(p.numel() for p in module.parameters() if p.requires_grad and id(p) not in gate_params)


def built_params(model_name, widths, num_classes, convcut=False, grouping="traced"):
    """actual_params of the network these widths build, built on the meta device (no memory, no init)."""
    import torch
    from model import build_model
    with torch.device("meta"):
        net = build_model(model_name, widths, num_classes, convcut=convcut, grouping=grouping)
    return actual_params(net)
