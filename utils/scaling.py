"""Width selection: uniform scaling, NeuralScale's tau search and the "pruned uniform" rescaling.

Each model's `prepare_filters()` chooses among these with its own constants; the loops here are the
authors', step for step, so that the authors' fitted (alpha, beta) give
the authors' configurations bit for bit. `count` is the parameter counter the search drives (the
authors' formula by default, `exact=True` for the built network's count).

Beyond the paper (`select_for_resource`): a budget in MACs per image (`--budget macs`), in predicted
latency on a device (`--budget latency`, utils/latency_model.py), or given as an absolute number
(`--target_params`, `--target_macs`, `--target_latency`), and widths that are multiples of N
(`--round_to N`). The authors' step rules are tuned to parameter counts, so these budgets are met by
bounded bisections instead (on log tau for NeuralScale, on one scale factor for the other methods),
within 0.5 % of a count (TOLERANCES) and 2 % of a predicted latency. The bisections are generic over a
cost function `widths -> cost` (meet_budget).

Every loop is bounded: a budget no network can meet raises BudgetError (a UserError) that names the
model, the ratio or absolute budget, and the resource.
"""
import math
import re

import numpy as np

from utils.base import MAX_WIDTH, UserError

MAX_SEARCH_STEPS = 1_000_000  # the authors' loops converge in at most ~60k steps on their data
RESOURCES = ("params", "macs", "latency")
RESOURCE_WORDS = {"params": "parameters", "macs": "MACs per image", "latency": "ms of predicted latency"}
REL_TOLERANCE = 0.005  # every count budget of select_for_resource is met within 0.5 %
# A predicted latency is met within 2 %: the model itself is no closer to a measurement than that.
TOLERANCES = {"params": REL_TOLERANCE, "macs": REL_TOLERANCE, "latency": 0.02}
MORPH = {"start": 1.2, "step": 5e-5, "rel_tolerance": 0.005}  # --morph: rescale the pruned widths
FALLBACK = {"start": 1.2, "step": 0.05, "rel_tolerance": 0.1}  # beta == 0 fit (ResNet18, MobileNetV2)


class BudgetError(UserError):
    """No width configuration meets the budget."""


def fail(model, ratio, target, why, resource="params", absolute=False):
    amount = f"{target:.4g}" if resource == "latency" else _count(target)
    where = f"--target_{resource} {amount}{'ms' if resource == 'latency' else ''}" if absolute else f"ratio {ratio:g}"
    raise BudgetError(f"{model} at {where}: no configuration meets the budget of "
                      f"{amount} {RESOURCE_WORDS[resource]} ({why})")


def _count(n):
    return f"{n:,.0f}" if n < 1e15 else f"{n:.3g}"


def parse_count(text, flag):
    """'1.5M' -> 1500000, '300M', '2G', '64k', '1e6' or '20000': a positive whole count."""
    multiplier = {"k": 1e3, "m": 1e6, "g": 1e9}.get(str(text)[-1:].lower(), 1)
    digits = str(text)[:-1] if multiplier != 1 else str(text)
    try:
        value = float(digits) * multiplier
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 1):
        raise UserError(f"{flag} takes a positive count such as 1.5M, 300M or 20000, got {text!r}")
    return int(round(value))


def parse_latency(text, flag="--target_latency"):
    """'12ms', '12', '12.5 ms' or '0.5s' -> milliseconds: a positive, finite latency."""
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(ms|s)?\s*", str(text))
    try:
        value = float(match.group(1)) * (1000.0 if match.group(2) == "s" else 1.0) if match else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{flag} takes a positive latency per batch such as 12ms, 12 (ms) or 0.5s, got {text!r}")
    return value


def resolve_budget(budget, target_params=None, target_macs=None, target_latency=None):
    """The resource of a run: --budget, or the one an absolute target names (never both differing)."""
    given = [r for r, t in zip(RESOURCES, (target_params, target_macs, target_latency)) if t is not None]
    if len(given) > 1:
        raise UserError(f"give one of {', '.join('--target_' + r for r in given)}, not both")
    implied = given[0] if given else None
    if implied and budget not in (None, implied):
        raise UserError(f"--target_{implied} is a {implied} budget; it cannot go with --budget {budget}")
    return implied or budget or "params"


def budget_points(budget, ratios, default_ratios, *, target_params=None, target_macs=None, target_latency=None):
    """Resolve --budget, --ratios and --target_* (the flags' values, None when not given): (resource,
    ratios, targets), one of the last two None; ratios default to `default_ratios`. The targets'
    resource must agree with `budget` (see resolve_budget)."""
    resource = resolve_budget(budget, target_params, target_macs, target_latency)
    given = {"params": target_params, "macs": target_macs, "latency": target_latency}[resource]
    if given is None:
        return resource, [float(r) for r in (ratios or default_ratios)], None
    if ratios:
        raise UserError(f"give --ratios or --target_{resource}, not both")
    parse = parse_latency if resource == "latency" else parse_count
    return resource, None, [parse(text, f"--target_{resource}") for text in given]


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


def input_size(num_classes):
    """The models choose their strides by the class count: 200 is TinyImageNet (64x64 inputs); every
    other data set here is 32x32 (Fashion-MNIST padded)."""
    return 64 if num_classes == 200 else 32


def resource_counter(model_name, resource, num_classes, convcut=False, cost=None, grouping="traced"):
    """widths -> the built network's exact parameters, its MACs per image, or (latency) `cost`, the
    latency model's prediction (utils.latency_model: the caller builds it for this model and convcut).
    grouping: a torchvision:NAME model's channel groups (model/generic.py)."""
    from utils import params
    if resource == "latency":
        if cost is None:
            raise ValueError("a latency budget needs the latency model: cost=widths -> predicted ms")
        return cost
    if resource == "macs":
        size = input_size(num_classes)
        return lambda widths: params.count_macs(model_name, widths, num_classes, size, convcut=convcut,
                                                grouping=grouping)
    return lambda widths: params.count_params(model_name, widths, num_classes, exact=True, convcut=convcut,
                                              grouping=grouping)


def method_of(method, alpha, pruned_widths):
    """The width rule: `method` ("neuralscale", "morph" or "uniform") when given, checked against the
    inputs it needs; without one, the rule the inputs name (alpha: NeuralScale, pruned widths: morph)."""
    if method is None:
        return "neuralscale" if alpha is not None else "morph" if pruned_widths is not None else "uniform"
    needs = {"neuralscale": alpha, "morph": pruned_widths, "uniform": ()}
    if method not in needs:
        raise ValueError(f"unknown width rule {method!r}")
    if needs[method] is None:
        raise ValueError(f"the {method} width rule needs its {'fit' if method == 'neuralscale' else 'pruned widths'}")
    return method


def select_for_resource(model, template, ratio, target, count, *, method, resource, alpha, beta, pruned_widths,
                        search, small_width_rules, round_to=1, min_width=0):
    """Widths for a MACs or latency budget, for an absolute budget (`target`; else the uniform network's
    count at `ratio`), or whole multiples of `round_to`, all met within TOLERANCES[resource] (see
    meet_budget). Same precedence as select_widths; a flat fit (beta == 0) rescales alpha as a whole.
    During a search (search=True) ResNet18 and MobileNetV2
    then add 10 to widths below 10, after the budget is met, as the authors' search does: the budget
    of a tiny network with all widths >= 10 is often out of reach, and the search prunes it anyway.
    min_width (model/generic.py: 1): the bisected float widths never go under it, so a group the law
    sends below one unit keeps one instead of making the configuration worthless (a zero-unit layer)."""
    absolute = target is not None
    goal = target if absolute else count(uniform(template, ratio))
    options = {"rel_tolerance": TOLERANCES[resource], "round_to": round_to}
    widest = count([MAX_WIDTH] * len(template))
    if goal > widest:  # before a search that would only overflow
        fail(model, ratio, goal, f"the widest network built here, every layer {MAX_WIDTH:,} units, has "
                                 f"{_count(widest)}", resource, absolute)
    if method == "neuralscale" and any(beta):
        # x = ln(tau); widths grow with tau. The upper end grows until it is over the budget, the lower
        # end (tau = 1) shrinks until it is under (a latency in ms is a small tau).
        widths = meet_budget(lambda x: np.maximum(power_law(alpha, beta, np.exp(x)), min_width), 0.0,
                             math.log(max(goal, 2.0)), goal, count, grow=lambda x: x + 10, shrink=lambda x: x - 10,
                             **options)
    elif method == "uniform" and not absolute and round_to == 1:
        widths = uniform(template, ratio)
    else:  # x = one scale factor for every width
        base = np.asarray({"neuralscale": alpha, "morph": pruned_widths}.get(method, template), dtype=np.float64)
        widths = meet_budget(lambda x: np.maximum(base * x, min_width), 0.0, 1.0, goal, count, grow=lambda x: 2 * x,
                             **options)
    if widths is None:
        step = f", widths multiples of {round_to}" if round_to > 1 else ""
        fail(model, ratio, goal, f"none within {TOLERANCES[resource]:.1%}{step}", resource, absolute)
    if search and small_width_rules and method == "neuralscale":
        widths = bump_small(widths)
    return check_widths(widths, model, ratio, goal)


def rounded(floats, round_to=1):
    """Float widths -> whole ones: int() (the authors' truncation), or with round_to N > 1 the multiple
    of N at or below, at least N."""
    if round_to == 1:
        return [int(w) for w in floats]
    return [max(round_to, round_to * int(w // round_to)) for w in floats]


def meet_budget(raw, lo, hi, target, count, *, grow, shrink=None, rel_tolerance=REL_TOLERANCE, steps=100,
                round_to=1):
    """Widths rounded(raw(x), round_to) whose cost count(widths) is within the tolerance of `target`,
    or None. Generic over the cost: parameters, MACs, a predicted latency, anything that grows with
    the widths.

    raw(x) are float widths growing with x. Bisection brackets the budget between the largest x under
    it and the smallest over it (`grow` widens the upper end and `shrink` the lower one, at most 64
    times each), over the rounded configurations. One unit (or one step of round_to) of an early, high-resolution layer can move the
    cost by more than the tolerance on a small network, so when neither side is close enough the
    configuration under the budget is topped up (top_up). Every loop is bounded.
    """
    def at(x):
        with np.errstate(over="ignore", invalid="ignore"):
            floats = np.nan_to_num(np.asarray(raw(x), dtype=np.float64), nan=0.0)  # NaN: 0 * inf, alpha 0
        if np.any(floats > MAX_WIDTH):  # wider than anything built: over any budget that can be met
            return None, math.inf
        widths = rounded(floats, round_to)
        return widths, (count(widths) if min(widths) >= 1 else 0)  # a zero-unit layer is under any budget

    for _ in range(64):
        if at(hi)[1] >= target:
            break
        lo, hi = hi, grow(hi)
    else:
        return None
    for _ in range(64 if shrink else 0):
        if at(lo)[1] <= target:
            break
        lo, hi = shrink(lo), lo
    if at(lo)[1] > target:
        return None
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if at(mid)[1] <= target else (lo, mid)
    (under, low), (over, high) = at(lo), at(hi)
    close = [(abs(c - target), w) for w, c in ((under, low), (over, high))
             if c and abs(c - target) <= rel_tolerance * target]
    if close:
        return min(close, key=lambda pair: pair[0])[1]
    return top_up(under, np.asarray(raw(lo)), target, count, rel_tolerance, round_to)


def top_up(widths, floats, target, count, rel_tolerance, step=1):
    """meet_budget's last resort: add `step` units to layers of `widths` (under the budget) until the
    cost is within the tolerance: largest fractional part of `floats` (in steps) first, then the
    cheapest single steps, then exchanges (one layer up a step, another down); or None."""
    upper, lower = (1 + rel_tolerance) * target, (1 - rel_tolerance) * target

    def moved(up, down=None):
        trial = list(widths)
        trial[up] += step
        if down is not None:
            trial[down] -= step
        return (count(trial) if min(trial) >= 1 else 0), trial

    scaled = floats / step
    for layer in np.argsort(-(scaled - np.floor(scaled)), kind="stable"):
        achieved, trial = moved(layer)
        if achieved <= upper:
            widths = trial
            if achieved >= lower:
                return widths
    for _ in range(10 * len(widths)):  # still short: the cheapest step that fits, until within
        fits = [(c, w) for c, w in (moved(layer) for layer in range(len(widths))) if c <= upper]
        if not fits:
            return exchange(widths, moved, lower, upper)
        achieved, widths = min(fits, key=lambda pair: pair[0])
        if achieved >= lower:
            return widths
    return None


def exchange(widths, moved, lower, upper):
    """top_up's last step, when every single step overshoots: the exchange of a step between two layers
    that lands within [lower, upper], closest to its middle; or None."""
    middle = (lower + upper) / 2
    trials = [moved(up, down) for up in range(len(widths)) for down in range(len(widths)) if up != down]
    within = [(abs(c - middle), w) for c, w in trials if lower <= c <= upper]
    return min(within, key=lambda pair: pair[0])[1] if within else None


def counter(formula_params, exact_params, num_classes, exact, convcut):
    """widths -> parameters: the authors' formula, or (exact=True) the built network's count."""
    if exact:
        return lambda widths: exact_params(widths, num_classes, convcut)
    return lambda widths: formula_params(widths, num_classes)


def select_widths(model, template, ratio, target, count, *, method, alpha, beta, pruned_widths, search, exact,
                  tau_search, small_width_rules):
    """The authors' order of precedence: NeuralScale (alpha, beta), then pruned-uniform (--morph),
    then uniform scaling. `tau_search(alpha, beta)` is the model's own descent on tau.

    small_width_rules (ResNet18, MobileNetV2): a beta == 0 fit falls back to a coarse ratio walk with
    +10 on widths below 10, and the +10 rule also applies during the search (search=True).
    """
    finish = bump_small if search and small_width_rules else (lambda w: w)
    neuralscale = method == "neuralscale"
    if neuralscale and small_width_rules and not any(beta):
        widths = ratio_search(alpha, target, count, **FALLBACK)
        widths = widths and bump_small(widths)
    elif neuralscale and exact and any(beta):
        widths = tau_bisection(alpha, beta, target, count, finish)
    elif neuralscale:
        widths = tau_search(alpha, beta)
        widths = widths and finish(widths)
    elif method == "morph":
        widths = ratio_search(pruned_widths, target, count, **MORPH)
    else:
        widths = uniform(template, ratio)
    if widths is None:
        fail(model, ratio, target, "the search did not converge")
    return check_widths(widths, model, ratio, target)


def width_rule(name, template, formula_params, exact_params, *, tau_search, small_width_rules,
               unrounded_budget, default_classes=10):
    """A model's prepare_filters, configured by its quirks: tau_search(alpha, beta, target, count,
    first_iteration) is its own descent on tau; unrounded_budget: the authors' budget is the formula
    count of the unrounded scaled widths (VGG, ResNet18), else of the truncated uniform ones."""

    def prepare_filters(ratio=None, *, num_classes=default_classes, alpha=None, beta=None, pruned_widths=None,
                        search=False, first_iteration=False, exact=False, convcut=False, budget="params",
                        target=None, method=None, cost=None, round_to=1):
        """The flat width list: the default (ratio None), or by `method` (select_widths): "neuralscale"
        (alpha, beta), "morph" (pruned_widths rescaled) or "uniform"; without a method, the rule the given
        inputs name. first_iteration: the fit is a first iteration's (ResNet18's tolerance depends on it).
        budget="macs" or "latency" (with `cost`, the latency model's widths -> predicted ms), an absolute
        `target` (in that resource, instead of the ratio) or round_to > 1 (every width a multiple of it)
        leave the authors' loops for select_for_resource; "params" with a ratio is the authors'."""
        if ratio is None and target is None:
            return list(template)
        method = method_of(method, alpha, pruned_widths)
        options = {"method": method, "alpha": alpha, "beta": beta, "pruned_widths": pruned_widths, "search": search,
                   "small_width_rules": small_width_rules}
        if budget != "params" or target is not None or round_to != 1:  # beyond the paper
            if round_to != 1 and search:
                raise ValueError("round_to applies to the configurations a fit gives, not to the search")
            count = resource_counter(name, budget, num_classes, convcut, cost)
            return select_for_resource(name, template, ratio, target, count, resource=budget, round_to=round_to,
                                       **options)
        count = counter(formula_params, exact_params, num_classes, exact, convcut)
        if unrounded_budget and not exact:
            target = formula_params([w * ratio for w in template], num_classes)
        else:
            target = count(uniform(template, ratio))
        return select_widths(name, template, ratio, target, count, exact=exact, **options,
                             tau_search=lambda a, b: tau_search(a, b, target, count, first_iteration))

    return prepare_filters


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
