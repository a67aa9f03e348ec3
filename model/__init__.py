"""The three searched networks. Each module has the same shape: DEFAULT_WIDTHS, the blocks, the
network, build(), formula_params() (the authors' counter), exact_params() and prepare_filters()."""
from model import mobilenetv2, preact_resnet, vgg
from model.bn_init import BN_INITS  # noqa: F401 (re-exported for the flags)
from model.gate import Gate

MODELS = {"vgg": vgg, "resnet18": preact_resnet, "mobilenetv2": mobilenetv2}


def get_spec(name):
    return MODELS[name]


def build_model(name, widths, num_classes, gates=False, convcut=False, bn_init="uniform"):
    """bn_init: "uniform" (U(0, 1) BN weights, the authors' PyTorch 1.0.1) or "ones"; VGG always 0.5."""
    return MODELS[name].build(list(widths), num_classes, gates=gates, convcut=convcut, bn_init=bn_init)


def architecture(model):
    """Constructor arguments of a built network, stored beside its weights in checkpoints."""
    name = next(k for k, v in MODELS.items() if type(model).__module__ == v.__name__)
    return {"model": name, "widths": [int(w) for w in model.widths], "num_classes": model.num_classes,
            "gates": model.gates, "convcut": model.convcut, "bn_init": model.bn_init}


def gates_of(model):
    """The gate layers, in the order of the flat width list."""
    return [m for m in model.modules() if isinstance(m, Gate)]
