"""Data sets (real on-disk formats and generated ones) and their federated partitions."""

from prunefl.data.cifar import load_cifar10
from prunefl.data.dataset import ArrayDataset, Augment
from prunefl.data.digits import load_digits
from prunefl.data.idx import load_fashion_mnist, load_mnist, read_idx
from prunefl.data.imagefolder import load_imagefolder
from prunefl.data.leaf import LeafData, load_celeba, load_femnist, read_celeba, read_femnist
from prunefl.data.partition import (
    PARTITION_KINDS,
    PartitionKind,
    dirichlet,
    iid,
    label_counts,
    natural,
    partition,
    shards,
)
from prunefl.data.registry import DATASET_NAMES, load_dataset
from prunefl.data.synthetic import make_synthetic

__all__ = [
    "ArrayDataset",
    "Augment",
    "DATASET_NAMES",
    "load_dataset",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "read_idx",
    "load_imagefolder",
    "LeafData",
    "load_celeba",
    "load_femnist",
    "read_celeba",
    "read_femnist",
    "make_synthetic",
    "PARTITION_KINDS",
    "PartitionKind",
    "iid",
    "dirichlet",
    "shards",
    "natural",
    "partition",
    "label_counts",
]
