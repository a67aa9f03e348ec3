"""NeuralScale architecture descent on TinyImageNet (ResNet18 or MobileNetV2).

As architecture_descent.py, with the authors' TinyImageNet settings: batch 100, a pruning window of
100 minibatches, the tiny_search LR rule, and the search's augmentation (rotation and flip, no crop).
Prepare the data first with val_format.py.
"""
from utils.cli import make_parser, run_main
from utils.descent import add_search_args, run_search
from utils.train import RECIPES

DATASETS = ("tinyimagenet",)


def main():
    parser = make_parser(__doc__.splitlines()[0])
    add_search_args(parser, "search_tiny", datasets=DATASETS, model="mobilenetv2", dataset="tinyimagenet")
    run_search(parser.parse_args(), datasets=DATASETS, schedule=RECIPES["search_tiny"]["schedule"])


if __name__ == "__main__":
    run_main(main)
