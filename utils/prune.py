"""Taylor-FO pruning on the gates, the authors' engine (adapted by them from NVlabs Taylor_pruning).

The authors' rules, step for step:
* after every optimizer step of a pruning epoch, each unit's criterion (gate * dL/dgate)^2 is added to
  a window accumulator (a live gate is 1, so this is the squared gate gradient; a pruned gate is 0);
* the step counter starts at -1 and never resets at epoch boundaries; a prune happens when
  step % prune_every == 0 and step != 0, so the first window averages prune_every + 1 minibatches and
  later ones prune_every;
* at a prune the window mean is thresholded globally at the (pruned + prune_per_step)-th smallest
  value (capped at max_prunable = int(N * prune_fraction)); per layer, units at or under it are zeroed
  in ascending criterion order, already-pruned units (criterion 0) included;
* the last-unit rule: visiting a candidate of a layer that has exactly one active unit ends the whole
  search at once (changes made so far in that step are kept but not recorded);
* a row of surviving units per layer is recorded after each successful step, but only once every layer
  has lost a unit; the first call after the maximum number of steps reports "done" (so a search whose
  last step falls on an epoch's last minibatch learns it only then: `complete` says so at once).

Everything stays on the model's device: an ordinary minibatch costs one fused add and no host
synchronisation; only prune steps read values back.
"""
import math

import torch

from utils.base import UserError


class TaylorFOPruner:
    """Drive with `step()` after every optimizer step (the gates' .grad must hold that minibatch's
    gradient). `step()` returns None (nothing happened), "pruned" (a successful prune step) or "done"
    (the search is over: the maximum number of steps was reached, or the last-unit rule fired).

    `rows` holds the recorded width rows; `widths()` the current active units per layer.
    """

    def __init__(self, gates, *, prune_fraction=0.95, prune_every=50, prune_per_step=10, log=None):
        if not 0 < prune_fraction < 1:
            raise ValueError(f"prune_fraction must be in (0, 1), got {prune_fraction}")
        if prune_every < 1 or prune_per_step < 1:
            raise ValueError("prune_every and prune_per_step must be at least 1")
        self.params = [g.weight for g in gates]
        self.sizes = [p.numel() for p in self.params]
        self.total = sum(self.sizes)
        self.prune_every, self.prune_per_step = prune_every, prune_per_step
        self.max_prunable = int(self.total * prune_fraction)
        self.max_steps = math.ceil(self.max_prunable / prune_per_step)
        self.log = log
        device = self.params[0].device
        self.mask = torch.cat([(p.detach() != 0) for p in self.params]).float()  # (N,) 1 = live
        self.accumulator = torch.zeros(self.total, device=device)  # (N,) sum over the window
        self.window = 0  # minibatches accumulated since the last prune
        self.iter_step = -1
        self.steps_done = 0  # prune steps attempted (the authors count before knowing the outcome)
        self.pruned = 0  # N - active units, as of the last prune
        self.begin_prune = [False] * len(self.params)
        self.rows = []
        self.finished = False
        self.last_unit_rule = False  # the search ended because a layer was down to one unit
        self.last_criterion = None  # (N,) CPU tensor: the window mean used by the last prune step

    def widths(self):
        """Active units per layer, in gate order (the authors' int(L1 norm) of each gate)."""
        return [int(torch.count_nonzero(p.detach())) for p in self.params]

    def criterion(self):
        """The current window's mean criterion per unit (N,), pruned units 0."""
        return self.accumulator / max(self.window, 1) * self.mask

    def _add_criteria(self):
        parts = [(p.detach() * p.grad) if p.grad is not None else torch.zeros_like(p) for p in self.params]
        self.accumulator.add_(torch.cat(parts).square_())
        self.window += 1

    @property
    def complete(self):
        """The search is over: ended by the last-unit rule, or every allowed step has been taken (which
        step() reports as "done" only at the next minibatch, as the authors' loop learnt it)."""
        return self.finished or self.steps_done >= self.max_steps

    def finish(self):
        """Mark a complete search finished (see complete); returns "done"."""
        if not self.complete:
            raise ValueError(f"the search is not over: {self.steps_done} of {self.max_steps} steps taken")
        return self._finish()

    def _finish(self):
        self.finished = True
        if not self.rows:  # the authors force-record the widths when nothing was recorded
            self.rows.append(self.widths())
        return "done"

    def step(self):
        if self.finished:
            return "done"
        self.iter_step += 1
        if self.steps_done >= self.max_steps:
            return self._finish()
        with torch.no_grad():
            self._add_criteria()
            if self.iter_step % self.prune_every != 0 or self.iter_step == 0:
                return None
            ok = self._prune()
        if not ok:
            self.last_unit_rule = True
            return self._finish()
        if all(self.begin_prune):
            self.rows.append(self.widths())
        return "pruned"

    def _prune(self):
        """One prune step; False when the last-unit rule ended the search."""
        criterion = self.criterion()
        self.accumulator.zero_()
        self.window = 0
        k = min(self.total - 1, self.pruned + self.prune_per_step - 1, self.max_prunable - 1)
        threshold = torch.sort(criterion).values[k]
        self.steps_done += 1
        self.last_criterion = criterion.cpu()
        live = self.mask.bool()
        low, high = criterion[live].min().item(), criterion[live].max().item()
        if not (math.isfinite(low) and math.isfinite(high)):  # a NaN threshold would prune nothing
            raise UserError(f"the Taylor criterion became {high if math.isfinite(low) else low} at prune "
                            f"step {self.steps_done} (the gradients diverged); lower --lr")

        ok, start = True, 0
        for layer, (param, size) in enumerate(zip(self.params, self.sizes)):
            crit, mask = criterion[start:start + size], self.mask[start:start + size]
            # Stable ascending sort: ties are visited in unit index order.
            order = torch.sort(crit, stable=True).indices
            candidates = order[crit[order] <= threshold]  # already-pruned units (criterion 0) included
            # Walk the candidates in order: the active count before candidate j is the layer's count
            # minus the live units among candidates 0..j-1; the walk stops at the first j where it is 1.
            live_hits = mask[candidates]
            before = mask.sum() - (torch.cumsum(live_hits, 0) - live_hits)
            stop = torch.nonzero(before == 1)
            cut = int(stop[0]) if len(stop) else len(candidates)
            if cut:
                chosen = candidates[:cut]
                param[chosen] = 0
                mask[chosen] = 0  # a view into self.mask
                self.begin_prune[layer] = True  # re-zeroing a pruned unit counts, as in the authors' code
            if cut < len(candidates):
                ok = False
                break
            start += size
        active = int(self.mask.sum().item())
        self.pruned = self.total - active
        if self.log:
            ending = "" if ok else " (last-unit rule: a layer is down to one unit; search ends)"
            self.log(f"prune step {self.steps_done}/{self.max_steps}: {active} of {self.total} units left, "
                     f"criterion min {low:.3e} max {high:.3e}{ending}")
        return ok
