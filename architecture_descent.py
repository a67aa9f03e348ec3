"""NeuralScale architecture descent on CIFAR10, CIFAR100, FashionMNIST or synthetic data.

Each of 15 iterations trains a gated network, prunes it with Taylor-FO until 95 % of its units are gone
and fits a power law (width_l = alpha_l * params^beta_l) to the record; the next iteration starts from
the widths that law gives at the default network's budget. Writes <record_dir>/<save>_<k>.csv,
<save>_param<k>.pk and <save>.pk; rerun with the same --save to resume. --morph: one iteration to 50 %.

CPU smoke run (seconds):
  python architecture_descent.py --dataset synthetic --subset 256 --batch-size 32 --warmup 1 \
      --iterations 2 --prune_every 1 --prune_per_step 100 --device cpu --save demo
"""
from utils.base import CIFAR_LIKE, RESUMES_ITERATION, run_main
from utils.descent import script_main


def main():
    script_main(__doc__, "search_cifar", datasets=CIFAR_LIKE, model="vgg", dataset="CIFAR10")


if __name__ == "__main__":
    run_main(main, RESUMES_ITERATION)
