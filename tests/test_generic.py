"""NeuralScale on any CNN (model/generic.py, utils/generic_search.py): the traced groups match the
hand-written networks' gates (all of them with grouping="authors"), VGG11 prunes step for step as the
hand-written path does, and six torchvision models go through prune, fit and rebuild with their
budgets met. CPU, 32x32 inputs."""
import json
import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import list_architecture
from conftest import assert_one_line_error, run_script
from model import build_model, gates_of, get_spec, mobilenetv2, preact_resnet, vgg
from utils import io, report
from model.generic import ChannelGraph, GatedBatchNorm, GenericSpec
from utils.base import UserError
from utils.cli import check_pair
from utils.fit import fit_power_law
from utils.generic_search import neuralscale
from utils.params import actual_params
from utils.prune import TaylorFOPruner
from utils.train import make_optimizer

TORCHVISION = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf")
AUTHORS_TORCHVISION = ("resnet18 authors", "mobilenet_v2 authors")  # grouping="authors"


def handwritten(name, widths, grouping="traced", **kwargs):
    """The GenericSpec of a hand-written network built at `widths` (its own code stays untouched)."""
    return GenericSpec(name, lambda classes: build_model(name, widths, classes, **kwargs), grouping=grouping)


def batches(n, size=4, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, classes, (size,), generator=g))
            for _ in range(n)]


def conv_macs(model, size=32):
    """MACs per image as torch.utils.flop_counter counts them (2 FLOPs per multiply-accumulate)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() // 2


# -- the generic path is the same algorithm ----------------------------------------------------------

def test_groups_of_vgg_and_convcut_resnet18_are_their_gates():
    for name, module, kwargs in (("vgg", vgg, {}), ("resnet18", preact_resnet, {"convcut": True})):
        graph = handwritten(name, module.DEFAULT_WIDTHS, **kwargs).graph(10)
        gates = [n for n, m in build_model(name, module.DEFAULT_WIDTHS, 10, gates=True, **kwargs).named_modules()
                 if type(m).__name__ == "Gate"]
        assert graph.widths == module.DEFAULT_WIDTHS  # number, sizes and order
        # Each group's first BatchNorm is the one its hand-written gate follows (gate_out: bn_out).
        assert [bns[0] for bns in graph.bns] == [g.replace("gate", "bn") for g in gates]
    rng = np.random.default_rng(0)
    for _ in range(3):  # and the generic count is the hand-written exact count at any widths
        widths = [int(w) for w in rng.integers(1, 300, size=17)]
        assert graph.params(widths) == preact_resnet.exact_params(widths, 10, convcut=True)


def test_identity_shortcuts_tie_resnet18_widths():
    """The hand-written ResNet18 gates each block's input apart from its identity shortcut; the traced
    groups follow the add, so widths 0, 2, 4 (and each stage's block outputs) are one group."""
    graph = handwritten("resnet18", preact_resnet.DEFAULT_WIDTHS).graph(10)
    assert graph.widths == [64, 64, 64, 128, 128, 128, 256, 256, 256, 512, 512, 512]
    assert graph.bns[0] == ["layer1.0.bn1", "layer1.1.bn1", "layer2.0.bn1"]


def test_groups_of_mobilenetv2_are_its_gates_and_its_expansions():
    graph = handwritten("mobilenetv2", mobilenetv2.DEFAULT_WIDTHS, convcut=True).graph(100)
    expansion = [g for g, bns in enumerate(graph.bns) if bns[0].endswith("residual.1")]
    searched = [g for g in range(len(graph.widths)) if g not in expansion]
    # The 19 hand-written widths, in order; the 17 expansions (t x the block's input, derived by hand)
    # are groups of their own here, each tied through its depthwise conv.
    assert [graph.widths[g] for g in searched] == mobilenetv2.DEFAULT_WIDTHS
    assert len(expansion) == 17 and all(len(graph.bns[g]) == 2 for g in expansion)
    plan = mobilenetv2.block_plan(100)
    ins = [mobilenetv2.DEFAULT_WIDTHS[j] for j in range(17)]
    assert [graph.widths[g] for g in expansion] == [c * t for c, (_, t) in zip(ins, plan)]


def test_vgg11_prunes_step_for_step_as_the_handwritten_path():
    widths = [w // 8 for w in vgg.DEFAULT_WIDTHS]
    torch.manual_seed(0)
    ours = build_model("vgg", widths, 10, gates=True)
    theirs = build_model("vgg", widths, 10)
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not missing and all(".gate" in k for k in unexpected)
    handwritten("vgg", widths).graph(10).add_gates(theirs)
    pruners, optimizers = [], []
    for net in (ours, theirs):
        pruners.append(TaylorFOPruner(gates_of(net), prune_every=2, prune_per_step=12))
        optimizers.append(make_optimizer(net, 0.05))
    assert pruners[0].sizes == pruners[1].sizes
    outcomes = []
    for x, y in batches(40, classes=10):
        steps = []
        for net, optimizer, pruner in zip((ours, theirs), optimizers, pruners):
            net.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
            steps.append(pruner.step())
        assert steps[0] == steps[1]
        assert torch.equal(pruners[0].mask, pruners[1].mask)  # the same prune set at every step
        outcomes.append(steps[0])
        if steps[0] == "done":
            break
    assert outcomes.count("pruned") >= 10 and pruners[0].rows == pruners[1].rows


# -- grouping="authors": the hand-written networks' own groups ---------------------------------------

# (name, module, classes, build flags): VGG11, ResNet18 with identity and with conv shortcuts, MobileNetV2
# with conv shortcuts where the default widths differ and everywhere.
AUTHORS_CASES = [("vgg", vgg, 10, {}), ("resnet18", preact_resnet, 10, {}),
                 ("resnet18", preact_resnet, 10, {"convcut": True}), ("mobilenetv2", mobilenetv2, 100, {}),
                 ("mobilenetv2", mobilenetv2, 100, {"convcut": True})]


def gate_bns(name, net):
    """The BatchNorms each hand-written gate follows, gate by gate: VGG11's and ResNet18's gate_x follows
    bn_x; MobileNetV2's block gate follows the add of its branch's last BatchNorm and its shortcut's."""
    gates = [n for n, m in net.named_modules() if type(m).__name__ == "Gate"]
    if name != "mobilenetv2":
        return [[g.replace("gate", "bn")] for g in gates]
    blocks = [[f"stages.{j}.shortcut.1"] * (block.shortcut is not None) + [f"stages.{j}.residual.7"]
              for j, block in enumerate(net.stages)]
    assert len(gates) == len(blocks) + 2
    return [["pre.bn"], *blocks, ["conv1.bn"]]


@pytest.mark.parametrize("name, module, classes, kwargs", AUTHORS_CASES)
def test_authors_grouping_gives_the_handwritten_gates_and_counts(name, module, classes, kwargs):
    graph = handwritten(name, module.DEFAULT_WIDTHS, "authors", **kwargs).graph(classes)
    assert graph.widths == module.DEFAULT_WIDTHS  # number, sizes and order
    assert graph.bns == gate_bns(name, build_model(name, module.DEFAULT_WIDTHS, classes, gates=True, **kwargs))
    rng = np.random.default_rng(0)
    for _ in range(3):  # distinct widths: every identity shortcut of the hand-written net becomes a conv
        widths = [int(w) for w in rng.choice(np.arange(8, 400), size=len(graph.widths), replace=False)]
        convcut = kwargs.get("convcut", False)
        assert graph.params(widths) == module.exact_params(widths, classes, convcut=convcut)
        assert graph.macs(widths) == module.exact_macs(widths, classes, 32, convcut=convcut)


@pytest.mark.parametrize("name, module, classes, projections", [("resnet18", preact_resnet, 10, 5),
                                                                 ("mobilenetv2", mobilenetv2, 100, 10)])
def test_authors_rebuild_projects_the_identity_shortcuts(name, module, classes, projections):
    """The rebuilt network at distinct widths: one projection per identity shortcut of the template,
    shaped as the hand-written shortcut conv (ResNet18: no bias, no BatchNorm; MobileNetV2: bias and
    BatchNorm), and its parameters and MACs are the hand-written network's."""
    spec = handwritten(name, module.DEFAULT_WIDTHS, "authors")
    widths = [int(w) for w in np.random.default_rng(1).choice(np.arange(8, 48), size=len(module.DEFAULT_WIDTHS),
                                                              replace=False)]
    net = spec.build(widths, classes)
    added = list(net.neuralscale_projections)
    assert len(added) == projections
    for layer in added:
        conv = layer if name == "resnet18" else layer[0]
        assert conv.kernel_size == (1, 1) and conv.stride == (1, 1) and (conv.bias is None) == (name == "resnet18")
        assert name == "resnet18" or isinstance(layer[1], nn.BatchNorm2d)
    theirs = build_model(name, widths, classes)
    assert actual_params(net) == actual_params(theirs) == module.exact_params(widths, classes)
    assert conv_macs(net) == conv_macs(theirs) == module.exact_macs(widths, classes, 32)
    net(torch.randn(2, 3, 32, 32)).sum().backward()


# (divisor of the default widths, input size): small enough for seconds on a CPU. MobileNetV2's record
# is short (its 8-unit groups meet the last-unit rule within a few steps on random data), so its fit
# may be the authors' flat fallback, whose widths are alpha rescaled by the same bisection.
# Its maps reach 1x1 at this size, where BatchNorm over 2 images makes SGD diverge: it prunes at its
# initial weights (lr 0). So does ResNet18 (2x2 maps): trained, its record depended on the thread count
# (10 rows at two threads, 4 at one).
HANDWRITTEN = {"vgg": (vgg, 10, 4, 32, 0.02), "resnet18": (preact_resnet, 10, 4, 16, 0.0),
               "mobilenetv2": (mobilenetv2, 100, 1, 8, 0.0)}


@pytest.fixture(scope="module")
def handwritten_laws():
    """The generic path (utils/generic_search.py) on each hand-written network, scaled down; and on
    ResNet18 (identity shortcuts) and MobileNetV2 under grouping="authors"."""
    laws = {}
    cases = [(name, "traced") for name in HANDWRITTEN] + [("resnet18", "authors"), ("mobilenetv2", "authors")]
    for name, grouping in cases:
        module, classes, divisor, size, lr = HANDWRITTEN[name]
        torch.manual_seed(0)
        net = build_model(name, [w // divisor for w in module.DEFAULT_WIDTHS], classes)
        units = sum(w // divisor for w in module.DEFAULT_WIDTHS)
        data = [(x[:, :, :size, :size], y) for x, y in batches(40, size=2, classes=classes)]
        law = neuralscale(net, data, ratios=(0.25, 1.0, 2.0), prune_every=1, prune_per_step=max(4, units // 30),
                          epochs=4, lr=lr, name=name, grouping=grouping)
        laws[name if grouping == "traced" else f"{name} {grouping}"] = law
    return laws


@pytest.mark.parametrize("name", ["vgg", "resnet18", "mobilenetv2", "resnet18 authors", "mobilenetv2 authors"])
def test_fitted_widths_meet_the_budget_on_the_handwritten_networks(handwritten_laws, name):
    law = handwritten_laws[name]
    template = law.spec.DEFAULT_WIDTHS
    if name.endswith("authors"):  # the hand-written network's own width list
        assert len(template) == len(HANDWRITTEN[name.split()[0]][0].DEFAULT_WIDTHS)
    if not name.startswith("mobilenetv2"):
        assert len(law.rows) >= 6 and np.all(law.beta != 0)  # a real fit, not the flat fallback
    for ratio in (0.25, 1.0, 2.0):
        goal = law.count([int(w * ratio) for w in template])
        assert abs(law.count(law.widths[ratio]) - goal) <= 0.005 * goal
        if name.endswith("authors"):  # projections included where the fitted widths differ
            assert actual_params(law.build(law.widths[ratio])) == law.count(law.widths[ratio])
    if name == "vgg":  # the same fit through the hand-written exact path meets the same budgets
        divisor = HANDWRITTEN["vgg"][2]  # its template is the full network: the ratio over the divisor
        for ratio in (0.25, 1.0, 2.0):
            theirs = vgg.prepare_filters(ratio / divisor, num_classes=10, alpha=law.alpha, beta=law.beta, exact=True)
            goal = law.count([int(w * ratio) for w in template])
            assert vgg.exact_params(vgg.prepare_filters(ratio / divisor, num_classes=10), 10) == goal
            assert abs(vgg.exact_params(theirs, 10) - goal) <= 0.005 * goal


# -- six torchvision models end to end ---------------------------------------------------------------

@pytest.fixture(scope="module")
def torchvision_laws():
    """Each model traced once, pruned on a few 32x32 minibatches (gated, full width) and fitted. The
    criterion is taken at the initial weights with BatchNorm on its running statistics: at 32x32 the
    last stages are 1x1 maps, where batch statistics of two images blow the gradients up."""
    laws = {}
    for key in TORCHVISION + AUTHORS_TORCHVISION:
        arch, _, grouping = key.partition(" ")
        spec = get_spec(f"torchvision:{arch}", grouping or "traced")
        torch.manual_seed(0)
        net = spec.build(spec.DEFAULT_WIDTHS, 10, gates=True).eval()
        pruner = TaylorFOPruner(gates_of(net), prune_every=1, prune_per_step=math.ceil(sum(spec.DEFAULT_WIDTHS) / 30))
        for x, y in batches(40, size=2):
            net.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x), y).backward()
            if pruner.step() == "done" or pruner.complete:
                break
        pruner.finish()
        laws[key] = (spec, fit_power_law(pruner.rows, spec.NAME, 10, grouping=spec.grouping))
    return laws


@pytest.mark.parametrize("arch", TORCHVISION + AUTHORS_TORCHVISION)
def test_torchvision_prune_fit_rebuild(torchvision_laws, arch):
    spec, (alpha, beta) = torchvision_laws[arch]
    graph = spec.graph(10)
    if arch == "resnet18 authors":  # the stem and two widths per block, as the hand-written ResNet18
        assert len(spec.DEFAULT_WIDTHS) == 17
    if arch == "mobilenet_v2 authors":  # the stem, the 17 block outputs and the head, as the hand-written one
        assert len(spec.DEFAULT_WIDTHS) == 19
    assert len(gates_of(spec.build(spec.DEFAULT_WIDTHS, 10, gates=True))) == len(spec.DEFAULT_WIDTHS)
    for ratio in (0.5, 1.5):
        widths = spec.prepare_filters(ratio, num_classes=10, alpha=alpha, beta=beta, method="neuralscale")
        goal = graph.params(spec.prepare_filters(ratio, num_classes=10))
        assert abs(graph.params(widths) - goal) <= 0.005 * goal
        net = spec.build(widths, 10)
        assert actual_params(net) == graph.params(widths) == spec.exact_params(widths, 10)
        assert conv_macs(net) == spec.exact_macs(widths, 10, 32)
        for g, bns in enumerate(graph.bns):  # every BatchNorm of a group (add-tied ones too) has its width
            assert all(net.get_submodule(bn).num_features == widths[g] for bn in bns)
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels:
                assert m.in_channels == m.out_channels  # depthwise in == out
        if arch == "mobilenet_v2 authors":  # the 16 expansions (blocks 2..17): 6 x the block's input (its t)
            expansions = [net.get_submodule(f"features.{i}.conv.0.0") for i in range(2, 18)]
            assert all(c.kernel_size == (1, 1) and c.out_channels == 6 * c.in_channels for c in expansions)
        if arch.endswith("authors"):  # a projection, conv and BatchNorm, wherever an identity skip's width differs
            projections = list(getattr(net, "neuralscale_projections", ()))
            assert len(projections) == sum(1 for _ in graph.projected(widths)) > 0
            assert all(p[0].kernel_size == (1, 1) and p[0].bias is None and isinstance(p[1], nn.BatchNorm2d)
                       for p in projections)
        net.train()
        loss = nn.functional.cross_entropy(net(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1]))
        loss.backward()
        assert all(p.grad is not None for p in net.parameters())


def test_macs_budget_and_round_to_on_torchvision():
    spec = get_spec("torchvision:regnet_x_400mf")
    graph = spec.graph(10)
    assert max(graph.quanta) > 1  # grouped convolutions: widths stay multiples of their group counts
    for kwargs in ({"budget": "macs"}, {"round_to": 8}):
        widths = spec.prepare_filters(0.5, num_classes=10, method="uniform", **kwargs)
        assert all(w % math.lcm(q, kwargs.get("round_to", 1)) == 0 for w, q in zip(widths, graph.quanta))
        count = graph.macs if "budget" in kwargs else graph.params
        goal = count(spec.prepare_filters(0.5, num_classes=10))
        assert abs(count(widths) - goal) <= 0.005 * goal
        assert actual_params(spec.build(widths, 10)) == graph.params(widths)


# -- the API and refusals ----------------------------------------------------------------------------

def conv_bn(c_in, c_out, kernel=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out))


class TinyNet(nn.Module):
    """A residual add, a depthwise conv and a squeeze-excitation product: five groups in 16x16 inputs."""

    def __init__(self, reshape=False):
        super().__init__()
        self.reshape = reshape
        self.stem, self.mid, self.out = conv_bn(3, 24), conv_bn(24, 48), conv_bn(48, 24)
        self.down, self.expand = conv_bn(24, 48, stride=2), conv_bn(48, 96, kernel=1)
        self.depthwise = conv_bn(96, 96, groups=96)
        self.squeeze, self.excite = nn.Conv2d(96, 8, 1), nn.Conv2d(8, 96, 1)
        self.project, self.last = conv_bn(96, 48, kernel=1), conv_bn(48, 64, kernel=1)
        self.head = nn.Linear(64, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.out(torch.relu(self.mid(x))))
        x = torch.relu(self.down(x))
        y = self.depthwise(torch.relu(self.expand(x)))
        y = y * torch.sigmoid(self.excite(torch.relu(self.squeeze(y.mean((2, 3), keepdim=True)))))
        x = torch.relu(self.last(x + self.project(y)))
        if self.reshape:
            return self.head(x.view(x.shape[0], x.shape[1], -1).mean(-1))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_api_on_an_own_module():
    torch.manual_seed(0)
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = [(x[:, :, :16, :16], y % 5) for x, y in batches(30, size=4)]
    law = neuralscale(model, loader, ratios=(0.5, 2.0), targets=(30_000,), prune_every=1, prune_per_step=8,
                      epochs=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched
    # The residual streams (stem + out, down + project) and the expansion tied through the depthwise conv
    # and the excitation product; the squeeze bottleneck has no BatchNorm and keeps its 8 channels.
    assert law.groups == [["stem.1", "out.1"], ["mid.1"], ["down.1", "project.1"], ["expand.1", "depthwise.1"],
                          ["last.1"]]
    assert law.spec.DEFAULT_WIDTHS == [24, 48, 48, 96, 64] and len(law.rows) >= 6
    for key, goal in ((0.5, law.count([12, 24, 24, 48, 32])), (2.0, law.count([48, 96, 96, 192, 128])),
                      (30_000, 30_000)):
        assert abs(law.count(law.widths[key]) - goal) <= 0.005 * goal
    net = law.build(law.widths[2.0])
    assert net.excite.out_channels == net.depthwise[0].groups == law.widths[2.0][3] and net.squeeze.out_channels == 8
    assert actual_params(net) == law.count(law.widths[2.0])
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 5)


def test_gates_follow_every_batchnorm_of_their_group():
    model = TinyNet()
    graph = ChannelGraph(model, 16)
    graph.add_gates(model)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, GatedBatchNorm)]
    assert wrapped == ["stem.1", "mid.1", "out.1", "down.1", "expand.1", "depthwise.1", "project.1", "last.1"]
    assert model.stem[1].gate is model.out[1].gate and len(gates_of(model)) == 5
    model.neuralscale_gates[0].weight.data[3] = 0  # a pruned unit of the residual stream is zero everywhere
    seen = []
    model.out.register_forward_hook(lambda m, i, o: seen.append(o[:, 3]))
    model.stem.register_forward_hook(lambda m, i, o: seen.append(o[:, 3]))
    model.eval()(torch.randn(2, 3, 16, 16))
    assert all(torch.count_nonzero(s) == 0 for s in seen)


def test_an_unsupported_operation_is_named():
    with pytest.raises(UserError, match=r"unsupported operation \.view\(\)"):
        ChannelGraph(TinyNet(reshape=True), 16)
    with pytest.raises(UserError, match="BatchNorm over a concatenation"):
        get_spec("torchvision:densenet121")


def test_refused_torchvision_model_is_one_line(tmp_path):
    proc = run_script("list_architecture.py", "--model", "torchvision:shufflenet_v2_x0_5", "--dataset", "CIFAR10",
                      check=False)
    assert_one_line_error(proc)
    assert "unsupported operation" in proc.stderr and "shufflenet_v2_x0_5" in proc.stderr
    proc = run_script("architecture_descent.py", "--model", "torchvision:resnet18", "--dataset", "synthetic",
                      "--budget", "latency", "--save", "x", "--record_dir", tmp_path / "r", check=False)
    assert_one_line_error(proc)
    assert "latency" in proc.stderr and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_search_then_swipe_on_a_torchvision_model(tmp_path):
    """The scripts end to end (the README's commands run scaled in test_doc_commands): a 2-iteration
    search, a swipe wider than the original, the listed budgets and the trained network's count."""
    common = ("--model", "torchvision:resnet18", "--dataset", "synthetic", "--device", "cpu", "--seed", "0",
              "--out_dir", tmp_path)
    run_script("architecture_descent.py", *common, "--subset", "64", "--batch-size", "16", "--warmup", "0",
               "--iterations", "2", "--prune_every", "1", "--prune_per_step", "25", "--search_ratio", "0.25",
               "--save", "tv")
    run_script("ratio_swipe.py", *common, "--prune_fname", "tv", "--descent_idx", "1", "--ratios", "1.5",
               "--epochs", "1", "--subset", "32", "--test_subset", "16", "--batch-size", "16", "--save", "tv_0")
    listed = run_script("list_architecture.py", "--model", "torchvision:resnet18", "--dataset", "synthetic",
                        "--prune_fname", "tv", "--record_dir", tmp_path / "prune_record", "--ratios", "0.5", "1.5",
                        "--json").stdout
    rows = [json.loads(line) for line in listed.splitlines()]
    spec = get_spec("torchvision:resnet18")
    for row in rows:
        goal = spec.exact_params(spec.prepare_filters(row["ratio"], num_classes=10), 10)
        assert abs(row["params"] - goal) <= 0.005 * goal
    with open(tmp_path / "saved_plots" / "torchvision:resnet18" / "tv_0_150.pk", "rb") as f:
        result = pickle.load(f)
    assert result["params"] == spec.exact_params(result["widths"], 10)


def test_a_record_or_result_of_the_other_grouping_is_refused(tmp_path, capsys):
    """A search record and a result stored under --grouping authors: used under authors they list the
    widths of the authors' groups; under the default (traced) they are refused in one line."""
    spec = get_spec("torchvision:resnet18", "authors")
    record = tmp_path / "prune_record" / "tv.pk"
    alpha = np.asarray(spec.DEFAULT_WIDTHS, dtype=np.float64)
    record.parent.mkdir()
    io.save_fits(record, [(alpha, np.zeros_like(alpha))], settings={"grouping": "authors"})
    listing = ["--model", "torchvision:resnet18", "--dataset", "CIFAR10", "--prune_fname", str(record), "--ratios",
               "0.5", "--json"]
    list_architecture.main([*listing, "--grouping", "authors"])
    row = json.loads(capsys.readouterr().out)
    assert row["grouping"] == "authors" and row["params"] == spec.exact_params(row["widths"], 10)
    proc = run_script("list_architecture.py", *listing, check=False)
    assert_one_line_error(proc)
    assert f"{record} was searched with --grouping authors, not traced" in proc.stderr

    result = tmp_path / "saved_plots" / "torchvision:resnet18" / "tv_0_50.pk"
    result.parent.mkdir(parents=True)
    curves = {key: [1.0] for key in ("train_acc", "train_loss", "test_acc", "test_loss")}
    io.save_result(result, {"ratio": 0.5, **curves, "grouping": "authors", "settings": {"grouping": "authors",
                                                                                       "epochs": 1}})
    proc = run_script("ratio_swipe.py", "--model", "torchvision:resnet18", "--dataset", "synthetic", "--uniform",
                      "--ratios", "0.5", "--epochs", "1", "--save", "tv_0", "--out_dir", tmp_path, check=False)
    assert_one_line_error(proc)
    assert "grouping: 'authors' there, 'traced' now" in proc.stderr
    with pytest.raises(UserError, match="was trained with --grouping authors, not traced"):
        report.read_seeds(tmp_path / "saved_plots", "torchvision:resnet18", "tv", 0.5, [0])
    assert report.read_seeds(tmp_path / "saved_plots", "torchvision:resnet18", "tv", 0.5, [0], grouping="authors")


def test_grouping_is_refused_on_the_handwritten_networks():
    proc = run_script("list_architecture.py", "--model", "resnet18", "--grouping", "authors", check=False)
    assert_one_line_error(proc)
    assert "--grouping applies to torchvision:NAME models" in proc.stderr
    for name in ("vgg", "resnet18", "mobilenetv2"):  # the check every script makes (utils/cli.py)
        with pytest.raises(UserError, match="--grouping applies to torchvision:NAME models"):
            check_pair(name, "CIFAR10", ("CIFAR10",), grouping="authors")
    check_pair("resnet18", "CIFAR10", ("CIFAR10",), grouping="traced")
