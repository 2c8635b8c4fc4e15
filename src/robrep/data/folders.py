"""Image data on disk, by name, offline, streamed (see :mod:`robrep.data.stream`).

``imagefolder:<path>[@size]``
    ``<path>/{train,test}/<class>/<image>`` (``val/`` serves as ``test``; a folder of class
    folders without ``train``/``test`` serves as either split). Classes sorted by name, as
    torchvision's ``ImageFolder``.
``imagenet-val:<dir>[@size]``
    ImageNet (ILSVRC2012) validation: a flat folder of ``ILSVRC2012_val_*.JPEG`` with labels from
    ``LOC_val_solution.csv`` (Kaggle layout, with ``LOC_synset_mapping.txt`` when present) or
    from the devkit (``ILSVRC2012_validation_ground_truth.txt`` and ``meta.mat``, in the folder,
    its parent or ``ILSVRC2012_devkit_t12/data``). Class ``k`` is the ``k``-th WordNet id in sorted
    order: the index every ImageNet classifier uses. Default size 256/224 (resize the shorter side
    to 256, centre-crop 224); normalization constants are ImageNet's.
``wds:<glob>[@size]``
    WebDataset tar shards (uncompressed ``.tar``): one sample = the members sharing a key, an image
    (``jpg``/``jpeg``/``png``/``webp``/``ppm``/``bmp``) and an integer label (``cls``, ``label``
    or ``target``). ``{split}`` in the glob is replaced by the split. Members are indexed once
    (offsets), then read at random.
``hfds:<dir>[@size]``
    A Hugging Face ``datasets`` folder written by ``save_to_disk`` (needs ``pip install
    robrep[hf-datasets]``): the first ``Image`` column and the first ``ClassLabel`` column (else
    ``label``/``labels``); a ``DatasetDict`` serves ``train`` and ``test`` (or ``validation``).

``@size`` is ``@<crop>`` (resize the shorter side to ``crop``, then centre-crop) or
``@<resize>/<crop>``. Images are converted to RGB. ``info.name`` is the full name given (size
included), so a checkpoint trained on such data records a name that loads the same images.
"""

from __future__ import annotations

import csv
import glob as _glob
import hashlib
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataNotFoundError, InputError
from .core import DATASETS, DatasetInfo, ImageData
from .stream import ImageTransform, StreamImageData, image_stats, open_image, parse_size

__all__ = ["FileSource", "HFSource", "TarSource", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: images decoded to estimate mean/std of a folder's data (all of them when there are fewer)
STATS_IMAGES = 256


def _digest_lines(lines: list[str]) -> str:
    h = hashlib.sha256()
    for s in lines:
        h.update(s.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


class FileSource:
    """Images as files: ``read(i)`` opens ``paths[i]``."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self._fp: str | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> Any:
        return open_image(self.paths[i], self.paths[i])

    def describe(self, i: int) -> str:
        return self.paths[i]

    def fingerprint(self) -> str:
        """SHA-256 of every path with its size in bytes."""
        if self._fp is None:
            lines = []
            for p in self.paths:
                try:
                    lines.append(f"{p}\t{Path(p).stat().st_size}")
                except OSError:
                    lines.append(f"{p}\t-1")
            self._fp = _digest_lines(lines)
        return self._fp


def _stream(source: Any, labels: torch.Tensor, split: str, name: str, classes: tuple[str, ...], num_classes: int,
            tf: ImageTransform, citation: str, mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> StreamImageData:
    """A StreamImageData with DatasetInfo; mean/std estimated from the images unless given."""
    shape = (tf.channels, tf.crop, tf.crop)
    placeholder = DatasetInfo(name, num_classes, shape, (0.5,) * tf.channels, (0.25,) * tf.channels, classes, citation)
    data = StreamImageData(source, labels, placeholder, split, tf)
    if mean_std is None:
        mean, std, used = image_stats(data, STATS_IMAGES)
        note = f"; mean/std from {used} of {len(data)} images" if used < len(data) else ""
    else:
        (mean, std), note = mean_std, ""
    data.info = DatasetInfo(name, num_classes, shape, mean, std, classes, citation + note)
    return data


# ---------------------------------------------------------------------------------------------
# imagefolder:<path>[@size]


def _has_class_dirs(d: Path) -> bool:
    return d.is_dir() and any(p.is_dir() for p in d.iterdir())


def imagefolder_dir(base: Path, split: str) -> Path:
    """The folder of one split: ``base/<split>``, ``base/val`` for test, or ``base`` itself when
    it holds class folders and no ``train``/``test``/``val``."""
    cands = [base / split] + ([base / "val"] if split == "test" else [])
    for d in cands:
        if d.is_dir():
            return d
    if _has_class_dirs(base) and not any((base / s).exists() for s in ("train", "test", "val")):
        return base
    raise DataNotFoundError(
        f"imagefolder: expected {base / split}/<class>/<image files> (or {base}/<class>/<images>); "
        f"create {split}/ under {base} or point at the folder that holds the class folders"
    )


def _imagefolder(spec: str) -> Callable[..., ImageData]:
    path, (resize, crop) = parse_size(spec, (32, 32), "imagefolder")

    def factory(split: str, root: Path, download: bool) -> ImageData:
        from torchvision.datasets.folder import find_classes, make_dataset

        base = Path(path).expanduser()
        d = imagefolder_dir(base, split)
        try:
            classes, class_to_idx = find_classes(str(d))
            samples = make_dataset(str(d), class_to_idx, extensions=IMG_EXTENSIONS)
        except FileNotFoundError as e:  # no class folders, or class folders without images
            raise InputError(f"imagefolder {d} holds no images ({e}); put images in {d}/<class>/") from e
        if not samples:
            raise InputError(f"imagefolder {d} holds no images")
        labels = torch.tensor([s[1] for s in samples], dtype=torch.long)
        return _stream(FileSource([s[0] for s in samples]), labels, split, f"imagefolder:{spec}", tuple(classes),
                       len(classes), ImageTransform(resize, crop), str(base))

    return factory


# ---------------------------------------------------------------------------------------------
# imagenet-val:<dir>[@size]

_VAL_RE = re.compile(r"^ILSVRC2012_val_(\d{8})\.(jpe?g|JPE?G|png|PNG)$")


def _first_file(dirs: list[Path], name: str) -> Path | None:
    for d in dirs:
        if (d / name).is_file():
            return d / name
    return None


def read_synset_mapping(path: Path) -> tuple[list[str], list[str]]:
    """``LOC_synset_mapping.txt``: lines ``<wnid> <names>``; returns (wnids, first names) in sorted-wnid order."""
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            wnid, _, words = line.strip().partition(" ")
            rows.append((wnid, words.split(",")[0].strip()))
    rows.sort()
    return [r[0] for r in rows], [r[1] for r in rows]


def read_loc_solution(path: Path) -> dict[str, str]:
    """``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first token is the WordNet id)."""
    out: dict[str, str] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                out[row["ImageId"].strip()] = row["PredictionString"].split()[0]
            except (KeyError, IndexError) as e:
                raise DataNotFoundError(f"{path} is not an ImageNet LOC_val_solution.csv (row {row}); get the file again") from e
    return out


def read_devkit(meta: Path, truth: Path) -> tuple[list[str], list[str], list[str]]:
    """Devkit ``meta.mat`` + ``ILSVRC2012_validation_ground_truth.txt`` -> (sorted wnids, names, wnid of val image k)."""
    from scipy.io import loadmat

    try:
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        leaves = [s for s in synsets if int(s["num_children"]) == 0]
        id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in leaves}
        names = {str(s["WNID"]): str(s["words"]).split(",")[0].strip() for s in leaves}
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise DataNotFoundError(f"{meta} is not an ILSVRC2012 devkit meta.mat ({e}); get the devkit again") from e
    try:
        ids = [int(v) for v in truth.read_text().split()]
        per_image = [id_to_wnid[i] for i in ids]
    except (ValueError, KeyError) as e:
        raise DataNotFoundError(f"{truth} does not match {meta} ({e}); get the devkit again") from e
    wnids = sorted(id_to_wnid.values())
    return wnids, [names[w] for w in wnids], per_image


def _imagenet_val(spec: str) -> Callable[..., ImageData]:
    path, (resize, crop) = parse_size(spec, (256, 224), "imagenet-val")

    def factory(split: str, root: Path, download: bool) -> ImageData:
        if split != "test":
            raise InputError("imagenet-val holds the validation images only: use split 'test' (--split test)")
        d = Path(path).expanduser()
        if not d.is_dir():
            raise DataNotFoundError(f"imagenet-val: {d} is not a folder; point at the folder of ILSVRC2012_val_*.JPEG files")
        files = sorted(p.name for p in d.iterdir() if _VAL_RE.match(p.name))
        if not files:
            raise DataNotFoundError(f"imagenet-val: no ILSVRC2012_val_*.JPEG files in {d}")
        look = [d, d.parent, d / "ILSVRC2012_devkit_t12" / "data", d.parent / "ILSVRC2012_devkit_t12" / "data"]
        sol = _first_file(look, "LOC_val_solution.csv")
        if sol is not None:
            by_id = read_loc_solution(sol)
            mapping = _first_file(look, "LOC_synset_mapping.txt")
            wnids, names = read_synset_mapping(mapping) if mapping is not None else (sorted(set(by_id.values())), [])
            try:
                per_file = [by_id[f.rsplit(".", 1)[0]] for f in files]
            except KeyError as e:
                raise DataNotFoundError(f"{sol} has no label for {e.args[0]}: use the solution file of this validation set") from e
            cite = f"ImageNet ILSVRC2012 validation, {d}, labels {sol.name}"
        else:
            meta, truth = _first_file(look, "meta.mat"), _first_file(look, "ILSVRC2012_validation_ground_truth.txt")
            if meta is None or truth is None:
                raise DataNotFoundError(
                    f"imagenet-val: no labels for {d}: put LOC_val_solution.csv (Kaggle) or the devkit's "
                    f"ILSVRC2012_validation_ground_truth.txt and meta.mat in {d} or {d.parent}"
                )
            wnids, names, per_image = read_devkit(meta, truth)
            per_file = []
            for f in files:
                k = int(_VAL_RE.match(f).group(1))  # type: ignore[union-attr]
                if not 1 <= k <= len(per_image):
                    raise DataNotFoundError(f"{f}: the ground truth {truth} lists {len(per_image)} images only")
                per_file.append(per_image[k - 1])
            cite = f"ImageNet ILSVRC2012 validation, {d}, labels {truth.name} + {meta.name}"
        index = {w: i for i, w in enumerate(wnids)}
        missing = sorted({w for w in per_file if w not in index})
        if missing:
            raise DataNotFoundError(f"labels {missing[:3]} are not in the synset list; use matching label files")
        labels = torch.tensor([index[w] for w in per_file], dtype=torch.long)
        classes = tuple(names) if names else tuple(wnids)
        return _stream(FileSource([str(d / f) for f in files]), labels, split, f"imagenet-val:{spec}", classes,
                       len(wnids), ImageTransform(resize, crop), cite, (IMAGENET_MEAN, IMAGENET_STD))

    return factory


# ---------------------------------------------------------------------------------------------
# wds:<glob>[@size]

WDS_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp")
WDS_LABEL_EXTS = ("cls", "label", "target")
_KEY_RE = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's key/extension split


class TarSource:
    """Images stored as members of uncompressed tar files: ``read(i)`` seeks to the member."""

    def __init__(self, shards: list[str], members: list[tuple[int, int, int, str]]) -> None:
        self.shards = shards
        self.members = members  # (shard index, data offset, size, member name)

    def __len__(self) -> int:
        return len(self.members)

    def read(self, i: int) -> Any:
        s, off, size, name = self.members[i]
        try:
            with open(self.shards[s], "rb") as f:
                f.seek(off)
                data = f.read(size)
        except OSError as e:
            raise DataNotFoundError(f"cannot read {self.describe(i)}: {e}") from e
        return open_image(data, self.describe(i))

    def describe(self, i: int) -> str:
        s, _, _, name = self.members[i]
        return f"{self.shards[s]}:{name}"

    def fingerprint(self) -> str:
        return _digest_lines([f"{self.shards[s]}\t{o}\t{n}\t{m}" for s, o, n, m in self.members])


def index_shards(shards: list[str]) -> tuple[list[tuple[int, int, int, str]], list[int]]:
    """(image members, labels) of tar shards, grouped by sample key in stored order."""
    members: list[tuple[int, int, int, str]] = []
    labels: list[int] = []
    for s, path in enumerate(shards):
        with open(path, "rb") as raw:
            if raw.read(2) in (b"\x1f\x8b", b"BZ", b"\xfd7"):
                raise InputError(f"{path} is compressed: random access needs plain .tar shards; decompress it "
                                 f"(e.g. gunzip) and point wds: at the .tar files")
        samples: dict[str, dict[str, Any]] = {}
        order: list[str] = []
        try:
            with tarfile.open(path, "r:") as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    km = _KEY_RE.match(m.name)
                    if km is None or "/." in "/" + m.name:
                        continue
                    key, ext = km.group(1), km.group(2).lower()
                    if key not in samples:
                        samples[key] = {}
                        order.append(key)
                    if ext in WDS_IMAGE_EXTS:
                        samples[key]["img"] = (s, m.offset_data, m.size, m.name)
                    elif ext in WDS_LABEL_EXTS or ext in tuple(e + ".txt" for e in WDS_LABEL_EXTS):
                        f = tar.extractfile(m)
                        txt = f.read().decode().strip() if f is not None else ""
                        try:
                            samples[key]["cls"] = int(txt)
                        except ValueError as e:
                            raise DataNotFoundError(f"{path}:{m.name} holds {txt[:20]!r}, not an integer label") from e
        except tarfile.TarError as e:
            raise DataNotFoundError(f"{path} is not a readable tar file ({e}); write the shards again") from e
        for key in order:
            smp = samples[key]
            if "img" not in smp or "cls" not in smp:
                raise DataNotFoundError(f"{path}: sample {key!r} lacks an image or an integer label "
                                        f"(.{'/.'.join(WDS_IMAGE_EXTS)} and .cls)")
            members.append(smp["img"])
            labels.append(int(smp["cls"]))
    return members, labels


def _wds(spec: str) -> Callable[..., ImageData]:
    pattern, (resize, crop) = parse_size(spec, (32, 32), "wds")

    def factory(split: str, root: Path, download: bool) -> ImageData:
        pat = str(Path(pattern.replace("{split}", split)).expanduser())
        shards = sorted(_glob.glob(pat))
        if not shards:
            raise DataNotFoundError(f"wds: no shard matches {pat}; give a glob of .tar files (e.g. wds:/data/shards/{{split}}-*.tar)")
        members, labels = index_shards(shards)
        if not members:
            raise InputError(f"wds: the shards {pat} hold no samples")
        if min(labels) < 0:
            raise DataNotFoundError(f"wds: labels must be >= 0, got {min(labels)}")
        k = max(labels) + 1
        return _stream(TarSource(shards, members), torch.tensor(labels), split, f"wds:{spec}",
                       tuple(str(i) for i in range(k)), k, ImageTransform(resize, crop), f"WebDataset shards {pat}")

    return factory


# ---------------------------------------------------------------------------------------------
# hfds:<dir>[@size]

_HF_SPLITS = {"train": ("train",), "test": ("test", "validation", "valid", "val")}


def _load_hf(path: str, split: str) -> tuple[Any, str]:
    try:
        import datasets as hfd
    except ImportError as e:
        raise InputError("hfds: needs the Hugging Face datasets package: pip install 'robrep[hf-datasets]'") from e
    try:
        ds = hfd.load_from_disk(path)
    except FileNotFoundError as e:
        raise DataNotFoundError(f"hfds: {path} is not a folder written by datasets' save_to_disk ({e})") from e
    if isinstance(ds, hfd.DatasetDict):
        for name in _HF_SPLITS[split]:
            if name in ds:
                return ds[name], name
        raise DataNotFoundError(f"hfds: {path} has splits {sorted(ds)}; none of {_HF_SPLITS[split]} for {split!r}")
    return ds, ""


class HFSource:
    """Rows of a Hugging Face ``datasets`` folder (memory-mapped Arrow): ``read(i)`` decodes row i's image.

    Pickles as (path, split, column): each DataLoader worker opens the folder itself."""

    def __init__(self, path: str, split: str, column: str, length: int) -> None:
        self.path, self.split, self.column, self.length = path, split, column, length
        self._ds: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_ds"} | {"_ds": None}

    def _dataset(self) -> Any:
        if self._ds is None:
            self._ds, _ = _load_hf(self.path, self.split)
        return self._ds

    def __len__(self) -> int:
        return self.length

    def read(self, i: int) -> Any:
        img = self._dataset()[int(i)][self.column]
        if img is None or not hasattr(img, "mode"):
            raise DataNotFoundError(f"hfds: row {i} of {self.path} has no image in column {self.column!r}")
        return img if img.mode in ("RGB", "L") else img.convert("RGB")

    def describe(self, i: int) -> str:
        return f"{self.path}[{self.split or 'dataset'}][{i}].{self.column}"

    def fingerprint(self) -> str:
        ds = self._dataset()
        return _digest_lines([self.path, self.split, self.column, str(len(ds)), str(getattr(ds, "_fingerprint", ""))])


def _hfds(spec: str) -> Callable[..., ImageData]:
    path, (resize, crop) = parse_size(spec, (32, 32), "hfds")

    def factory(split: str, root: Path, download: bool) -> ImageData:
        import datasets as hfd  # checked in _load_hf

        p = str(Path(path).expanduser())
        ds, hf_split = _load_hf(p, split)
        feats = ds.features
        img_cols = [c for c, f in feats.items() if isinstance(f, hfd.Image)]
        if not img_cols:
            raise DataNotFoundError(f"hfds: {p} has no Image column (columns {list(feats)}); cast one with datasets.Image()")
        lab_cols = [c for c, f in feats.items() if isinstance(f, hfd.ClassLabel)] or [c for c in ("label", "labels") if c in feats]
        if not lab_cols:
            raise DataNotFoundError(f"hfds: {p} has no ClassLabel or 'label' column (columns {list(feats)})")
        lab = lab_cols[0]
        y = np.asarray(ds[lab])
        if y.ndim != 1 or len(y) == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise DataNotFoundError(f"hfds: column {lab!r} of {p} must hold integer labels >= 0")
        if isinstance(feats[lab], hfd.ClassLabel):
            classes = tuple(feats[lab].names)
        else:
            classes = tuple(str(i) for i in range(int(y.max()) + 1))
        src = HFSource(p, hf_split, img_cols[0], len(ds))
        src._ds = ds
        return _stream(src, torch.from_numpy(y.astype(np.int64)), split, f"hfds:{spec}", classes, len(classes),
                       ImageTransform(resize, crop), f"Hugging Face datasets folder {p}" + (f" [{hf_split}]" if hf_split else ""))

    return factory


DATASETS.register_prefix("imagefolder", _imagefolder,
                         help="<path>[@size]: <path>/{train,test}/<class>/*.png (streamed; default size 32)")
DATASETS.register_prefix("imagenet-val", _imagenet_val,
                         help="<dir>[@256/224]: ILSVRC2012_val_*.JPEG + LOC_val_solution.csv or devkit ground truth")
DATASETS.register_prefix("wds", _wds, help="<glob>[@size]: WebDataset .tar shards (image + .cls per sample; {split} in the glob)")
DATASETS.register_prefix("hfds", _hfds, help="<dir>[@size]: a Hugging Face datasets folder from save_to_disk (extra hf-datasets)")
