"""utils/data.py: the normalisation/augmentation table, the on-disk formats, both loader paths."""
import gzip
import os
import pickle

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from conftest import write_fashion_mnist
from utils import data as D
from utils.base import UserError

CIFAR10_TRAIN_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_TRAIN_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
CIFAR_SEARCH = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
TINY = ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))
RAW = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # leaves x / 255, so tests can read pixels back


# ---------------------------------------------------------------------------------------------------
# Writers for the real on-disk formats.

def write_cifar(data_dir, dataset, n_train=24, n_test=10, bytes_keys=True):
    """A few-image CIFAR folder in torchvision's layout (pickled batch dicts, protocol 2 as the originals).
    Returns (train_images, train_labels, test_images, test_labels), images (N, 3, 32, 32) uint8."""
    rng = np.random.default_rng(1)
    if dataset == "CIFAR10":
        folder, train_files, test_files, key, k = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], \
            ["test_batch"], "labels", 10
        meta = ("batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072})
    else:
        folder, train_files, test_files, key, k = "cifar-100-python", ["train"], ["test"], "fine_labels", 100
        meta = ("meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                         "coarse_label_names": [f"c{i}" for i in range(20)]})
    base = os.path.join(data_dir, folder)
    os.makedirs(base)
    out = []
    for files, n in ((train_files, n_train), (test_files, n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = (np.arange(n) * 7 + 3) % k
        for name, part in zip(files, np.array_split(np.arange(n), len(files))):
            entry = {"batch_label": name, key: [int(v) for v in labels[part]], "data": data[part],
                     "filenames": [f"img{i}.png" for i in part]}
            if dataset == "CIFAR100":
                entry["coarse_labels"] = [int(v) % 20 for v in labels[part]]
            if bytes_keys:
                entry = {k_.encode(): v for k_, v in entry.items()}
            with open(os.path.join(base, name), "wb") as f:
                pickle.dump(entry, f, protocol=2)
        out += [data.reshape(n, 3, 32, 32), labels]
    with open(os.path.join(base, meta[0]), "wb") as f:
        pickle.dump(meta[1], f, protocol=2)
    return out




def all_batches(loader, epoch=0):
    xs, ys = zip(*loader.epoch(epoch))
    return torch.cat(xs), torch.cat(ys)


def reference_normalise(images, mean, std):
    """The authors' test transform, ToTensor + Normalize on PIL images."""
    tf = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    return torch.stack([tf(Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)))) for img in images])


# ---------------------------------------------------------------------------------------------------
# The table.

def test_normalisation_table_has_the_authors_constants():
    assert D.normalization("CIFAR10", "search") == CIFAR_SEARCH
    assert D.normalization("CIFAR100", "search") == CIFAR_SEARCH
    assert D.normalization("CIFAR10", "train") == (CIFAR10_TRAIN_MEAN, CIFAR10_TRAIN_STD)
    assert D.normalization("CIFAR100", "train") == CIFAR_SEARCH  # authors' quirk: CIFAR-10 constants
    for recipe in ("search", "train"):
        assert D.normalization("tinyimagenet", recipe) == TINY
    # same_norm: the search uses the training constants
    assert D.normalization("CIFAR10", "search", same_norm=True) == (CIFAR10_TRAIN_MEAN, CIFAR10_TRAIN_STD)
    assert D.normalization("CIFAR100", "search", same_norm=True) == CIFAR_SEARCH
    assert D.normalization("CIFAR10", "train", same_norm=True) == (CIFAR10_TRAIN_MEAN, CIFAR10_TRAIN_STD)
    assert D.normalization("FashionMNIST", "train") == ((0.2190,) * 3, (0.3318,) * 3)


def test_augmentation_table_and_sizes():
    crop32 = {"crop": 32, "pad": 4, "rotate": 0, "flip": True}
    for name in ("CIFAR10", "CIFAR100", "FashionMNIST", "synthetic"):
        assert D.augmentation(name, "search") == crop32 == D.augmentation(name, "train")
    assert D.augmentation("tinyimagenet", "search") == {"crop": None, "pad": 0, "rotate": 20, "flip": True}
    assert D.augmentation("tinyimagenet", "train") == {"crop": 64, "pad": 4, "rotate": 20, "flip": True}
    assert D.NUM_CLASSES == {"CIFAR10": 10, "CIFAR100": 100, "tinyimagenet": 200, "FashionMNIST": 10,
                             "synthetic": 10}
    assert D.IMAGE_SIZE == {"CIFAR10": 32, "CIFAR100": 32, "tinyimagenet": 64, "FashionMNIST": 32,
                            "synthetic": 32}
    with pytest.raises(UserError, match="unknown dataset"):
        D.normalization("MNIST", "train")
    with pytest.raises(UserError, match="unknown recipe"):
        D.augmentation("CIFAR10", "finetune")


def test_fashion_mnist_constants_match_the_real_data():
    folder = "/usr/share/datasets/fashion-mnist"
    if not os.path.isfile(os.path.join(folder, "train-images-idx3-ubyte.gz")):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    images = D.read_idx(os.path.join(folder, "train-images-idx3-ubyte.gz"), 3)
    counts = np.bincount(images.ravel(), minlength=256).astype(np.float64)
    counts[0] += len(images) * (32 * 32 - 28 * 28)  # the zero padding to 32x32
    values = np.arange(256) / 255.0
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert D.normalization("FashionMNIST", "train") == ((round(mean, 4),) * 3, (round(std, 4),) * 3)


# ---------------------------------------------------------------------------------------------------
# CIFAR on disk.

@pytest.mark.parametrize("dataset", ["CIFAR10", "CIFAR100"])
@pytest.mark.parametrize("loader", ["fast", "torchvision"])
def test_cifar_folder_through_both_paths(tmp_path, dataset, loader):
    train_x, train_y, test_x, test_y = write_cifar(tmp_path, dataset, bytes_keys=dataset == "CIFAR10")
    train, test = D.get_loaders(dataset, str(tmp_path), recipe="train", batch_size=8, test_batch_size=4,
                                device="cpu", loader=loader, workers=0, test_order="fixed")
    assert (train.num_samples, len(train), test.num_samples, len(test)) == (24, 3, 10, 3)
    x, y = next(iter(train.epoch(0)))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    xs, ys = all_batches(test)
    assert [len(b[1]) for b in test.epoch(0)] == [4, 4, 2]  # drop_last False
    assert torch.equal(ys, torch.from_numpy(test_y)) and ys.max() < D.NUM_CLASSES[dataset]
    mean, std = D.normalization(dataset, "train")
    torch.testing.assert_close(xs, reference_normalise(test_x, mean, std), atol=1e-6, rtol=0)
    _, train_labels = all_batches(train, 3)
    assert sorted(train_labels.tolist()) == sorted(train_y.tolist())

    train, test = D.get_loaders(dataset, str(tmp_path), recipe="search", batch_size=8, device="cpu",
                                loader=loader, subset=5, test_subset=3, workers=0, test_order="fixed")
    assert (train.num_samples, test.num_samples) == (5, 3)
    assert sorted(all_batches(train)[1].tolist()) == sorted(train_y[:5].tolist())
    torch.testing.assert_close(all_batches(test)[0], reference_normalise(test_x[:3], *CIFAR_SEARCH),
                               atol=1e-6, rtol=0)


def test_both_paths_agree_on_test_batches_and_train_order(tmp_path):
    write_cifar(tmp_path, "CIFAR100", n_train=40)
    kw = dict(recipe="train", batch_size=16, device="cpu", seed=5)
    fast = D.get_loaders("CIFAR100", str(tmp_path), **kw)
    tv = D.get_loaders("CIFAR100", str(tmp_path), loader="torchvision", workers=0, **kw)
    for a, b in zip(fast[1].epoch(0), tv[1].epoch(0)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # bit for bit
    # the same images in the same order (labels are distinct per image), only the augmentation differs
    for epoch in (0, 1):
        assert torch.equal(all_batches(fast[0], epoch)[1], all_batches(tv[0], epoch)[1])


@pytest.mark.parametrize("dataset", ["CIFAR10", "CIFAR100", "FashionMNIST"])
def test_test_set_is_shuffled_per_epoch_from_the_seed_unless_fixed(tmp_path, monkeypatch, dataset):
    """The authors' shuffled test loaders: a fresh order each epoch, a function of (seed, epoch), the
    same through both paths; --test_order fixed keeps file order."""
    if dataset == "FashionMNIST":
        monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "nowhere"))
        labels = write_fashion_mnist(str(tmp_path), n_test=40)["t10k-labels-idx1-ubyte"]
        images = None
    else:
        _, _, images, labels = write_cifar(tmp_path, dataset, n_test=40)
    kw = dict(recipe="train", batch_size=16, device="cpu", workers=0, need_test=True)

    def test_loader(seed, loader="fast", order="shuffled"):
        return D.get_loaders(dataset, str(tmp_path), loader=loader, seed=seed, test_order=order, **kw)[1]

    fast, tv = test_loader(3), test_loader(3, "torchvision")
    seen = {}
    for epoch in (1, 2):
        xs, ys = all_batches(fast, epoch)
        tx, ty = all_batches(tv, epoch)
        assert torch.equal(xs, tx) and torch.equal(ys, ty)  # both paths, bit for bit
        assert sorted(ys.tolist()) == sorted(labels.tolist())  # every test image once
        seen[epoch] = xs
    assert not torch.equal(seen[1], seen[2])  # a fresh order each epoch
    assert torch.equal(all_batches(test_loader(3), 1)[0], seen[1])  # reproducible from the seed
    assert not torch.equal(all_batches(test_loader(4), 1)[0], seen[1])
    fixed = test_loader(3, order="fixed")
    assert torch.equal(all_batches(fixed, 1)[1], torch.as_tensor(labels))
    assert torch.equal(all_batches(fixed, 1)[0], all_batches(fixed, 2)[0])
    if images is not None:
        mean, std = D.normalization(dataset, "train")
        torch.testing.assert_close(all_batches(fixed, 1)[0], reference_normalise(images, mean, std),
                                   atol=1e-6, rtol=0)


def test_evaluation_order_moves_the_batch_mean_but_not_the_dataset_accuracy(tmp_path):
    """Two evaluations of one network: in the default (shuffled) order the per-batch-mean accuracies
    differ (the 8-image last batch weighs as much as a full one), the dataset-level ones agree, and the
    order is reproducible from the seed; --test_order fixed gives the same numbers both times."""
    from model import build_model
    from utils import train
    write_cifar(tmp_path, "CIFAR10", n_test=40)
    torch.manual_seed(0)
    net = build_model("vgg", [4, 8, 16, 16, 16, 16, 16, 16], 10)

    def two_evaluations(order, seed=0):
        test = D.get_loaders("CIFAR10", str(tmp_path), recipe="train", batch_size=16, device="cpu", seed=seed,
                             test_order=order)[1]
        return [train.evaluate(net, test, torch.device("cpu"), epoch=e) for e in (1, 2)]

    a, b = two_evaluations("shuffled")
    assert a["acc"] != b["acc"] and a["acc_dataset"] == b["acc_dataset"]
    assert two_evaluations("shuffled") == [a, b]
    fixed = two_evaluations("fixed")
    assert fixed[0] == fixed[1] and fixed[0]["acc_dataset"] == a["acc_dataset"]


def test_missing_cifar_never_downloads_and_writes_nothing(tmp_path):
    data_dir = tmp_path / "data"
    with pytest.raises(UserError) as err:
        D.get_loaders("CIFAR10", str(data_dir), recipe="train", batch_size=8, device="cpu", download="never")
    message = str(err.value)
    assert os.path.join(str(data_dir), "cifar-10-batches-py") in message and "\n" not in message
    assert "cifar-10-python.tar.gz" in message
    assert not data_dir.exists()
    data_dir.mkdir()
    with pytest.raises(UserError, match="cifar-100-python"):
        D.get_loaders("CIFAR100", str(data_dir), recipe="train", batch_size=8, device="cpu", download="never")
    assert list(data_dir.iterdir()) == []


def test_failed_download_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    def offline(dataset, root):
        open(os.path.join(root, "partial.tar.gz"), "wb").close()
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
    monkeypatch.setattr(D, "_torchvision_download", offline)
    data_dir = tmp_path / "data"
    with pytest.raises(UserError) as err:
        D.get_loaders("CIFAR10", str(data_dir), recipe="train", batch_size=8, device="cpu")
    message = str(err.value)
    assert "download failed: <urlopen error" in message and "put the extracted cifar-10-python.tar.gz" in message
    assert "\n" not in message and not data_dir.exists()
    data_dir.mkdir()
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "nowhere"))
        D.get_loaders("FashionMNIST", str(data_dir), recipe="train", batch_size=8, device="cpu")
    assert list(data_dir.iterdir()) == []


def test_download_installs_through_a_temporary_folder(tmp_path, monkeypatch):
    calls = []

    def fake_download(dataset, root):
        calls.append(dataset)
        write_cifar(root, dataset, n_train=5, n_test=5)
    monkeypatch.setattr(D, "_torchvision_download", fake_download)
    train, test = D.get_loaders("CIFAR10", str(tmp_path), recipe="train", batch_size=8, device="cpu")
    assert (train.num_samples, test.num_samples, calls) == (5, 5, ["CIFAR10"])
    assert sorted(os.listdir(tmp_path)) == ["cifar-10-batches-py"]  # no temporary folder left


def test_corrupt_or_incomplete_cifar_is_refused(tmp_path):
    write_cifar(tmp_path, "CIFAR10")
    base = tmp_path / "cifar-10-batches-py"
    (base / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="data_batch_2 is corrupt"):
        D.get_loaders("CIFAR10", str(tmp_path), recipe="train", batch_size=8, device="cpu")

    class Evil:  # a pickle that would run a command: refused by the restricted unpickler
        def __reduce__(self):
            return (os.system, ("touch pwned",))
    (base / "data_batch_2").write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}, protocol=2))
    with pytest.raises(UserError, match="refusing posix.system"):
        D.get_loaders("CIFAR10", str(tmp_path), recipe="train", batch_size=8, device="cpu")
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")

    (base / "data_batch_2").unlink()
    with pytest.raises(UserError, match="incomplete.*data_batch_2 missing"):
        D.get_loaders("CIFAR10", str(tmp_path), recipe="train", batch_size=8, device="cpu")


# ---------------------------------------------------------------------------------------------------
# FashionMNIST.

@pytest.mark.parametrize("loader", ["fast", "torchvision"])
def test_fashion_mnist_from_idx_files(tmp_path, monkeypatch, loader):
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "nowhere"))
    arrays = write_fashion_mnist(str(tmp_path / "FashionMNIST" / "raw"))
    train, test = D.get_loaders("FashionMNIST", str(tmp_path), recipe="train", batch_size=6, device="cpu",
                                loader=loader, workers=0, test_order="fixed")
    assert (train.num_samples, test.num_samples) == (20, 9)
    x, y = all_batches(test)
    assert x.shape == (9, 3, 32, 32) and torch.equal(y, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]))
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # three identical channels
    mean, std = D.normalization("FashionMNIST", "train")
    pixels = x[:, 0] * std[0] + mean[0]  # back to 0..1
    assert torch.allclose(pixels[:, 2:30, 2:30] * 255, torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float(),
                          atol=1e-3)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.allclose(pixels[:, border], torch.zeros(1), atol=1e-6)  # zero padding


def test_fashion_mnist_from_the_system_folder(tmp_path, monkeypatch):
    system = tmp_path / "system"
    arrays = write_fashion_mnist(str(system), gz=False)
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIR", str(system))
    empty = tmp_path / "data"
    empty.mkdir()
    train, test = D.get_loaders("FashionMNIST", str(empty), recipe="search", batch_size=64, device="cpu",
                                download="never", test_order="fixed")
    assert torch.equal(all_batches(test)[1], torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]))
    assert train.num_samples == 20 and list(empty.iterdir()) == []


def test_real_fashion_mnist_is_the_same_through_both_paths(tmp_path):
    if D._find_fashion_mnist(str(tmp_path)) is None:
        pytest.skip(f"real Fashion-MNIST not installed at {D.FASHION_MNIST_SYSTEM_DIR} "
                    "(apt-get install dataset-fashion-mnist)")
    kw = dict(recipe="train", batch_size=128, device="cpu", subset=512, test_subset=1000, seed=3)
    fast = D.get_loaders("FashionMNIST", str(tmp_path), **kw)
    tv = D.get_loaders("FashionMNIST", str(tmp_path), loader="torchvision", workers=0, **kw)
    for (xa, ya), (xb, yb) in zip(fast[1].epoch(0), tv[1].epoch(0)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(all_batches(fast[0], 1)[1], all_batches(tv[0], 1)[1])
    assert list(tmp_path.iterdir()) == []


def test_corrupt_idx_files_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "nowhere"))
    write_fashion_mnist(str(tmp_path))  # directly in data_dir
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + raw[4:]))  # wrong magic number
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz is corrupt: magic"):
        D.get_loaders("FashionMNIST", str(tmp_path), recipe="train", batch_size=8, device="cpu")
    path.write_bytes(gzip.compress(raw[:-5]))  # truncated data
    with pytest.raises(UserError, match="corrupt: .*data bytes"):
        D.get_loaders("FashionMNIST", str(tmp_path), recipe="train", batch_size=8, device="cpu")
    path.write_bytes(gzip.compress(raw)[:100])  # truncated gzip stream
    with pytest.raises(UserError, match="corrupt"):
        D.get_loaders("FashionMNIST", str(tmp_path), recipe="train", batch_size=8, device="cpu")


# ---------------------------------------------------------------------------------------------------
# The fast path's augmentation, checked against torchvision's distributions.

def fast_loader(images, aug, n_batch=256, seed=0):
    labels = torch.zeros(len(images), dtype=torch.int64)
    return D.FastLoader(images, labels, batch_size=n_batch, device="cpu", mean=RAW[0], std=RAW[1], aug=aug,
                        seed=seed)


def test_fast_crop_offsets_cover_minus4_to_4_uniformly():
    image = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    image[0, :, 16, 16] = 255
    n = 2000
    loader = fast_loader(image.expand(n, -1, -1, -1), {"crop": 32, "pad": 4, "rotate": 0, "flip": False})
    x, _ = all_batches(loader)
    flat = x[:, 0].reshape(n, -1)
    assert torch.equal(flat.max(1).values, torch.ones(n))  # the pixel never leaves the crop
    rows, cols = flat.argmax(1) // 32, flat.argmax(1) % 32
    dy, dx = 16 - rows, 16 - cols  # RandomCrop(32, padding=4): offsets -4..4
    counts = torch.zeros(9, 9)
    counts.index_put_((dy + 4, dx + 4), torch.ones(n), accumulate=True)
    assert dy.min() == -4 and dy.max() == 4 and dx.min() == -4 and dx.max() == 4
    assert counts.min() >= 8 and counts.max() <= 50  # expected 24.7 per cell


def test_fast_flip_is_half_the_time():
    image = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    image[..., :16] = 200
    n = 4000
    x, _ = all_batches(fast_loader(image.expand(n, -1, -1, -1), {"crop": None, "pad": 0, "rotate": 0,
                                                                  "flip": True}))
    flipped = x[:, 0, 0, 31] > 0
    assert torch.equal(x[flipped], x[flipped][:1].expand(int(flipped.sum()), -1, -1, -1))
    assert abs(int(flipped.sum()) - n / 2) < 5 * (n / 4) ** 0.5  # binomial, 5 sigma


def test_fast_rotation_is_torchvisions_rotate():
    angles = D.draw_augmentation({"crop": None, "pad": 0, "rotate": 20, "flip": False}, 5000,
                                 torch.Generator().manual_seed(0))["angle"]
    assert angles.min() >= -20 and angles.max() <= 20 and angles.min() < -19.9 and angles.max() > 19.9
    assert abs(float(angles.mean())) < 0.5
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (12, 3, 64, 64), generator=g).float()
    rotated = D.rotate_batch(images, angles[:12])
    expected = torch.stack([TF.rotate(img, float(a)) for img, a in zip(images, angles[:12])])  # nearest, fill 0
    assert torch.equal(rotated, expected)
    # nearest neighbour and zero fill: only source values or 0; corners leave the image at 20 degrees
    ones = D.rotate_batch(torch.full((2, 1, 64, 64), 255.0), torch.tensor([20.0, -20.0]))
    assert set(ones.unique().tolist()) == {0.0, 255.0} and (ones[:, 0, 0, 0] == 0).all()
    assert (ones[:, 0, 32, 32] == 255).all()


def test_fast_tiny_pipeline_crop_rotate_flip_on_uint8_before_normalising():
    image = torch.full((1, 3, 64, 64), 100, dtype=torch.uint8)
    loader = D.FastLoader(image.expand(64, -1, -1, -1), torch.zeros(64, dtype=torch.int64), batch_size=64,
                          device="cpu", mean=TINY[0], std=TINY[1], aug=D.augmentation("tinyimagenet", "train"))
    x, _ = next(iter(loader.epoch(0)))
    mean, std = torch.tensor(TINY[0]).view(3, 1, 1), torch.tensor(TINY[1]).view(3, 1, 1)
    pixels = torch.round((x * std + mean) * 255)
    assert set(pixels.unique().tolist()) == {0.0, 100.0}  # padding and rotation fill are pixel value 0
    assert (pixels[:, :, 32, 32] == 100).all()


def test_fast_normalisation_is_totensor_then_normalize_exactly():
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8, generator=g)
    for mean, std in (CIFAR_SEARCH, (CIFAR10_TRAIN_MEAN, CIFAR10_TRAIN_STD)):
        loader = D.FastLoader(images, torch.zeros(10, dtype=torch.int64), batch_size=4, device="cpu",
                              mean=mean, std=std)
        torch.testing.assert_close(all_batches(loader)[0], reference_normalise(images.numpy(), mean, std),
                                   atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------
# Determinism (resume reproduces batches) and the synthetic set.

@pytest.mark.parametrize("loader", ["fast", "torchvision"])
def test_batches_are_a_function_of_seed_and_epoch(loader):
    def make(seed, workers=0):
        return D.get_loaders("synthetic", "unused", recipe="train", batch_size=32, device="cpu", loader=loader,
                             subset=96, seed=seed, need_test=False, workers=workers)[0]
    a, b = make(0), make(0)
    e3 = all_batches(a, 3)
    assert all(torch.equal(u, v) for u, v in zip(e3, all_batches(b, 3)))  # a fresh loader: same batches
    assert all(torch.equal(u, v) for u, v in zip(e3, all_batches(a, 3)))
    e4 = all_batches(a, 4)
    assert not torch.equal(e3[0], e4[0]) and e3[1].tolist() != e4[1].tolist()
    assert not torch.equal(e3[0], all_batches(make(1), 3)[0])
    if loader == "torchvision":  # the augmentation does not depend on the number of workers
        assert torch.equal(e3[0], all_batches(make(0, workers=1), 3)[0])


def test_different_epochs_visit_images_in_different_orders(tmp_path):
    write_cifar(tmp_path, "CIFAR100", n_train=60)
    train, _ = D.get_loaders("CIFAR100", str(tmp_path), recipe="train", batch_size=60, device="cpu",
                             need_test=False)
    orders = [all_batches(train, e)[1].tolist() for e in (0, 1, 0)]
    assert orders[0] == orders[2] and orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])


def test_synthetic_is_fixed_learnable_and_cifar_shaped():
    train, test = D.get_loaders("synthetic", "unused", recipe="train", batch_size=500, device="cpu", seed=7)
    assert (train.num_samples, test.num_samples) == (50_000, 10_000)
    other = D.get_loaders("synthetic", "unused", recipe="train", batch_size=500, device="cpu", seed=8)[1]
    assert torch.equal(test.images, other.images)  # independent of --seed
    assert test.images.shape == (10_000, 3, 32, 32) and test.images.dtype == torch.uint8
    assert set(test.labels.unique().tolist()) == set(range(10))
    # learnable: the nearest class mean (from 5,000 training images) classifies the test set
    x, y = train.images[:5000].float().flatten(1), train.labels[:5000]
    means = torch.stack([x[y == c].mean(0) for c in range(10)])
    predicted = torch.cdist(test.images[:2000].float().flatten(1), means).argmin(1)
    assert (predicted == test.labels[:2000]).float().mean() > 0.9


# ---------------------------------------------------------------------------------------------------
# Tiny: where it is looked for (val_format.py's tests run the whole chain).

def test_tiny_missing_or_unformatted_is_explained(tmp_path):
    with pytest.raises(UserError, match=r"tiny-imagenet-200/train .*val_format.py"):
        D.get_loaders("tinyimagenet", str(tmp_path), recipe="train", batch_size=8, device="cpu")
    root = tmp_path / "tiny-imagenet-200"
    (root / "train").mkdir(parents=True)
    (root / "test" / "images").mkdir(parents=True)
    with pytest.raises(UserError, match="official unlabelled test set.*val_format.py"):
        D.get_loaders("tinyimagenet", str(tmp_path), recipe="train", batch_size=8, device="cpu")


def test_bad_arguments_are_user_errors():
    kw = dict(recipe="train", batch_size=8, device="cpu")
    with pytest.raises(UserError, match="unknown loader"):
        D.get_loaders("synthetic", "x", loader="dali", **kw)
    with pytest.raises(UserError, match="download"):
        D.get_loaders("synthetic", "x", download="always", **kw)
    with pytest.raises(UserError, match="subset"):
        D.get_loaders("synthetic", "x", subset=0, **kw)
