"""Datasets: a registry of named image datasets, all yielding images in [0,1].

``load_dataset("mnist", "train")`` returns an :class:`ImageData`. Data are found through one
setting: the ``root`` argument, else the ``ROBREP_DATA`` environment variable, else
``~/.cache/robrep/data``. Nothing is downloaded unless ``download=True`` is passed.

Folder-backed data (``imagefolder:``, ``imagenet-val:``, ``wds:``, ``hfds:``) are
:class:`StreamImageData`: decoded on demand, never held whole in memory. ``take(data, n, seed)``
is what ``--n`` means: a seeded class-stratified subset when the labels come grouped by class.
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
from .folders import (  # registers imagefolder:, imagenet-val:, wds:, hfds:
    IMAGENET_MEAN,
    IMAGENET_STD,
)
from .stream import ImageTransform, StreamImageData
from .subset import grouped_by_class, stratified_subset, take
from .synthetic import gaussian_mixture

__all__ = [
    "Augment",
    "DATASETS",
    "DatasetInfo",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageData",
    "ImageTransform",
    "StreamImageData",
    "TensorImageData",
    "augment_preset",
    "dataset_info",
    "gaussian_mixture",
    "grouped_by_class",
    "list_datasets",
    "load_dataset",
    "resolve_data_root",
    "stratified_subset",
    "take",
]
