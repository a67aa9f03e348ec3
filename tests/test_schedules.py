"""The authors' LR schedules (ORIGINAL_BEHAVIOUR 7) at their boundary epochs (utils.train.lr_for_epoch)."""
import pytest

from utils.train import lr_for_epoch


def close(a, b):
    return a == pytest.approx(b, rel=1e-12)


@pytest.mark.parametrize("epoch,lr", [(1, 0.1), (99, 0.1), (100, 0.01), (199, 0.01), (200, 0.001),
                                      (249, 0.001), (250, 1e-4), (300, 1e-4)])
def test_cifar(epoch, lr):
    """ratio_swipe / train_norm: x0.1 at 100, 200 and 250, set at the start of the epoch."""
    assert close(lr_for_epoch("cifar", epoch, 0.1), lr)


@pytest.mark.parametrize("epoch,lr", [(1, 0.1), (49, 0.1), (50, 0.01), (99, 0.01), (100, 0.001),
                                      (149, 0.001), (150, 1e-4)])
def test_tiny(epoch, lr):
    """imagenet_ratio_swipe: x0.1 at every multiple of 50, so the last of 150 epochs runs at 1e-4."""
    assert close(lr_for_epoch("tiny", epoch, 0.1), lr)


@pytest.mark.parametrize("epoch,lr", [(1, 0.1), (9, 0.1), (10, 0.01), (11, 0.01), (19, 0.01),
                                      (20, 0.01 / 1.5), (29, 0.01 / 1.5), (30, 0.01 / 1.5 ** 2),
                                      (300, 0.01 / 1.5 ** 29)])
def test_search_warmup_10(epoch, lr):
    """0.1 before the warm-up epoch W, 0.01 at W, then /1.5 every 10 epochs after W."""
    assert close(lr_for_epoch("search", epoch, 0.1, warmup=10), lr)
    assert close(lr_for_epoch("tiny_search", epoch, 0.1, warmup=10), lr)  # identical for W % 10 == 0


@pytest.mark.parametrize("epoch,lr", [(1, 0.1), (9, 0.1), (10, 0.1 / 1.5), (19, 0.1 / 1.5),
                                      (20, 0.1 / 1.5 ** 2)])
def test_search_warmup_0(epoch, lr):
    """W = 0: the authors' `epoch == W` never fires, so no drop to 0.01; base / 1.5 every 10 epochs."""
    assert close(lr_for_epoch("search", epoch, 0.1, warmup=0), lr)
    assert close(lr_for_epoch("tiny_search", epoch, 0.1, warmup=0), lr)


@pytest.mark.parametrize("epoch,search,tiny", [
    (4, 0.1, 0.1), (5, 0.01, 0.01), (9, 0.01, 0.01),
    (10, 0.01, 0.01),              # Tiny: 10 > W, 10 % 10 == 0, exponent (10 - 5) // 10 = 0
    (14, 0.01, 0.01), (15, 0.01 / 1.5, 0.01),
    (19, 0.01 / 1.5, 0.01), (20, 0.01 / 1.5, 0.01 / 1.5),  # Tiny: exponent 15 // 10 = 1
    (25, 0.01 / 1.5 ** 2, 0.01 / 1.5), (30, 0.01 / 1.5 ** 2, 0.01 / 1.5 ** 2)])
def test_search_warmup_not_multiple_of_10(epoch, search, tiny):
    """W = 5: the CIFAR rule decays at W + 10k; the Tiny rule at multiples of 10, floor exponent."""
    assert close(lr_for_epoch("search", epoch, 0.1, warmup=5), search)
    assert close(lr_for_epoch("tiny_search", epoch, 0.1, warmup=5), tiny)


def test_constant_and_base_lr():
    assert all(lr_for_epoch("constant", e, 0.001) == 0.001 for e in (1, 20, 40))
    assert close(lr_for_epoch("cifar", 150, 0.05), 0.005)  # decays scale --lr


def test_unknown_schedule():
    with pytest.raises(ValueError):
        lr_for_epoch("cosine", 1, 0.1)


@pytest.mark.parametrize("epochs,expected", [
    (6, [0.1, 0.1, 0.01, 0.01, 0.001, 1e-4]),  # 2 of 6 epochs at 0.1, as 99 of 300 in the paper
    (300, None),                                          # scaling to 300 epochs is the paper's schedule
])
def test_cifar_schedule_scaled_to_a_short_run(epochs, expected):
    got = [lr_for_epoch("cifar", e, 0.1, scale_to=epochs) for e in range(1, epochs + 1)]
    if expected is None:
        expected = [lr_for_epoch("cifar", e, 0.1) for e in range(1, epochs + 1)]
    assert got == pytest.approx(expected)


def test_tiny_schedule_scaled_to_a_short_run():
    assert [lr_for_epoch("tiny", e, 0.1, scale_to=15) for e in (5, 6, 10, 11, 15)] == \
        pytest.approx([0.1, 0.01, 0.01, 0.001, 0.001])
    paper = [lr_for_epoch("tiny", e, 0.1) for e in range(1, 151)]
    assert [lr_for_epoch("tiny", e, 0.1, scale_to=150) for e in range(1, 151)] == pytest.approx(paper)
