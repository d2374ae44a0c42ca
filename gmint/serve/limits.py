"""What the page accepts from a browser: how many files, how many bytes, which formats, how many pixels.

An upload is untrusted bytes. Each one is checked here, in memory and before anything is written: its size,
its format (read from its first bytes, not from its name or content type), its pixel count (read from its
header, so a decompression bomb is refused before a pixel is decoded), and then decoded once, warnings as
errors, so a truncated or damaged file is refused with its name rather than half read later.
"""

from __future__ import annotations

import io
import re
import unicodedata
import warnings
from dataclasses import dataclass

from PIL import Image

from gmint.errors import InputError

# PIL format → the suffix `gmint.data.readers.imagefolder` reads it by (IMAGE_SUFFIXES): only what the
# folder reader decodes is accepted, so a web upload scores exactly as the same file under `gmint score`.
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "PPM": ".ppm"}
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


@dataclass(frozen=True)
class CheckedImage:
    """An upload that decoded cleanly within the limits.

    Attributes:
        name: the browser's file name, cleaned for display only (it never names a file on disk).
        data: the file's bytes, unchanged.
        suffix: the suffix its format is read by (`FORMATS`).
        size: (width, height) in pixels.
        mode: PIL's mode (`L`, `RGB`, ...).
    """

    name: str
    data: bytes
    suffix: str
    size: tuple[int, int]
    mode: str


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


def check_image(name: str, data: bytes, limits: Limits) -> CheckedImage:
    """Check one uploaded file and decode it once, bounded.

    Args:
        name: its display name (see `display_name`), for messages.
        data: its bytes.
        limits: the server's limits.

    Raises:
        UploadTooLarge: over `max_file_bytes` or `max_pixels`.
        UploadError: empty, not an image, a format the folder reader does not read, damaged or truncated.
    """
    if len(data) > limits.max_file_bytes:
        raise UploadTooLarge(f"{name} is over {limits.max_file_bytes:,} bytes, this server's limit for one image")
    if not data:
        raise UploadError(f"{name} is an empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=list(FORMATS))
        except Image.UnidentifiedImageError:
            raise UploadError(f"{name} is not an image this server reads ({', '.join(FORMATS)})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # PIL's own, far higher, bound
            raise UploadTooLarge(f"{name} claims more pixels than this server decodes (at most "
                                 f"{limits.max_pixels:,})") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise UploadError(f"{name} cannot be read as an image ({_first_line(exc)})") from None
        with img:
            width, height = img.size
            if width * height > limits.max_pixels:
                raise UploadTooLarge(f"{name} is {width}x{height} pixels; this server decodes images of at most "
                                     f"{limits.max_pixels:,} pixels")
            if width < 1 or height < 1:
                raise UploadError(f"{name} has no pixels ({width}x{height})")
            try:
                img.load()  # bounded by the pixel check above; a truncated file fails here, by its name
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
                    Image.DecompressionBombWarning) as exc:
                raise UploadError(f"{name} is a damaged {img.format} image ({_first_line(exc)})") from None
            return CheckedImage(name, data, FORMATS[str(img.format)], (width, height), img.mode)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n")[0][:200] or type(exc).__name__
