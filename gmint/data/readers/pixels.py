"""Decoding image files: every Pillow mode to 8 bits, one way.

Every file gmint reads as an image — a dataset reader's, a `gmint score` candidate's, a page upload's — goes
through `decode_pixels`, so a file holds the same pixels as a dataset row, as a candidate and as an upload.
Pillow's own `convert("L")` clips 16-bit values to 255 (a 16-bit PNG turns white) and drops alpha without a
word: each mode is scaled here as documented below, or the file is refused in one line.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps

from gmint.errors import InputError

# Modes that decode to one channel, and to three; a palette's count depends on its colours (`_grey_palette`).
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})
_PALETTE_MODES = frozenset({"P", "PA"})
_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
# EXIF orientations that turn the stored image a quarter: width and height swap.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def decode_pixels(source: Path | bytes, *, name: str | None = None) -> np.ndarray:
    """One image file → (H, W, C) uint8, C = 1 (grey) or 3 (colour), as every part of gmint reads it.

    The EXIF orientation is applied first (`ImageOps.exif_transpose`): the image is read upright, as every
    viewer and browser shows it, whatever reads it. Then each Pillow mode becomes 8 bits:

    - `1` → 0 or 255; `L` as is; `RGB` as is; `RGBX` drops its padding byte.
    - `I;16`, `I;16B`, `I;16L`, `I;16N` (16-bit grey) → value / 257, rounded: a 16-bit export of an 8-bit
      image (value x 257) gives back exactly that image.
    - `I` (32-bit integers): from a PGM/PPM file, which Pillow scales to 0..65535 (maxval above 255), as
      16-bit; from any other format, kept where every value is in 0..255 and refused otherwise (its scale
      is unknown).
    - `F` (floating point): values all in [0, 1] → x 255, rounded (the usual float image); else values in
      [0, 255] → rounded (Pillow's `convert("F")` of an 8-bit image); anything else is refused.
    - 16-bit-per-channel colour PNGs: Pillow opens them as `RGB`/`RGBA` keeping each channel's high byte,
      which is exact for a 16-bit export of an 8-bit image and within 1 of value / 257 otherwise.
    - `CMYK`, `YCbCr`, `LAB`, `HSV` → RGB by Pillow's conversion.
    - `P` (palette) → RGB, or grey where every palette entry is grey.
    - Transparency (`LA`, `La`, `PA`, `RGBA`, `RGBa`, a palette's or a colour key's): a fully opaque image
      drops it; any pixel that is not fully opaque refuses the file, since compositing it onto an assumed
      background would be a guess.

    Args:
        source: the file, or its bytes.
        name: how messages name it (default: the path).

    Raises:
        InputError: one line naming the file: it cannot be decoded, or its pixels cannot be made 8-bit
            without a guess.
    """
    shown = name if name is not None else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            return opened_pixels(img, shown)
    except _DECODE_ERRORS as err:
        raise InputError(f"cannot decode image {shown}: {_first_line(err)}") from None


def opened_pixels(img: Image.Image, shown: str) -> np.ndarray:
    """`decode_pixels` of an image already opened (its header checked by the caller), so a caller that read the
    header for checks of its own decodes the file once. Pillow's decoding errors (a damaged file) propagate as
    they are, for the caller to word; pixels that cannot be made 8-bit are the one-line `InputError`."""
    ImageOps.exif_transpose(img, in_place=True)
    pixels = _eight_bit(img, shown)
    return np.ascontiguousarray(pixels if pixels.ndim == 3 else pixels[..., None])


def image_header(path: Path) -> tuple[int, tuple[int, int]]:
    """(C, (W, H)) that `decode_pixels` gives for `path`, read from the file's header where it tells.

    Lets a reader choose one shape for a folder before decoding it once. A palette image, or a mode gmint
    does not read, is decoded: its channels depend on its colours, its refusal comes from `decode_pixels`.
    The orientation is the header's: PNG keeps an EXIF block after its pixels only rarely, and where one
    turns an image that is not resized, decoding finds a size that disagrees with the folder's and says so.
    """
    try:
        with Image.open(path) as img:
            mode, (width, height) = img.mode, img.size
            # Image's own getexif: PNG's decodes the whole file to look for an EXIF block after the pixels.
            turned = Image.Image.getexif(img).get(ExifTags.Base.Orientation, 1) in _QUARTER_TURNS
    except _DECODE_ERRORS as err:
        raise InputError(f"cannot decode image {path}: {_first_line(err)}") from None
    if mode in _PALETTE_MODES or mode not in GREY_MODES | COLOUR_MODES:
        h, w, c = decode_pixels(path).shape
        return c, (w, h)
    return (1 if mode in GREY_MODES else 3), ((height, width) if turned else (width, height))


def _eight_bit(img: Image.Image, shown: str) -> np.ndarray:
    """`img`'s pixels as uint8, (H, W) grey or (H, W, 3) colour, by the rules in `decode_pixels`."""
    mode = img.mode
    if mode in _SIXTEEN_BIT or (mode == "I" and img.format == "PPM"):
        values = np.asarray(img).astype(np.int64)
        _refuse_keyed(img, values, shown)
        _check_range(values, 0, 65535, "16-bit", shown)
        return ((values + 128) // 257).astype(np.uint8)  # (v + 128) // 257 == round(v / 257): no ties
    if mode == "I":
        values = np.asarray(img).astype(np.int64)
        _refuse_keyed(img, values, shown)
        _check_range(values, 0, 255, "32-bit integer", shown)
        return values.astype(np.uint8)
    if mode == "F":
        return _from_float(np.asarray(img, dtype=np.float64), shown)
    if mode in _PALETTE_MODES or (mode in ("1", "L", "RGB") and "transparency" in img.info):
        # Pillow applies a palette's alpha or a colour key while converting; the alpha is then checked.
        rgba = _opaque(np.asarray(img.convert("RGBA")), shown)
        grey = _grey_palette(img) if mode in _PALETTE_MODES else mode != "RGB"
        return rgba[..., 0] if grey else rgba[..., :3]
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("LA", "La"):
        return _opaque(np.asarray(img), shown)[..., 0]
    if mode in ("RGBA", "RGBa", "RGBX"):
        pixels = np.asarray(img)
        return (_opaque(pixels, shown) if mode != "RGBX" else pixels)[..., :3]
    if mode in ("L", "RGB"):
        return np.asarray(img)
    if mode in COLOUR_MODES:  # CMYK, YCbCr, LAB, HSV
        return np.asarray(img.convert("RGB"))
    raise InputError(f"cannot use image {shown}: its pixel mode {mode!r} is not one gmint reads")


def _opaque(pixels: np.ndarray, shown: str) -> np.ndarray:
    """`pixels` (alpha last) if every pixel is fully opaque; else the one-line refusal."""
    clear = int(np.count_nonzero(pixels[..., -1] != 255))
    if clear:
        raise InputError(f"cannot use image {shown}: {clear} of its {pixels[..., -1].size} pixels "
                         f"{'is' if clear == 1 else 'are'} not fully opaque, and compositing them onto a background "
                         "would be a guess; save it without transparency")
    return pixels


def _refuse_keyed(img: Image.Image, values: np.ndarray, shown: str) -> None:
    """Refuse a grey image whose transparency key (a PNG tRNS value) matches any pixel."""
    key = img.info.get("transparency")
    if isinstance(key, int) and not isinstance(key, bool):
        _opaque(np.where(values == key, 0, 255)[..., None], shown)


def _check_range(values: np.ndarray, low: int, high: int, what: str, shown: str) -> None:
    """Refuse integer pixels outside low..high: no scale to 8 bits is known for them."""
    if values.size and (values.min() < low or values.max() > high):
        raise InputError(f"cannot use image {shown}: its {what} pixels range {values.min()}..{values.max()}, "
                         f"outside {low}..{high}, so their scale is unknown; save it as an 8- or 16-bit image")


def _from_float(values: np.ndarray, shown: str) -> np.ndarray:
    """Floating-point pixels in [0, 1] (x 255) or [0, 255], rounded to uint8; anything else refused."""
    if not np.isfinite(values).all():
        raise InputError(f"cannot use image {shown}: its floating-point pixels include NaN or infinity")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low < 0 or high > 255:
        raise InputError(f"cannot use image {shown}: its floating-point pixels range {low:g}..{high:g}, neither "
                         "0..1 nor 0..255, so their scale is unknown; save it as an 8- or 16-bit image")
    return np.rint(values * 255 if high <= 1 else values).astype(np.uint8)


def _grey_palette(img: Image.Image) -> bool:
    """Whether every entry of `img`'s palette is grey (R = G = B): its image is then read as one channel."""
    entries = np.asarray(img.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
    return bool((entries == entries[:, :1]).all())


def _first_line(err: BaseException) -> str:
    return str(err).strip().split("\n")[0][:200] or type(err).__name__
