"""Streamed, folder-backed data: exact equality with the in-memory path (torchvision ImageFolder +
Resize/CenterCrop/ToTensor, stacked, which is what ``imagefolder:`` did before), class-stratified
subsets (counts, determinism, coverage), and the on-disk layouts by name (ImageFolder, ImageNet
validation with Kaggle and devkit labels, WebDataset shards written by ``webdataset``, Hugging
Face ``save_to_disk`` folders) giving the labels the test wrote."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import robrep
from robrep.data import StreamImageData, TensorImageData, grouped_by_class, stratified_subset, take
from robrep.errors import DataNotFoundError, InputError

CLASSES = ("ant", "bee", "cat")


def _rand_image(rng: np.random.Generator, mode: str = "RGB") -> Image.Image:
    h, w = (int(v) for v in rng.integers(12, 40, 2))
    arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(arr)
    return img if mode == "RGB" else img.convert(mode)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """<root>/{train,test}/<class>/*: PNG and JPEG, RGB / grey / palette / RGBA, of varied sizes."""
    root = tmp_path_factory.mktemp("imgfolder")
    rng = np.random.default_rng(0)
    modes = ("RGB", "L", "P", "RGBA")
    for split, per in (("train", 5), ("test", 4)):
        for c in CLASSES:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per):
                mode = modes[i % len(modes)]
                ext = "jpg" if mode in ("RGB", "L") and i % 2 == 0 else "png"
                _rand_image(rng, mode).save(d / f"{i:03d}.{ext}")
    return root


def _reference(d: Path, resize: int, crop: int) -> tuple[torch.Tensor, list[int]]:
    """The former in-memory path: torchvision ImageFolder, Resize + CenterCrop + ToTensor, stacked."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop), transforms.ToTensor()])
    ds = datasets.ImageFolder(str(d), transform=tf)
    return torch.stack([ds[i][0] for i in range(len(ds))]), list(ds.targets)


def test_stream_equals_in_memory_path(folder) -> None:
    data = robrep.load_dataset(f"imagefolder:{folder}@16", "train")
    assert isinstance(data, StreamImageData) and len(data) == 15
    ref_x, ref_y = _reference(folder / "train", 16, 16)
    x, y = data.tensors()
    assert x.dtype == torch.float32 and torch.equal(x, ref_x) and y.tolist() == ref_y
    assert data.info.classes == CLASSES and data.info.input_shape == (3, 16, 16) and data.info.num_classes == 3
    assert data.info.name == f"imagefolder:{folder}@16"  # the size too: a checkpoint records a name that reloads
    # mean/std: all 15 images are used (<= 256), the same numbers as over the stacked tensor
    assert np.allclose(data.info.mean, ref_x.mean((0, 2, 3)).numpy(), atol=1e-6)
    assert np.allclose(data.info.std, ref_x.std((0, 2, 3)).numpy(), atol=1e-5)
    # shuffled batches: the same permutation, the same values as the in-memory TensorImageData
    mem = TensorImageData(ref_x, torch.tensor(ref_y), data.info, "train")
    for drop_last in (False, True):
        a = list(data.batches(4, shuffle=True, generator=torch.Generator().manual_seed(7), drop_last=drop_last))
        b = list(mem.batches(4, shuffle=True, generator=torch.Generator().manual_seed(7), drop_last=drop_last))
        assert len(a) == len(b) == (3 if drop_last else 4)
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # subsets keep the files' identity; to_memory is uint8 with the same values
    sub = data.subset([14, 0, 7])
    assert torch.equal(sub.tensors()[0], ref_x[[14, 0, 7]]) and sub.labels.tolist() == [ref_y[14], ref_y[0], ref_y[7]]
    assert torch.equal(data.head(4).tensors()[0], ref_x[:4])
    m = data.to_memory()
    assert m.images.dtype == torch.uint8 and torch.equal(m.tensors()[0], ref_x)


def test_resize_then_crop_and_workers(folder) -> None:
    """@<resize>/<crop> = Resize(resize) + CenterCrop(crop); two DataLoader workers give the same batches."""
    data = robrep.load_dataset(f"imagefolder:{folder}@24/16", "test")
    ref_x, ref_y = _reference(folder / "test", 24, 16)
    xs = torch.cat([xb for xb, _ in data.with_workers(2).batches(5)])
    assert torch.equal(xs, ref_x) and data.labels.tolist() == ref_y
    with pytest.raises(InputError, match="resize"):
        robrep.load_dataset(f"imagefolder:{folder}@16/24", "test")
    with pytest.raises(InputError, match="size"):
        robrep.load_dataset(f"imagefolder:{folder}@big", "test")


def test_imagefolder_layout_variants(folder, tmp_path) -> None:
    """val/ serves as test; a bare folder of class folders serves as either split."""
    (tmp_path / "val").symlink_to(folder / "test", target_is_directory=True)
    d = robrep.load_dataset(f"imagefolder:{tmp_path}@8", "test")
    assert len(d) == 12 and d.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    bare = robrep.load_dataset(f"imagefolder:{folder / 'train'}@8", "test")
    assert len(bare) == 15 and bare.info.classes == CLASSES
    with pytest.raises(DataNotFoundError, match="train"):
        robrep.load_dataset(f"imagefolder:{tmp_path}@8", "train")


def test_evaluate_stream_equals_in_memory(folder) -> None:
    """evaluate() on the stream and on the same images in memory: identical per-example results,
    with and without a stratified --n, clean and under PGD (same seed)."""
    data = robrep.load_dataset(f"imagefolder:{folder}@16", "train")
    mem = data.to_memory()
    torch.manual_seed(0)
    model = robrep.create_model("small-cnn", num_classes=3, input_shape=(3, 16, 16)).eval()
    thr = robrep.threat("linf", 8 / 255)
    for n in (None, 7):
        a = robrep.evaluate(model, data, threat=thr, attack_kwargs={"steps": 3}, n=n, seed=5, batch_size=4)
        b = robrep.evaluate(model, mem, threat=thr, attack_kwargs={"steps": 3}, n=n, seed=5, batch_size=4)
        assert a == b
        assert a.n == (15 if n is None else 7)
    assert sorted(a.per_class_clean) == [0, 1, 2]  # n = 7 of a class-sorted folder: every class


def test_stream_fingerprint_resume(folder, tmp_path) -> None:
    data = robrep.load_dataset(f"imagefolder:{folder}@16", "train")
    torch.manual_seed(0)
    model = robrep.create_model("small-cnn", num_classes=3, input_shape=(3, 16, 16)).eval()
    a = robrep.evaluate(model, data, chunk_size=6, out=tmp_path / "run", batch_size=4)
    b = robrep.evaluate(model, data, chunk_size=6, out=tmp_path / "run", batch_size=4, resume=True)
    assert b.chunks_resumed == 3 and (a.clean_accuracy, a.per_class_clean) == (b.clean_accuracy, b.per_class_clean)
    fp = data.fingerprint()
    assert fp["len"] == 15 and fp != data.subset(range(14)).fingerprint()


def test_tensors_refuses_large_data(folder, monkeypatch) -> None:
    data = robrep.load_dataset(f"imagefolder:{folder}@16", "train")
    monkeypatch.setenv("ROBREP_MAX_TENSORS_GB", str(1000 / 2**30))  # 1000 bytes
    with pytest.raises(InputError, match=r"batches"):
        data.tensors()
    assert sum(len(y) for _, y in data.batches(4)) == 15  # streaming still works


def test_corrupt_image_names_the_file(folder, tmp_path) -> None:
    d = tmp_path / "test" / "x"
    d.mkdir(parents=True)
    _rand_image(np.random.default_rng(1)).save(d / "ok.png")
    (d / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataNotFoundError, match="bad.png"):
        robrep.load_dataset(f"imagefolder:{tmp_path}@8", "test")
    # decoded in a DataLoader worker: the same one-line message, without the worker's traceback
    from robrep.data import DatasetInfo, ImageTransform
    from robrep.data.folders import FileSource

    info3 = DatasetInfo("x", 1, (3, 8, 8), (0.5,) * 3, (0.25,) * 3)
    data = StreamImageData(FileSource([str(d / "ok.png"), str(d / "bad.png")]), torch.tensor([0, 0]), info3, "test",
                           ImageTransform(8, 8), num_workers=1)
    with pytest.raises(DataNotFoundError) as err:
        list(data.batches(2))
    msg = str(err.value)
    assert msg.startswith("cannot decode image") and "bad.png" in msg and "\n" not in msg


# --------------------------------------------------------------------------------------------
# stratified subsets


@pytest.mark.parametrize("counts,n", [([10, 10, 10], 7), ([5, 9, 3, 8], 12), ([50] * 10, 100), ([2, 30, 30], 20), ([4, 4], 8)])
def test_stratified_subset_counts(counts, n) -> None:
    y = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    for seed in range(5):
        idx = stratified_subset(y, n, seed)
        assert len(idx) == n and len(torch.unique(idx)) == n and torch.equal(idx, torch.sort(idx).values)
        got = torch.bincount(y[idx], minlength=len(counts))
        share = n // len(counts)
        capped = torch.tensor(counts) <= share
        assert torch.equal(got[capped], torch.tensor(counts)[capped])  # small classes give all they have
        free = got[~capped]
        assert len(free) == 0 or int(free.max() - free.min()) <= 1  # the others: equal shares up to one
        assert bool((got > 0).all())  # n >= classes: every class present
        assert torch.equal(idx, stratified_subset(y, n, seed))  # deterministic per seed
    assert any(not torch.equal(stratified_subset(y, n, 0), stratified_subset(y, n, s)) for s in range(1, 5)) or n == len(y)


def test_stratified_subset_in_mixed_order_and_errors() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 7, (200,), generator=g)
    idx = stratified_subset(y, 21, 3)
    assert torch.bincount(y[idx], minlength=7).tolist() == [3] * 7
    few = stratified_subset(y, 4, 0)  # n < classes: 4 distinct classes, one each
    assert len(torch.unique(y[few])) == 4
    with pytest.raises(InputError, match="subset size"):
        stratified_subset(y, 0, 0)
    with pytest.raises(InputError, match="subset size"):
        stratified_subset(y, 201, 0)
    with pytest.raises(InputError, match="integers"):
        stratified_subset(torch.rand(5), 2, 0)


def test_take_is_stratified_on_class_sorted_data_only(folder, demo_data) -> None:
    data = robrep.load_dataset(f"imagefolder:{folder}@8", "train")
    assert grouped_by_class(data.labels) and not grouped_by_class(demo_data[1].labels)
    sub = take(data, 6, seed=2)
    assert torch.bincount(sub.labels).tolist() == [2, 2, 2]
    assert sub.selection == {"n": 6, "of": 15, "method": "stratified", "seed": 2}
    te = demo_data[1]
    first = take(te, 50, seed=2)  # mixed order: the first n, as before
    assert torch.equal(first.labels, te.labels[:50]) and first.selection["method"] == "first"
    assert take(te, None).selection["method"] == "all" and len(take(te, 10**6)) == len(te)
    with pytest.raises(InputError, match="n must be positive"):
        take(te, 0)


def test_cli_eval_n_on_class_sorted_folder(folder, tmp_path, capsys) -> None:
    from robrep.cli import main
    from robrep.models import save_model

    torch.manual_seed(0)
    model = robrep.create_model("small-cnn", num_classes=3, input_shape=(3, 16, 16))
    ck = save_model(tmp_path / "m.safetensors", model, {"dataset": f"imagefolder:{folder}@16"})
    rc = main(["eval", "--checkpoint", str(ck), "--split", "train", "--n", "6", "--seed", "1", "--eps", "0.03",
               "--steps", "1", "--json", "--quiet", "--device", "cpu", "--out", str(tmp_path / "run")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n"] == 6 and sorted(out["per_class_clean"]) == ["0", "1", "2"]
    assert out["subset"] == {"n": 6, "of": 15, "method": "stratified", "seed": 1}
    assert json.loads((tmp_path / "run" / "result.json").read_text())["subset"]["method"] == "stratified"
    data = take(robrep.load_dataset(f"imagefolder:{folder}@16", "train"), 6, 1)
    ref = robrep.evaluate(model.eval(), data.to_memory(), threat=robrep.threat("linf", 0.03), attack_kwargs={"steps": 1},
                          seed=1, chunk_size=500, batch_size=500)
    assert out["clean_accuracy"] == ref.clean_accuracy and out["robust_accuracy"] == ref.robust_accuracy


def test_cli_eval_chooses_its_batch_within_the_memory_cap(folder, tmp_path, capsys) -> None:
    """Without --batch-size, robrep eval takes the largest power-of-two batch whose attack
    (GRAD_FACTOR x the forward activations per image) fits --memory-cap, says so, records it, and
    gives the in-memory evaluation's result at that batch size; a cap of 0 is one line, exit 2."""
    from robrep.cli import main
    from robrep.models import save_model
    from robrep.models.memory import GRAD_FACTOR, activation_bytes_per_image

    torch.manual_seed(0)
    model = robrep.create_model("small-cnn", num_classes=3, input_shape=(3, 16, 16))
    ck = save_model(tmp_path / "m.safetensors", model, {"dataset": f"imagefolder:{folder}@16"})
    per = GRAD_FACTOR * activation_bytes_per_image(model.eval(), (3, 16, 16))
    cap_mib = per * 4.5 / 2**20  # 4 images fit, 8 do not
    rc = main(["eval", "--checkpoint", str(ck), "--split", "train", "--eps", "0.03", "--steps", "2", "--seed", "3",
               "--memory-cap", repr(cap_mib), "--json", "--quiet", "--device", "cpu"])
    assert rc == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out.strip().splitlines()[-1])
    assert out["batch_size"] == 4 and "batch size 4: a forward+backward pass" in cap.err and "--memory-cap" in cap.err
    data = robrep.load_dataset(f"imagefolder:{folder}@16", "train")
    ref = robrep.evaluate(model.eval(), data.to_memory(), threat=robrep.threat("linf", 0.03), attack_kwargs={"steps": 2},
                          seed=3, batch_size=4)
    assert (out["n"], out["clean_accuracy"], out["robust_accuracy"]) == (15, ref.clean_accuracy, ref.robust_accuracy)
    assert out["per_class_robust"] == {str(k): v for k, v in (ref.per_class_robust or {}).items()}
    assert main(["eval", "--checkpoint", str(ck), "--split", "train", "--memory-cap", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--memory-cap" in err


# --------------------------------------------------------------------------------------------
# layouts by name


def _write_val(d: Path, wnids: list[str], truth: list[str], rng) -> list[Image.Image]:
    d.mkdir(parents=True, exist_ok=True)
    imgs = []
    for k in range(len(truth)):
        img = _rand_image(rng)
        img.save(d / f"ILSVRC2012_val_{k + 1:08d}.png")  # lossless, so pixels can be compared
        imgs.append(img)
    return imgs


def test_imagenet_val_kaggle_layout(tmp_path) -> None:
    rng = np.random.default_rng(3)
    wnids = ["n01440764", "n01443537", "n02119789"]
    truth = ["n02119789", "n01440764", "n02119789", "n01443537", "n01440764"]
    d = tmp_path / "val"
    imgs = _write_val(d, wnids, truth, rng)
    (d / "README.txt").write_text("not an image")
    with open(tmp_path / "LOC_val_solution.csv", "w") as f:
        f.write("ImageId,PredictionString\n")
        for k in (4, 0, 2, 1, 3):  # any row order
            f.write(f"ILSVRC2012_val_{k + 1:08d},{truth[k]} 1 2 30 40 {truth[k]} 5 6 7 8\n")
    (tmp_path / "LOC_synset_mapping.txt").write_text(
        "n02119789 kit fox, Vulpes macrotis\nn01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    data = robrep.load_dataset(f"imagenet-val:{d}@20/16", "test")
    assert data.labels.tolist() == [2, 0, 2, 1, 0]  # index in sorted-wnid order
    assert data.info.classes == ("tench", "goldfish", "kit fox") and data.info.num_classes == 3
    assert data.info.mean == robrep.data.IMAGENET_MEAN
    from robrep.data import ImageTransform

    tf = ImageTransform(20, 16)
    assert torch.equal(data.tensors()[0], torch.stack([tf(im) for im in imgs]).float() / 255)
    with pytest.raises(InputError, match="split 'test'"):
        robrep.load_dataset(f"imagenet-val:{d}", "train")


def test_imagenet_val_devkit_layout(tmp_path) -> None:
    """devkit IDs are not in sorted-wnid order: meta.mat maps them (as torchvision's ImageNet does)."""
    from scipy.io import savemat

    rng = np.random.default_rng(4)
    # ILSVRC2012_ID 1..3 in an order unlike the sorted WordNet ids, plus a non-leaf synset
    syn = [(1, "n02119789", "kit fox, Vulpes macrotis", 0), (2, "n01440764", "tench, Tinca tinca", 0),
           (3, "n01443537", "goldfish", 0), (4, "n00001740", "entity", 3)]
    dt = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    arr = np.array([(i, w, words, "", nc) for i, w, words, nc in syn], dtype=dt)
    dev = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    dev.mkdir(parents=True)
    savemat(dev / "meta.mat", {"synsets": arr})
    ids = [1, 3, 2, 2, 1, 3]
    (dev / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(map(str, ids)) + "\n")
    d = tmp_path / "val"
    _write_val(d, [], [""] * 6, rng)
    data = robrep.load_dataset(f"imagenet-val:{d}@16", "test")
    sorted_w = sorted(["n02119789", "n01440764", "n01443537"])
    id_to_w = {1: "n02119789", 2: "n01440764", 3: "n01443537"}
    assert data.labels.tolist() == [sorted_w.index(id_to_w[i]) for i in ids] == [2, 1, 0, 0, 2, 1]
    assert data.info.classes == ("tench", "goldfish", "kit fox")
    (dev / "meta.mat").unlink()
    with pytest.raises(DataNotFoundError, match="LOC_val_solution.csv"):
        robrep.load_dataset(f"imagenet-val:{d}@16", "test")


def test_webdataset_shards(tmp_path) -> None:
    wds = pytest.importorskip("webdataset")
    rng = np.random.default_rng(5)
    imgs, labels = [], []
    for s in range(2):
        with wds.TarWriter(str(tmp_path / f"test-{s:03d}.tar")) as w:
            for i in range(4):
                img, y = _rand_image(rng), int(rng.integers(0, 4))
                w.write({"__key__": f"s{s}/sample{i:04d}", "png": img, "cls": y})
                imgs.append(img)
                labels.append(y)
    data = robrep.load_dataset(f"wds:{tmp_path}/{{split}}-*.tar@16", "test")
    assert data.labels.tolist() == labels and len(data) == 8 and data.info.num_classes == max(labels) + 1
    from robrep.data import ImageTransform

    ref = torch.stack([ImageTransform(16, 16)(im) for im in imgs]).float() / 255
    assert torch.equal(data.tensors()[0], ref)
    assert torch.equal(data.subset([5, 1]).tensors()[0], ref[[5, 1]])
    # compressed shards cannot be read at random; missing labels are named
    with tarfile.open(tmp_path / "gz-000.tar.gz", "w:gz") as t:
        t.add(tmp_path / "test-000.tar", arcname="x.tar")
    with pytest.raises(InputError, match="compressed"):
        robrep.load_dataset(f"wds:{tmp_path}/gz-*.tar.gz", "test")
    with tarfile.open(tmp_path / "nolabel-000.tar", "w") as t:
        p = tmp_path / "a.png"
        imgs[0].save(p)
        t.add(p, arcname="k1.png")
    with pytest.raises(DataNotFoundError, match="k1"):
        robrep.load_dataset(f"wds:{tmp_path}/nolabel-*.tar", "test")
    with pytest.raises(DataNotFoundError, match="no shard"):
        robrep.load_dataset(f"wds:{tmp_path}/none-*.tar", "test")


def test_hf_datasets_folder(tmp_path) -> None:
    hfd = pytest.importorskip("datasets")
    rng = np.random.default_rng(6)
    feats = hfd.Features({"img": hfd.Image(), "label": hfd.ClassLabel(names=["cat", "dog", "eel"])})
    parts = {}
    for split, n in (("train", 6), ("validation", 5)):
        imgs = [_rand_image(rng) for _ in range(n)]
        ys = [int(v) for v in rng.integers(0, 3, n)]
        parts[split] = (imgs, ys)
    dd = hfd.DatasetDict({k: hfd.Dataset.from_dict({"img": v[0], "label": v[1]}, features=feats) for k, v in parts.items()})
    dd.save_to_disk(str(tmp_path / "dd"))
    from robrep.data import ImageTransform

    tf = ImageTransform(16, 16)
    for split, key in (("train", "train"), ("test", "validation")):
        data = robrep.load_dataset(f"hfds:{tmp_path / 'dd'}@16", split)
        imgs, ys = parts[key]
        assert data.labels.tolist() == ys and data.info.classes == ("cat", "dog", "eel")
        # PNG-encoded by datasets (lossless): the decoded pixels are the originals
        assert torch.equal(data.tensors()[0], torch.stack([tf(im) for im in imgs]).float() / 255)
    xs = torch.cat([xb for xb, _ in robrep.load_dataset(f"hfds:{tmp_path / 'dd'}@16", "train").with_workers(1).batches(4)])
    assert torch.equal(xs, torch.stack([tf(im) for im in parts["train"][0]]).float() / 255)
    hfd.Dataset.from_dict({"x": [1, 2]}).save_to_disk(str(tmp_path / "noimg"))
    with pytest.raises(DataNotFoundError, match="Image column"):
        robrep.load_dataset(f"hfds:{tmp_path / 'noimg'}", "test")
