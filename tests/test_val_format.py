"""val_format.py on a fake tiny-imagenet-200 tree, then both loader paths reading the result."""
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import val_format
from utils import data as D
from utils.base import UserError

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "val_format.py")
WNIDS = ("n02", "n01", "n03")  # ImageFolder indexes them sorted: n01 -> 0, n02 -> 1, n03 -> 2
VAL_NAMES = {"n01": ["val_10.JPEG", "val_9.JPEG", "val_2.JPEG", "val_31.JPEG"],
             "n02": ["val_0.JPEG", "val_11.JPEG", "val_1.JPEG", "val_100.JPEG"],
             "n03": ["val_5.JPEG", "val_3.JPEG", "val_30.JPEG"]}


def save_image(path, seed, mode="RGB", size=64):
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def make_tree(parent, official_test=True):
    """The layout of the extracted tiny-imagenet-200.zip, 3 classes, a handful of images."""
    root = os.path.join(parent, "tiny-imagenet-200")
    seed = 0
    for wnid in WNIDS:
        os.makedirs(os.path.join(root, "train", wnid))
        with open(os.path.join(root, "train", wnid, f"{wnid}_boxes.txt"), "w") as f:  # not an image
            f.write(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
        for i in range(3):
            seed += 1
            ext = ".png" if i == 2 else ".JPEG"
            save_image(os.path.join(root, "train", wnid, "images", f"{wnid}_{i}{ext}"), seed,
                       mode="L" if (wnid, i) == ("n03", 0) else "RGB")  # a grey image, as Tiny has some
    lines = []
    for wnid, names in VAL_NAMES.items():
        for name in names:
            seed += 1
            save_image(os.path.join(root, "val", "images", name), seed)
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63\n")
    random.Random(0).shuffle(lines)
    with open(os.path.join(root, "val", "val_annotations.txt"), "w") as f:
        f.writelines(lines)
    with open(os.path.join(root, "wnids.txt"), "w") as f:
        f.write("\n".join(WNIDS) + "\n")
    if official_test:
        save_image(os.path.join(root, "test", "images", "test_0.JPEG"), 99)
    return root


def run_script(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=60)


def snapshot(root):
    return sorted((os.path.relpath(os.path.join(d, f), root), os.stat(os.path.join(d, f)).st_mtime_ns)
                  for d, _, files in os.walk(root) for f in files)


def listing(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_split_is_deterministic_and_a_second_run_is_a_no_op(tmp_path):
    root = make_tree(str(tmp_path))
    before = snapshot(root)
    refused = run_script("--data_dir", str(tmp_path), "--val_per_class", "2")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "official unlabelled test set" in refused.stderr
    assert snapshot(root) == before  # nothing touched

    os.remove(os.path.join(root, "test", "images", "test_0.JPEG"))
    os.rmdir(os.path.join(root, "test", "images"))
    done = run_script("--data_dir", str(tmp_path), "--val_per_class", "2")
    assert done.returncode == 0, done.stderr
    assert "moved 11 images of 3 classes" in done.stdout
    for wnid, names in VAL_NAMES.items():
        ordered = sorted(names)  # by file name, as strings: val_10 < val_2 < val_31 < val_9
        assert listing(os.path.join(root, "val", wnid, "images")) == ordered[:2]
        assert listing(os.path.join(root, "test", wnid, "images")) == ordered[2:]
    assert not os.path.exists(os.path.join(root, "val", "images"))

    formatted = snapshot(root)
    again = run_script("--data_dir", root)  # the tiny-imagenet-200 folder itself works too
    assert again.returncode == 0 and "already formatted" in again.stdout
    assert snapshot(root) == formatted


def test_authors_default_keeps_25_per_class_in_val(tmp_path):
    root = make_tree(str(tmp_path), official_test=False)
    assert val_format.format_val(root, log=lambda _: None) == 11
    assert listing(os.path.join(root, "test")) == []  # fewer than 25 images per class: all stay in val/
    assert listing(os.path.join(root, "val", "n01", "images")) == sorted(VAL_NAMES["n01"])


def test_an_interrupted_run_resumes(tmp_path):
    root = make_tree(str(tmp_path), official_test=False)
    first = sorted(VAL_NAMES["n02"])[3]  # destined for test/
    os.makedirs(os.path.join(root, "test", "n02", "images"))
    os.replace(os.path.join(root, "val", "images", first), os.path.join(root, "test", "n02", "images", first))
    assert val_format.format_val(root, val_per_class=2, log=lambda _: None) == 10
    assert listing(os.path.join(root, "test", "n02", "images")) == sorted(VAL_NAMES["n02"])[2:]


def test_bad_folders_are_refused_in_one_line(tmp_path):
    result = run_script("--data_dir", str(tmp_path))
    assert result.returncode == 2 and result.stderr.startswith("error: no val/ folder")
    assert result.stderr.count("\n") == 1

    root = make_tree(str(tmp_path), official_test=False)
    annotations = os.path.join(root, "val", "val_annotations.txt")
    os.rename(annotations, annotations + ".bak")
    result = run_script("--data_dir", root)
    assert result.returncode == 2 and "val_annotations.txt not found" in result.stderr
    assert result.stderr.count("\n") == 1
    os.rename(annotations + ".bak", annotations)

    save_image(os.path.join(root, "val", "images", "stray.JPEG"), 7)
    before = snapshot(root)
    with pytest.raises(UserError, match="stray.JPEG is not in val_annotations.txt"):
        val_format.format_val(root)
    assert snapshot(root) == before


def test_help_shows_defaults():
    result = run_script("--help")
    assert result.returncode == 0 and "(default: ./data)" in result.stdout and "(default: 25)" in result.stdout


def test_both_loader_paths_read_the_formatted_tree(tmp_path):
    root = make_tree(str(tmp_path), official_test=False)
    val_format.format_val(root, val_per_class=2, log=lambda _: None)
    cache = os.path.join(root, "cache_train_uint8.pt")
    kw = dict(recipe="train", batch_size=4, device="cpu")
    fast = D.get_loaders("tinyimagenet", str(tmp_path), **kw)
    assert os.path.isfile(cache) and os.path.isfile(os.path.join(root, "cache_test_uint8.pt"))
    stamp = os.stat(cache).st_mtime_ns
    again = D.get_loaders("tinyimagenet", root, **kw)  # data_dir may also be the tiny-imagenet-200 folder
    assert os.stat(cache).st_mtime_ns == stamp  # decoded once, then reused
    assert torch.equal(again[0].images, fast[0].images)
    assert not [f for f in os.listdir(root) if f.startswith(".cache-")]  # no temporary file left

    tv = D.get_loaders("tinyimagenet", str(tmp_path), loader="torchvision", workers=0, **kw)
    assert (fast[0].num_samples, fast[1].num_samples, tv[1].num_samples) == (9, 5, 5)
    # test/ holds the val images after the first 2 of each class: n01 2, n02 2, n03 1
    assert fast[1].labels.tolist() == [0, 0, 1, 1, 2]
    for (xa, ya), (xb, yb) in zip(fast[1].epoch(0), tv[1].epoch(0)):
        assert xa.shape[1:] == (3, 64, 64) and torch.equal(xa, xb) and torch.equal(ya, yb)
    for loader in (fast[0], tv[0]):
        x, y = next(iter(loader.epoch(2)))
        assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(torch.cat([y for _, y in fast[0].epoch(2)]), torch.cat([y for _, y in tv[0].epoch(2)]))

    # a new image changes the file list: the cache is rebuilt
    save_image(os.path.join(root, "train", "n01", "images", "n01_9.JPEG"), 5)
    assert D.get_loaders("tinyimagenet", root, need_test=False, **kw)[0].num_samples == 10
    save_image(os.path.join(root, "train", "n01", "images", "n01_8.JPEG"), 5, size=32)
    with pytest.raises(UserError, match="n01_8.JPEG is 32x32, expected 64x64"):
        D.get_loaders("tinyimagenet", root, need_test=False, **kw)
