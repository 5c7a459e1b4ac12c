"""Tests of autoprog.data: the IDX reader/writer, the named datasets, image folders and subsets."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autoprog.data import (
    DATASETS,
    DatasetInfo,
    ImageFolderDataset,
    SubsetDataset,
    TensorImageDataset,
    class_balanced_subset,
    load_dataset,
    read_idx,
    split_train_val,
    write_idx,
)
from autoprog.errors import AutoprogError, ConfigError, DatasetNotFoundError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


# ----------------------------------------------------------------------------------------------------
# Helpers.


def make_idx_dir(
    root: Path, n_train: int = 30, n_test: int = 12, size: int = 28, gz: bool = True, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write a tiny IDX dataset (MNIST / Fashion-MNIST file names) into ``root``; returns its arrays."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        arrays[split] = (images, labels)
    return arrays


def make_tensor_dataset(class_sizes: list[int], size: int = 4, name: str = "toy") -> TensorImageDataset:
    """An in-memory dataset whose class ``c`` has ``class_sizes[c]`` items, interleaved; pixel = index % 256."""
    targets = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(class_sizes)])
    targets = targets[torch.randperm(len(targets), generator=torch.Generator().manual_seed(123))]
    images = (
        (torch.arange(len(targets)) % 256).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, size, size).clone()
    )
    classes = [f"c{c}" for c in range(len(class_sizes))]
    info = DatasetInfo(name, len(class_sizes), 1, size, classes, (0.5,), (0.25,))
    return TensorImageDataset(images, targets, info)


def make_image(path: Path, mode: str, size: tuple[int, int], color: int | tuple[int, ...]) -> None:
    """Save a solid-colour image of ``mode``; ``color`` is a palette index for 'P'."""
    img = Image.new(mode, size, color)
    if mode == "P":
        palette = [0, 0, 0] * 256
        palette[3 * 7 : 3 * 7 + 3] = [0, 0, 255]  # index 7 is pure blue
        img.putpalette(palette)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """``train/`` with 3 classes of mixed sizes/modes/extensions and ``val/`` lacking one class."""
    root = tmp_path / "imgs"
    make_image(root / "train" / "dog" / "a.png", "RGBA", (17, 9), (255, 0, 0, 128))
    make_image(root / "train" / "dog" / "b.JPG", "RGB", (40, 30), (255, 0, 0))
    make_image(root / "train" / "cat" / "c.png", "L", (5, 5), 200)
    make_image(root / "train" / "cat" / "sub" / "d.bmp", "L", (64, 12), 200)
    make_image(root / "train" / "bird" / "e.gif", "P", (11, 23), 7)
    (root / "train" / "bird" / "notes.txt").write_text("not an image")
    (root / "train" / ".hidden").mkdir()
    make_image(root / "val" / "dog" / "f.webp", "RGB", (8, 8), (255, 0, 0))
    make_image(root / "val" / "bird" / "g.tiff", "RGB", (9, 7), (0, 0, 255))
    return root


# ----------------------------------------------------------------------------------------------------
# IDX format.


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path: Path, dtype: type, gz: bool) -> None:
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    for shape in [(7,), (3, 4, 5), (2, 1, 3, 2)]:
        if info is not None:
            array = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
        else:
            array = rng.standard_normal(shape).astype(dtype) * 1e3
        path = tmp_path / f"a-{len(shape)}.idx{'.gz' if gz else ''}"
        write_idx(path, array)
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
        back = read_idx(path)
        assert back.dtype == np.dtype(dtype)
        assert back.shape == shape
        np.testing.assert_array_equal(back, array)
        assert back.flags.writeable


def test_idx_header_layout_is_big_endian(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) - 5
    write_idx(tmp_path / "x.idx", array)
    raw = (tmp_path / "x.idx").read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0B, 3])
    assert struct.unpack(">3i", raw[4:16]) == (2, 3, 4)
    assert raw[16:] == array.astype(">i2").tobytes()
    assert len(raw) == 16 + array.size * 2


def test_idx_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    array = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    renamed = tmp_path / "no-suffix"
    renamed.write_bytes((tmp_path / "a.gz").read_bytes())
    np.testing.assert_array_equal(read_idx(renamed), array)


def test_write_idx_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=np.int64))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "shorter than the 4-byte magic"),
        (b"\x00\x00", "shorter than the 4-byte magic"),
        (b"\x01\x00\x08\x01" + struct.pack(">i", 1) + b"\x00", "magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">i", 1) + b"\x00", "unknown dtype code 0x07"),
        (b"\x00\x00\x08\x03" + struct.pack(">i", 2), "truncated header"),
        (b"\x00\x00\x08\x02" + struct.pack(">2i", 2, 3) + b"\x00" * 5, "truncated data"),
        (b"\x00\x00\x0c\x01" + struct.pack(">i", 2) + b"\x00" * 7, "truncated data"),
        (b"\x00\x00\x08\x01" + struct.pack(">i", 2) + b"\x00" * 3, "trailing bytes"),
        (b"\x00\x00\x08\x01" + struct.pack(">i", -1), "negative dimension"),
        (gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">i", 4) + b"abcd")[:-6], "gzip"),
    ],
)
def test_read_idx_malformed_raises_value_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.idx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


# ----------------------------------------------------------------------------------------------------
# IDX datasets.


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_fixture_dir(tmp_path: Path, gz: bool) -> None:
    arrays = make_idx_dir(tmp_path / "fm", gz=gz)
    for split in ("train", "test"):
        ds = load_dataset("fashion-mnist", split, data_dir=str(tmp_path / "fm"))
        images, labels = arrays[split]
        assert isinstance(ds, TensorImageDataset)
        assert len(ds) == len(labels)
        assert ds.images.shape == (len(labels), 1, 28, 28) and ds.images.dtype == torch.uint8
        assert ds.targets.dtype == torch.int64
        assert ds.targets.tolist() == labels.tolist()
        np.testing.assert_array_equal(ds.images[:, 0].numpy(), images)
        image, label = ds[3]
        assert image.shape == (1, 28, 28) and image.dtype == torch.uint8
        assert isinstance(label, int) and label == 3
        assert ds.info == DatasetInfo("fashion-mnist", 10, 1, 28, FASHION_CLASSES, (0.2860,), (0.3530,))


def test_mnist_idx_needs_data_dir_and_reads_torchvision_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="--data-dir"):
        load_dataset("mnist-idx", "train")
    arrays = make_idx_dir(tmp_path / "MNIST" / "raw", n_train=20, gz=False)
    ds = load_dataset("MNIST-idx", "train", data_dir=str(tmp_path))
    assert ds.info.classes == [str(d) for d in range(10)]
    assert ds.info.name == "mnist-idx"
    assert ds.targets.tolist() == arrays["train"][1].tolist()
    with pytest.raises(DatasetNotFoundError, match="MNIST not found"):
        load_dataset("mnist-idx", "train", data_dir=str(tmp_path / "nowhere"))


def test_idx_dataset_rejects_inconsistent_files(tmp_path: Path) -> None:
    make_idx_dir(tmp_path, n_train=10)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(9, dtype=np.uint8))
    with pytest.raises(AutoprogError, match="expected 10 labels"):
        load_dataset("fashion-mnist", "train", data_dir=str(tmp_path))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(10, 10, dtype=np.uint8))
    with pytest.raises(AutoprogError, match=r"labels must lie in 0\.\.9"):
        load_dataset("fashion-mnist", "train", data_dir=str(tmp_path))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x00\x00\x08")
    with pytest.raises(AutoprogError, match="malformed IDX"):
        load_dataset("fashion-mnist", "train", data_dir=str(tmp_path))


@pytest.fixture(scope="module")
def real_fashion_mnist() -> dict[str, TensorImageDataset]:
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install -y dataset-fashion-mnist)")
    return {split: load_dataset("fashion-mnist", split) for split in ("train", "test")}


@pytest.mark.parametrize(("split", "n"), [("train", 60000), ("test", 10000)])
def test_real_fashion_mnist(real_fashion_mnist: dict[str, TensorImageDataset], split: str, n: int) -> None:
    ds = real_fashion_mnist[split]
    assert len(ds) == n
    assert ds.images.shape == (n, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.targets.dtype == torch.int64
    assert int(ds.targets.min()) == 0 and int(ds.targets.max()) == 9
    assert torch.bincount(ds.targets).tolist() == [n // 10] * 10  # Fashion-MNIST is exactly balanced
    assert ds.info.classes == FASHION_CLASSES
    if split == "train":
        pixels = ds.images.float().div(255)
        assert pixels.mean().item() == pytest.approx(ds.info.mean[0], abs=1e-3)
        assert pixels.std().item() == pytest.approx(ds.info.std[0], abs=1e-3)


def test_missing_fashion_mnist_names_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion-mnist", "train", data_dir=str(missing))
    message = str(err.value)
    assert "apt-get install -y dataset-fashion-mnist" in message
    assert "--data-dir" in message and str(missing) in message
    assert "\n" not in message


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset("imagenet-21k", "train")
    assert isinstance(err.value, ValueError)
    for name in DATASETS:
        assert name in str(err.value)
    assert DATASETS == ("fashion-mnist", "mnist-idx", "mnist-5k", "cifar10", "imagefolder:PATH")
    with pytest.raises(ConfigError, match="split"):
        load_dataset("fashion-mnist", "validation")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="in_chans"):
        load_dataset("fashion-mnist", "train", in_chans=2)
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("fashion-mnist", "train", image_size=0)


# ----------------------------------------------------------------------------------------------------
# Resizing and channel conversion at load time.


def test_resize_and_channels_on_load(tmp_path: Path) -> None:
    make_idx_dir(tmp_path, n_train=10, n_test=4)
    images = read_idx(tmp_path / "t10k-images-idx3-ubyte.gz")
    images[0] = 77  # a constant image stays constant through bilinear resizing
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)

    small = load_dataset("fashion-mnist", "test", data_dir=str(tmp_path), image_size=14)
    assert small.images.shape == (4, 1, 14, 14) and small.images.dtype == torch.uint8
    assert small.info.image_size == 14 and small[1][0].shape == (1, 14, 14)
    assert bool((small.images[0] == 77).all())
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(images[1:2]).float()[:, None], size=(14, 14), mode="bilinear", antialias=True
    )
    assert torch.equal(small.images[1:2], expected.round().clamp(0, 255).to(torch.uint8))

    big_rgb = load_dataset("fashion-mnist", "test", data_dir=str(tmp_path), image_size=40, in_chans=3)
    assert big_rgb.images.shape == (4, 3, 40, 40)
    assert big_rgb.info.in_chans == 3 and big_rgb.info.image_size == 40
    assert big_rgb.info.mean == (0.2860,) * 3 and big_rgb.info.std == (0.3530,) * 3
    assert torch.equal(big_rgb.images[:, 0], big_rgb.images[:, 2])
    assert bool((big_rgb.images[0] == 77).all())

    native = load_dataset("fashion-mnist", "test", data_dir=str(tmp_path), image_size=28, in_chans=1)
    assert native.images.shape == (4, 1, 28, 28) and native.info.image_size == 28


# ----------------------------------------------------------------------------------------------------
# CIFAR-10 (python format, read by torchvision).


def _write_cifar(root: Path, per_batch: int = 4) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        data = rng.integers(0, 256, size=(per_batch, 3 * 32 * 32), dtype=np.uint8)
        # Item 0 of every batch: planes R = 10 + i, G = 100, B = 200 (the format stores planes, not pixels).
        data[0] = np.repeat(np.array([10 + i, 100, 200], dtype=np.uint8), 32 * 32)
        labels = [(k + i) % 10 for k in range(per_batch)]
        with (folder / name).open("wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": classes}, f)


def test_cifar10_from_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cifar = pytest.importorskip("torchvision.datasets.cifar")
    if not hasattr(cifar, "check_integrity"):
        pytest.skip("torchvision's CIFAR-10 internals changed")
    # The fixture's files do not have the real md5 sums that torchvision checks.
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    _write_cifar(tmp_path)

    train = load_dataset("cifar10", "train", data_dir=str(tmp_path))
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.info.classes[0] == "airplane" and train.info.num_classes == 10 and train.info.in_chans == 3
    assert train.targets.tolist()[:4] == [0, 1, 2, 3]
    assert train.images[0, :, 5, 7].tolist() == [10, 100, 200]  # planes became channels

    test = load_dataset(
        "cifar10", "test", data_dir=str(tmp_path / "cifar-10-batches-py"), in_chans=1, image_size=16
    )
    assert test.images.shape == (4, 1, 16, 16)
    assert test.images[0, 0, 3, 3].item() == round(0.299 * 15 + 0.587 * 100 + 0.114 * 200)  # ITU-R 601 luma
    assert test.info.mean == (pytest.approx(0.299 * 0.4914 + 0.587 * 0.4822 + 0.114 * 0.4465),)


def test_cifar10_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="--data-dir"):
        load_dataset("cifar10", "train")
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py") as err:
        load_dataset("cifar10", "train", data_dir=str(tmp_path))
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------------
# Image folders.


@pytest.mark.parametrize("in_chans", [1, 3])
def test_imagefolder_classes_shapes_channels(image_root: Path, in_chans: int) -> None:
    train = load_dataset(f"imagefolder:{image_root}", "train", image_size=12, in_chans=in_chans)
    assert isinstance(train, ImageFolderDataset)
    assert train.info.classes == ["bird", "cat", "dog"]  # sorted folder names = labels
    assert train.info.num_classes == 3 and train.info.in_chans == in_chans and train.info.image_size == 12
    assert len(train) == 5  # notes.txt and the hidden folder are ignored; cat/sub/d.bmp is found
    assert train.targets.dtype == torch.int64 and train.targets.tolist() == [0, 1, 1, 2, 2]
    assert len(train.info.mean) == in_chans and len(train.info.std) == in_chans
    items = [train[i] for i in range(len(train))]
    for (image, label), expected in zip(items, train.targets.tolist(), strict=True):
        assert image.shape == (in_chans, 12, 12) and image.dtype == torch.uint8
        assert label == expected
    blue, grey, red, jpeg_red = items[0][0], items[1][0], items[3][0], items[4][0]
    assert (jpeg_red[:, 6, 6].int() - red[:, 6, 6].int()).abs().max() <= 3  # JPEG is lossy
    if in_chans == 3:
        assert blue[:, 6, 6].tolist() == [0, 0, 255]  # palette image decoded through its palette
        assert grey[:, 6, 6].tolist() == [200, 200, 200]
        assert red[:, 6, 6].tolist() == [255, 0, 0]
    else:
        assert blue[0, 6, 6].item() == 29  # PIL's ITU-R 601 luma of pure blue
        assert grey[0, 6, 6].item() == 200
        assert red[0, 6, 6].item() == 76


def test_imagefolder_val_split_and_defaults(image_root: Path) -> None:
    val = load_dataset(f"imagefolder:{image_root}", "test")
    assert val.info.classes == ["bird", "cat", "dog"]  # labels follow train/, even with cat/ missing in val/
    assert val.targets.tolist() == [0, 2]
    image, label = val[0]
    assert image.shape == (3, 11, 11) and label == 0  # train/'s median shorter side (5, 9, 11, 12, 30), not 224
    assert val.info.name == f"imagefolder:{image_root}"


def test_imagefolder_layout_errors(image_root: Path, tmp_path: Path) -> None:
    (image_root / "val" / "bird" / "g.tiff").rename(image_root / "val" / "bird" / "g.txt")
    with pytest.raises(AutoprogError, match="holds no images"):
        load_dataset(f"imagefolder:{image_root}", "test")
    make_image(image_root / "val" / "fish" / "h.png", "RGB", (4, 4), (1, 2, 3))
    with pytest.raises(AutoprogError, match="fish"):
        ImageFolderDataset(image_root / "val", classes=["bird", "cat", "dog"])
    only_train = tmp_path / "only-train"
    make_image(only_train / "train" / "a" / "x.png", "L", (4, 4), 0)
    with pytest.raises(DatasetNotFoundError, match="train/<class>/<image>") as err:
        load_dataset(f"imagefolder:{only_train}", "train")
    assert "val" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(AutoprogError, match="no class folders"):
        ImageFolderDataset(tmp_path / "only-train" / "train" / "a")


# ----------------------------------------------------------------------------------------------------
# Subsets.


def test_class_balanced_subset_is_balanced() -> None:
    ds = make_tensor_dataset([50, 30, 5, 20, 25])
    sub = class_balanced_subset(ds, 43, seed=0)
    assert isinstance(sub, SubsetDataset) and len(sub) == 43
    counts = torch.bincount(sub.targets, minlength=5).tolist()
    assert counts[2] == 5  # the small class gives everything it has ...
    others = [counts[c] for c in (0, 1, 3, 4)]
    assert sum(others) == 38 and max(others) - min(others) <= 1  # ... and the rest share equally
    assert sub.indices == sorted(sub.indices) and len(set(sub.indices)) == 43
    assert torch.equal(sub.targets, ds.targets[sub.indices])
    assert sub.info is ds.info
    image, label = sub[0]
    assert torch.equal(image, ds.images[sub.indices[0]]) and label == int(ds.targets[sub.indices[0]])


def test_class_balanced_subset_determinism_and_edges() -> None:
    ds = make_tensor_dataset([40, 40, 40])
    a, b, c = (class_balanced_subset(ds, 30, seed=s).indices for s in (7, 7, 8))
    assert a == b
    assert a != c
    assert torch.bincount(ds.targets[a]).tolist() == [10, 10, 10]
    whole = class_balanced_subset(ds, 1000, seed=0)
    assert whole.indices == list(range(len(ds)))
    for bad in (0, -3):
        with pytest.raises(ConfigError):
            class_balanced_subset(ds, bad, seed=0)
    nested = class_balanced_subset(class_balanced_subset(ds, 60, seed=1), 15, seed=2)
    assert nested.dataset is ds  # flattened onto the base dataset
    assert torch.bincount(nested.targets).tolist() == [5, 5, 5]
    assert torch.equal(nested.targets, ds.targets[nested.indices])


def test_split_train_val_is_stratified_and_deterministic() -> None:
    ds = make_tensor_dataset([40, 20, 60])
    train, val = split_train_val(ds, 0.25, seed=3)
    assert len(val) == 30 and len(train) == 90
    assert set(train.indices).isdisjoint(val.indices)
    assert sorted(train.indices + val.indices) == list(range(len(ds)))
    assert train.indices == sorted(train.indices) and val.indices == sorted(val.indices)
    assert torch.bincount(val.targets).tolist() == [10, 5, 15]
    assert train.info is ds.info and val.info is ds.info
    again = split_train_val(ds, 0.25, seed=3)
    assert again[1].indices == val.indices
    assert split_train_val(ds, 0.25, seed=4)[1].indices != val.indices
    pool = class_balanced_subset(ds, 60, seed=0)
    t, v = split_train_val(pool, 1 / 3, seed=0)
    assert len(t) == 40 and len(v) == 20 and t.dataset is ds
    assert set(t.indices) | set(v.indices) == set(pool.indices)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError):
            split_train_val(ds, bad, seed=0)


def test_randaugment_survives_magnitude_at_the_top():
    """timm's PosterizeIncreasing at magnitude 10 asks Pillow for 0 bits; our wrapper caps it below."""
    import random

    from autoprog.data import TensorImageDataset
    from autoprog.data.augment import RandAugmentDataset

    info = DatasetInfo("x", 2, 1, 8, ["a", "b"], (0.5,), (0.25,))
    ds = TensorImageDataset(torch.randint(0, 255, (4, 1, 8, 8), dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), info)
    aug = RandAugmentDataset(ds, "rand-n3-m10-mstd2-inc1")
    random.seed(0)
    for i in range(400):
        x, y = aug[i % 4]
        assert x.shape == (1, 8, 8) and x.dtype == torch.uint8 and y == i % 2


def test_image_folders_decode_at_the_stage_resolution(image_root: Path, monkeypatch) -> None:
    """Resize at load time (issue 9): a stage's images are decoded straight to its resolution."""
    from autoprog.data import datasets
    from autoprog.train.loader import BatchSource

    sizes: list[int] = []
    original = datasets.load_image

    def spy(path, image_size, in_chans):
        sizes.append(image_size)
        return original(path, image_size, in_chans)

    monkeypatch.setattr(datasets, "load_image", spy)
    train = load_dataset(f"imagefolder:{image_root}", "train", image_size=32, in_chans=3)
    source = BatchSource(train, 2, shuffle=False, drop_last=False)
    small = [x for x, _ in source.epoch(0, 12)]
    assert set(sizes) == {12} and all(x.shape[-2:] == (12, 12) for x in small)
    sizes.clear()
    full = [x for x, _ in source.epoch(1, 32)]
    assert set(sizes) == {32} and all(x.shape[-2:] == (32, 32) for x in full)
