"""NeuralScale architecture descent on TinyImageNet (ResNet18 or MobileNetV2).

As architecture_descent.py, with the authors' TinyImageNet settings: batch 100, a pruning window of
100 minibatches, the tiny_search LR rule, and the search's augmentation (rotation and flip, no crop).
Prepare the data first with val_format.py.
"""
from utils.base import RESUMES_ITERATION, run_main
from utils.descent import script_main

DATASETS = ("tinyimagenet",)


def main():
    script_main(__doc__, "search_tiny", datasets=DATASETS, model="mobilenetv2", dataset="tinyimagenet")


if __name__ == "__main__":
    run_main(main, RESUMES_ITERATION)
