"""Train networks from scratch over width ratios on TinyImageNet (150 epochs, ratios 0.25 .. 1.0).

The same engine as ratio_swipe.py (utils/swipe.py); the --morph lists are ratio_swipe.PRUNED_FILTERS.
"""
from ratio_swipe import PRUNED_FILTERS
from utils import swipe
from utils.base import RESUMES_EPOCH, run_main

DATASETS = ("tinyimagenet",)


def main(argv=None):
    swipe.run_swipe(argv, "scratch_tiny", description=__doc__, datasets=DATASETS, dataset="tinyimagenet",
                    ratios=swipe.TINY_RATIOS, pruned_filters=PRUNED_FILTERS)


if __name__ == "__main__":
    run_main(main, RESUMES_EPOCH)
