"""Data sets, their normalisation and augmentation (one table), and the two loader paths.

Both paths share one interface: `len(loader)` batches, `loader.num_samples` images, and
`loader.epoch(e)`, an iterator of `(x, y)` with x float32 normalised on the device (N, C, H, W) and y
int64 on the device.
* "torchvision": the authors' pipeline (PIL transforms in a DataLoader), kept as the reference.
* "fast" (default): the data set sits on the device as uint8 and whole batches are augmented there with
  torchvision's distributions (RandomCrop with zero padding, RandomRotation nearest/zero fill, HFlip),
  in the style of cifar10-airbench.
Every random draw is a pure function of (seed, epoch) through local generators, so a resumed run sees
the same batches. Both paths visit the images in the same order (DataLoader's RandomSampler sequence).

Test order (authors' quirk, kept): their CIFAR test loaders shuffle. Accuracy is the mean of per-batch
accuracies and 10,000 / 128 leaves a 16-image last batch that weighs as much as a full one, so the
order moves every epoch's test accuracy (and the best-epoch maximum picks that up). By default a test
loader of CIFAR10/100, FashionMNIST and synthetic data visits the test set in a fresh order each epoch,
drawn from (seed, epoch); TinyImageNet's is unshuffled, as theirs. test_order="fixed" is the opt-in.
"""
import contextlib
import gzip
import math
import os
import pickle
import socket
import tarfile
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from utils import accel
from utils.base import UserError
from utils.io import NumpyOnlyUnpickler

# ---------------------------------------------------------------------------------------------------
# The table: everything dataset-specific lives here.

# The authors' search scripts normalise both CIFARs with these CIFAR-10 statistics.
_CIFAR_SEARCH = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
# ratio_swipe / train_norm / fine_tune / plots, CIFAR10 only.
_CIFAR10_TRAIN = (tuple(v / 255.0 for v in (125.3, 123.0, 113.9)),
                  tuple(v / 255.0 for v in (63.0, 62.1, 66.7)))
_TINY = ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))
# Not in the paper. Mean and std over every pixel of the 60,000 training images, zero padded
# 28x28 -> 32x32 and divided by 255 (numpy float64 on Debian's train-images-idx3-ubyte.gz):
# 0.218999832, 0.331811373. The three channels are copies.
_FASHION_MNIST = ((0.2190,) * 3, (0.3318,) * 3)
_SYNTHETIC = ((0.5,) * 3, (0.25,) * 3)

_CROP32 = {"crop": 32, "pad": 4, "rotate": 0, "flip": True}

DATASETS = {
    "CIFAR10": {"num_classes": 10, "image_size": 32, "test_shuffle": True,
                "norm": {"search": _CIFAR_SEARCH, "train": _CIFAR10_TRAIN},
                "aug": {"search": _CROP32, "train": _CROP32}},
    # Authors' quirk: ratio_swipe normalises CIFAR100 with the CIFAR-10 constants (as the search does).
    "CIFAR100": {"num_classes": 100, "image_size": 32, "test_shuffle": True,
                 "norm": {"search": _CIFAR_SEARCH, "train": _CIFAR_SEARCH},
                 "aug": {"search": _CROP32, "train": _CROP32}},
    # Authors' quirks: the Tiny search has no RandomCrop, Tiny training has one; the test set is not shuffled.
    "tinyimagenet": {"num_classes": 200, "image_size": 64, "test_shuffle": False,
                     "norm": {"search": _TINY, "train": _TINY},
                     "aug": {"search": {"crop": None, "pad": 0, "rotate": 20, "flip": True},
                             "train": {"crop": 64, "pad": 4, "rotate": 20, "flip": True}}},
    "FashionMNIST": {"num_classes": 10, "image_size": 32, "test_shuffle": True,
                     "norm": {"search": _FASHION_MNIST, "train": _FASHION_MNIST},
                     "aug": {"search": _CROP32, "train": _CROP32}},
    "synthetic": {"num_classes": 10, "image_size": 32, "test_shuffle": True,
                  "norm": {"search": _SYNTHETIC, "train": _SYNTHETIC},
                  "aug": {"search": _CROP32, "train": _CROP32}},
}
NUM_CLASSES = {name: d["num_classes"] for name, d in DATASETS.items()}
IMAGE_SIZE = {name: d["image_size"] for name, d in DATASETS.items()}
RECIPES = ("search", "train")
LOADERS = ("fast", "torchvision")
TEST_ORDERS = ("shuffled", "fixed")
DOWNLOAD_TIMEOUT_S = 30
# Where Debian's dataset-fashion-mnist package puts the four IDX files (`dpkg -L dataset-fashion-mnist`).
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
# Synthetic data never depends on --seed: every run benchmarks the same images.
SYNTHETIC_SEED = 20200614
SYNTHETIC_SIZES = {"train": 50_000, "test": 10_000}


def _table(dataset, recipe):
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if recipe not in RECIPES:
        raise UserError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    return DATASETS[dataset]


def normalization(dataset, recipe, same_norm=False):
    """(mean, std) per channel. same_norm=True (opt-in correction): the search uses the training constants."""
    return _table(dataset, recipe)["norm"]["train" if same_norm else recipe]


def augmentation(dataset, recipe):
    """Training augmentation, applied in the order crop (after zero padding), rotate, flip."""
    return dict(_table(dataset, recipe)["aug"][recipe])


# ---------------------------------------------------------------------------------------------------
# Randomness: one CPU generator per (seed, epoch, stream), never the global RNG.

_ORDER, _AUGMENT, _TEST_ORDER = 0, 1, 2


def _generator(seed, epoch, stream):
    state = np.random.SeedSequence([seed % 2**64, epoch, stream]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def epoch_order(seed, epoch, n, stream=_ORDER):
    """The epoch's permutation, exactly what a DataLoader(shuffle=True, generator=same) visits."""
    g = _generator(seed, epoch, stream)
    torch.empty((), dtype=torch.int64).random_(generator=g)  # the DataLoader draws its worker seed first
    return torch.randperm(n, generator=g)


def draw_augmentation(aug, n, generator):
    """Per-image parameters with torchvision's distributions: crop corner uniform over 0..2*pad (offset
    -pad..pad), angle uniform in [-rotate, rotate] degrees, flip with p = 0.5."""
    params = {}
    if aug["crop"]:
        params["crop"] = torch.randint(0, 2 * aug["pad"] + 1, (n, 2), generator=generator)  # (n, [row, col])
    if aug["rotate"]:
        params["angle"] = torch.empty(n).uniform_(-aug["rotate"], aug["rotate"], generator=generator)
    if aug["flip"]:
        params["flip"] = torch.rand(n, generator=generator) < 0.5
    return params


# ---------------------------------------------------------------------------------------------------
# Fast path: batch augmentation on the device.

def rotate_batch(x, angles):
    """Rotate each image of x (B, C, H, W float) counter-clockwise by its angle in degrees, nearest
    neighbour, zero fill: torchvision's F.rotate on tensors (same grid arithmetic), batched."""
    B, C, H, W = x.shape
    # torchvision builds the inverse matrix from -angle in double precision, then casts to float32.
    rad = angles.to(x.device, torch.float64).neg() * (math.pi / 180)
    cos, sin, zero = rad.cos(), rad.sin(), torch.zeros_like(rad)
    theta = torch.stack([cos, sin, zero, -sin, cos, zero], 1).to(x.dtype).view(B, 2, 3)
    xs = torch.linspace(-W * 0.5 + 0.5, W * 0.5 - 0.5, W, device=x.device)
    ys = torch.linspace(-H * 0.5 + 0.5, H * 0.5 - 0.5, H, device=x.device)
    base = torch.stack([xs.expand(H, W), ys[:, None].expand(H, W), torch.ones(H, W, device=x.device)], -1)
    scale = torch.tensor([0.5 * W, 0.5 * H], dtype=x.dtype).to(x.device, non_blocking=True)  # no host wait
    grid = base.view(1, H * W, 3).expand(B, H * W, 3).bmm(theta.transpose(1, 2) / scale)  # (B, H*W, 2)
    return F.grid_sample(x, grid.view(B, H, W, 2), mode="nearest", padding_mode="zeros", align_corners=False)


def augment_batch(x, params, aug):
    """x (B, C, H, W) uint8 -> float32 in 0..255, augmented like RandomCrop(pad), RandomRotation, HFlip."""
    B, C, H, W = x.shape
    dev = x.device
    if aug["crop"]:
        # Pad the uint8 image with zeros, as torchvision pads the PIL image before ToTensor/Normalize.
        p = aug["pad"]
        padded = F.pad(x, (p, p, p, p))
        rows = params["crop"][:, :1] + torch.arange(H, device=dev)  # (B, H)
        cols = params["crop"][:, 1:] + torch.arange(W, device=dev)  # (B, W)
        x = padded.gather(2, rows[:, None, :, None].expand(B, C, H, W + 2 * p))  # (B, C, H, W + 2p)
        x = x.gather(3, cols[:, None, None, :].expand(B, C, H, W))  # (B, C, H, W)
    if aug["rotate"]:
        x = rotate_batch(x.float(), params["angle"])
    if aug["flip"]:
        x = torch.where(params["flip"][:, None, None, None], x.flip(3), x)
    return x.float()


class _Batches:
    """What both loaders share: len() is the number of minibatches, the last one possibly smaller."""

    def __len__(self):
        return math.ceil(self.num_samples / self.batch_size)


class FastLoader(_Batches):
    """The whole split as uint8 on `device`; `aug=None` makes a test loader (no augmentation; in a fresh
    order each epoch when `shuffle`, else in file order).

    Everything made on the host (the split once, each epoch's order and augmentation draws) reaches the
    device through `pin` (accel.pin_memory: page-locked memory on CUDA) and a non_blocking copy, so no
    batch waits for the host; tests inject their own `pin` to exercise that path on the CPU."""

    def __init__(self, images, labels, *, batch_size, device, mean, std, aug=None, seed=0,
                 shuffle=False, pin=accel.pin_memory):
        if aug and aug["crop"] not in (None, images.shape[-1]):
            raise ValueError(f"crop {aug['crop']} must equal the image size {images.shape[-1]}")
        self.device = torch.device(device)
        self.pin = pin
        self.images = self._upload(images)  # (N, C, H, W) uint8
        self.labels = self._upload(labels)  # (N,) int64
        self.batch_size = batch_size
        self.aug = aug
        self.seed = seed
        self.shuffle = shuffle
        # float32 and the same operations as ToTensor (x / 255) then Normalize ((x - mean) / std): bit for bit.
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

    @property
    def num_samples(self):
        return len(self.labels)

    def epoch(self, epoch=0):
        n = self.num_samples
        if self.aug is None:
            order = self._upload(epoch_order(self.seed, epoch, n, _TEST_ORDER)) if self.shuffle else None
            return self._batches(order, None)
        order = self._upload(epoch_order(self.seed, epoch, n))
        params = draw_augmentation(self.aug, n, _generator(self.seed, epoch, _AUGMENT))
        return self._batches(order, {k: self._upload(v) for k, v in params.items()})

    def _upload(self, tensor):
        return accel.to_device(tensor, self.device, self.pin)

    def _batches(self, order, params):
        for start in range(0, self.num_samples, self.batch_size):
            end = start + self.batch_size
            if order is None:
                x, y = self.images[start:end].float(), self.labels[start:end]
            elif params is None:  # a shuffled test set
                idx = order[start:end]
                x, y = self.images[idx].float(), self.labels[idx]
            else:
                idx = order[start:end]
                x = augment_batch(self.images[idx], {k: v[start:end] for k, v in params.items()}, self.aug)
                y = self.labels[idx]
            yield x.div(255).sub(self.mean).div(self.std), y


# ---------------------------------------------------------------------------------------------------
# torchvision path: the authors' pipeline.

class _PILDataset(torch.utils.data.Dataset):
    """Images (N, H, W, C uint8, or file paths read like ImageFolder) -> transform(PIL image), label.
    With `aug_seed` set, image i is transformed under a torch RNG seeded with aug_seed + i, so its
    augmentation is a pure function of (seed, epoch, i) whatever the number of workers."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform
        self.aug_seed = None

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        from torchvision.datasets.folder import default_loader
        item = self.images[i]
        img = default_loader(item) if isinstance(item, str) else Image.fromarray(item)
        if self.aug_seed is None:
            return self.transform(img), int(self.labels[i])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.aug_seed + i)
            return self.transform(img), int(self.labels[i])


def _torchvision_transform(aug, mean, std):
    import torchvision.transforms as T
    steps = []
    if aug:
        if aug["crop"]:
            steps.append(T.RandomCrop(aug["crop"], padding=aug["pad"]))
        if aug["rotate"]:
            steps.append(T.RandomRotation(aug["rotate"]))
        if aug["flip"]:
            steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


class TorchvisionLoader(_Batches):
    """PIL transforms in a torch DataLoader; `aug=None` makes a test loader (no augmentation; shuffled
    each epoch when `shuffle`, as the authors' CIFAR test loaders, else in file order)."""

    def __init__(self, images, labels, *, batch_size, device, mean, std, aug=None, seed=0, workers=1,
                 shuffle=False):
        self.device = torch.device(device)
        self.dataset = _PILDataset(images, labels, _torchvision_transform(aug, mean, std))
        self.batch_size, self.aug, self.seed, self.workers = batch_size, aug, seed, workers
        self.shuffle = shuffle

    @property
    def num_samples(self):
        return len(self.dataset)

    def epoch(self, epoch=0):
        dataset, generator, shuffle = self.dataset, None, self.aug is not None or self.shuffle
        if self.aug is not None:
            dataset = _copy_with_seed(self.dataset, _generator(self.seed, epoch, _AUGMENT))
            generator = _generator(self.seed, epoch, _ORDER)
        elif self.shuffle:
            generator = _generator(self.seed, epoch, _TEST_ORDER)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, generator=generator,
            num_workers=self.workers, pin_memory=accel.uses_pinned_memory(self.device), drop_last=False)
        return ((x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)) for x, y in loader)


def _copy_with_seed(dataset, generator):
    copy = _PILDataset(dataset.images, dataset.labels, dataset.transform)
    copy.aug_seed = int(torch.randint(2**62, (), generator=generator))
    return copy


# ---------------------------------------------------------------------------------------------------
# Finding, downloading and reading the files.

@contextlib.contextmanager
def _socket_timeout(seconds):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _reason(err):
    """An exception as one line (torchvision's download errors span several)."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def _torchvision_download(dataset, root):
    """Download and extract `dataset` with torchvision into `root` (a fresh temporary folder)."""
    import torchvision.datasets as D
    getattr(D, dataset)(root, train=True, download=True)


def _download(dataset, data_dir, download, what, hint, install):
    """Fetch a missing data set through a temporary folder inside data_dir; `install(tmp)` moves the
    files into place, so a failed download leaves nothing half written."""
    if download == "never":
        raise UserError(f"{what}; {hint} (downloading is off)")
    created = not os.path.isdir(data_dir)
    try:
        os.makedirs(data_dir, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=data_dir, prefix=".download-") as tmp:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                _torchvision_download(dataset, tmp)
            install(tmp)
    except (OSError, RuntimeError, EOFError, tarfile.TarError, zlib.error) as err:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(data_dir)
        raise UserError(f"{what} and the download failed: {_reason(err)}; {hint}") from None


_CIFAR = {  # folder, training files, test files, archive (torchvision's layout)
    "CIFAR10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "cifar-10-python.tar.gz"),
    "CIFAR100": ("cifar-100-python", ["train"], ["test"], "cifar-100-python.tar.gz"),
}


def _read_cifar_file(path, dataset):
    """One batch file -> (N, 3, 32, 32) uint8, (N,) int64. Keys may be str or bytes (Python 2 pickles)."""
    try:
        with open(path, "rb") as f:
            entry = NumpyOnlyUnpickler(f, encoding="latin1").load()
        entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
        data = entry["data"]
        labels = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"], dtype=np.int64)
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                and data.shape[1] == 3 * 32 * 32 and len(data) == len(labels)):
            raise ValueError("unexpected 'data' array or label count")
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, KeyError, TypeError, ValueError,
            IndexError) as err:
        raise UserError(f"{dataset} file {path} is corrupt: {_reason(err)}") from None
    return data.reshape(-1, 3, 32, 32), labels


def _cifar(dataset, data_dir, split, download):
    folder, train_files, test_files, archive = _CIFAR[dataset]
    base = os.path.join(data_dir, folder)
    hint = f"put the extracted {archive} there"
    if not os.path.isdir(base):
        _download(dataset, data_dir, download, f"{dataset} not found under {data_dir} (expected {base})", hint,
                  lambda tmp: os.replace(os.path.join(tmp, folder), base))
    files = train_files if split == "train" else test_files
    missing = [f for f in train_files + test_files if not os.path.isfile(os.path.join(base, f))]
    if missing:
        raise UserError(f"{dataset} folder {base} is incomplete ({missing[0]} missing); {hint}")
    parts = [_read_cifar_file(os.path.join(base, f), dataset) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


_IDX = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path, ndim):
    """An IDX file of unsigned bytes (gzipped when the name ends in .gz) -> numpy array with `ndim` dims."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"IDX file {path} is corrupt: {_reason(err)}") from None
    header = 4 + 4 * ndim
    magic = 0x0800 | ndim  # 0x08: unsigned byte data
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise UserError(f"IDX file {path} is corrupt: magic number is not {magic:#06x}")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != header + math.prod(dims):
        raise UserError(f"IDX file {path} is corrupt: {len(raw) - header} data bytes for shape {dims}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _find_fashion_mnist(data_dir):
    """The first folder holding all four IDX files (gzipped or not), else None."""
    names = _IDX["train"] + _IDX["test"]
    for folder in (os.path.join(data_dir, "FashionMNIST", "raw"), data_dir, FASHION_MNIST_SYSTEM_DIR):
        found = {}
        for name in names:
            for candidate in (name, name + ".gz"):
                if os.path.isfile(os.path.join(folder, candidate)):
                    found[name] = os.path.join(folder, candidate)
                    break
        if len(found) == len(names):
            return found
    return None


def _fashion_mnist(data_dir, split, download):
    files = _find_fashion_mnist(data_dir)
    if files is None:
        raw = os.path.join(data_dir, "FashionMNIST", "raw")

        def install(tmp):
            os.makedirs(raw, exist_ok=True)
            src = os.path.join(tmp, "FashionMNIST", "raw")
            for name in os.listdir(src):
                os.replace(os.path.join(src, name), os.path.join(raw, name))

        _download("FashionMNIST", data_dir, download,
                  f"FashionMNIST not found in {raw}, {data_dir} or {FASHION_MNIST_SYSTEM_DIR}",
                  "install it with `apt-get install dataset-fashion-mnist` or pass --data_dir with the four IDX "
                  "files (train/t10k images/labels, gzipped or not)", install)
        files = _find_fashion_mnist(data_dir)
    images_name, labels_name = _IDX[split]
    images = read_idx(files[images_name], 3)
    labels = read_idx(files[labels_name], 1).astype(np.int64)
    if len(images) != len(labels) or images.shape[1:] != (28, 28):
        raise UserError(f"FashionMNIST {split} files do not match: images {images.shape}, labels {labels.shape}")
    # Zero pad 28x28 -> 32x32 (the CIFAR networks' input) and repeat the grey channel three times.
    padded = np.zeros((len(images), 3, 32, 32), np.uint8)
    padded[:, :, 2:30, 2:30] = images[:, None]
    return padded, labels


def _synthetic(split):
    """Noisy copies of one fixed random template per class: learnable, so smoke runs show learning.
    Templates are 8x8 blocks of 4x4 pixels, mirror symmetric so flips and 4-pixel crops keep them."""
    rng = np.random.Generator(np.random.Philox(key=SYNTHETIC_SEED))
    half = rng.integers(0, 256, (10, 3, 8, 4), dtype=np.uint8)
    templates = np.concatenate([half, half[..., ::-1]], -1).repeat(4, 2).repeat(4, 3) >> 1  # (10, 3, 32, 32)
    n = SYNTHETIC_SIZES[split]
    rng = np.random.Generator(np.random.Philox(key=SYNTHETIC_SEED + 1 + (split == "test")))
    labels = rng.integers(0, 10, n)
    images = rng.bit_generator.random_raw(n * 3 * 32 * 32 // 8).view(np.uint8).reshape(n, 3, 32, 32)  # cheap bytes
    images >>= 1
    images += templates[labels]  # half template, half uniform noise, in place (this runs in ~0.1 s)
    return images, labels


# ---------------------------------------------------------------------------------------------------
# TinyImageNet (ImageFolder trees made by val_format.py).

def tiny_root(data_dir):
    """data_dir itself when it holds train/ and test/, else data_dir/tiny-imagenet-200."""
    if os.path.isdir(os.path.join(data_dir, "train")) and os.path.isdir(os.path.join(data_dir, "test")):
        root = data_dir
    else:
        root = os.path.join(data_dir, "tiny-imagenet-200")
    train, test = os.path.join(root, "train"), os.path.join(root, "test")
    if os.path.isdir(os.path.join(test, "images")):
        raise UserError(f"{test} is the official unlabelled test set: delete it (the authors' README does) "
                        f"and run `python val_format.py --data_dir {root}`")
    if not (os.path.isdir(train) and os.path.isdir(test)):
        raise UserError(f"tinyimagenet not found: expected the ImageFolder trees {train} and {test}; extract "
                        f"tiny-imagenet-200.zip under {data_dir} and run `python val_format.py --data_dir {root}`")
    return root


def _tiny_samples(root, split):
    """ImageFolder's file list and labels, with the class indices of train/ (sorted wnids) for both splits."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
    try:
        classes, class_to_idx = find_classes(os.path.join(root, "train"))
        folder = os.path.join(root, split)
        extra = sorted(set(find_classes(folder)[0]) - set(classes))
        samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    except FileNotFoundError as err:
        raise UserError(f"tinyimagenet: {_reason(err)}") from None
    if extra:
        raise UserError(f"tinyimagenet: {folder} has classes missing from train/, e.g. {extra[0]}")
    if not samples:
        raise UserError(f"tinyimagenet: no images under {folder}")
    return [path for path, _ in samples], np.array([label for _, label in samples], dtype=np.int64)


def _decode(path):
    from PIL import Image
    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"))  # as ImageFolder's loader: grey JPEGs become RGB
    if array.shape != (64, 64, 3):
        raise UserError(f"tinyimagenet image {path} is {array.shape[1]}x{array.shape[0]}, expected 64x64")
    return array


def _tiny_tensors(root, split, paths, labels):
    """Decoded split as (N, 3, 64, 64) uint8, cached in root/cache_<split>_uint8.pt and rebuilt when the
    file list changes."""
    cache = os.path.join(root, f"cache_{split}_uint8.pt")
    files = [os.path.relpath(p, root) for p in paths]
    if os.path.isfile(cache):
        try:
            saved = torch.load(cache, weights_only=True)
            if saved["files"] == files:
                return saved["images"], saved["labels"]
        except (OSError, RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError):
            pass  # unreadable or stale: decode again and overwrite
    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:  # PIL releases the GIL while decoding
        images = torch.from_numpy(np.stack(list(pool.map(_decode, paths)))).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(labels)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".cache-", suffix=".pt")
        os.close(fd)
        torch.save({"files": files, "images": images, "labels": labels}, tmp)
        os.replace(tmp, cache)
    except (OSError, RuntimeError):  # torch.save reports a full disk as a RuntimeError
        if tmp is not None:  # a read-only or full data folder: decode on every run instead
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return images, labels


# ---------------------------------------------------------------------------------------------------

def _load_split(dataset, data_dir, split, download, decode):
    """(images, labels): images a uint8 (N, C, H, W) array or tensor, or, for Tiny when decode is False,
    the list of image files (the torchvision path reads them itself, like ImageFolder)."""
    if dataset in _CIFAR:
        return _cifar(dataset, data_dir, split, download)
    if dataset == "FashionMNIST":
        return _fashion_mnist(data_dir, split, download)
    if dataset == "synthetic":
        return _synthetic(split)
    root = tiny_root(data_dir)
    paths, labels = _tiny_samples(root, split)
    return _tiny_tensors(root, split, paths, labels) if decode else (paths, labels)


def _check_count(dataset, split, available, keep):
    """An empty split would train or test on nothing (a NaN loss); a subset larger than the split would
    be stored as asked while fewer images were used. Both are refused, naming the split."""
    if available == 0:
        raise UserError(f"the {dataset} {split} split holds no images: check the data set's files")
    flag = "--subset" if split == "train" else "--test_subset"
    if keep is not None and keep > available:
        raise UserError(f"{flag} {keep} is more than the {available:,} {split} images of {dataset}; give at "
                        f"most {available}, or leave {flag} out to use them all")


def get_loaders(dataset, data_dir, *, recipe, batch_size, test_batch_size=None, device, loader="fast",
                subset=None, test_subset=None, seed=0, download="auto", same_norm=False, need_test=True,
                workers=None, test_order="shuffled"):
    """(train_loader, test_loader or None). subset / test_subset keep the first N images of a split.
    test_order "shuffled" (the authors'): the test loader shuffles each epoch where the authors' did
    (every data set but TinyImageNet); "fixed": file order."""
    table = _table(dataset, recipe)
    if test_order not in TEST_ORDERS:
        raise UserError(f"unknown test order {test_order!r}; choose from {', '.join(TEST_ORDERS)}")
    shuffle_test = test_order == "shuffled" and table["test_shuffle"]
    if loader not in LOADERS:
        raise UserError(f"unknown loader {loader!r}; choose from {', '.join(LOADERS)}")
    if download not in ("auto", "never"):
        raise UserError(f"unknown download mode {download!r}; choose auto or never")
    for name, n in (("batch_size", batch_size), ("test_batch_size", test_batch_size), ("subset", subset),
                    ("test_subset", test_subset)):
        if n is not None and n < 1:
            raise UserError(f"{name} must be at least 1, got {n}")
    mean, std = normalization(dataset, recipe, same_norm)
    if workers is None:  # authors: 1 worker for CIFAR, 16 for Tiny
        workers = min(16, os.cpu_count() or 1) if dataset == "tinyimagenet" else 1
    splits = [("train", subset, batch_size, augmentation(dataset, recipe))]
    if need_test:
        splits.append(("test", test_subset, test_batch_size or batch_size, None))
    loaders = []
    for split, keep, size, aug in splits:
        images, labels = _load_split(dataset, data_dir, split, download, decode=loader == "fast")
        _check_count(dataset, split, len(labels), keep)
        images, labels = images[:keep], labels[:keep]
        bad = labels[(labels < 0) | (labels >= NUM_CLASSES[dataset])]
        if len(bad):
            raise UserError(f"{dataset} {split} labels out of range 0..{NUM_CLASSES[dataset] - 1}: {int(bad[0])}")
        shuffle = aug is None and shuffle_test
        if loader == "fast":
            loaders.append(FastLoader(torch.as_tensor(images), torch.as_tensor(labels), batch_size=size,
                                      device=device, mean=mean, std=std, aug=aug, seed=seed, shuffle=shuffle))
        else:
            if not isinstance(images, list):  # PIL wants (H, W, C)
                images = np.ascontiguousarray(np.asarray(images).transpose(0, 2, 3, 1))
            loaders.append(TorchvisionLoader(images, labels, batch_size=size, device=device, mean=mean,
                                             std=std, aug=aug, seed=seed, workers=workers, shuffle=shuffle))
    return loaders[0], (loaders[1] if need_test else None)
