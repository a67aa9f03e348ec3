"""Width selection: uniform scaling, NeuralScale's tau search and the "pruned uniform" rescaling.

Each model's `prepare_filters()` chooses among these with its own constants; the loops here are the
authors', step for step, so that the authors' fitted (alpha, beta) give
the authors' configurations bit for bit. `count` is the parameter counter the search drives (the
authors' formula by default, `exact=True` for the built network's count).

Every loop is bounded: a budget no network can meet raises BudgetError (a UserError) that names the
model, the ratio and the budget.
"""
import math

import numpy as np

from utils.cli import UserError

MAX_SEARCH_STEPS = 1_000_000  # the authors' loops converge in at most ~60k steps on their data
MORPH = {"start": 1.2, "step": 5e-5, "rel_tolerance": 0.005}  # --morph: rescale the pruned widths
FALLBACK = {"start": 1.2, "step": 0.05, "rel_tolerance": 0.1}  # beta == 0 fit (ResNet18, MobileNetV2)


class BudgetError(UserError):
    """No width configuration meets the parameter budget."""


def fail(model, ratio, target, why):
    raise BudgetError(f"{model} at ratio {ratio:g}: no configuration meets the budget of "
                      f"{target:,.0f} parameters ({why})")


def uniform(template, ratio):
    """Every width times the ratio, truncated (the authors' int())."""
    return [int(w * ratio) for w in template]


def power_law(alpha, beta, tau):
    """Widths alpha * tau^beta as floats (alpha, beta: numpy arrays)."""
    return alpha * tau ** beta


def truncated(alpha, beta, tau):
    return [int(w) for w in power_law(alpha, beta, tau)]


def width_sum_slope(alpha, beta, tau):
    """d(sum of widths)/d tau. The authors' step uses this, not the slope of the parameter count."""
    return float(np.sum(alpha * beta * tau ** (beta - 1)))


def bump_small(widths):
    """The authors' '+10 if below 10' rule ("stochasticity" for tiny layers)."""
    return [w + 10 if w < 10 else w for w in widths]


def check_widths(widths, model, ratio, target):
    if min(widths) < 1:
        fail(model, ratio, target, f"a layer would have {min(widths)} units: {widths}")
    return widths


def tau_fixed_steps(alpha, beta, target, count, *, steps, lr):
    """VGG: a fixed number of descent steps on tau (2000 at lr 50 in the authors' code).

    Quirk kept: with beta == 0 (the fit's fallback) the slope is 0, tau never moves and the widths are
    int(alpha) whatever the ratio.
    """
    tau = float(target)
    for _ in range(steps):
        achieved = count(truncated(alpha, beta, tau))
        tau = tau - lr * (achieved - target) * width_sum_slope(alpha, beta, tau)
        if not math.isfinite(tau) or tau <= 0:
            return None
    return truncated(alpha, beta, tau)


def tau_tolerance(alpha, beta, target, count, *, tolerance, lr=1.0, float_widths=False,
                  halve_overshoot=False):
    """ResNet18 and MobileNetV2: descend on tau until |params - target| <= tolerance.

    The returned widths come from the tau *after* the last update (one step past the accepted one), as
    in the authors' loop. MobileNetV2 counts unrounded float widths and halves tau on overshoot.
    """
    tau, achieved = float(target), 0
    for _ in range(MAX_SEARCH_STEPS):
        if abs(achieved - target) <= tolerance:
            return truncated(alpha, beta, tau)
        widths = power_law(alpha, beta, tau) if float_widths else truncated(alpha, beta, tau)
        achieved = count(list(widths))
        step = (achieved - target) * width_sum_slope(alpha, beta, tau)
        new_tau = tau / 2 if halve_overshoot and step > tau else tau - lr * step
        if not math.isfinite(new_tau) or new_tau <= 0 or abs(new_tau - tau) <= 1e-12 * tau:
            return None  # diverged, or stalled: tau no longer moves
        tau = new_tau
    return None


def ratio_search(base, target, count, *, start, step, rel_tolerance):
    """Scale `base` by one factor r, walking r in fixed steps until within the tolerance.

    Used by the --morph baseline (start 1.2, step 5e-5, 0.5 %) and by the ResNet/MobileNetV2 fallback
    for a beta == 0 fit (start 1.2, step 0.05, 10 %). Widths use r after the final update (authors').
    """
    r, achieved, turns, going_up = start, 0, 0, None
    for _ in range(MAX_SEARCH_STEPS):
        if abs(achieved - target) <= rel_tolerance * target:
            return [int(w * r) for w in base]
        achieved = count([int(w * r) for w in base])
        turns += going_up is not None and going_up != (achieved < target)
        going_up = achieved < target
        r = r + step if going_up else r - step
        if r <= 0 or turns > 4:
            return None  # no positive r, or bouncing between two neighbours that both miss
    return None


def counter(formula_params, exact_params, num_classes, exact, convcut):
    """widths -> parameters: the authors' formula, or (exact=True) the built network's count."""
    if exact:
        return lambda widths: exact_params(widths, num_classes, convcut)
    return lambda widths: formula_params(widths, num_classes)


def select_widths(model, template, ratio, target, count, *, alpha, beta, pruned_widths, search, exact,
                  tau_search, small_width_rules):
    """The authors' order of precedence: NeuralScale (alpha, beta), then pruned-uniform (--morph),
    then uniform scaling. `tau_search(alpha, beta)` is the model's own descent on tau.

    small_width_rules (ResNet18, MobileNetV2): a beta == 0 fit falls back to a coarse ratio walk with
    +10 on widths below 10, and the +10 rule also applies during the search (search=True).
    """
    finish = bump_small if search and small_width_rules else (lambda w: w)
    if alpha is not None and small_width_rules and not any(beta):
        widths = ratio_search(alpha, target, count, **FALLBACK)
        widths = widths and bump_small(widths)
    elif alpha is not None and exact and any(beta):
        widths = tau_bisection(alpha, beta, target, count, finish)
    elif alpha is not None:
        widths = tau_search(alpha, beta)
        widths = widths and finish(widths)
    elif pruned_widths is not None:
        widths = ratio_search(pruned_widths, target, count, **MORPH)
    else:
        widths = uniform(template, ratio)
    if widths is None:
        fail(model, ratio, target, "the search did not converge")
    return check_widths(widths, model, ratio, target)


def tau_bisection(alpha, beta, target, count, finish, *, rel_tolerance=0.005):
    """Opt-in exact search: bisect log(tau) on the count of the final integer widths.

    `finish` turns int(alpha * tau^beta) into the returned widths (e.g. the +10 rule), so the count that
    is matched is the count of what is returned. Returns the closest configuration within the tolerance.
    """
    def widths_at(log_tau):
        return finish(truncated(alpha, beta, math.exp(log_tau)))

    lo, hi = 0.0, math.log(max(target, 2.0)) * 3  # widths grow with tau when beta > 0
    best = None
    for _ in range(200):
        mid = (lo + hi) / 2
        widths = widths_at(mid)
        achieved = count(widths)
        if best is None or abs(achieved - target) < abs(best[1] - target):
            best = (widths, achieved)
        lo, hi = (mid, hi) if achieved < target else (lo, mid)
    if best and min(best[0]) >= 1 and abs(best[1] - target) <= rel_tolerance * target:
        return best[0]
    return None
