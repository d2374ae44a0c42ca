"""Dataset readers and their cache: small files written byte-exact in each official format, every promised
error, and (marked `realdata`) the real datasets under $GMINT_DATA or ../shared/data."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmint.data import cache, readers
from gmint.data.base import ImageSet
from gmint.data.readers import CIFAR10_CLASSES, gtsrb, load_dataset, mnist, resolve_root
from gmint.errors import InputError, UnknownNameError
from tests.conftest import REAL_ROOT


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own cache folder and no data root from the environment."""
    monkeypatch.setenv("GMINT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GMINT_DATA", raising=False)


def _pixels(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------------
# Writers for the official formats


def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None) -> None:
    """IDX: big-endian magic 0x0000 08 <ndim>, ndim big-endian uint32 sizes, raw bytes; gzipped if *.gz."""
    magic = 0x800 | array.ndim if magic is None else magic
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, mtime=0) if path.suffix == ".gz" else raw)


def make_mnist(root: Path, *, gz: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw, ext = root / "MNIST" / "raw", ".gz" if gz else ""
    data = {"train_x": _pixels(rng, 5, 28, 28), "train_y": np.array([0, 9, 3, 3, 7], np.uint8),
            "test_x": _pixels(rng, 3, 28, 28), "test_y": np.array([1, 2, 0], np.uint8)}
    write_idx(raw / f"train-images-idx3-ubyte{ext}", data["train_x"])
    write_idx(raw / f"train-labels-idx1-ubyte{ext}", data["train_y"])
    write_idx(raw / f"t10k-images-idx3-ubyte{ext}", data["test_x"])
    write_idx(raw / f"t10k-labels-idx1-ubyte{ext}", data["test_y"])
    return data


class Py2Pickler(pickle._Pickler):
    """Writes strings and bytes as Python 2 `str` opcodes (SHORT_BINSTRING / BINSTRING), as the official
    CIFAR pickles (made with Python 2's cPickle, protocol 2) hold them."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def write_pickle(path: Path, obj: object, style: str = "py2") -> None:
    """`py2`: as the official files (arrays under numpy.core.multiarray); `dump`: Python 3's pickle.dump."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if style == "dump":
        with path.open("wb") as f:
            pickle.dump(obj, f, protocol=2)
        return
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) → (N, 3072): each row the R plane, then G, then B, row-major, as in CIFAR's b'data'."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def make_cifar10_pickles(root: Path, *, batches: tuple[str, ...] = ("data_batch_1", "test_batch"),
                         style: str = "py2", seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    write_pickle(folder / "batches.meta", {b"num_cases_per_batch": 10000, b"num_vis": 3072,
                                           b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, style)
    written = {}
    for k, name in enumerate(batches):
        images = _pixels(rng, 4 + k, 32, 32, 3)
        labels = [int(v) for v in rng.integers(0, 10, len(images))]
        write_pickle(folder / name, {b"batch_label": f"batch {name}".encode(), b"labels": labels,
                                     b"data": _cifar_rows(images),
                                     b"filenames": [f"{i}.png".encode() for i in range(len(images))]}, style)
        written[name] = (images, labels)
    return written


def _colour(k: int) -> tuple[int, int, int]:
    """Well separated flat colours: flat images survive JPEG to within a few levels."""
    return (40 + 37 * k) % 256, (200 - 23 * k) % 256, (90 + 61 * k) % 256


def write_image(path: Path, pixels: np.ndarray, **save: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(path, **save)


def _flat(colour: tuple[int, ...], h: int, w: int) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, len(colour))).copy()


def make_cifar10_jpegs(root: Path, per_class: int = 11) -> Path:
    """cifar-10-images/{train,test}/<class>/NNNN.jpg; image k of class c is flat colour _colour(c + k)."""
    folder = root / "cifar-10-images"
    for part, n in (("train", per_class), ("test", 2)):
        for c, name in enumerate(CIFAR10_CLASSES):
            for k in range(n):
                write_image(folder / part / name / f"{k:04d}.jpg", _flat(_colour(c + k), 32, 32), quality=95)
    return folder


def write_ppm(path: Path, pixels: np.ndarray) -> None:
    """Binary PPM as GTSRB's files: `P6\\n<w> <h>\\n255\\n` then RGB bytes."""
    h, w, _ = pixels.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"P6\n{w} {h}\n255\n".encode() + pixels.tobytes())


GT_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


def write_gt(folder: Path, class_id: int, rows: list[tuple[str, int, int, int, int, int, int, int]]) -> Path:
    path = folder / f"GT-{class_id:05d}.csv"
    lines = [GT_HEADER, *(";".join(map(str, row)) for row in rows)]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


def make_gtsrb(root: Path, *, tracks: dict[int, list[int]] | None = None, frames: int = 3,
               size: tuple[int, int] = (8, 8), seed: int = 0) -> dict[str, np.ndarray]:
    """GTSRB/Final_Training/Images/000CC/TTTTT_FFFFF.ppm + GT-000CC.csv; ROI = 2-px border all round."""
    rng = np.random.default_rng(seed)
    tracks = {0: [3, 6], 2: [1]} if tracks is None else tracks
    images, labels, groups = [], [], []
    for class_id, class_tracks in tracks.items():  # classes and tracks given in order
        folder = root / "GTSRB" / "Final_Training" / "Images" / f"{class_id:05d}"
        folder.mkdir(parents=True)
        rows = []
        for track in class_tracks:
            group = len(set(groups))
            for frame in range(frames):
                w, h = size
                pixels = _pixels(rng, h, w, 3)
                name = f"{track:05d}_{frame:05d}.ppm"
                write_ppm(folder / name, pixels)
                rows.append((name, w, h, 2, 2, w - 2, h - 2, class_id))
                images.append(pixels)
                labels.append(class_id)
                groups.append(group)
        write_gt(folder, class_id, rows)
    return {"images": np.stack(images) if images else None, "labels": np.array(labels),
            "groups": np.array(groups)}


def make_tiny(root: Path, *, wnids: tuple[str, ...] = ("n02", "n01", "n03"), per_class: int = 3) -> Path:
    """tiny-imagenet-200 layout; class c's train image k is flat _colour(c + k); val holds 2 per class,
    listed in val_annotations.txt in interleaved order; class 1's images are greyscale."""
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    for c, wnid in enumerate(wnids):
        for k in range(per_class):
            pixels = _flat(_colour(c + k)[:1] if c == 1 else _colour(c + k), 64, 64)
            write_image(folder / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", pixels, format="JPEG",
                        quality=95)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text(
            "".join(f"{wnid}_{k}.JPEG\t0\t0\t63\t63\n" for k in range(per_class)))
    lines = []
    for n in range(2 * len(wnids)):
        c = n % len(wnids)
        pixels = _flat(_colour(10 + n), 64, 64)
        write_image(folder / "val" / "images" / f"val_{n}.JPEG", pixels, format="JPEG", quality=95)
        lines.append(f"val_{n}.JPEG\t{wnids[c]}\t1\t2\t60\t61\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    return folder


# ---------------------------------------------------------------------------------------------------------
# Data root


def test_resolve_root_argument_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("GMINT_DATA", str(other))
    assert resolve_root(tmp_path) == tmp_path.resolve()
    assert resolve_root(None) == other.resolve()


def test_resolve_root_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="give the data root .* or set GMINT_DATA"):
        resolve_root(None)
    with pytest.raises(InputError, match="missing does not exist"):
        resolve_root(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------------------
# MNIST


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_mnist_reads_idx_exactly(tmp_path: Path, gz: bool) -> None:
    data = make_mnist(tmp_path, gz=gz)
    got = load_dataset("mnist", tmp_path, cache=False)
    assert got.images.shape == (8, 28, 28, 1) and got.images.dtype == np.uint8
    np.testing.assert_array_equal(got.images[:5, ..., 0], data["train_x"])
    np.testing.assert_array_equal(got.images[5:, ..., 0], data["test_x"])
    np.testing.assert_array_equal(got.labels, np.r_[data["train_y"], data["test_y"]])
    assert got.labels.dtype == np.int64
    np.testing.assert_array_equal(got.sample_ids, np.arange(8))
    assert got.part.tolist() == ["train"] * 5 + ["test"] * 3
    assert got.classes == tuple("0123456789") and got.groups is None
    assert got.files[0] == f"train-images-idx3-ubyte{'.gz' if gz else ''}"


@pytest.mark.parametrize("sub", ["MNIST", "MNIST/raw"])
def test_mnist_accepts_the_dataset_folder_as_root(tmp_path: Path, sub: str) -> None:
    data = make_mnist(tmp_path)
    got = readers.read_mnist(tmp_path / sub)
    np.testing.assert_array_equal(got.images[:5, ..., 0], data["train_x"])


def _mnist_file(root: Path, stem: str) -> Path:
    return root / "MNIST" / "raw" / f"{stem}.gz"


def test_mnist_bad_magic(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    labels = _mnist_file(tmp_path, "train-labels-idx1-ubyte")
    write_idx(labels, np.zeros(5, np.uint8), magic=0x803)
    with pytest.raises(InputError, match=r"train-labels-idx1-ubyte.gz: bad IDX magic number 0x00000803"):
        readers.read_mnist(tmp_path)


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_mnist_truncated(tmp_path: Path, gz: bool) -> None:
    make_mnist(tmp_path, gz=gz)
    path = tmp_path / "MNIST" / "raw" / f"train-images-idx3-ubyte{'.gz' if gz else ''}"
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    path.write_bytes(gzip.compress(raw[:-100]) if gz else raw[:-100])
    with pytest.raises(InputError, match=r"images-idx3-ubyte.*: truncated IDX file.*5x28x28 = 3920.*3820"):
        readers.read_mnist(tmp_path)


def test_mnist_truncated_header_and_corrupt_gzip(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    images = _mnist_file(tmp_path, "train-images-idx3-ubyte")
    images.write_bytes(gzip.compress(struct.pack(">II", 0x803, 5)))
    with pytest.raises(InputError, match="truncated IDX header"):
        readers.read_mnist(tmp_path)
    images.write_bytes(gzip.compress(bytes(range(256)) * 20)[:-10])
    with pytest.raises(InputError, match=r"train-images-idx3-ubyte.gz: corrupt gzip file"):
        readers.read_mnist(tmp_path)


def test_mnist_count_mismatch_and_label_range(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    labels = _mnist_file(tmp_path, "t10k-labels-idx1-ubyte")
    write_idx(labels, np.array([1, 2], np.uint8))
    with pytest.raises(InputError, match="holds 3 images but t10k-labels-idx1-ubyte.gz 2 labels"):
        readers.read_mnist(tmp_path)
    write_idx(labels, np.array([1, 10, 2], np.uint8))
    with pytest.raises(InputError, match=r"t10k-labels-idx1-ubyte.gz: label 10 at index 1 is outside 0..9"):
        readers.read_mnist(tmp_path)


def test_mnist_missing_files(tmp_path: Path) -> None:
    with pytest.raises(InputError,
                       match=r"mnist: no MNIST/raw/.*IDX files.* under the data root .*holds the dataset's usual"):
        readers.read_mnist(tmp_path)
    make_mnist(tmp_path)
    _mnist_file(tmp_path, "train-labels-idx1-ubyte").unlink()
    with pytest.raises(InputError, match="has no labels file .*train-labels-idx1-ubyte"):
        readers.read_mnist(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# CIFAR


@pytest.mark.parametrize("style", ["py2", "dump"])
def test_cifar10_pickles_exact(tmp_path: Path, style: str) -> None:
    order = ("data_batch_1", "data_batch_3", "test_batch")  # batches 2, 4 and 5 absent
    written = make_cifar10_pickles(tmp_path, batches=order, style=style)
    got = load_dataset("cifar10", tmp_path, cache=False)
    np.testing.assert_array_equal(got.images, np.concatenate([written[b][0] for b in order]))
    np.testing.assert_array_equal(got.labels, np.concatenate([written[b][1] for b in order]))
    assert got.part.tolist() == ["train"] * 9 + ["test"] * 6
    assert got.files.tolist() == ["data_batch_1"] * 4 + ["data_batch_3"] * 5 + ["test_batch"] * 6
    assert got.classes == CIFAR10_CLASSES
    np.testing.assert_array_equal(got.sample_ids, np.arange(15))


def test_cifar_pickle_refuses_foreign_globals(tmp_path: Path) -> None:
    make_cifar10_pickles(tmp_path)

    class Payload:
        def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
            return os.system, ("echo owned > /dev/null",)

    write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_1", {b"data": Payload()}, "dump")
    with pytest.raises(InputError, match=r"data_batch_1 as a CIFAR pickle: refusing to load posix\.system"):
        load_dataset("cifar10", tmp_path, cache=False)


def test_cifar_pickle_damage(tmp_path: Path) -> None:
    make_cifar10_pickles(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:2000])
    with pytest.raises(InputError, match="cannot read .*test_batch as a CIFAR pickle"):
        readers.read_cifar10(tmp_path)
    write_pickle(batch, {b"labels": [1], b"data": np.zeros((1, 100), np.uint8)})
    with pytest.raises(InputError, match=r"test_batch: not a CIFAR batch \(b'data' must be"):
        readers.read_cifar10(tmp_path)
    write_pickle(batch, {b"labels": [1, 12], b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(InputError, match=r"test_batch: label 12 at index 1 is outside 0..9"):
        readers.read_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(InputError, match=r"missing .*batches.meta"):
        readers.read_cifar10(tmp_path)


def test_cifar10_jpeg_folders(tmp_path: Path) -> None:
    folder = make_cifar10_jpegs(tmp_path)
    got = readers.read_cifar10(tmp_path)
    assert got.images.shape == (10 * 11 + 10 * 2, 32, 32, 3)
    assert got.part.tolist() == ["train"] * 110 + ["test"] * 20
    np.testing.assert_array_equal(got.labels[:110], np.repeat(np.arange(10), 11))
    # numeric order: 0009.jpg, 0010.jpg; written as 4-digit names, read by value
    assert got.files[9:12].tolist() == ["train/airplane/0009.jpg", "train/airplane/0010.jpg",
                                        "train/automobile/0000.jpg"]
    expected = np.array([_colour(c + k) for c in range(10) for k in range(11)], np.int16)
    assert np.abs(got.images[:110, 16, 16].astype(np.int16) - expected).max() <= 4
    np.testing.assert_array_equal(readers.read_cifar10(folder).images, got.images)  # folder itself as root


def test_cifar10_numeric_not_lexical_order(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-images" / "test"
    for c, name in enumerate(CIFAR10_CLASSES):
        for k in (2, 10, 1):
            write_image(folder / name / f"{k}.jpg", _flat(_colour(c + k), 32, 32), quality=95)
    got = readers.read_cifar10(tmp_path)
    assert got.files[:3].tolist() == ["test/airplane/1.jpg", "test/airplane/2.jpg", "test/airplane/10.jpg"]


def test_cifar10_layout_choice(tmp_path: Path) -> None:
    make_cifar10_jpegs(tmp_path, per_class=1)
    make_cifar10_pickles(tmp_path, batches=("test_batch",))
    assert len(readers.read_cifar10(tmp_path)) == 4  # auto: the pickles win
    assert len(readers.read_cifar10(tmp_path, layout="folders")) == 30
    with pytest.raises(InputError, match=r"layout 'png'; choose from \['auto', 'pickle', 'folders'\]"):
        readers.read_cifar10(tmp_path, layout="png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"no cifar-10-batches-py/ \(python pickles\) or cifar-10-images/"):
        readers.read_cifar10(empty)


def test_cifar10_folder_errors(tmp_path: Path) -> None:
    folder = make_cifar10_jpegs(tmp_path, per_class=1)
    (folder / "train" / "cats").mkdir()
    with pytest.raises(InputError, match=r"unexpected folder .*train/cats; the class folders are airplane"):
        readers.read_cifar10(tmp_path)
    (folder / "train" / "cats").rmdir()
    for f in (folder / "test" / "truck").iterdir():
        f.unlink()
    (folder / "test" / "truck").rmdir()
    with pytest.raises(InputError, match=r"missing class folder .*test/truck"):
        readers.read_cifar10(tmp_path)


def test_corrupt_jpeg_names_the_file(tmp_path: Path) -> None:
    folder = make_cifar10_jpegs(tmp_path, per_class=1)
    bad = folder / "train" / "dog" / "0000.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(InputError, match=r"cannot decode image .*train/dog/0000.jpg"):
        readers.read_cifar10(tmp_path)
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"cannot decode image .*train/dog/0000.jpg"):
        readers.read_cifar10(tmp_path)


def test_cifar100_pickles(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    names = [f"class{i}".encode() for i in range(100)]
    write_pickle(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": names[:20]})
    parts = {}
    for part, n in (("train", 5), ("test", 2)):
        images = _pixels(rng, n, 32, 32, 3)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        write_pickle(folder / part, {b"filenames": [b"x.png"] * n, b"batch_label": b"x", b"fine_labels": fine,
                                     b"coarse_labels": [0] * n, b"data": _cifar_rows(images)})
        parts[part] = (images, fine)
    got = load_dataset("cifar100", tmp_path, cache=False)
    np.testing.assert_array_equal(got.images, np.concatenate([parts["train"][0], parts["test"][0]]))
    np.testing.assert_array_equal(got.labels, parts["train"][1] + parts["test"][1])
    assert got.classes[99] == "class99" and got.part.tolist() == ["train"] * 5 + ["test"] * 2


# ---------------------------------------------------------------------------------------------------------
# GTSRB


def test_gtsrb_exact_pixels_labels_groups(tmp_path: Path) -> None:
    data = make_gtsrb(tmp_path)
    got = load_dataset("gtsrb", tmp_path, cache=False, size=8)
    np.testing.assert_array_equal(got.images, data["images"])
    np.testing.assert_array_equal(got.labels, data["labels"])
    np.testing.assert_array_equal(got.groups, data["groups"])
    assert got.groups.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert got.classes == tuple(f"{c:05d}" for c in range(43))
    assert set(got.part) == {"train"}
    assert got.files[3] == "00000/00006_00000.ppm"


def test_gtsrb_roi_and_resize(tmp_path: Path) -> None:
    data = make_gtsrb(tmp_path, size=(10, 10))  # ROI (2, 2, 8, 8): the inner 6x6
    cropped = load_dataset("gtsrb", tmp_path, cache=False, size=6, roi=True)
    np.testing.assert_array_equal(cropped.images, data["images"][:, 2:8, 2:8])
    np.testing.assert_array_equal(readers.read_gtsrb(tmp_path, size=10).images, data["images"])
    assert readers.read_gtsrb(tmp_path, size=16, roi=True).images.shape == (9, 16, 16, 3)


def test_gtsrb_resize_of_flat_images_is_exact(tmp_path: Path) -> None:
    folder = tmp_path / "GTSRB" / "Final_Training" / "Images" / "00007"
    rows = []
    for frame, (w, h) in enumerate([(30, 25), (41, 52)]):
        write_ppm(folder / f"00001_{frame:05d}.ppm", _flat(_colour(frame), h, w))
        rows.append((f"00001_{frame:05d}.ppm", w, h, 5, 5, w - 5, h - 5, 7))
    write_gt(folder, 7, rows)
    got = readers.read_gtsrb(tmp_path)
    assert got.images.shape == (2, 64, 64, 3)
    np.testing.assert_array_equal(got.images[1], _flat(_colour(1), 64, 64))
    assert got.labels.tolist() == [7, 7] and got.groups.tolist() == [0, 0]


def _gt_path(root: Path, class_id: int) -> Path:
    return root / "GTSRB" / "Final_Training" / "Images" / f"{class_id:05d}" / f"GT-{class_id:05d}.csv"


def test_gtsrb_classid_mismatch_names_the_file(tmp_path: Path) -> None:
    make_gtsrb(tmp_path)
    gt = _gt_path(tmp_path, 2)
    gt.write_bytes(gt.read_bytes().replace(b";2\r\n", b";3\r\n", 1))
    with pytest.raises(InputError, match=r"00002/00001_00000.ppm: ClassId 3 in GT-00002.csv does not match"):
        readers.read_gtsrb(tmp_path)


def test_gtsrb_csv_errors(tmp_path: Path) -> None:
    make_gtsrb(tmp_path)
    gt = _gt_path(tmp_path, 0)
    original = gt.read_bytes()
    gt.write_bytes(original.replace(b"Roi.X1", b"X1"))
    with pytest.raises(InputError, match="GT-00000.csv: header is not Filename;Width"):
        readers.read_gtsrb(tmp_path)
    gt.write_bytes(original.replace(b";8;8;2;2;6;6;0", b";8;8;2;2;6;0", 1))
    with pytest.raises(InputError, match="GT-00000.csv line 2: expected"):
        readers.read_gtsrb(tmp_path)
    gt.write_bytes(original.replace(b";8;8;2;2;6;6;0", b";8;8;2;2;9;6;0", 1))
    with pytest.raises(InputError, match=r"00003_00000.ppm: ROI \(2, 2, 9, 6\) does not fit its 8x8 image"):
        readers.read_gtsrb(tmp_path)
    gt.write_bytes(original.replace(b";8;8;2;2;6;6;0", b";9;8;2;2;6;6;0", 1))
    with pytest.raises(InputError, match="00003_00000.ppm: image is 8x8, its annotation says 9x8"):
        readers.read_gtsrb(tmp_path)
    gt.write_bytes(original)
    (gt.parent / "00006_00002.ppm").unlink()
    with pytest.raises(InputError, match="GT-00000.csv line 7: the listed file .*00006_00002.ppm is missing"):
        readers.read_gtsrb(tmp_path)
    gt.unlink()
    with pytest.raises(InputError, match="gtsrb: missing .*00000/GT-00000.csv"):
        readers.read_gtsrb(tmp_path)


def test_gtsrb_errors_on_layout_and_options(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"gtsrb: no GTSRB/Final_Training/Images/000CC/ with GT-000CC.csv"):
        readers.read_gtsrb(tmp_path)
    make_gtsrb(tmp_path, tracks={43: [0]})
    with pytest.raises(InputError, match="class folder .*00043 is outside 00000..00042"):
        readers.read_gtsrb(tmp_path)
    with pytest.raises(InputError, match="option size must be a positive integer, got 0"):
        readers.read_gtsrb(tmp_path, size=0)
    make_gtsrb(tmp_path / "empty", tracks={5: []})
    with pytest.raises(InputError, match="gtsrb: no images found under"):
        readers.read_gtsrb(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------------------
# Tiny ImageNet


def test_tiny_imagenet_layout(tmp_path: Path) -> None:
    folder = make_tiny(tmp_path, per_class=11)
    got = load_dataset("tiny-imagenet", tmp_path, cache=False)
    assert got.name == "tiny_imagenet" and got.classes == ("n02", "n01", "n03")
    assert got.images.shape == (33 + 6, 64, 64, 3)
    assert got.part.tolist() == ["train"] * 33 + ["test"] * 6
    np.testing.assert_array_equal(got.labels, [*np.repeat([0, 1, 2], 11), 0, 0, 1, 1, 2, 2])
    assert got.files[9:12].tolist() == ["train/n02/images/n02_9.JPEG", "train/n02/images/n02_10.JPEG",
                                        "train/n01/images/n01_0.JPEG"]
    assert got.files[33:].tolist() == [f"val/images/val_{n}.JPEG" for n in (0, 3, 1, 4, 2, 5)]
    grey = got.images[11:22].astype(np.int16)  # class 1 was written greyscale: three equal channels
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    expected = [_colour(10 + n) for n in (0, 3, 1, 4, 2, 5)]
    assert np.abs(got.images[33:, 32, 32].astype(np.int16) - np.array(expected)).max() <= 4
    np.testing.assert_array_equal(readers.read_tiny_imagenet(folder).images, got.images)


def test_tiny_imagenet_errors(tmp_path: Path) -> None:
    folder = make_tiny(tmp_path)
    annotations = folder / "val" / "val_annotations.txt"
    text = annotations.read_text()
    annotations.write_text(text.replace("\tn01\t", "\tn99\t", 1))
    with pytest.raises(InputError, match=r"val_annotations.txt line 2: class 'n99' is not listed in wnids"):
        readers.read_tiny_imagenet(tmp_path)
    annotations.write_text(text + "val_77.JPEG\tn01\t0\t0\t1\t1\n")
    with pytest.raises(InputError, match=r"line 7: the listed file .*val_77.JPEG is missing"):
        readers.read_tiny_imagenet(tmp_path)
    annotations.unlink()
    with pytest.raises(InputError, match=r"missing .*val_annotations.txt"):
        readers.read_tiny_imagenet(tmp_path)
    annotations.write_text(text)
    (folder / "train" / "n77" / "images").mkdir(parents=True)
    with pytest.raises(InputError, match=r"train/n77 is not a class listed in .*wnids.txt"):
        readers.read_tiny_imagenet(tmp_path)
    (folder / "wnids.txt").write_text("n02\nn01\nn03\nn77\nn78\n")
    with pytest.raises(InputError, match=r"missing folder .*train/n78/images \(class n78 of wnids.txt\)"):
        readers.read_tiny_imagenet(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# Image folders


def test_imagefolder_flat_png_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    written = {name: [_pixels(rng, 5, 7, 3) for _ in range(3)] for name in ("zebra", "ant")}
    for name, images in written.items():
        for k, pixels in enumerate(images):
            write_image(tmp_path / name / f"img{k}.png", pixels)
    (tmp_path / "ant" / "notes.txt").write_text("ignored")
    got = load_dataset("imagefolder", tmp_path, cache=False)
    assert got.classes == ("ant", "zebra") and got.images.shape == (6, 5, 7, 3)
    np.testing.assert_array_equal(got.images, np.stack(written["ant"] + written["zebra"]))
    assert got.labels.tolist() == [0, 0, 0, 1, 1, 1] and set(got.part) == {"train"}


def test_imagefolder_parts_channels_and_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    grey = {(part, c): _pixels(rng, 6, 6, 1) for part in ("train", "test") for c in ("a", "b")}
    for (part, c), pixels in grey.items():
        write_image(tmp_path / part / c / "0.png", pixels)
    got = readers.read_imagefolder(tmp_path)
    assert got.images.shape == (4, 6, 6, 1) and got.part.tolist() == ["train", "train", "test", "test"]
    np.testing.assert_array_equal(got.images[2], grey[("test", "a")])
    rgb = readers.read_imagefolder(tmp_path, channels=3)
    np.testing.assert_array_equal(rgb.images[..., 1:], np.repeat(got.images, 2, axis=-1))
    write_image(tmp_path / "test" / "b" / "1.png", _pixels(rng, 9, 4, 3))
    with pytest.raises(InputError, match=r"test/b/1.png is 4x9 but .*train/a/0.png is 6x6; give a size N to "
                                          r"resize every image to NxN$"):
        readers.read_imagefolder(tmp_path)
    resized = readers.read_imagefolder(tmp_path, size=5)
    assert resized.images.shape == (5, 5, 5, 3)  # one colour file among greys: RGB by default
    assert readers.read_imagefolder(tmp_path, size=5, channels=1).images.shape == (5, 5, 5, 1)


def test_imagefolder_errors(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(InputError, match="imagefolder: no .png, .jpg.* files in the class folders of"):
        readers.read_imagefolder(tmp_path)
    with pytest.raises(InputError, match="channels must be 1 or 3, got 2"):
        readers.read_imagefolder(tmp_path, channels=2)
    write_image(tmp_path / "train" / "a" / "0.png", _flat((1, 2, 3), 4, 4))
    with pytest.raises(InputError, match=r"mixes part folders \(train\) with other folders \(a\)"):
        readers.read_imagefolder(tmp_path)
    (tmp_path / "a").rmdir()
    (tmp_path / "train" / "a" / "1.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match=r"cannot decode image .*train/a/1.png"):
        readers.read_imagefolder(tmp_path)
    with pytest.raises(InputError, match=r"imagefolder: no <class>/ folders"):
        readers.read_imagefolder(tmp_path / "train" / "a")


# ---------------------------------------------------------------------------------------------------------
# load_dataset and the cache


def test_load_dataset_names_and_options(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="unknown dataset 'svhn'; choose from"):
        load_dataset("svhn", tmp_path)
    with pytest.raises(InputError, match="dataset 'gtsrb' has no option 'sise'; its options: size, roi"):
        load_dataset("gtsrb", tmp_path, sise=32)
    with pytest.raises(InputError, match="no data root given; give the data root"):
        load_dataset("mnist")
    digits = load_dataset("digits")  # embedded: no root, no cache
    assert len(digits) == 1797 and not (tmp_path / "cache").exists()


def _entries() -> list[Path]:
    return sorted(cache.cache_dir().glob("*.npz"))


def _same(a: ImageSet, b: ImageSet) -> None:
    for column in ("images", "labels", "sample_ids", "part", "groups", "files"):
        x, y = getattr(a, column), getattr(b, column)
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), column
    assert (a.name, a.classes) == (b.name, b.classes)


def _refuse(*_: object, **__: object) -> np.ndarray:
    raise AssertionError("decoded although the cache holds the dataset")


def test_cache_hit_and_invalidation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_gtsrb(tmp_path)
    first = load_dataset("gtsrb", tmp_path, size=8)
    [entry] = _entries()
    with np.load(entry, allow_pickle=False) as z:  # plain arrays only
        assert z["files"].dtype.kind == "U"
    with monkeypatch.context() as m:
        m.setattr(gtsrb, "decode_image", _refuse)
        _same(load_dataset("gtsrb", tmp_path, size=8), first)
        dataset_folder = tmp_path / "GTSRB" / "Final_Training" / "Images"
        _same(load_dataset("gtsrb", dataset_folder, size=8), first)  # same folder, same entry
        ppm = dataset_folder / "00002" / "00001_00001.ppm"
        write_ppm(ppm, np.zeros((8, 8, 3), np.uint8))
        os.utime(ppm, ns=(1, 1))
        with pytest.raises(AssertionError, match="decoded although"):
            load_dataset("gtsrb", tmp_path, size=8)
    changed = load_dataset("gtsrb", tmp_path, size=8)
    assert (changed.images[7] == 0).all() and not (first.images[7] == 0).all()
    [new_entry] = _entries()  # the stale entry was replaced
    assert new_entry != entry
    load_dataset("gtsrb", tmp_path, size=16)
    assert len(_entries()) == 2  # other options, other entry


def test_cache_mnist_and_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_mnist(tmp_path)
    first = load_dataset("mnist", tmp_path)
    monkeypatch.setattr(mnist, "read_idx", _refuse)
    _same(load_dataset("mnist", tmp_path), first)
    assert len(_entries()) == 1


def test_cache_disabled_damaged_and_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_mnist(tmp_path)
    load_dataset("mnist", tmp_path, cache=False)
    assert _entries() == []
    first = load_dataset("mnist", tmp_path)
    [entry] = _entries()
    entry.write_bytes(entry.read_bytes()[:1000])
    _same(load_dataset("mnist", tmp_path), first)  # a damaged entry is a miss, and is rewritten
    assert cache.load(entry) is not None
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("GMINT_CACHE", str(blocker))
    with pytest.warns(UserWarning, match="could not write dataset cache"):
        _same(load_dataset("mnist", tmp_path), first)


def test_cache_round_trips_every_column(tmp_path: Path) -> None:
    make_gtsrb(tmp_path)
    built = readers.read_gtsrb(tmp_path, size=8)
    path = tmp_path / "entry.npz"
    cache.save(path, built)
    _same(cache.load(path), built)
    assert not list(tmp_path.glob(".*.tmp"))


# ---------------------------------------------------------------------------------------------------------
# Real data (README of ../shared/data): counts and a few known facts per dataset

def _counts(data: ImageSet, part: str) -> list[int]:
    return np.bincount(data.labels[data.part == part], minlength=len(data.classes)).tolist()


@pytest.mark.realdata
def test_real_mnist(real: Callable[[str], ImageSet]) -> None:
    data = real("mnist")
    assert data.images.shape == (70000, 28, 28, 1)
    assert _counts(data, "train") == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert _counts(data, "test") == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert data.part[59999] == "train" and data.part[60000] == "test"


@pytest.mark.realdata
def test_real_cifar10_jpegs(real: Callable[[str], ImageSet]) -> None:
    data = real("cifar10")
    assert data.images.shape == (60000, 32, 32, 3) and data.classes == CIFAR10_CLASSES
    assert _counts(data, "train") == [5000] * 10 and _counts(data, "test") == [1000] * 10
    assert data.files[0] == "train/airplane/0000.jpg" and data.files[-1] == "test/truck/0999.jpg"


@pytest.mark.realdata
def test_real_gtsrb(real: Callable[[str], ImageSet]) -> None:
    data = real("gtsrb")
    assert data.images.shape == (4740, 64, 64, 3)
    assert len(np.unique(data.labels)) == 43 and len(np.unique(data.groups)) == 158
    assert (np.bincount(data.groups) == 30).all()
    one_class_per_track = {g: set(data.labels[data.groups == g]) for g in range(158)}
    assert all(len(labels) == 1 for labels in one_class_per_track.values())
    assert data.files[0] == "00000/00003_00000.ppm" and data.files[30] == "00000/00006_00000.ppm"


@pytest.mark.realdata
def test_real_tiny_imagenet(real: Callable[[str], ImageSet]) -> None:
    data = real("tiny_imagenet")
    assert data.images.shape == (22000, 64, 64, 3) and len(data.classes) == 200
    assert _counts(data, "train") == [100] * 200 and _counts(data, "test") == [10] * 200
    assert data.classes[0] == "n02124075"
    val_0 = int(np.flatnonzero(data.files == "val/images/val_0.JPEG")[0])
    assert data.classes[data.labels[val_0]] == "n03444034"  # first line of val_annotations.txt


@pytest.mark.realdata
def test_real_cache_round_trip(real: Callable[[str], ImageSet], monkeypatch: pytest.MonkeyPatch) -> None:
    data = real("gtsrb")
    _same(load_dataset("gtsrb", REAL_ROOT), data)
    monkeypatch.setattr(gtsrb, "decode_image", _refuse)
    _same(load_dataset("gtsrb", REAL_ROOT), data)


def test_the_cli_names_its_option_only_where_no_data_root_was_given(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.cli_runner import run

    monkeypatch.delenv("GMINT_DATA", raising=False)
    given = run("split", "--data", "mnist", "--data-root", tmp_path / "nowhere", "--out", tmp_path / "s.json")
    assert given.code == 1 and "data root" in given.stderr and "does not exist" in given.stderr
    assert "--data-root" not in given.stderr  # it was given: advising it would mislead
    empty = run("split", "--data", "mnist", "--data-root", tmp_path, "--out", tmp_path / "s.json")
    assert empty.code == 1 and "under the data root" in empty.stderr and "--data-root" not in empty.stderr
    missing = run("split", "--data", "mnist", "--out", tmp_path / "s.json")
    assert missing.code == 1 and "no data root given; pass --data-root or set GMINT_DATA" in missing.stderr
