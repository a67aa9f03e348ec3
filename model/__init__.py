"""The searched networks. The three hand-written ones each have a module of the same shape:
DEFAULT_WIDTHS, the blocks, the network, build(), formula_params() (the authors' counter), exact_params()
and prepare_filters(). Any torchvision classification model is searched as `torchvision:NAME`, its
groups, counts and rebuild found by tracing (model/generic.py), behind the same interface."""
from model import mobilenetv2, preact_resnet, vgg
from model.bn_init import BN_INITS  # noqa: F401 (re-exported for the flags)
from model.gate import Gate

_GENERIC = {}  # ("torchvision:NAME", grouping) -> its GenericSpec, traced once per process
HANDWRITTEN_GROUPING = ("--grouping applies to torchvision:NAME models; the hand-written vgg, resnet18 and "
                        "mobilenetv2 keep the authors' groups as written (their code is their grouping)")


class _Models(dict):
    """{name: spec} of the hand-written networks; a `torchvision:NAME` key is accepted too (traced on
    first use) but never listed, so loops over MODELS see the three networks of the paper."""

    def __missing__(self, name):
        if not is_generic(name):
            raise KeyError(name)
        return generic_spec(name, "traced")

    def __contains__(self, name):
        return dict.__contains__(self, name) or is_generic(name)


MODELS = _Models(vgg=vgg, resnet18=preact_resnet, mobilenetv2=mobilenetv2)


class ModelChoices(tuple):
    """The --model choices: the three names, and any `torchvision:NAME` (checked when it is traced)."""

    def __new__(cls, exclude=()):
        return super().__new__(cls, (*(m for m in MODELS if m not in exclude), "torchvision:NAME"))

    def __contains__(self, name):
        return name in MODELS and name in tuple(self) or is_generic(name)


def is_generic(name):
    return isinstance(name, str) and name.startswith("torchvision:") and len(name) > len("torchvision:")


def generic_spec(name, grouping):
    """The GenericSpec of `torchvision:NAME` under a grouping (model/generic.py), traced once."""
    if (name, grouping) not in _GENERIC:
        from model.generic import torchvision_spec
        _GENERIC[name, grouping] = torchvision_spec(name, grouping)
    return _GENERIC[name, grouping]


def check_grouping(name, grouping):
    """Refuse a grouping other than the default on a hand-written network (and an unknown one)."""
    from model.generic import known_grouping
    if known_grouping(grouping) != "traced" and not is_generic(name):
        from utils.base import UserError
        raise UserError(HANDWRITTEN_GROUPING)
    return grouping


def get_spec(name, grouping="traced"):
    """The spec of a model name; grouping: the channel groups of a torchvision:NAME model ("traced" or
    "authors", model/generic.py); refused on the hand-written networks unless "traced"."""
    if check_grouping(name, grouping) != "traced":
        return generic_spec(name, grouping)
    return MODELS[name]


def build_model(name, widths, num_classes, gates=False, convcut=False, bn_init="uniform", grouping="traced"):
    """bn_init: "uniform" (U(0, 1) BN weights, the authors' PyTorch 1.0.1) or "ones"; VGG always 0.5."""
    return get_spec(name, grouping).build(list(widths), num_classes, gates=gates, convcut=convcut, bn_init=bn_init)


def architecture(model):
    """Constructor arguments of a built network, stored beside its weights in checkpoints."""
    name = getattr(model, "spec_name", None) or next(k for k, v in MODELS.items()
                                                     if type(model).__module__ == v.__name__)
    grouping = getattr(model, "grouping", "traced")  # only when not the default: older keys stay as they were
    return {"model": name, "widths": [int(w) for w in model.widths], "num_classes": model.num_classes,
            "gates": model.gates, "convcut": model.convcut, "bn_init": model.bn_init,
            **({} if grouping == "traced" else {"grouping": grouping})}


def gates_of(model):
    """The gate layers, in the order of the flat width list."""
    return [m for m in model.modules() if isinstance(m, Gate)]
