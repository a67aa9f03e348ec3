"""Train networks from scratch over width ratios (CIFAR10, CIFAR100, FashionMNIST, synthetic)."""

# The MorphNet-style (--morph) configurations: Taylor-FO pruning to 50 % of the units, then uniform
# rescaling. These are the authors' hard-coded lists; edit or add a row after your own
# `architecture_descent.py --morph` run (it prints the line to paste), or pass --prune_fname instead.
PRUNED_FILTERS = {
    ("vgg", "CIFAR10"): [64, 128, 249, 253, 268, 175, 87, 152],
    ("vgg", "CIFAR100"): [63, 125, 204, 215, 234, 174, 120, 241],
    ("resnet18", "CIFAR100"): [48, 46, 40, 41, 54, 91, 75, 73, 95, 157, 149, 149, 156, 232, 216, 140,
                               190],
    ("mobilenetv2", "CIFAR100"): [28, 16, 24, 21, 30, 31, 26, 56, 50, 49, 46, 83, 70, 58, 120, 101, 68,
                                  134, 397],
    # TinyImageNet (imagenet_ratio_swipe.py). NOTE: the authors' ResNet18 list sums to 100 % of the
    # default widths, not 50 %; it is rescaled anyway, so it is kept as published.
    ("resnet18", "tinyimagenet"): [82, 90, 78, 80, 96, 180, 104, 96, 194, 312, 182, 178, 376, 546, 562,
                                   454, 294],
    ("mobilenetv2", "tinyimagenet"): [28, 16, 24, 24, 32, 32, 30, 64, 59, 50, 41, 96, 73, 48, 160, 69,
                                      47, 155, 360],
}

# Everything below is the thin script; the engine is utils/swipe.py.
from utils import swipe  # noqa: E402
from utils.base import CIFAR_LIKE, RESUMES_EPOCH, run_main  # noqa: E402



def main(argv=None):
    swipe.run_swipe(argv, "scratch_cifar", description=__doc__, datasets=CIFAR_LIKE, dataset="CIFAR10",
                    ratios=swipe.CIFAR_RATIOS, pruned_filters=PRUNED_FILTERS)


if __name__ == "__main__":
    run_main(main, RESUMES_EPOCH)
