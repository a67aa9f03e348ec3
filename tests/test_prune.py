"""The Taylor-FO pruner: criterion, schedule, termination and recording (ORIGINAL_BEHAVIOUR section 5).

Most tests drive the pruner directly with hand-set gate gradients (no network), so the authors'
full-length VGG11 schedule (13,102 calls) runs in about a second.
"""
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

from model import build_model, gates_of
from utils.prune import TaylorFOPruner

VGG_WIDTHS = [64, 128, 256, 256, 512, 512, 512, 512]  # 2,752 gates


def fake_gates(grads):
    """Gate stand-ins (a .weight of ones) whose .grad is fixed: every minibatch sees the same gradient."""
    gates = []
    for grad in grads:
        weight = torch.nn.Parameter(torch.ones(len(grad)))
        weight.grad = torch.as_tensor(grad, dtype=torch.float32)
        gates.append(SimpleNamespace(weight=weight))
    return gates


def interleaved_grads(sizes):
    """Distinct gradients 1..N, spread so every layer loses the same share of units: unit i of a layer
    of n ranks by (i + 0.5) / n. Squares stay exact in float32 (N^2 < 2^24)."""
    keys = sorted(((i + 0.5) / n, layer, i) for layer, n in enumerate(sizes) for i in range(n))
    grads = [[0.0] * n for n in sizes]
    for rank, (_, layer, i) in enumerate(keys):
        grads[layer][i] = float(rank + 1)
    return grads


def drive(pruner, limit=100_000):
    """Call step() until "done"; returns the 1-based calls at which something happened."""
    events = {}
    for call in range(1, limit + 1):
        result = pruner.step()
        if result:
            events[call] = result
        if result == "done":
            return events
    raise AssertionError("the pruner never finished")


def test_criterion_is_the_squared_gate_gradient_averaged_over_the_window():
    torch.manual_seed(0)
    model = build_model("vgg", [4, 6, 8, 8, 8, 8, 8, 8], 10, gates=True)
    gates = gates_of(model)
    pruner = TaylorFOPruner(gates, prune_every=3, prune_per_step=3)
    squares = []
    for call in range(1, 5):  # the first window is prune_every + 1 = 4 minibatches
        x, y = torch.randn(5, 3, 32, 32), torch.randint(0, 10, (5,))
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, [g.weight for g in gates], retain_graph=True)
        squares.append(torch.cat(grads) ** 2)
        loss.backward()
        assert pruner.step() == ("pruned" if call == 4 else None)
        if call == 2:  # mid-window: the running mean
            torch.testing.assert_close(pruner.criterion(), torch.stack(squares).mean(0), rtol=1e-6, atol=1e-12)
    expected = torch.stack(squares).mean(0)
    torch.testing.assert_close(pruner.last_criterion, expected, rtol=1e-6, atol=1e-12)
    # The 3 lowest criteria were zeroed (gate weight 0) and nothing else.
    weights = torch.cat([g.weight.detach() for g in gates])
    assert set(torch.nonzero(weights == 0).flatten().tolist()) == set(expected.argsort()[:3].tolist())
    assert pruner.widths() == [w - int((weights[s:s + w] == 0).sum()) for s, w in
                               zip([0, 4, 10, 18, 26, 34, 42, 50], [4, 6, 8, 8, 8, 8, 8, 8])]
    # A pruned gate (weight 0) contributes 0 to the next window whatever its gradient.
    x, y = torch.randn(5, 3, 32, 32), torch.randint(0, 10, (5,))
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    pruner.step()
    assert torch.all(pruner.criterion()[weights == 0] == 0)


@pytest.mark.parametrize("fraction,steps,survivors", [(0.95, 262, 138), (0.5, 138, 1376)])
def test_vgg11_schedule_and_termination(fraction, steps, survivors):
    pruner = TaylorFOPruner(fake_gates(interleaved_grads(VGG_WIDTHS)), prune_fraction=fraction)
    assert (pruner.total, pruner.max_prunable, pruner.max_steps) == (2752, 2752 - survivors, steps)
    lines = []
    pruner.log = lines.append
    events = drive(pruner)
    prunes = [call for call, what in events.items() if what == "pruned"]
    # First prune after 51 minibatches (step indices 0..50), then every 50; the counter never resets.
    assert prunes == [51 + 50 * i for i in range(steps)]
    assert list(events.values()).count("done") == 1 and max(events) == 50 * steps + 2  # 13,102 at 95 %
    assert sum(pruner.widths()) == survivors
    assert min(pruner.widths()) >= 1 and pruner.rows[-1] == pruner.widths()
    assert len(lines) == steps and f"{survivors} of 2752 units left" in lines[-1]
    # Exactly 10 units per step (distinct criteria), the last step takes the remainder up to the cap.
    totals = [2752] + [sum(r) for r in pruner.rows]
    recorded = totals[1:]
    assert all(a - b == 10 for a, b in zip(recorded, recorded[1:-1]))
    assert 1 <= recorded[-2] - recorded[-1] <= 10
    # Rows start at the first step after which every layer has lost a unit: with fixed criteria the
    # threshold of step s is the (10 s)-th smallest, so layer l is first touched at step
    # ceil((rank of its smallest criterion + 1) / 10).
    flat = sorted((g, layer) for layer, grads in enumerate(interleaved_grads(VGG_WIDTHS)) for g in grads)
    first_rank = {}
    for rank, (_, layer) in enumerate(flat):
        first_rank.setdefault(layer, rank)
    first_recorded = max(-(-(r + 1) // 10) for r in first_rank.values())
    assert first_recorded > 1  # the test means something: early steps skip some layers
    assert len(pruner.rows) == steps - first_recorded + 1
    assert sum(pruner.rows[0]) == 2752 - 10 * first_recorded
    # Further calls stay "done" and record nothing more.
    assert pruner.step() == "done" and len(pruner.rows) == steps - first_recorded + 1


def test_nothing_is_recorded_before_every_layer_has_lost_a_unit():
    # Layers 0 and 1 share the smallest criteria (1..60, interleaved); layer 2's smallest is 40.5, so
    # it loses its first unit at step 9 (threshold = the (5 s)-th smallest) and rows start there.
    grads = [[2.0 * i + 1 for i in range(30)], [2.0 * i + 2 for i in range(30)],
             [40.5] + [1000.0 + i for i in range(29)]]
    pruner = TaylorFOPruner(fake_gates(grads), prune_every=2, prune_per_step=5, prune_fraction=0.95)
    recorded_at = []
    for _ in range(200):
        result = pruner.step()
        if result == "pruned":
            recorded_at.append((pruner.widths(), len(pruner.rows)))
        if result == "done":
            break
    assert [n_rows for _, n_rows in recorded_at[:9]] == [0] * 8 + [1]
    for widths, n_rows in recorded_at:
        assert (n_rows > 0) == all(w < 30 for w in widths)
    assert len(recorded_at) > 9 and recorded_at[-1][1] == len(pruner.rows) == len(recorded_at) - 8


def test_last_unit_rule_stops_early_and_leaves_the_layer_at_one_unit():
    # Layer 0 has the smallest criteria; at 95 % of 48 units the cap (45) would take it to zero.
    grads = [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [100.0 + i for i in range(40)]]
    lines = []
    pruner = TaylorFOPruner(fake_gates(grads), prune_every=1, prune_per_step=3, log=lines.append)
    events = drive(pruner)
    # Step 1 (call 2) prunes units 0-2 of layer 0 (rows: layer 1 untouched), step 2 units 3-5, step 3
    # reaches unit 7 with one unit left in its layer: the search ends early, after unit 6 went.
    assert events == {2: "pruned", 3: "pruned", 4: "done"}
    assert pruner.steps_done == 3 < pruner.max_steps
    assert pruner.widths() == [1, 40]
    assert [g for g in pruner.params[0].detach().tolist()] == [0.0] * 7 + [1.0]
    assert pruner.rows == [[1, 40]]  # nothing recorded (layer 1 never lost a unit): forced row
    assert "last-unit rule" in lines[-1]
    assert pruner.last_unit_rule and pruner.complete


def test_complete_as_soon_as_the_last_step_is_taken():
    """The authors' pruner says "done" one call after its last step; `complete` says it at once, and
    finish() then ends the search with the same rows (the descent uses it when that call would fall in
    the next epoch)."""
    pruner = TaylorFOPruner(fake_gates(interleaved_grads(VGG_WIDTHS)), prune_every=1, prune_per_step=500)
    with pytest.raises(ValueError, match="not over"):
        pruner.finish()
    results = []
    while not pruner.complete:
        results.append(pruner.step())
    assert pruner.steps_done == pruner.max_steps == 6 and results[-1] == "pruned" and not pruner.finished
    rows = [list(r) for r in pruner.rows]
    assert pruner.finish() == "done" and pruner.finished and pruner.rows == rows
    assert not pruner.last_unit_rule and pruner.step() == "done"


def test_ties_go_in_index_order_and_may_prune_more_than_the_step():
    # Equal criteria in layer 0: all are at the threshold, so the walk zeroes units 0, 1, 2 in index
    # order and stops at unit 3, the layer's last unit.
    pruner = TaylorFOPruner(fake_gates([[1.0] * 4, [5.0, 6.0, 7.0, 8.0]]), prune_every=1, prune_per_step=1)
    assert drive(pruner) == {2: "done"}
    assert pruner.params[0].detach().tolist() == [0.0, 0.0, 0.0, 1.0]
    assert pruner.rows == [[1, 4]]


def test_ordinary_minibatches_do_not_synchronise(monkeypatch):
    pruner = TaylorFOPruner(fake_gates(interleaved_grads(VGG_WIDTHS)), prune_every=5)

    def refuse(*_args, **_kwargs):
        raise AssertionError("host synchronisation on an ordinary minibatch")

    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"):
            patch.setattr(torch.Tensor, name, refuse)
        for _ in range(5):
            assert pruner.step() is None
    assert pruner.step() == "pruned"  # the sixth call prunes (and may read values back)
