"""Datasets: a registry of named image datasets, all yielding images in [0,1].

``load_dataset("mnist", "train")`` returns an :class:`ImageData`. Data are found through one
setting: the ``root`` argument, else the ``ROBREP_DATA`` environment variable, else
``~/.cache/robrep/data``. Nothing is downloaded unless ``download=True`` is passed.
"""

from .augment import Augment, augment_preset
from .core import (
    DATASETS,
    DatasetInfo,
    ImageData,
    TensorImageData,
    dataset_info,
    list_datasets,
    load_dataset,
    resolve_data_root,
)
from .synthetic import gaussian_mixture

__all__ = [
    "Augment",
    "DATASETS",
    "DatasetInfo",
    "ImageData",
    "TensorImageData",
    "augment_preset",
    "dataset_info",
    "gaussian_mixture",
    "list_datasets",
    "load_dataset",
    "resolve_data_root",
]
