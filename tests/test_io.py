"""Safe reading of the authors' pickles, atomic writes, the original formats."""
import os
import pickle

import numpy as np
import pytest

from utils import io
from utils.base import UserError


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_loads_the_authors_numpy1_pickles(reference):
    fits = io.load_fits(reference / "prune_record" / "vgg_10_eff_c10.pk", num_layers=8)
    assert len(fits) == 15
    alpha, beta = fits[14]
    assert alpha.dtype == np.float64 and alpha[0] == 1.143606765617339
    assert beta[7] == 0.30748094076414545
    curve = io.load_result(reference / "saved_plots" / "vgg" / "vgg_uni_c10_0_25.pk")
    assert float(curve["ratio"]) == 0.25 and len(curve["test_acc"]) == 300
    # Some of their curves pickle the ratio via numpy.core._multiarray_umath.scalar.
    raw = (reference / "saved_plots" / "vgg" / "vgg_uni_c10_2_25.pk").read_bytes()
    assert b"_multiarray_umath" in raw and b"scalar" in raw
    assert float(io.load_result(reference / "saved_plots" / "vgg" / "vgg_uni_c10_2_25.pk")["ratio"]) == 0.25


def test_refuses_a_pickle_that_would_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pk"
    path.write_bytes(pickle.dumps({"param": _RunsCode()}))
    with pytest.raises(UserError, match="evil.pk: not a NeuralScale pickle"):
        io.load_pickle(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("payload", [b"", b"not a pickle at all", pickle.dumps({"param": 1})[:-3]])
def test_corrupt_pickles_are_user_errors(tmp_path, payload):
    path = tmp_path / "bad.pk"
    path.write_bytes(payload)
    with pytest.raises(UserError, match="bad.pk"):
        io.load_pickle(path)


def test_missing_and_malformed_records(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        io.load_fits(tmp_path / "nope.pk")
    io.save_pickle({"something": [1, 2]}, tmp_path / "other.pk")
    with pytest.raises(UserError, match="not a search record"):
        io.load_fits(tmp_path / "other.pk")
    io.save_fits(tmp_path / "short.pk", [(np.ones(8), np.zeros(8))])
    # A VGG record read for ResNet18: the error names the record's model and the flag that reads it.
    with pytest.raises(UserError, match=r"a fit of 8 layers, not the 17 of this --model; it is a vgg record: "
                                        r"pass --model vgg$"):
        io.load_fits(tmp_path / "short.pk", num_layers=17)
    io.save_fits(tmp_path / "odd.pk", [(np.ones(5), np.zeros(5))])
    with pytest.raises(UserError, match=r"a fit of 5 layers, not the 8 of this --model$"):  # no model has 5
        io.load_fits(tmp_path / "odd.pk", num_layers=8)
    io.save_pickle({"ratio": 1.0}, tmp_path / "curve.pk")
    with pytest.raises(UserError, match="not a training-curve pickle"):
        io.load_result(tmp_path / "curve.pk")


def test_fits_round_trip_and_descent_idx(tmp_path):
    fits = [(np.arange(8.0) + k, np.full(8, 0.1 * k)) for k in range(3)]
    io.save_fits(tmp_path / "run.pk", fits)
    loaded = io.load_fits(tmp_path / "run.pk", num_layers=8)
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(loaded, fits))
    assert io.select_fit(loaded, 2, "run.pk")[1][0] == pytest.approx(0.2)
    with pytest.raises(UserError, match="--descent_idx 3 is past the record run.pk"):
        io.select_fit(loaded, 3, "run.pk")
    with open(tmp_path / "run.pk", "rb") as f:  # the authors' format: plain pickle, key "param"
        assert set(pickle.load(f)) == {"param"}


def test_prune_csv_round_trip_and_errors(tmp_path):
    rows = [[10, 9, 8], [9, 9, 7]]
    path = tmp_path / "run_0.csv"
    io.write_prune_csv(path, rows)
    assert path.read_bytes() == b"10,9,8\r\n9,9,7\r\n"  # the csv module default, as in the authors files
    assert io.read_prune_csv(path, num_layers=3).tolist() == rows
    (tmp_path / "empty_0.csv").write_text("")
    with pytest.raises(UserError, match="empty"):
        io.read_prune_csv(tmp_path / "empty_0.csv")
    (tmp_path / "ragged_0.csv").write_text("1,2,3\n4,5\n")
    with pytest.raises(UserError, match="columns"):
        io.read_prune_csv(tmp_path / "ragged_0.csv")
    io.write_prune_csv(tmp_path / "mbv2_0.csv", [[9] * 19])
    with pytest.raises(UserError, match=r"rows of 19 widths, not the 8 of this --model; it is a mobilenetv2 "
                                        r"record: pass --model mobilenetv2$"):
        io.read_prune_csv(tmp_path / "mbv2_0.csv", num_layers=8)
    (tmp_path / "text_0.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="comma-separated integers"):
        io.read_prune_csv(tmp_path / "text_0.csv")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.pk"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with io.atomic_write(target) as f:
            f.write(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.pk"]


def test_written_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        io.save_pickle({"param": []}, tmp_path / "run.pk")
    finally:
        os.umask(old)
    assert (tmp_path / "run.pk").stat().st_mode & 0o777 == 0o644


def test_unwritable_folder_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        io.save_pickle({}, blocker / "sub" / "out.pk")


def test_result_names_and_keys(tmp_path):
    path = io.result_path(tmp_path, "vgg", "vgg_uni_c10_0", 0.25)
    assert path.endswith(os.path.join("vgg", "vgg_uni_c10_0_25.pk"))
    assert io.result_path(tmp_path, "vgg", "x", 1.75).endswith("x_175.pk")
    with pytest.raises(ValueError, match="lacks"):
        io.save_result(path, {"ratio": 0.25})
    curve = {"ratio": 0.25, "train_acc": [1.0], "train_loss": [2.0], "test_acc": [3.0],
             "test_loss": [4.0], "widths": [1, 2]}
    io.save_result(path, curve)
    assert io.load_result(path) == curve
