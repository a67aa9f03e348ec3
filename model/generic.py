"""Any CNN as a searched network: its coupled channel groups found by tracing it with torch.fx, one
gate per group after the group's BatchNorms, its parameters and MACs as functions of the group widths,
and the network rebuilt at any widths (narrower or wider than the original).

A group is a set of channels that must keep one width: those joined by a residual add or an
elementwise product (squeeze-excitation), or by a depthwise convolution (its input and output). A
concatenation joins its inputs' groups side by side. A group is searched when a BatchNorm reads it;
the others (the input image, a classifier's outputs, a squeeze-excitation bottleneck) keep their width.
The flat width list holds one width per searched group, in the order their first BatchNorm runs.

grouping="authors" (opt-in; the default "traced" is the above) follows the two design rules of the
paper's hand-written networks instead, so that their groups are exactly their gates:
1. Projected shortcuts: a residual add of an identity skip (channels that flow into the other operand,
   the branch) does not tie: the add's output is the branch's group and the skip keeps its own. Where
   their widths differ, the rebuilt network projects the skip with a 1x1 conv (stride 1) mirroring the
   branch's last layer: a bias iff its last conv has one, a BatchNorm iff it ends in one. An add of two
   conv or BatchNorm outputs (a conv shortcut) still ties, and so do products.
2. Derived expansions: a group made by a 1x1 conv from group H with k x its channels (k a whole number)
   and read by a depthwise conv (an inverted-residual expansion) is not searched: its width is k x H's.

`GenericSpec` has the interface of the hand-written model files (DEFAULT_WIDTHS, build, formula_params,
exact_params, exact_macs, prepare_filters), so the search, fit and swipe engines run it unchanged;
`model.get_spec("torchvision:NAME")` makes one for a torchvision classification model.
"""
import copy
import math
import operator
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn
from torch.nn import functional as F

from model.gate import Gate
from utils import scaling
from utils.base import UserError

PREFIX = "torchvision:"
LATENCY_REFUSAL = ("--budget latency knows the three hand-written networks only (vgg, resnet18, mobilenetv2); "
                   "use --budget params or macs with a torchvision model")

# Operations that keep the channels of their first input as they are.
PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.GELU, nn.Tanh,
                nn.LeakyReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                nn.Dropout, nn.Identity)
PASS_FUNCTIONS = {F.relu, F.relu6, F.hardswish, F.hardsigmoid, F.silu, F.gelu, F.leaky_relu, F.dropout,
                  F.adaptive_avg_pool2d, F.avg_pool2d, F.max_pool2d, torch.relu, torch.sigmoid, torch.tanh}
PASS_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "contiguous", "clone"}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
ADD_METHODS = {"add", "add_"}
JOIN_FUNCTIONS = ADD_FUNCTIONS | {operator.mul, operator.imul, torch.mul}
JOIN_METHODS = ADD_METHODS | {"mul", "mul_"}
SHAPE_METHODS = {"size", "dim"}  # results are not tensors
GROUPINGS = ("traced", "authors")
GROUPING_HELP = ("channel groups of a torchvision:NAME model: traced, every residual add ties its operands and "
                 "every BatchNorm'd channel set is searched; authors, the paper's rules: an identity shortcut "
                 "does not tie (a 1x1 projection appears where the widths differ) and an inverted-residual "
                 "expansion is k x its input, not searched (docs/generic.md)")


def _pass_functions():
    from torchvision.ops import stochastic_depth  # wrapped for torch.fx by torchvision: one call node
    return PASS_FUNCTIONS | {stochastic_depth}


def _pass_modules():
    from torchvision.ops import StochasticDepth  # traced as a module, so it still knows train from eval
    return PASS_MODULES + (StochasticDepth,)


class _Tracer(fx.Tracer):
    """torch.fx's tracer, keeping StochasticDepth a module: a graph rebuilt with projections
    (ChannelGraph.rebuild) then drops a block in training only, as the original does."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, _pass_modules()) or super().is_leaf_module(m, qualname)


def _trace(module):
    """The module as a GraphModule, traced in eval mode (its mode is restored)."""
    was_training = module.training
    module.eval()
    try:
        return fx.GraphModule(module, _Tracer().trace(module), class_name=type(module).__name__)
    finally:
        module.train(was_training)


def known_grouping(grouping):
    if grouping not in GROUPINGS:
        raise UserError(f"grouping must be one of {', '.join(GROUPINGS)}, got {grouping!r}")
    return grouping


class _Shapes(fx.Interpreter):
    """Runs the traced graph once and keeps each tensor's shape in node.meta["shape"]."""

    def run_node(self, n):
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            n.meta["shape"] = tuple(result.shape)
        return result


@dataclass
class Layer:
    """A conv, BatchNorm or Linear layer: its input segments ((dim, multiplicity), ...) and output dim.
    `groups`: 1, the conv's fixed group count, or 0 for depthwise (groups = its width); `area`: output
    positions per image (H * W of a conv, the leading positions of a Linear)."""
    name: str
    kind: str
    ins: tuple
    out: int
    groups: int = 1
    kernel: int = 1
    bias: bool = False  # a conv or Linear bias; a BatchNorm's affine weight and bias
    area: int = 1


@dataclass
class Projection:
    """An identity skip that does not tie (grouping="authors"): where the widths of the `skip` and `out`
    dims differ, a 1x1 conv (bias iff `bias`) and, when `bn` names the branch's last BatchNorm, a
    BatchNorm like it, on argument `operand` of the add node `add`; `area`: output positions."""
    add: str
    operand: int
    skip: int
    out: int
    bias: bool
    bn: "str | None"
    affine: bool
    area: int


class ChannelGraph:
    """The channel groups of one module traced at one input size (see the module docstring)."""

    def __init__(self, module, input_size, in_channels=3, grouping="traced"):
        self.parent, self.size, self.fixed, self.quantum = [], [], [], []
        self.layers, self.bn_order = [], []
        self.grouping = known_grouping(grouping)
        self.projections, self.added, self.derived = [], set(), {}
        self._passing, self._layer_at = set(), {}  # during the analysis: pass-through nodes, layer nodes
        self.input_size = input_size
        was_training = module.training
        module.eval()  # StochasticDepth and Dropout trace as the identity; nothing here trains
        try:
            self._analyse(module, input_size, in_channels)
        finally:
            module.train(was_training)
            self._passing, self._layer_at = set(), {}
        if self.grouping == "authors":
            self._derive_expansions()
        self._group()

    # -- union-find over channel dims -------------------------------------------------------------
    def _new(self, size, fixed=False, quantum=1):
        self.parent.append(len(self.parent))
        self.size.append(int(size))
        self.fixed.append(fixed)
        self.quantum.append(quantum)
        return len(self.parent) - 1

    def find(self, d):
        while self.parent[d] != d:
            self.parent[d] = self.parent[self.parent[d]]
            d = self.parent[d]
        return d

    def _union(self, a, b, where):
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        if self.size[a] != self.size[b]:
            raise UserError(f"channel bookkeeping failed at {where}: {self.size[a]} and {self.size[b]} channels meet")
        self.parent[b] = a
        self.fixed[a] = self.fixed[a] or self.fixed[b]
        self.quantum[a] = math.lcm(self.quantum[a], self.quantum[b])

    # -- tracing --------------------------------------------------------------------------------------
    @staticmethod
    def _shaped(module, input_size, in_channels):
        """The traced module, each tensor's shape in node.meta["shape"]; UserError when it cannot be."""
        try:
            gm = _trace(module)
        except Exception as err:  # noqa: BLE001 (fx raises many kinds; each is a refusal of this model)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"torch.fx cannot trace this model ({type(err).__name__}: {first})") from None
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        try:
            with torch.no_grad():
                _Shapes(gm).run(torch.zeros(2, in_channels, input_size, input_size, device=device))
        except Exception as err:  # noqa: BLE001 (any failure of the forward pass refuses the model)
            cause = err.__cause__ or err
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise UserError(f"the model does not run on a {input_size}x{input_size} input ({first})") from None
        return gm

    def _analyse(self, module, input_size, in_channels):
        gm = self._shaped(module, input_size, in_channels)
        modules = dict(gm.named_modules())
        sig, seen = {}, set()
        functions = _pass_functions()
        passing = _pass_modules()
        for node in gm.graph.nodes:
            shape = node.meta.get("shape")
            if node.op == "placeholder":
                sig[node] = ((self._new(in_channels, fixed=True), 1),)
            elif node.op == "output":
                continue
            elif node.op == "call_module":
                m = modules[node.target]
                if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
                    if node.target in seen:
                        raise UserError(f"the module {node.target} is called twice (a shared layer cannot take "
                                        f"two widths)")
                    seen.add(node.target)
                if isinstance(m, passing):
                    self._passing.add(node)
                sig[node] = self._module(node, m, sig, shape)
            elif node.op == "call_function" and node.target in functions or \
                    node.op == "call_method" and node.target in PASS_METHODS:
                self._passing.add(node)
                sig[node] = self._input(node, sig)
            elif node.op == "call_method" and node.target in SHAPE_METHODS or \
                    node.op == "call_function" and node.target is getattr or _indexes_a_shape(node, sig):
                sig[node] = None
            elif node.target in JOIN_FUNCTIONS or node.op == "call_method" and node.target in JOIN_METHODS:
                sig[node] = self._join(node, sig)
            elif node.target in (torch.flatten,) or node.op == "call_method" and node.target == "flatten":
                sig[node] = self._flatten(node, sig)
            elif node.target is torch.cat:
                sig[node] = self._cat(node, sig)
            elif node.target is torch.mean or node.op == "call_method" and node.target == "mean":
                sig[node] = self._mean(node, sig)
            else:
                raise UserError(f"unsupported operation {_op_name(node, modules)} (node {node.name}): the channel "
                                f"analysis (model/generic.py) handles convolutions, BatchNorm, Linear, "
                                f"activations, pooling, add, multiply, concatenate and flatten")

    def _input(self, node, sig):
        value = sig.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if value is None:
            raise UserError(f"unsupported operation {node.target} at {node.name}: its input has no channels")
        return value

    def _module(self, node, m, sig, shape):
        x = self._input(node, sig)
        channels = sum(self.size[d] * k for d, k in x)
        if isinstance(m, nn.Conv2d):
            if any(k != 1 for _, k in x) or channels != m.in_channels:
                raise UserError(f"channel bookkeeping failed at {node.target}")
            area, kernel = int(shape[2] * shape[3]), int(np.prod(m.kernel_size))
            if m.groups == 1:
                out, groups = self._new(m.out_channels), 1
            elif m.groups == m.in_channels == m.out_channels and len(x) == 1:
                out, groups = x[0][0], 0  # depthwise: output channel i is input channel i
            elif len(x) == 1:
                out, groups = self._new(m.out_channels, quantum=m.groups), m.groups
                self._union(x[0][0], self._new(m.in_channels, quantum=m.groups), node.target)
            else:
                raise UserError(f"unsupported operation grouped convolution over a concatenation at {node.target}")
            self._add_layer(node, Layer(node.target, "conv", x, out, groups, kernel, m.bias is not None, area))
            return ((out, 1),)
        if isinstance(m, nn.BatchNorm2d):
            if len(x) != 1 or x[0][1] != 1:
                raise UserError(f"unsupported operation BatchNorm over a concatenation at {node.target} "
                                f"(DenseNet-style): its channels belong to several groups")
            self._add_layer(node, Layer(node.target, "bn", x, x[0][0], bias=m.affine))
            self.bn_order.append(node.target)
            return x
        if isinstance(m, nn.Linear):
            if channels != m.in_features or len(shape) < 2:
                raise UserError(f"channel bookkeeping failed at {node.target}")
            out = self._new(m.out_features)
            self._add_layer(node, Layer(node.target, "linear", x, out, bias=m.bias is not None,
                                        area=int(np.prod(shape[1:-1])) if len(shape) > 2 else 1))
            return ((out, 1),)
        if isinstance(m, nn.Flatten):
            return self._flatten(node, sig, start=m.start_dim, end=m.end_dim)
        if isinstance(m, _pass_modules()):
            return x
        raise UserError(f"unsupported operation {type(m).__name__} at {node.target}")

    def _add_layer(self, node, layer):
        self.layers.append(layer)
        self._layer_at[node] = layer

    def _join(self, node, sig):
        """add / mul: tensors with channels are tied channel for channel (a scalar or a one-channel
        tensor broadcasts and ties nothing); with grouping="authors", an add of an identity skip is
        projected instead (_projection)."""
        tensors = [a for a in node.args if isinstance(a, fx.Node) and sig.get(a) is not None
                   and sum(self.size[d] * k for d, k in sig[a]) > 1]
        if not tensors:
            return self._input(node, sig)
        is_add = node.target in ADD_FUNCTIONS or node.op == "call_method" and node.target in ADD_METHODS
        if is_add and self.grouping == "authors" and len(tensors) == 2:
            branch = self._projection(node, tensors, sig)
            if branch is not None:
                return branch
        if is_add:
            self.added.update(d for t in tensors for d, _ in sig[t])
        first = sig[tensors[0]]
        for other in tensors[1:]:
            if len(sig[other]) != len(first) or any(k != j for (_, k), (_, j) in zip(sig[other], first)):
                raise UserError(f"unsupported operation {node.target} at {node.name}: its inputs' channels are "
                                f"concatenated differently")
            for (a, _), (b, _) in zip(first, sig[other]):
                self._union(a, b, node.name)
        return first

    def _projection(self, node, tensors, sig):
        """grouping="authors": the branch operand's channels when the other operand is an identity skip
        (its channels flow into the branch) and the branch ends in a conv, or a conv and a BatchNorm
        (through activations and the like), recording the Projection the skip needs where the widths
        differ; None otherwise (the add then ties, as a conv shortcut's does)."""
        for skip, branch in (tensors, tensors[::-1]):
            if sig[skip] == sig[branch] or not self._flows_into(sig[skip], branch, sig):
                continue
            if len(sig[skip]) != 1 or len(sig[branch]) != 1 or sig[skip][0][1] != 1 or sig[branch][0][1] != 1:
                return None
            last = self._last_layers(branch)
            shape = skip.meta.get("shape")
            if last is None or last[0].out != sig[branch][0][0] or shape is None or len(shape) != 4:
                return None
            conv, bn = last
            self.projections.append(Projection(node.name, node.args.index(skip), sig[skip][0][0], conv.out,
                                               conv.bias, bn and bn.name, bool(bn and bn.bias),
                                               int(shape[2] * shape[3])))
            return sig[branch]
        return None

    def _flows_into(self, channels, node, sig):
        """Whether a node upstream of `node` carries these very channels (an identity skip's)."""
        stack, seen = list(node.all_input_nodes), set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if sig.get(n) == channels:
                return True
            stack.extend(n.all_input_nodes)
        return False

    def _last_layers(self, node):
        """(conv, its BatchNorm or None) that `node` is the output of, through pass-through operations;
        None when it is not a conv's output or the conv is depthwise (it makes no channels of its own)."""
        def back(n):
            while n in self._passing:
                n = n.args[0]
            return n

        node = back(node)
        layer, bn = self._layer_at.get(node), None
        if layer is not None and layer.kind == "bn":
            bn, layer = layer, self._layer_at.get(back(node.args[0]))
        if layer is None or layer.kind != "conv" or layer.groups == 0:
            return None
        return layer, bn

    def _flatten(self, node, sig, start=None, end=-1):
        x = self._input(node, sig)
        shape = node.args[0].meta["shape"]
        if start is None:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        if start != 1 or end not in (-1, len(shape) - 1):
            raise UserError(f"unsupported operation flatten({start}, {end}) at {node.name}")
        area = int(np.prod(shape[2:]))
        return tuple((d, k * area) for d, k in x)

    def _cat(self, node, sig):
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if dim != 1 or any(sig.get(t) is None for t in tensors):
            raise UserError(f"unsupported operation cat(dim={dim}) at {node.name}")
        return tuple(seg for t in tensors for seg in sig[t])

    def _mean(self, node, sig):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        ndim = len(node.args[0].meta["shape"])
        if not dims or any(d % ndim < 2 for d in dims):
            raise UserError(f"unsupported operation mean over dims {dims} at {node.name}")
        return self._input(node, sig)  # a mean over positions keeps the channels

    # -- groups ------------------------------------------------------------------------------------
    def _derive_expansions(self):
        """grouping="authors": self.derived = {root: (k, dim of H)} of the groups that one 1x1 conv (not
        grouped) makes from group H with k x its channels, a depthwise conv reads, and no add ties."""
        depthwise_inputs = {l.out for l in self.layers if l.kind == "conv" and l.groups == 0}
        added = {self.find(d) for d in self.added}
        found = {}
        for l in self.layers:
            if l.kind != "conv" or l.groups != 1 or l.kernel != 1 or len(l.ins) != 1 or l.ins[0][1] != 1 \
                    or l.out not in depthwise_inputs:
                continue
            h, root = l.ins[0][0], self.find(l.out)
            k, rest = divmod(self.size[l.out], self.size[h])
            if rest == 0 and root != self.find(h) and root not in added and self.quantum[root] == 1 \
                    and not self.fixed[root]:
                found.setdefault(root, []).append((k, h))
        self.derived = {root: found[root][0] for root in found if len(found[root]) == 1}

    def _group(self):
        order = []
        for layer in self.layers:
            if layer.kind == "bn":
                root = self.find(layer.out)
                if not self.fixed[root] and root not in order and root not in self.derived:
                    order.append(root)
        if not order:
            raise UserError("no BatchNorm reads a searchable channel group: NeuralScale gates follow BatchNorm")
        self.group_of = {root: g for g, root in enumerate(order)}
        self.widths = [self.size[root] for root in order]
        self.quanta = [self.quantum[root] for root in order]
        self.bns = [[l.name for l in self.layers if l.kind == "bn" and self.find(l.out) == root] for root in order]
        bad = [w for w, q in zip(self.widths, self.quanta) if w % q]
        if bad:
            raise UserError(f"a grouped convolution does not divide its group's {bad[0]} channels")

    def group(self, dim):
        """The searched group of a channel dim, or None (it keeps its width)."""
        return self.group_of.get(self.find(dim))

    def quantise(self, widths, round_to=1):
        """Each width a multiple of its group's quantum (the group counts of its grouped convolutions)
        and of round_to: the multiple at or below, at least one step."""
        out = []
        for w, q in zip(widths, self.quanta):
            step = math.lcm(q, round_to)
            out.append(max(step, step * (int(w) // step)))
        return out

    def _width(self, dim, widths):
        root = self.find(dim)
        if root in self.group_of:
            return int(widths[self.group_of[root]])
        if root in self.derived:
            k, source = self.derived[root]
            return k * self._width(source, widths)
        return self.size[root]

    def projected(self, widths):
        """(Projection, in channels, out channels) of each identity skip whose widths differ here."""
        for p in self.projections:
            c_in, c_out = self._width(p.skip, widths), self._width(p.out, widths)
            if c_in != c_out:
                yield p, c_in, c_out

    def shapes(self, widths):
        """Per layer: (in channels, out channels, conv groups) at these (quantised) widths."""
        for layer in self.layers:
            c_in = sum(self._width(d, widths) * k for d, k in layer.ins)
            c_out = self._width(layer.out, widths)
            groups = c_out if layer.kind == "conv" and layer.groups == 0 else layer.groups
            yield layer, c_in, c_out, groups

    def params(self, widths):
        """Trainable parameters of the network these widths build (gates excluded)."""
        total, widths = 0, self.quantise(widths)
        for layer, c_in, c_out, groups in self.shapes(widths):
            if layer.kind == "bn":
                total += 2 * c_out if layer.bias else 0
            else:
                total += c_out * (c_in // groups) * layer.kernel + (c_out if layer.bias else 0)
        for p, c_in, c_out in self.projected(widths):
            total += c_in * c_out + (c_out if p.bias else 0) + (2 * c_out if p.affine else 0)
        return total

    def macs(self, widths):
        """Multiply-accumulates per image in the conv and Linear layers (projections included), at the
        traced input size."""
        widths = self.quantise(widths)
        return sum(layer.area * c_out * (c_in // groups) * layer.kernel
                   for layer, c_in, c_out, groups in self.shapes(widths) if layer.kind != "bn") + \
            sum(p.area * c_in * c_out for p, c_in, c_out in self.projected(widths))

    def rebuild(self, template, widths):
        """A copy of `template` with every conv, BatchNorm and Linear layer re-created at these widths
        and freshly initialised (convs He-normal fan-out, BatchNorm 1 and 0, Linear PyTorch's default, as
        torchvision's CNNs start), on the default device (under `with torch.device("meta")`: nothing
        allocated, as utils.params.built_params counts). The widths must already be multiples of their
        quanta."""
        if list(widths) != self.quantise(widths):
            raise UserError(f"widths {list(widths)} are not multiples of their groups' grouped-convolution "
                            f"counts {self.quanta}")
        model = copy.deepcopy(template)
        for layer, c_in, c_out, groups in self.shapes(widths):
            old = model.get_submodule(layer.name)
            if layer.kind == "conv":
                new = nn.Conv2d(c_in, c_out, old.kernel_size, old.stride, old.padding, old.dilation, groups,
                                layer.bias, old.padding_mode)
                nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
                if new.bias is not None:
                    nn.init.zeros_(new.bias)
            elif layer.kind == "bn":
                new = nn.BatchNorm2d(c_out, old.eps, old.momentum, old.affine, old.track_running_stats)
            else:
                new = nn.Linear(c_in, c_out, layer.bias)
            parent, _, attr = layer.name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, new)
        rebuilt = {layer.name for layer in self.layers}
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()]
                if t.is_meta and n.rpartition(".")[0] not in rebuilt]
        if left:
            raise UserError(f"{left[0]} is not a conv, BatchNorm or Linear weight: it cannot be rebuilt")
        projected = list(self.projected(widths))
        return (self._project(model, projected) if projected else model).train()

    @staticmethod
    def _project(model, projected):
        """The model as a torch.fx GraphModule of its traced forward, each identity skip of `projected`
        going through its new projection (model.neuralscale_projections, in that order)."""
        gm = _trace(model)
        layers = nn.ModuleList()
        for p, c_in, c_out in projected:
            conv = nn.Conv2d(c_in, c_out, 1, bias=p.bias)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            if p.bn is None:
                layers.append(conv)
                continue
            old = gm.get_submodule(p.bn)
            layers.append(nn.Sequential(conv, nn.BatchNorm2d(c_out, old.eps, old.momentum, old.affine,
                                                             old.track_running_stats)))
        gm.neuralscale_projections = layers
        nodes = {n.name: n for n in gm.graph.nodes}
        for i, (p, _, _) in enumerate(projected):
            add = nodes[p.add]
            with gm.graph.inserting_before(add):
                add.update_arg(p.operand, gm.graph.call_module(f"neuralscale_projections.{i}",
                                                               (add.args[p.operand],)))
        gm.recompile()
        return gm

    def add_gates(self, model, device=None):
        """One Gate per group, applied after every BatchNorm of the group (each wrapped in
        GatedBatchNorm); the gates are registered once, in group order, as model.neuralscale_gates."""
        device = device or next(model.parameters()).device
        gates = [Gate(model.get_submodule(names[0]).num_features).to(device) for names in self.bns]
        for g, names in enumerate(self.bns):
            for name in names:
                parent, _, attr = name.rpartition(".")
                owner = model.get_submodule(parent) if parent else model
                setattr(owner, attr, GatedBatchNorm(getattr(owner, attr), gates[g]))
        model.neuralscale_gates = nn.ModuleList(gates)
        return model


class GatedBatchNorm(nn.Module):
    """BatchNorm followed by its group's gate. The gate is shared by the group's BatchNorms and
    registered once at the model's root (model.neuralscale_gates), so gates_of() lists it once."""

    def __init__(self, bn, gate):
        super().__init__()
        self.bn = bn
        self.__dict__["gate"] = gate  # not a submodule: see the class docstring

    def forward(self, x):
        return self.gate(self.bn(x))


def _indexes_a_shape(node, sig):
    """x.shape[0] and the like: indexing a value with no channels (a size), not a tensor."""
    return node.target is operator.getitem and isinstance(node.args[0], fx.Node) and sig.get(node.args[0]) is None


def _op_name(node, modules):
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    if node.op == "call_method":
        return f".{node.target}()"
    if node.op == "get_attr":
        return f"parameter access {node.target}"
    return getattr(node.target, "__name__", str(node.target))


class GenericSpec:
    """A searched network from a constructor `make(num_classes) -> nn.Module` (any device; on the meta
    device nothing is allocated): the interface of the hand-written model files."""

    def __init__(self, name, make, *, input_size=None, in_channels=3, grouping="traced"):
        self.NAME, self.make, self.in_channels = name, make, in_channels
        self.grouping = known_grouping(grouping)
        self.fixed_input = input_size  # None: the data set's (scaling.input_size)
        self._graphs = {}
        self.DEFAULT_WIDTHS = list(self.graph(10).widths)

    def template(self, num_classes):
        return self._entry(num_classes, None)[0]

    def _entry(self, num_classes, input_size):
        size = self.fixed_input or input_size or scaling.input_size(num_classes)
        key = (num_classes, size)
        if key not in self._graphs:
            template = self.make(num_classes)
            self._graphs[key] = (template, ChannelGraph(template, size, self.in_channels, self.grouping))
        return self._graphs[key]

    def graph(self, num_classes, input_size=None):
        return self._entry(num_classes, input_size)[1]

    def build(self, widths, num_classes=10, gates=False, convcut=False, bn_init=None):
        """bn_init applies to the hand-written networks only (this rebuild sets BatchNorm to 1 and 0)."""
        if convcut:
            raise UserError(f"--convcut applies to the hand-written resnet18 and mobilenetv2, not {self.NAME}")
        template, graph = self._entry(num_classes, None)
        model = graph.rebuild(template, [int(w) for w in widths])
        if gates:
            graph.add_gates(model)
        model.widths, model.num_classes, model.gates, model.convcut = [int(w) for w in widths], num_classes, gates, False
        model.bn_init, model.spec_name, model.grouping = "ones", self.NAME, self.grouping
        return model

    def formula_params(self, widths, num_classes):
        """There is no authors' formula for this network: the exact count."""
        return self.graph(num_classes).params(widths)

    def exact_params(self, widths, num_classes, convcut=False):
        return self.graph(num_classes).params(widths)

    def exact_macs(self, widths, num_classes, input_size=32, convcut=False):
        return self.graph(num_classes, input_size).macs(widths)

    def prepare_filters(self, ratio=None, *, num_classes=10, alpha=None, beta=None, pruned_widths=None,
                        search=False, first_iteration=False, exact=False, convcut=False, budget="params",
                        target=None, method=None, cost=None, round_to=1):
        """The flat width list: the default (ratio None), or by `method` (utils.scaling.method_of) at a
        ratio of the default network's cost or an absolute `target`, met within 0.5 % by the bisection of
        --exact and --budget macs (utils.scaling.select_for_resource); every width a multiple of its
        quantum and of round_to. There is no per-model tau rule: `first_iteration` and `exact` change
        nothing."""
        if ratio is None and target is None:
            return list(self.DEFAULT_WIDTHS)
        if budget == "latency":
            raise UserError(LATENCY_REFUSAL)
        if convcut:
            raise UserError(f"--convcut applies to the hand-written resnet18 and mobilenetv2, not {self.NAME}")
        if round_to != 1 and search:
            raise ValueError("round_to applies to the configurations a fit gives, not to the search")
        method = scaling.method_of(method, alpha, pruned_widths)
        graph = self.graph(num_classes)
        cost_of = graph.macs if budget == "macs" else graph.params

        def count(widths):
            return cost_of(graph.quantise(widths, round_to))

        widths = scaling.select_for_resource(self.NAME, self.DEFAULT_WIDTHS, ratio, target, count, method=method,
                                             resource=budget, alpha=alpha, beta=beta, pruned_widths=pruned_widths,
                                             search=search, small_width_rules=False, round_to=round_to, min_width=1)
        return graph.quantise(widths, round_to)


def torchvision_spec(name, grouping="traced"):
    """The GenericSpec of `torchvision:NAME` under this grouping, its templates built on the meta device."""
    import torchvision
    arch = name[len(PREFIX):]
    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        raise UserError(f"unknown torchvision classification model {arch!r} (e.g. resnet18, resnet50, "
                        f"mobilenet_v2, mobilenet_v3_small, efficientnet_b0, regnet_x_400mf)")

    def make(num_classes):
        try:
            try:
                with torch.device("meta"):
                    return torchvision.models.get_model(arch, num_classes=num_classes)
            except (NotImplementedError, RuntimeError):  # a constructor that computes with tensors (RegNet)
                return torchvision.models.get_model(arch, num_classes=num_classes).to("meta")
        except (TypeError, ValueError) as err:
            raise UserError(f"torchvision cannot build {arch} with num_classes={num_classes}: {err}") from None

    try:
        return GenericSpec(name, make, grouping=grouping)
    except UserError as err:
        raise UserError(f"{name} is refused: {err}") from None
