"""Datasets: bundled demo set, MNIST/Fashion-MNIST by content (checked counts), imagefolder, errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

import robrep
from robrep.data.core import DEMO_FILE
from robrep.errors import DataNotFoundError, UnknownNameError


def test_demo_is_small_balanced_and_in_unit_range(demo_data) -> None:
    tr, te = demo_data
    assert DEMO_FILE.stat().st_size < 5 * 2**20
    assert len(tr) == 5000 and len(te) == 1000
    assert torch.bincount(tr.labels).tolist() == [500] * 10
    assert torch.bincount(te.labels).tolist() == [100] * 10
    x, _ = tr.tensors()
    assert x.shape[1:] == (1, 28, 28) and x.min() >= 0 and x.max() <= 1


def test_mnist_matches_published_statistics(mnist_test) -> None:
    assert torch.bincount(mnist_test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    tr = robrep.load_dataset("mnist", "train")
    x, y = tr.tensors()
    assert len(tr) == 60000 and int(y[0]) == 5
    assert float(x.mean()) == pytest.approx(0.1307, abs=1e-4)
    assert float(x.std()) == pytest.approx(0.3081, abs=1e-4)


def test_fashion_mnist_balanced(fmnist_test) -> None:
    assert torch.bincount(fmnist_test.labels).tolist() == [1000] * 10


def test_demo_is_a_subset_of_fashion_mnist(fmnist_test, demo_data) -> None:
    # the first 100 test images of class 0 in file order are the demo's class-0 test images
    x, y = fmnist_test.tensors()
    dx, dy = demo_data[1].tensors()
    assert torch.equal(x[y == 0][:100], dx[dy == 0])


def _write_idx(path, arr: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_reader_and_missing_and_corrupt_files(tmp_path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="t10k-images-idx3-ubyte"):
        robrep.load_dataset("mnist", "test", root=tmp_path)
    imgs = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3]))
    d = robrep.load_dataset("mnist", "test", root=tmp_path)
    x, y = d.tensors()
    assert y.tolist() == [1, 2, 3] and torch.allclose(x[0, 0], torch.from_numpy(imgs[0] / 255.0).float())
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataNotFoundError, match="cannot read|truncated|IDX"):
        robrep.load_dataset("mnist", "test", root=tmp_path)


def test_imagefolder(tmp_path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        for c in ("cat", "dog"):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray((np.random.default_rng(i).random((20, 20, 3)) * 255).astype(np.uint8)).save(d / f"{i}.png")
    data = robrep.load_dataset(f"imagefolder:{tmp_path}@16", "train")
    x, y = data.tensors()
    assert x.shape == (6, 3, 16, 16) and y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.info.classes == ("cat", "dog")


def test_unknown_dataset_and_fraction(demo_data) -> None:
    with pytest.raises(UnknownNameError, match="fashion-mnist"):
        robrep.load_dataset("fashion_mnist")
    sub = demo_data[0].fraction(0.1, seed=3)
    assert torch.bincount(sub.labels).tolist() == [50] * 10
    assert torch.equal(sub.labels, demo_data[0].fraction(0.1, seed=3).labels)


def test_batches_cover_every_example_once(demo_data) -> None:
    te = demo_data[1]
    seen = torch.cat([y for _, y in te.batches(300, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert torch.equal(torch.sort(seen).values, torch.sort(te.labels).values)


def test_colorize_matches_colorsys_and_keeps_the_digit() -> None:
    """Coloured MNIST: each image is its grey strokes times one HSV(h, s, 1) colour (checked
    against the standard library's colorsys), deterministic per seed."""
    import colorsys

    from robrep.data.core import colorize

    x = torch.randint(0, 256, (6, 1, 5, 5), dtype=torch.uint8)
    c = colorize(x, seed=3)
    assert c.shape == (6, 3, 5, 5) and c.dtype == torch.uint8 and torch.equal(c, colorize(x, seed=3))
    g = torch.Generator().manual_seed(3)
    h, s = torch.rand(6, generator=g), 0.5 + 0.5 * torch.rand(6, generator=g)
    for i in range(6):
        rgb = torch.tensor(colorsys.hsv_to_rgb(float(h[i]), float(s[i]), 1.0))
        ref = (x[i].float() * rgb[:, None, None]).round()
        assert (c[i].float() - ref).abs().max() <= 1  # float32 vs float64 rounding
    assert torch.equal(c.max(1).values, x[:, 0])  # v = 1: the brightest channel is the grey value


def test_colored_mnist_is_mnist_in_colour(mnist_test) -> None:
    d = robrep.load_dataset("colored-mnist", "test")
    assert len(d) == 10000 and d.info.input_shape == (3, 28, 28)
    assert torch.equal(d.labels, mnist_test.labels)
    assert torch.equal(d.images[:50].max(1).values, mnist_test.images[:50, 0])
