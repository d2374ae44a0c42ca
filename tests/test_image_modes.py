"""Every Pillow mode decoded to the same 8-bit pixels wherever gmint reads an image file: a dataset
(`load_dataset("imagefolder")`), `gmint score --images` (`load_image_folder`) and the page's uploads.

A 16-bit PNG used to be clipped to white and a transparent one flattened without a word; each case here
writes a small file with Pillow and asserts the exact uint8 array every path gets, or the one-line refusal.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

import gmint.serve.uploads as uploads
from gmint.assess.candidates import load_image_folder
from gmint.data.base import ImageSet
from gmint.data.readers import load_dataset
from gmint.data.readers.pixels import decode_pixels
from gmint.errors import InputError
from gmint.models.io import AuditedModel
from gmint.serve.audits import find_audits
from gmint.serve.limits import Limits, check_image
from tests.cli_runner import invoke, snapshot

with warnings.catch_warnings():  # starlette's note about its httpx client, not about gmint
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from gmint.serve.app import create_app  # noqa: E402

# 8x8, the audited digits model's input, so no path resizes: what is compared is the decoding alone.
GREY = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
COLOUR = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
OPAQUE = np.full((8, 8), 255, np.uint8)
EXIF_ORIENTATION = 0x0112


def encode(img: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_16bit_colour(pixels: np.ndarray) -> bytes:
    """An RGB PNG of 16 bits per channel, written by hand: Pillow has no mode to save one from."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    h, w, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def pgm_16bit(pixels: np.ndarray) -> bytes:
    """A 16-bit PGM (maxval 65535), which Pillow opens as mode `I`."""
    return b"P5 %d %d 65535\n" % (pixels.shape[1], pixels.shape[0]) + pixels.astype(">u2").tobytes()


def palette(indices: np.ndarray, colours: list[int], **options: object) -> bytes:
    img = Image.fromarray(indices.astype(np.uint8), "P")
    img.putpalette(colours)
    return encode(img, **options)


def cmyk_jpeg() -> bytes:
    cmyk = np.zeros((8, 8, 4), np.uint8)
    cmyk[:4, :, 0] = 255  # cyan top half, white bottom half
    return encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=100)


def with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(Image.fromarray(pixels), exif=exif)


class Case(NamedTuple):
    """One file and the (H, W, C) uint8 every path must decode it to."""

    id: str
    suffix: str
    data: bytes
    expected: np.ndarray


INDICES = np.arange(64).reshape(8, 8) % 4
RGB_PALETTE = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]
GREY_PALETTE = [0, 0, 0, 80, 80, 80, 160, 160, 160, 255, 255, 255]
ARBITRARY_16 = np.array([0, 128, 129, 385, 386, 32896, 65406, 65535] * 8, np.uint16).reshape(8, 8)

CASES = [
    Case("L", ".png", encode(Image.fromarray(GREY)), GREY[..., None]),
    Case("1", ".png", encode(Image.fromarray(GREY >= 128).convert("1")), np.where(GREY >= 128, 255, 0)[..., None]),
    # A 16-bit export of an 8-bit image (value x 257) decodes back to exactly that image.
    Case("I;16 export", ".png", encode(Image.fromarray(GREY.astype(np.uint16) * 257)), GREY[..., None]),
    Case("I;16 rounded", ".png", encode(Image.fromarray(ARBITRARY_16)),
         np.array([0, 0, 1, 1, 2, 128, 254, 255] * 8, np.uint8).reshape(8, 8, 1)),
    Case("I;16B", ".png", encode(Image.frombytes("I;16B", (8, 8), (GREY.astype(">u2") * 257).tobytes())),
         GREY[..., None]),
    Case("I;16 with an unused key", ".png", encode(Image.fromarray(GREY.astype(np.uint16) * 257), transparency=1),
         GREY[..., None]),
    Case("I from a 16-bit PGM", ".ppm", pgm_16bit(GREY.astype(np.uint16) * 257), GREY[..., None]),
    Case("16-bit colour export", ".png", png_16bit_colour(COLOUR.astype(np.uint16) * 257), COLOUR),
    Case("F in 0..1", ".ppm", encode(Image.fromarray(GREY.astype(np.float32) / 255), "PPM"), GREY[..., None]),
    Case("F in 0..255", ".ppm", encode(Image.fromarray(GREY.astype(np.float32)), "PPM"), GREY[..., None]),
    Case("P", ".png", palette(INDICES, RGB_PALETTE),
         np.array(RGB_PALETTE, np.uint8).reshape(4, 3)[INDICES]),
    Case("P grey", ".png", palette(INDICES, GREY_PALETTE),
         np.array(GREY_PALETTE[::3], np.uint8)[INDICES][..., None]),
    Case("P in a BMP", ".bmp", encode(Image.open(io.BytesIO(palette(INDICES, RGB_PALETTE))), "BMP"),
         np.array(RGB_PALETTE, np.uint8).reshape(4, 3)[INDICES]),
    Case("P with transparency on no pixel", ".png", palette(INDICES % 3, RGB_PALETTE, transparency=3),
         np.array(RGB_PALETTE, np.uint8).reshape(4, 3)[INDICES % 3]),
    Case("RGB", ".png", encode(Image.fromarray(COLOUR)), COLOUR),
    Case("RGB as PPM", ".ppm", encode(Image.fromarray(COLOUR), "PPM"), COLOUR),
    Case("RGBA opaque", ".png", encode(Image.fromarray(np.dstack([COLOUR, OPAQUE]))), COLOUR),
    Case("LA opaque", ".png", encode(Image.fromarray(np.dstack([GREY, OPAQUE]), "LA")), GREY[..., None]),
    Case("CMYK", ".jpg", cmyk_jpeg(),
         np.concatenate([np.tile([0, 255, 255], (4, 8, 1)), np.full((4, 8, 3), 255)]).astype(np.uint8)),
    # EXIF orientation 6: stored turned a quarter left, shown (and read) turned back clockwise.
    Case("EXIF orientation", ".png", with_orientation(COLOUR, 6), np.rot90(COLOUR, k=-1)),
]

translucent = np.dstack([COLOUR, OPAQUE.copy()])
translucent[2, 5, 3] = 254
half_clear = np.dstack([GREY, np.where(GREY < 128, 0, 255).astype(np.uint8)])
REFUSED = [
    Case("RGBA translucent", ".png", encode(Image.fromarray(translucent)),
         np.array("1 of its 64 pixels is not fully opaque")),
    Case("LA transparent", ".png", encode(Image.fromarray(half_clear, "LA")),
         np.array("32 of its 64 pixels are not fully opaque")),
    Case("P transparent", ".png", palette(INDICES, RGB_PALETTE, transparency=2),
         np.array("16 of its 64 pixels are not fully opaque")),
    Case("L with a colour key", ".png", encode(Image.fromarray(GREY), transparency=8),
         np.array("1 of its 64 pixels is not fully opaque")),
    Case("I;16 with a key", ".png", encode(Image.fromarray(GREY.astype(np.uint16) * 257), transparency=1028),
         np.array("1 of its 64 pixels is not fully opaque")),
    Case("F out of range", ".ppm", encode(Image.fromarray(GREY.astype(np.float32) * 2 - 3), "PPM"),
         np.array("its floating-point pixels range -3..501, neither 0..1 nor 0..255")),
    Case("F not finite", ".ppm", encode(Image.fromarray(np.full((8, 8), np.nan, np.float32)), "PPM"),
         np.array("its floating-point pixels include NaN or infinity")),
]


def test_the_cmyk_case_is_what_pillow_converts() -> None:
    """The CMYK expectation above is Pillow's own conversion (cyan and white survive JPEG at quality 100)."""
    case = next(c for c in CASES if c.id == "CMYK")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(case.data)).convert("RGB")), case.expected)


# -- (a) a dataset: load_dataset("imagefolder") --------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_dataset_reads_every_mode_to_its_8_bit_pixels(tmp_path: Path, case: Case) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / f"0{case.suffix}").write_bytes(case.data)
    data = load_dataset("imagefolder", tmp_path, cache=False)
    assert data.images.dtype == np.uint8 and data.images.shape == (1, *case.expected.shape)
    assert np.array_equal(data.images[0], case.expected)
    assert np.array_equal(decode_pixels(tmp_path / "a" / f"0{case.suffix}"), case.expected)


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.id)
def test_a_dataset_refuses_a_file_in_one_line_naming_it(tmp_path: Path, case: Case) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / f"0{case.suffix}").write_bytes(case.data)
    with pytest.raises(InputError) as refused:
        load_dataset("imagefolder", tmp_path, cache=False)
    message = str(refused.value)
    assert message.startswith(f"cannot use image {tmp_path / 'a' / f'0{case.suffix}'}: {case.expected}")
    assert "\n" not in message and "--" not in message


def test_modes_pillow_writes_only_as_tiff_decode_by_the_same_rules() -> None:
    """TIFF is no suffix gmint lists, but a file is read by its bytes: these modes meet the same rules."""
    sixteen = GREY.astype(np.uint16) * 257
    for mode, raw in (("I;16B", sixteen.astype(">u2")), ("I;16L", sixteen.astype("<u2"))):
        img = Image.frombytes(mode, (8, 8), raw.tobytes())
        assert Image.open(io.BytesIO(encode(img, "TIFF"))).mode in (mode, "I;16")  # Pillow reads I;16L as I;16
        assert np.array_equal(decode_pixels(encode(img, "TIFF")), GREY[..., None])
    assert np.array_equal(decode_pixels(encode(Image.fromarray(GREY.astype(np.int32)), "TIFF")), GREY[..., None])
    with pytest.raises(InputError, match=r"^cannot use image i.tif: its 32-bit integer pixels range 0..75600, "
                                         r"outside 0..255, so their scale is unknown; save it as an 8- or 16-bit"):
        decode_pixels(encode(Image.fromarray(GREY.astype(np.int32) * 300), "TIFF"), name="i.tif")
    for mode in ("YCbCr", "LAB"):
        img = Image.fromarray(COLOUR).convert(mode)
        assert np.array_equal(decode_pixels(encode(img, "TIFF")), np.asarray(img.convert("RGB")))


def test_16_bit_colour_keeps_each_channels_high_byte() -> None:
    """Pillow reads a 16-bit colour PNG at 8 bits by its high byte: exact for an export of an 8-bit image
    (the CASES above), within 1 of value / 257 for other values."""
    values = np.random.default_rng(1).integers(0, 65536, (8, 8, 3)).astype(np.uint16)
    pixels = decode_pixels(png_16bit_colour(values))
    assert np.array_equal(pixels, (values >> 8).astype(np.uint8))
    assert np.abs(np.rint(values / 257) - pixels).max() == 1


def test_grey_or_colour_is_chosen_after_decoding(tmp_path: Path) -> None:
    """One channel only when every file decodes to grey: 16-bit grey and a grey palette are grey."""
    files = {"a/0.png": encode(Image.fromarray(GREY)), "a/1.png": encode(Image.fromarray(GREY.astype(np.uint16) * 257)),
             "b/0.png": palette(INDICES, GREY_PALETTE),
             "b/1.png": encode(Image.fromarray(np.dstack([GREY, OPAQUE]), "LA"))}
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    grey = load_dataset("imagefolder", tmp_path, cache=False)
    assert grey.images.shape == (4, 8, 8, 1)
    assert np.array_equal(grey.images[1], GREY[..., None]) and np.array_equal(grey.images[3], GREY[..., None])
    (tmp_path / "b" / "2.png").write_bytes(encode(Image.fromarray(COLOUR)))
    colour = load_dataset("imagefolder", tmp_path, cache=False)
    assert colour.images.shape == (5, 8, 8, 3)
    assert np.array_equal(colour.images[1], np.repeat(GREY[..., None], 3, axis=-1))
    assert np.array_equal(colour.images[4], COLOUR)


def test_exif_orientation_turns_the_image_and_its_size(tmp_path: Path) -> None:
    """A 8x4 file stored turned (orientation 6) is read 4x8, as shown: its size agrees with a 4x8 image."""
    wide = COLOUR[:4]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "0.png").write_bytes(with_orientation(wide, 6))
    (tmp_path / "a" / "1.png").write_bytes(encode(Image.fromarray(np.rot90(wide, k=-1))))
    data = load_dataset("imagefolder", tmp_path, cache=False)
    assert data.images.shape == (2, 8, 4, 3) and np.array_equal(data.images[0], data.images[1])
    for orientation, turned in ((3, np.rot90(wide, 2)), (8, np.rot90(wide, 1)), (2, wide[:, ::-1])):
        assert np.array_equal(decode_pixels(with_orientation(wide, orientation)), turned)


# -- (b) gmint score --images: load_image_folder -----------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_score_candidates_read_every_mode_to_its_8_bit_pixels(
        tmp_path: Path, case: Case, audited_digits: tuple[AuditedModel, Path]) -> None:
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / f"0{case.suffix}").write_bytes(case.data)
    (tmp_path / f"loose{case.suffix}").write_bytes(case.data)  # no class: labelled by the model's prediction
    data = load_image_folder(tmp_path, audited_digits[0], labels="predicted")
    assert data.images.shape == (2, *case.expected.shape)
    assert np.array_equal(data.images[0], case.expected) and np.array_equal(data.images[1], case.expected)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, publish_audit: Callable[..., Path]) -> Path:
    """A published audit (DIR/digits/) of the session's model, store and a logistic MINT classifier."""
    return publish_audit(tmp_path_factory.mktemp("published"))


@pytest.mark.parametrize("case", REFUSED[:3], ids=lambda c: c.id)
def test_gmint_score_refuses_a_file_in_one_line_and_writes_nothing(tmp_path: Path, case: Case,
                                                                   published: Path) -> None:
    (tmp_path / "images" / "3").mkdir(parents=True)
    (tmp_path / "images" / "3" / f"0{case.suffix}").write_bytes(case.data)
    before = snapshot(tmp_path)
    code, text = invoke("score", "--model", published / "audited.pt", "--mint", published / "mint.pt",
                        "--store", published / "features.h5", "--images", tmp_path / "images",
                        "--out", tmp_path / "scores.csv")
    assert code == 1 and text.strip().count("\n") == 0 and "Traceback" not in text
    assert f"cannot use image {tmp_path / 'images' / '3' / f'0{case.suffix}'}: {case.expected}" in text
    assert snapshot(tmp_path) == before


# -- (c) the page's uploads ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def requests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("requests")


@pytest.fixture(scope="module")
def client(published: Path, requests: Path) -> TestClient:
    audits, problems = find_audits(published.parent)
    assert problems == []
    return TestClient(create_app(audits, Limits(), tmp_root=requests))


@pytest.fixture
def decoded_uploads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ImageSet]]:
    """The images each request's candidates are read as, by the page's own path."""
    seen: list[ImageSet] = []
    read: Callable[..., ImageSet] = uploads.upload_set

    def recording(*args: object, **kwargs: object) -> ImageSet:
        seen.append(read(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(uploads, "upload_set", recording)
    yield seen


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_uploads_read_every_mode_to_its_8_bit_pixels(client: TestClient, decoded_uploads: list[ImageSet],
                                                     case: Case) -> None:
    files = [("files", (f"up{case.suffix}", case.data, "application/octet-stream"))] * 2
    response = client.post("/api/audits/digits/score", files=files,
                           data={"labels": ["3", "predicted"], "to_grey": "true"})
    assert response.status_code == 200, response.json()
    (data,) = decoded_uploads
    assert data.images.shape == (2, *case.expected.shape)
    assert np.array_equal(data.images[0], case.expected) and np.array_equal(data.images[1], case.expected)
    assert response.json()["resized"] == 0


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.id)
def test_uploads_refuse_a_file_in_one_line_and_write_nothing(client: TestClient, requests: Path,
                                                             published: Path, case: Case) -> None:
    before = snapshot(published)
    good = ("files", ("ok.png", encode(Image.fromarray(GREY)), "image/png"))
    files = [good, ("files", (f"bad{case.suffix}", case.data, "application/octet-stream"))]
    response = client.post("/api/audits/digits/score", files=files, data={"labels": ["3"]})
    detail = response.json()["detail"]
    assert response.status_code == 422 and detail.startswith(f"cannot use image bad{case.suffix}: {case.expected}")
    assert "\n" not in detail and "--" not in detail
    assert list(requests.iterdir()) == [] and snapshot(published) == before


def test_an_upload_turned_by_exif_is_sized_as_shown() -> None:
    """Size checks and the count of resized images see the upright size, the one that is scored."""
    stored = check_image("t.png", with_orientation(COLOUR[:4], 6), Limits())
    assert stored.size == (4, 8) and stored.pixels.shape == (8, 4, 3) and not stored.resized
    assert check_image("t.png", with_orientation(COLOUR[:4], 6), Limits(), side=8).resized
