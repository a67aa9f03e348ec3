"""The Li et al. / slimming baseline: train_norm.py then fine_tune.py end to end, the one-shot pruner
(utils/oneshot.py) on all three networks, and fine_tune's bad inputs."""
import pytest
import torch
from torch import nn

from conftest import assert_one_line_error, run_script
from model import MODELS, build_model, gates_of
from utils import io, oneshot
from utils.base import UserError
from utils.params import count_macs, count_params
from utils.train import load_checkpoint

pytestmark = pytest.mark.slow  # scripts run end to end: `make test-fast` leaves them out

CPU = torch.device("cpu")
TINY_RUN = ["--model", "vgg", "--dataset", "synthetic", "--device", "cpu", "--no_latency", "--subset", "32",
            "--test_subset", "32", "--batch-size", "32", "--seed", "0"]
VGG_075_PARAMS = 5_195_338  # VGG11, K = 10, widths [48, 96, 192, 192, 384, 384, 384, 384]


def dirs(root):
    return ["--plots_dir", root / "plots", "--models_dir", root / "models"]


def test_train_norm_then_fine_tune(tmp_path):
    run_script("train_norm.py", *TINY_RUN, "--epochs", "1", "--save", "norm", *dirs(tmp_path))
    pre = io.load_result(tmp_path / "plots/vgg/norm_100.pk")
    assert pre["ratio"] == 1.0 and len(pre["test_acc"]) == 1 and pre["method"] == "uniform"
    assert pre["widths"] == MODELS["vgg"].DEFAULT_WIDTHS and pre["params"] == 9_231_114
    best = load_checkpoint(tmp_path / "models/vgg/norm_best_model.pt", CPU)
    assert best["architecture"]["gates"] is True and best["architecture"]["widths"] == pre["widths"]

    proc = run_script("fine_tune.py", *TINY_RUN, "--resume", "norm", "--epochs", "2", "--save", "ft",
                      *dirs(tmp_path))
    result = io.load_result(tmp_path / "plots/vgg/ft_75.pk")
    widths = [48, 96, 192, 192, 384, 384, 384, 384]
    assert result["ratio"] == 0.75 and result["method"] == "l1" and result["epochs"] == 2
    assert all(len(result[k]) == 2 for k in ("train_acc", "train_loss", "test_acc", "test_loss",
                                             "train_acc_dataset", "test_acc_dataset"))
    assert result["lr"] == [0.001, 0.001]  # constant
    assert result["widths"] == widths and result["params"] == VGG_075_PARAMS
    assert result["params_masked"] == 9_231_114 and result["masked"] is True
    # MACs: the widths' network, and the masked one computes as the dense VGG11 (152.8M per image).
    assert result["macs"] == count_macs("vgg", widths, 10, 32) and result["macs_masked"] == 152_769_536
    assert result["pretrained"].endswith("norm_best_model.pt")
    assert "pruned [64, 128" in proc.stdout
    # Still masked after fine-tuning: the pruned units' gates are 0 and were never trained. A finished
    # run keeps only its best-epoch weights (--keep_checkpoints best).
    assert not (tmp_path / "models/vgg/ft_75_checkpoint.pt").exists()
    ckpt = load_checkpoint(tmp_path / "models/vgg/ft_75_best_model.pt", CPU)
    net = build_model("vgg", MODELS["vgg"].DEFAULT_WIDTHS, 10, gates=True)
    net.load_state_dict(ckpt["state_dict"])
    assert oneshot.surviving_widths(net) == widths
    assert all(set(g.weight.unique().tolist()) == {0.0, 1.0} for g in gates_of(net))

    # The authors' README spelling (--prune_fname, no --resume) loads the checkpoint too; --method 0 = slim.
    run_script("fine_tune.py", *TINY_RUN, "--prune_fname", "norm", "--method", "0", "--epochs", "1",
               "--save", "slim", *dirs(tmp_path))
    slim = io.load_result(tmp_path / "plots/vgg/slim_75.pk")
    assert slim["method"] == "slim" and slim["pretrained"] == result["pretrained"]
    assert slim["params"] <= MODELS["vgg"].formula_params([w * 0.75 for w in MODELS["vgg"].DEFAULT_WIDTHS], 10)


@pytest.mark.parametrize("flags,message", [
    ([], "fine_tune.py needs a pre-trained network"),
    (["--resume", "nothing"], "no pre-trained checkpoint"),
    (["--prune_fname", "nothing"], "no pre-trained checkpoint"),
])
def test_fine_tune_without_checkpoint(tmp_path, flags, message):
    proc = run_script("fine_tune.py", *TINY_RUN, *flags, "--save", "ft", *dirs(tmp_path), check=False)
    assert_one_line_error(proc)
    assert message in proc.stderr
    assert not (tmp_path / "plots").exists() and not (tmp_path / "models").exists()


# -- the pruner, in-process ---------------------------------------------------------------------------

def test_gate_sources_follow_the_authors_walk():
    """The conv whose filters rank a gate's units: the last Conv2d before the gate's preceding BN."""
    vgg = build_model("vgg", MODELS["vgg"].DEFAULT_WIDTHS, 10, gates=True)
    assert [s.conv for s in oneshot.gate_sources(vgg)] == [m for m in vgg.modules() if isinstance(m, nn.Conv2d)]

    for num_classes in (100, 200):
        net = build_model("resnet18", MODELS["resnet18"].DEFAULT_WIDTHS, num_classes, gates=True)
        blocks = [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
        sources = oneshot.gate_sources(net)
        assert sources[0].conv is net.conv1 and sources[0].bn is blocks[0].bn1
        for b, block in enumerate(blocks):
            assert sources[2 * b + 1].conv is block.conv1 and sources[2 * b + 1].bn is block.bn2
            feeding = sources[2 * b + 2]  # the next block's input (or gate_out)
            assert feeding.conv is (block.shortcut if block.shortcut is not None else block.conv2)
        assert sources[16].bn is net.bn_out
        # CIFAR: layer1 has no shortcut, layer2's first block has; Tiny: layer1's first block has one too.
        assert (sources[2].conv is blocks[0].shortcut) == (num_classes == 200)
        assert sources[6].conv is blocks[2].shortcut

    mnet = build_model("mobilenetv2", MODELS["mobilenetv2"].DEFAULT_WIDTHS, 100, gates=True)
    sources = oneshot.gate_sources(mnet)
    assert sources[0].conv is mnet.pre[0] and sources[18].conv is mnet.conv1[0]
    for j, block in enumerate(mnet.stages, start=1):  # the residual projection, shortcut conv or not
        assert sources[j].conv is block.residual[6] and sources[j].bn is block.residual[7]


# The blocks of the default MobileNetV2 whose shortcut is a 1x1 conv + BN (ORIGINAL_BEHAVIOUR 2.3:
# stage1, and the first block of stages 2-7); with convcut every block has one.
MBV2_CONV_SHORTCUTS = {0, 1, 3, 6, 10, 13, 16}
MBV2_STAGE_BLOCKS = (1, 2, 3, 4, 3, 3, 1)


def authors_mobilenetv2_walk(convcut):
    """The authors' MobileNetV2 written out on paper in their registration order (ORIGINAL_BEHAVIOUR
    2.3 and 5.5), with our module names: the stem conv, bn, gate, relu; per block the residual branch
    (1x1 conv, bn, relu, 3x3 depthwise conv, bn, relu, 1x1 projection conv, bn), then gate_residual,
    then the shortcut's conv and bn where it has one; the head conv, bn, gate, relu; the classifier.
    Their walk: slimming reads the module right before each gate, L1 the last conv before that one.
    Returns [(bn name, conv name)] per gate, in gate order."""
    order = [("pre.conv", "conv"), ("pre.bn", "bn"), ("pre.gate", "gate"), ("pre.relu", "relu")]
    for j in range(sum(MBV2_STAGE_BLOCKS)):
        r = f"stages.{j}.residual."
        order += [(r + "0", "conv"), (r + "1", "bn"), (r + "2", "relu"), (r + "3", "conv"), (r + "4", "bn"),
                  (r + "5", "relu"), (r + "6", "conv"), (r + "7", "bn"), (f"stages.{j}.gate", "gate")]
        if convcut or j in MBV2_CONV_SHORTCUTS:
            order += [(f"stages.{j}.shortcut.0", "conv"), (f"stages.{j}.shortcut.1", "bn")]
    order += [("conv1.conv", "conv"), ("conv1.bn", "bn"), ("conv1.gate", "gate"), ("conv1.relu", "relu"),
              ("conv2", "conv")]
    table = []
    for i, (_, kind) in enumerate(order):
        if kind == "gate":
            conv = next(name for name, k in reversed(order[:i - 1]) if k == "conv")
            table.append((order[i - 1][0], conv))
    return table


@pytest.mark.parametrize("convcut", [False, True])
def test_mobilenetv2_gates_rank_by_the_residual_projection_as_the_authors_walk(convcut):
    """All 19 gates: the source of slimming (BN) and of L1 (conv) is what the authors' walk over their
    module order gives: for every block the residual projection and its BN, never the shortcut's."""
    expected = authors_mobilenetv2_walk(convcut)
    assert len(expected) == 19
    assert expected[0] == ("pre.bn", "pre.conv") and expected[18] == ("conv1.bn", "conv1.conv")
    assert all(pair == (f"stages.{j}.residual.7", f"stages.{j}.residual.6")
               for j, pair in enumerate(expected[1:18]))
    net = build_model("mobilenetv2", MODELS["mobilenetv2"].DEFAULT_WIDTHS, 100, gates=True, convcut=convcut)
    with_conv = {j for j, b in enumerate(net.stages) if b.shortcut is not None}
    assert with_conv == (set(range(17)) if convcut else MBV2_CONV_SHORTCUTS)
    names = {id(m): n for n, m in net.named_modules()}
    got = [(names[id(s.bn)], names[id(s.conv)]) for s in oneshot.gate_sources(net)]
    assert got == expected

    # L1 masking zeroes residual projection filters and leaves every shortcut conv untouched.
    shortcuts = {j: net.stages[j].shortcut[0].weight.clone() for j in with_conv}
    oneshot.prune(net, "l1", lambda w: count_params("mobilenetv2", w, 100), 0.75)
    for j in with_conv:
        assert torch.equal(net.stages[j].shortcut[0].weight, shortcuts[j])
        dead = net.stages[j].gate.weight == 0
        assert dead.any() and net.stages[j].residual[6].weight[dead].abs().sum() == 0


@pytest.mark.parametrize("name,num_classes", [("vgg", 100), ("resnet18", 100), ("resnet18", 200),
                                              ("mobilenetv2", 200)])
def test_l1_keeps_largest_filters_under_the_models_budget(name, num_classes):
    torch.manual_seed(0)
    default = MODELS[name].DEFAULT_WIDTHS
    net = build_model(name, default, num_classes, gates=True)
    sources = oneshot.gate_sources(net)
    norms = [s.conv.weight.abs().flatten(1).sum(1).clone() for s in sources]

    def count(widths):
        return count_params(name, widths, num_classes)

    widths = oneshot.prune(net, 1, count, 0.75)  # the authors' numeric code for L1
    target = count([w * 0.75 for w in default])
    assert count(widths) <= target
    assert widths == oneshot.l1_widths(default, count, 0.75)
    # Not the authors' VGG/K=10 formula (their bug), but this model's own counter.
    assert all(w < d for w, d in zip(widths, default))
    for source, norm, w in zip(sources, norms, widths):
        kept = source.gate.weight != 0
        assert int(kept.sum()) == w
        assert norm[kept].min() >= norm[~kept].max()
        assert source.conv.weight[~kept].abs().sum() == 0


def test_l1_budget_rule():
    """r = 0.9, then x0.999 until the count of int(w r) is at most the count of w x size."""
    def count(widths):
        return count_params("vgg", widths, 10)
    widths = oneshot.l1_widths(MODELS["vgg"].DEFAULT_WIDTHS, count, 0.75)
    assert widths == [48, 96, 192, 192, 384, 384, 384, 384]
    assert count_params("vgg", widths, 10, exact=True) == VGG_075_PARAMS
    assert oneshot.l1_widths([100] * 8, count, 0.95) == [90] * 8  # at least 10 % off, whatever the budget


@pytest.mark.parametrize("name", ["vgg", "resnet18", "mobilenetv2"])
def test_slimming_prunes_smallest_gammas_globally(name):
    torch.manual_seed(1)
    default = MODELS[name].DEFAULT_WIDTHS
    net = build_model(name, default, 100, gates=True)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, -1, 1)
            nn.init.uniform_(m.bias, -1, 1)
    sources = oneshot.gate_sources(net)
    gammas = torch.cat([s.bn.weight.detach().abs().clone() for s in sources])

    def count(widths):
        return count_params(name, widths, 100)

    widths = oneshot.prune(net, "slim", count, 0.75)
    target = count([w * 0.75 for w in default])
    alive = torch.cat([s.gate.weight != 0 for s in sources])
    assert count(widths) <= target
    assert gammas[alive].min() >= gammas[~alive].max()
    pruned = int((~alive).sum())
    assert pruned % 11 == 0  # 11 units per round (the authors' sorted[pruned + 10])
    # One round fewer would not have met the budget: the smallest pruned - 11 units leave too much.
    order = torch.argsort(gammas, stable=True)
    still = torch.ones_like(alive)
    still[order[:pruned - 11]] = False
    assert count([int(x.sum()) for x in still.split([len(s.gate.weight) for s in sources])]) > target
    for s in sources:
        dead = s.gate.weight == 0
        assert s.bn.weight[dead].abs().sum() == 0 and s.bn.bias[dead].abs().sum() == 0


def test_masked_vgg_equals_the_physically_pruned_network():
    """For VGG the mask is exact: the masked network computes what the network with the surviving
    widths (the count recorded as "params") computes."""
    torch.manual_seed(2)
    wide = [16, 16, 32, 32, 32, 32, 32, 32]
    net = build_model("vgg", wide, 10, gates=True)
    widths = oneshot.prune(net, "l1", lambda w: count_params("vgg", w, 10), 0.75)
    net.eval()
    small = build_model("vgg", widths, 10).eval()
    keep_in = torch.arange(3)
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    bns = [m for m in net.features if isinstance(m, nn.BatchNorm2d)]
    small_convs = [m for m in small.features if isinstance(m, nn.Conv2d)]
    small_bns = [m for m in small.features if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for conv, bn, gate, sconv, sbn in zip(convs, bns, gates_of(net), small_convs, small_bns):
            keep = torch.nonzero(gate.weight).flatten()
            sconv.weight.copy_(conv.weight[keep][:, keep_in])
            sconv.bias.copy_(conv.bias[keep])
            for attr in ("weight", "bias", "running_mean", "running_var"):
                getattr(sbn, attr).copy_(getattr(bn, attr)[keep])
            keep_in = keep
        small.classifier.weight.copy_(net.classifier.weight[:, keep_in])
        small.classifier.bias.copy_(net.classifier.bias)
        x = torch.randn(4, 3, 32, 32)
        assert torch.allclose(net(x), small(x), atol=1e-5)


def test_method_names():
    assert oneshot.method_name("1") == oneshot.method_name("l1") == "l1"
    assert oneshot.method_name(0) == oneshot.method_name("slim") == "slim"
    with pytest.raises(UserError):
        oneshot.method_name("taylor")
