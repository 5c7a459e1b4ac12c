"""Datasets for training and evaluation: IDX (Fashion-MNIST, MNIST), CIFAR-10 and image folders."""

from __future__ import annotations

from autoprog.data.datasets import (
    DATASETS,
    IMAGE_EXTENSIONS,
    DatasetInfo,
    ImageFolderDataset,
    SubsetDataset,
    TensorImageDataset,
    check_dataset_name,
    class_balanced_subset,
    image_folder_size,
    load_dataset,
    load_image,
    resize_uint8,
    split_train_val,
)
from autoprog.data.idx import read_idx, write_idx

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
    "read_idx",
    "resize_uint8",
    "split_train_val",
    "write_idx",
]
