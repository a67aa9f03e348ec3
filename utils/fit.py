"""NeuralScale's power law: fit ln(width_l) = beta_l * ln(tau) + ln(alpha_l) to a pruning record.

Each recorded row of a search is a width vector and tau is its parameter count (the same counter the
search's tau step uses: the authors' formula by default, `exact=True` for the built network's count),
or with budget="macs" its MACs per image (the law is then width_l = alpha_l * MACs^beta_l), or with
budget="latency" its predicted latency (`cost`, utils.latency_model's prediction).
The fit is the authors': least squares through the normal equations
with an explicit inverse, which reproduces their stored alpha/beta to ~1e-17.
"""
import numpy as np

from utils.base import UserError
from utils.params import count_params
from utils.scaling import resource_counter

MIN_ROWS = 6  # the authors' threshold below which the record is too short to fit


def fit_power_law(rows, model_name, num_classes, exact=False, budget="params", cost=None, count=None,
                  grouping="traced"):
    """(alpha, beta), float64 vectors of one value per layer, from a record (R rows x L layers).
    `count` (widths -> tau) replaces the named model's counter: a network no registry knows
    (utils/generic_search.py); grouping: a torchvision:NAME model's channel groups (model/generic.py).

    Fewer than MIN_ROWS rows: the authors' fallback, alpha = the first row and beta = 0. They called it
    "uniform scaling", but for VGG beta = 0 freezes the widths at int(alpha) whatever the budget (the
    tau step's slope is 0); ResNet18 and MobileNetV2 switch to a coarse ratio search instead.
    """
    widths = np.asarray(rows, dtype=np.int64)
    if widths.ndim != 2 or widths.shape[0] == 0:
        raise UserError("the pruning record is empty: nothing to fit")
    if widths.min() < 1:
        raise UserError(f"the pruning record holds a width of {widths.min()}; widths must be positive")
    if widths.shape[0] < MIN_ROWS:
        return widths[0].astype(np.float64), np.zeros(widths.shape[1], dtype=np.float64)
    if count is None and budget == "params":
        def count(row):
            return count_params(model_name, row, num_classes, exact=exact, grouping=grouping)
    elif count is None:
        count = resource_counter(model_name, budget, num_classes, cost=cost, grouping=grouping)
    tau = np.array([count([int(w) for w in row]) for row in widths], dtype=np.float64)
    design = np.stack([np.log(tau), np.ones_like(tau)], axis=1)  # T: (R, 2) = [ln tau, 1]
    phi = np.log(widths.astype(np.float64))  # (R, L)
    theta = np.linalg.inv(design.T.dot(design)).dot(design.T).dot(phi)  # (2, L), as the authors
    return np.exp(theta[1]), theta[0]
