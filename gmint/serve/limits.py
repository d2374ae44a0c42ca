"""What the page accepts from a browser: how many files, how many bytes, which formats, how many pixels.

An upload is untrusted bytes. Each one is checked here, in memory (nothing is ever written): its size, its
format (read from its first bytes, not from its name or content type), its pixel count (read from its header,
so a decompression bomb is refused before a pixel is decoded), and then decoded once, by the decoder every
gmint reader uses (`opened_pixels`), warnings as errors, so a truncated or damaged file is refused with its
name. The decoded pixels are what is scored: no upload is decoded twice.
"""

from __future__ import annotations

import io
import re
import unicodedata
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from gmint.data.readers.common import fit_pixels
from gmint.data.readers.pixels import opened_pixels
from gmint.errors import InputError

# The PIL formats of the files `gmint.data.readers.imagefolder` reads (IMAGE_SUFFIXES): only what the folder
# reader decodes is accepted, so a web upload scores exactly as the same file under `gmint score`.
FORMATS = ("PNG", "JPEG", "BMP", "PPM")
# What Pillow raises while decoding a damaged file (its header read, its data not).
_DAMAGED = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, Image.DecompressionBombWarning)
_NAME_CHARS = re.compile(r"[^\w .,()+-]")
NAME_LENGTH = 80


class UploadError(InputError):
    """An upload refused for what it holds (not an image, damaged, an unknown class): HTTP 422."""

    status = 422


class UploadTooLarge(UploadError):
    """An upload over a size or count limit: HTTP 413."""

    status = 413


@dataclass(frozen=True)
class Limits:
    """Bounds on one scoring request; every one is checked before the audited model runs.

    Attributes:
        max_files: images per request.
        max_file_bytes: bytes of one image file.
        max_request_bytes: bytes of a whole request body (all files and fields), enforced while it streams in.
        max_pixels: width x height of one image, read from its header before decoding; at most PIL's own
            decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`, 89 million pixels), which stays in force.
    """

    max_files: int = 64
    max_file_bytes: int = 4 * 2**20
    max_request_bytes: int = 64 * 2**20
    max_pixels: int = 4096 * 4096

    def __post_init__(self) -> None:
        for name in ("max_files", "max_file_bytes", "max_request_bytes", "max_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be a positive whole number, got {value!r}")
        if Image.MAX_IMAGE_PIXELS is not None and self.max_pixels > Image.MAX_IMAGE_PIXELS:
            raise InputError(f"max_pixels ({self.max_pixels:,}) is above PIL's decompression-bomb limit "
                             f"({Image.MAX_IMAGE_PIXELS:,} pixels)")
        if self.max_file_bytes > self.max_request_bytes:
            raise InputError(f"max_file_bytes ({self.max_file_bytes}) is above max_request_bytes "
                             f"({self.max_request_bytes}); no request could carry such a file")

    def to_dict(self) -> dict[str, int]:
        """The limits as the API and the page show them."""
        return {"max_files": self.max_files, "max_file_bytes": self.max_file_bytes,
                "max_request_bytes": self.max_request_bytes, "max_pixels": self.max_pixels}


@dataclass(frozen=True, eq=False)
class CheckedImage:
    """An upload that decoded cleanly within the limits, held as its pixels (the file's bytes are not kept).

    Attributes:
        name: the browser's file name, cleaned for display only (it never names a file on disk).
        pixels: (H, W, C) uint8 as `decode_pixels` reads the file (upright, C = 1 grey or 3 colour), already
            brought to the model's input side where `check_image` was given one.
        size: (width, height) of the file as uploaded (upright), before any resizing.
    """

    name: str
    pixels: np.ndarray
    size: tuple[int, int]

    @property
    def resized(self) -> bool:
        """Whether the pixels are of another size than the file (brought to the model's input side)."""
        return self.size != (self.pixels.shape[1], self.pixels.shape[0])


def display_name(raw: str | None, index: int) -> str:
    """A browser's file name fit to echo back: no folders, no control or markup characters, bounded length.

    Args:
        raw: the name the browser sent (may be absent, or a path on the user's machine).
        index: the upload's position, used when nothing printable is left.
    """
    base = re.split(r"[\\/]", raw or "")[-1]
    base = "".join(c for c in unicodedata.normalize("NFC", base) if unicodedata.category(c)[0] != "C")
    base = _NAME_CHARS.sub("_", base).strip()
    if len(base) > NAME_LENGTH:
        base = base[:NAME_LENGTH - 1] + "…"
    return base or f"image {index + 1}"


def check_count(n: int, limits: Limits) -> None:
    """Refuse an empty request or one with more files than `limits.max_files`."""
    if n == 0:
        raise UploadError("no images in the request; send one or more image files")
    if n > limits.max_files:
        raise UploadTooLarge(f"{n} images in one request; this server scores at most {limits.max_files} at a time")


def check_image(name: str, data: bytes, limits: Limits, side: int | None = None) -> CheckedImage:
    """Check one uploaded file and decode it once, bounded.

    Args:
        name: its display name (see `display_name`), for messages.
        data: its bytes.
        limits: the server's limits.
        side: the audited model's input side, if it records one: the image is resized to side x side (as the
            folder reader resizes, channels kept) as soon as it is decoded, so a request holds at most one
            full-size image at a time, not `max_files` of them.

    Raises:
        UploadTooLarge: over `max_file_bytes` or `max_pixels`.
        UploadError: empty, not an image, a format the folder reader does not read, damaged or truncated, or
            pixels that cannot be made 8-bit without a guess (see `decode_pixels`).
    """
    if len(data) > limits.max_file_bytes:
        raise UploadTooLarge(f"{name} is over {limits.max_file_bytes:,} bytes, this server's limit for one image")
    if not data:
        raise UploadError(f"{name} is an empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=FORMATS)
        except Image.UnidentifiedImageError:
            raise UploadError(f"{name} is not an image this server reads ({', '.join(FORMATS)})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # PIL's own, far higher, bound
            raise UploadTooLarge(f"{name} claims more pixels than this server decodes (at most "
                                 f"{limits.max_pixels:,})") from None
        except _DAMAGED:
            raise UploadError(f"{name} cannot be read as an image: its header is damaged") from None
        with img:
            width, height = img.size
            if width * height > limits.max_pixels:
                raise UploadTooLarge(f"{name} is {width}x{height} pixels; this server decodes images of at most "
                                     f"{limits.max_pixels:,} pixels")
            if width < 1 or height < 1:
                raise UploadError(f"{name} has no pixels ({width}x{height})")
            try:  # bounded by the pixel check above; a truncated file fails here, by its name
                pixels = opened_pixels(img, name)
            except InputError as exc:  # pixels with no 8-bit reading (transparency, an unknown scale)
                raise UploadError(str(exc)) from None
            except _DAMAGED:
                raise UploadError(f"{name} is a damaged {img.format} image: it ends early or its data is corrupt; "
                                  "save it again") from None
    size = (pixels.shape[1], pixels.shape[0])  # upright: after the file's EXIF orientation
    if side is not None:
        pixels = fit_pixels(pixels, (side, side, pixels.shape[2]), resize=True, shown=name)
    return CheckedImage(name, pixels, size)
