"""Dataset registry and in-memory image data (streamed, folder-backed data: ``stream.py``, ``folders.py``)."""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._registry import Registry
from ..errors import DataNotFoundError, InputError

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "ImageData",
    "TensorImageData",
    "dataset_info",
    "list_datasets",
    "load_dataset",
    "resolve_data_root",
]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    Attributes:
        name: registry name.
        num_classes: number of labels.
        input_shape: (C, H, W) of one image.
        mean, std: per-channel normalization constants that models built for it use inside.
        classes: class names.
        citation: where the data come from.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()
    citation: str = ""


class ImageData:
    """One split of a dataset: images in [0,1] as float tensors (N, C, H, W), labels (N,)."""

    info: DatasetInfo
    split: str
    #: how :func:`robrep.data.take` chose these examples (None: not chosen by ``take``)
    selection: dict | None = None

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)


def fraction_indices(labels: torch.Tensor, frac: float, seed: int = 0, balanced: bool = True) -> torch.Tensor:
    """Sorted indices of a seeded subset holding ``frac`` of the examples: per class (at least one
    of each) when ``balanced``, else over all examples.

    Raises:
        InputError: ``frac`` outside (0, 1].
    """
    if not 0 < frac <= 1:
        raise InputError(f"fraction must be in (0, 1], got {frac}")
    g = torch.Generator().manual_seed(seed)
    if not balanced:
        k = max(1, int(round(frac * len(labels))))
        return torch.randperm(len(labels), generator=g)[:k]
    keep = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        k = max(1, int(round(frac * len(idx))))
        keep.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.sort(torch.cat(keep)).values


@dataclass
class TensorImageData(ImageData):
    """Images held in memory (uint8 or float in [0,1]); batches are slices, no DataLoader.

    Args:
        images: (N, C, H, W) uint8 in [0,255] or float in [0,1].
        labels: (N,) integer labels.
        info: the dataset's :class:`DatasetInfo`.
        split: "train" or "test".
    """

    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo
    split: str = "train"
    _float: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise InputError(f"images must have shape (N, C, H, W), got {tuple(self.images.shape)}")
        if self.images.shape[0] != self.labels.shape[0]:
            raise InputError(
                f"{self.images.shape[0]} images but {self.labels.shape[0]} labels: give one label per image"
            )
        if len(self.images) == 0:
            raise InputError(f"dataset {self.info.name!r} ({self.split}) is empty: give at least one image")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as float in [0,1] and all labels."""
        if self._float is None:
            x = self.images
            self._float = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        return self._float, self.labels

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if batch_size <= 0:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        x, y = self.tensors()
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - (n % batch_size) if drop_last else n
        for i in range(0, stop, batch_size):
            idx = order[i : i + batch_size]
            xb, yb = x[idx], y[idx]
            if device is not None:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            yield xb, yb

    def subset(self, indices: torch.Tensor | np.ndarray | list[int]) -> TensorImageData:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return TensorImageData(self.images[idx], self.labels[idx], self.info, self.split)

    def fraction(self, frac: float, seed: int = 0, balanced: bool = True) -> TensorImageData:
        """A seeded (class-balanced) subset holding ``frac`` of the examples."""
        if frac == 1:
            return self
        return self.subset(fraction_indices(self.labels, frac, seed, balanced))

    def head(self, n: int) -> TensorImageData:
        """The first ``n`` examples (deterministic evaluation subsets)."""
        return self.subset(torch.arange(min(n, len(self))))

    def to_memory(self) -> TensorImageData:
        """Itself (streamed data sets return their in-memory copy)."""
        return self


DATASETS: Registry[Callable[..., ImageData]] = Registry("dataset")
_INFOS: dict[str, DatasetInfo] = {}


def resolve_data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``root``, else ``$ROBREP_DATA``, else ``~/.cache/robrep/data``."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("ROBREP_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "robrep" / "data"


def list_datasets() -> list[str]:
    return DATASETS.names()


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered dataset (``imagefolder:`` needs loading)."""
    if name in _INFOS:
        return _INFOS[name]
    DATASETS.get(name)  # raises a helpful error for unknown names
    raise InputError(f"dataset {name!r} has no static info; load it to learn its shape")


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> ImageData:
    """Load one split of a registered dataset.

    Args:
        name: registry name (``robrep list datasets``), e.g. ``"mnist"`` or ``"imagefolder:/data/x"``.
        split: ``"train"`` or ``"test"``.
        root: data root; default ``$ROBREP_DATA`` or ``~/.cache/robrep/data``.
        download: allow torchvision to download missing files (never done by default).
    """
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    factory = DATASETS.get(name)
    return factory(split=split, root=resolve_data_root(root), download=download)


def _register(info: DatasetInfo, help: str) -> Callable[[Callable[..., ImageData]], Callable[..., ImageData]]:
    _INFOS[info.name] = info
    return DATASETS.register(info.name, help=help)


# ---------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST), read by content so that gzip headers do not matter.

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array; corrupt files raise."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:  # type: ignore[operator]
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataNotFoundError(f"cannot read {path}: {e}; delete it and fetch it again") from e
    if len(data) < 4:
        raise DataNotFoundError(f"{path} is truncated; delete it and fetch it again")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataNotFoundError(f"{path} is not an unsigned-byte IDX file; delete it and fetch it again")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataNotFoundError(f"{path} is truncated ({body.size} of {int(np.prod(dims))} bytes); fetch it again")
    return body.reshape(dims)


def _find(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for cand in (d / stem, d / (stem + ".gz")):
            if cand.is_file():
                return cand
    return None


def _idx_dataset(
    info: DatasetInfo,
    dirs: list[Path],
    split: str,
    root: Path,
    download: bool,
    tv_factory: Callable[..., object],
    tv_folder: str,
) -> TensorImageData:
    img_stem, lab_stem = _IDX_FILES[split]
    img, lab = _find(dirs, img_stem), _find(dirs, lab_stem)
    if (img is None or lab is None) and download:
        tv_factory(root=str(root), train=(split == "train"), download=True)
        img, lab = _find(dirs, img_stem), _find(dirs, lab_stem)
    if img is None or lab is None:
        raise DataNotFoundError(
            f"{info.name} ({split}) not found: expected {img_stem}[.gz] and {lab_stem}[.gz] in "
            f"{' or '.join(str(d) for d in dirs)}. Put the official files in "
            f"{root / tv_folder / 'raw'} (or set ROBREP_DATA / --data-root to the folder holding "
            f"{tv_folder}/raw), or pass --download."
        )
    x = read_idx(img)
    y = read_idx(lab)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataNotFoundError(f"{img} and {lab} do not match (shapes {x.shape}, {y.shape}); fetch them again")
    return TensorImageData(torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)), info, split)


MNIST_INFO = DatasetInfo(
    "mnist", 10, (1, 28, 28), (0.1307,), (0.3081,), tuple(str(i) for i in range(10)),
    "Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, Proc. IEEE 86(11), 1998",
)
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FMNIST_INFO = DatasetInfo(
    "fashion-mnist", 10, (1, 28, 28), (0.2860,), (0.3530,), FMNIST_CLASSES,
    "H. Xiao, K. Rasul, R. Vollgraf, Fashion-MNIST, arXiv:1708.07747 (MIT licence)",
)
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@_register(MNIST_INFO, "MNIST digits, 60k/10k, 1x28x28 (root/MNIST/raw)")
def _mnist(split: str, root: Path, download: bool) -> ImageData:
    from torchvision import datasets

    return _idx_dataset(MNIST_INFO, [root / "MNIST" / "raw", root / "mnist"], split, root, download, datasets.MNIST, "MNIST")


@_register(FMNIST_INFO, "Fashion-MNIST, 60k/10k, 1x28x28 (root/FashionMNIST/raw or Debian's dataset-fashion-mnist)")
def _fmnist(split: str, root: Path, download: bool) -> ImageData:
    from torchvision import datasets

    dirs = [root / "FashionMNIST" / "raw", root / "fashion-mnist", DEBIAN_FMNIST]
    return _idx_dataset(FMNIST_INFO, dirs, split, root, download, datasets.FashionMNIST, "FashionMNIST")


# ---------------------------------------------------------------------------------------------
# Coloured MNIST: 3-channel digits for colour transforms (hue, saturation, lightness).

COLORED_MNIST_INFO = DatasetInfo(
    "colored-mnist", 10, (3, 28, 28), (0.080, 0.080, 0.080), (0.22, 0.22, 0.22), MNIST_INFO.classes,
    "MNIST (LeCun et al. 1998), each digit's strokes given a random fully-saturated-to-pastel colour "
    "(hue U[0,1), saturation U[0.5,1], value 1; seed fixed per split) on a black background",
)


def colorize(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Colour grey images (N, 1, H, W) uint8: strokes times one random RGB colour per image.

    The colour is HSV (h ~ U[0,1), s ~ U[0.5,1], v = 1) -> RGB, drawn from ``seed``, so the same
    split always gets the same colours. Returns (N, 3, H, W) uint8.
    """
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    h, s = torch.rand(n, generator=g), 0.5 + 0.5 * torch.rand(n, generator=g)
    k = (torch.tensor([5.0, 3.0, 1.0])[None] + 6 * h[:, None]) % 6  # HSV -> RGB (v = 1)
    rgb = 1 - s[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1))
    out = x.float() * rgb[:, :, None, None]
    return out.round().clamp(0, 255).to(torch.uint8)


@_register(COLORED_MNIST_INFO, "MNIST with a random colour per digit, 60k/10k, 3x28x28 (built from the MNIST files)")
def _colored_mnist(split: str, root: Path, download: bool) -> ImageData:
    base = _mnist(split, root, download)
    assert isinstance(base, TensorImageData)
    return TensorImageData(colorize(base.images, seed=1 if split == "train" else 2), base.labels, COLORED_MNIST_INFO, split)


# ---------------------------------------------------------------------------------------------
# The bundled demo set.

DEMO_FILE = Path(__file__).with_name("demo_fashion_mnist.npz")
DEMO_INFO = DatasetInfo(
    "demo", 10, (1, 28, 28), FMNIST_INFO.mean, FMNIST_INFO.std, FMNIST_CLASSES,
    "class-balanced subset of Fashion-MNIST (Xiao et al. 2017, MIT licence), shipped with robrep",
)


@_register(DEMO_INFO, "bundled class-balanced Fashion-MNIST subset (offline; 500/class train, 100/class test)")
def _demo(split: str, root: Path, download: bool) -> ImageData:
    if not DEMO_FILE.is_file():
        raise DataNotFoundError(f"the bundled demo data {DEMO_FILE} is missing; reinstall robrep")
    with np.load(DEMO_FILE, allow_pickle=False) as z:
        x, y = z[f"x_{split}"], z[f"y_{split}"]
    return TensorImageData(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64)), DEMO_INFO, split)


# ---------------------------------------------------------------------------------------------
# torchvision-backed colour datasets, read fully into memory as uint8.

CIFAR10_INFO = DatasetInfo(
    "cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616),
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "A. Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009",
)
CIFAR100_INFO = DatasetInfo(
    "cifar100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), (),
    "A. Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009",
)
SVHN_INFO = DatasetInfo(
    "svhn", 10, (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
    tuple(str(i) for i in range(10)), "Y. Netzer et al., Reading Digits in Natural Images, 2011",
)


def _tv_missing(info: DatasetInfo, root: Path, what: str, e: Exception) -> DataNotFoundError:
    return DataNotFoundError(
        f"{info.name} not found under {root} ({what}; {e}). Pass --download (or download=True) to let "
        f"torchvision fetch it, or set ROBREP_DATA / --data-root to the folder that holds it."
    )


@_register(CIFAR10_INFO, "CIFAR-10, 50k/10k, 3x32x32 (torchvision layout: root/cifar-10-batches-py)")
def _cifar10(split: str, root: Path, download: bool) -> ImageData:
    return _cifar(CIFAR10_INFO, split, root, download)


@_register(CIFAR100_INFO, "CIFAR-100, 50k/10k, 3x32x32 (torchvision layout: root/cifar-100-python)")
def _cifar100(split: str, root: Path, download: bool) -> ImageData:
    return _cifar(CIFAR100_INFO, split, root, download)


def _cifar(info: DatasetInfo, split: str, root: Path, download: bool) -> ImageData:
    from torchvision import datasets

    cls = datasets.CIFAR10 if info.name == "cifar10" else datasets.CIFAR100
    try:
        ds = cls(root=str(root), train=(split == "train"), download=download)
    except RuntimeError as e:
        raise _tv_missing(info, root, f"expected {cls.base_folder}/", e) from e
    x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return TensorImageData(x, torch.as_tensor(ds.targets), info, split)


@_register(SVHN_INFO, "SVHN digits, 73k/26k, 3x32x32 (torchvision layout: root/train_32x32.mat)")
def _svhn(split: str, root: Path, download: bool) -> ImageData:
    from torchvision import datasets

    try:
        ds = datasets.SVHN(root=str(root), split=split, download=download)
    except RuntimeError as e:
        raise _tv_missing(SVHN_INFO, root, f"expected {split}_32x32.mat", e) from e
    return TensorImageData(torch.from_numpy(ds.data), torch.from_numpy(ds.labels.astype(np.int64)), SVHN_INFO, split)

# Folder-backed data (imagefolder:, imagenet-val:, wds:, hfds:) stream from disk: see folders.py.
