"""Images: one PNG/JPEG decoded into a uint8 array the same way at ingest (a ZIP dataset, see
app.data.inspect.archive) and in serving, and the files an image dataset is stored as.

Conversion, the same at ingest and in `decode_image` (serving):
- mode: "L" (1 channel) when every image is grayscale (modes 1, L, LA, I, I;16, or a palette of
  grays), else "RGB" (3). 16-bit gray is scaled to 8 bits (>> 8), not clipped as Pillow would.
- transparency (RGBA, LA, PA, or tRNS on P/L/RGB) is flattened onto white, as a viewer shows it.
- size: every image is resized (bilinear) to the most common (height, width) of the dataset;
  ties go to the size met first in row order.
- EXIF orientation is not applied (as in Keras): images are used as stored.
Every image is decoded once: a first pass reads each member (enforcing the limits) and parses
only its header (size, mode), a second decodes it into a memory-mapped `images.npy`.
"""

from __future__ import annotations

import base64
import binascii
import io
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

from app.data.formats import Kind

# An image dataset's files, written at ingest beside its ZIP and read by app.data.loaders.
IMAGES_FILE = "images.npy"  # uint8 (n, height, width, channels)
LABELS_FILE = "labels.npy"  # int64 (n,), class index or -1
INDEX_FILE = "index.json"  # {"members": [name per row], "classes": [name per index]}
# Pillow decodes only these: a ".png" that is really a TIFF or an ICO is refused rather than
# handed to a plugin nobody meant to expose.
_PIL_FORMATS = ("PNG", "JPEG")
_MODES = {1: "L", 3: "RGB"}
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


class ImageError(Exception):
    """An image or archive that cannot be used: a message naming it, and what is wrong with it
    (invalid, or too large for a limit); the HTTP layer decides which status says so."""

    def __init__(self, message: str, *, kind: Kind = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.kind: Kind = kind


class Undecodable(ImageError):
    """Not a PNG/JPEG that Pillow can decode (collected at ingest, to list them together)."""


# ----------------------------------------------------------------------------------- decoding


def open_image(data: bytes, max_pixels: int, what: str) -> Image.Image:
    """Parse the header only (size, mode); refuse what is over the pixel limit."""
    try:
        im = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{what} is larger than the limit of {max_pixels} pixels "
                         f"(PRETRAINER_MAX_IMAGE_PIXELS): {exc}") from exc
    except UnidentifiedImageError as exc:  # its message names only a BytesIO object
        raise Undecodable(f"{what} is not a PNG or JPEG image") from exc
    except MemoryError:
        raise
    except Exception as exc:  # Pillow's parsers raise OSError, SyntaxError, struct.error, ...
        raise Undecodable(f"{what} is not a PNG or JPEG image: {exc}") from exc
    if im.width * im.height > max_pixels:
        im.close()
        raise ImageError(f"{what} is {im.width}x{im.height} = {im.width * im.height} pixels, more "
                         f"than the limit of {max_pixels} (PRETRAINER_MAX_IMAGE_PIXELS)")
    return im


def pixels(im: Image.Image, mode: str, height: int, width: int, what: str) -> np.ndarray:
    """Decode, convert to mode (L/RGB) and resize: uint8 (height, width, channels)."""
    try:
        im.load()
        im = _flatten(_to_8bit(im))
        im = im.convert(mode)
        if im.size != (width, height):
            im = im.resize((width, height), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    except MemoryError:
        raise
    except Exception as exc:  # truncated or corrupt data surfaces only now, as any of many types
        raise Undecodable(f"{what} cannot be decoded: {exc}") from exc
    return arr.reshape(height, width, len(mode))


def _to_8bit(im: Image.Image) -> Image.Image:
    # PNG's 16-bit gray: Pillow's convert("L") clips at 255 instead of scaling.
    if im.mode == "F":
        return Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8))
    if im.mode == "I" or im.mode.startswith("I;16"):
        wide = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        return Image.fromarray((wide >> 8).astype(np.uint8))
    return im


def _flatten(im: Image.Image) -> Image.Image:
    """Transparency composited onto white, as a viewer shows it."""
    if im.mode not in _ALPHA_MODES and "transparency" not in im.info:
        return im
    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, im.convert("RGBA"))


def is_gray(im: Image.Image) -> bool:
    if im.mode in _GRAY_MODES:
        return True
    if im.mode in ("P", "PA") and im.palette is not None:
        step = len(im.palette.mode)
        if step < 3:
            return True
        raw = bytes(im.palette.palette)
        entries = np.frombuffer(raw[: len(raw) // step * step], np.uint8).reshape(-1, step)
        return bool((entries[:, 0] == entries[:, 1]).all() and (entries[:, 1] == entries[:, 2]).all())
    return False


# ------------------------------------------------------------------------------------ serving


def decode_image(data: bytes, *, height: int, width: int, channels: int,
                 max_pixels: int) -> np.ndarray:
    """One PNG/JPEG as uint8 (height, width, channels), converted exactly as at ingest."""
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    with open_image(data, max_pixels, "the image") as im:
        return pixels(im, _MODES[channels], height, width, "the image")


def image_size(data: bytes, *, max_pixels: int) -> tuple[int, int]:
    """(height, width) of a PNG/JPEG from its header alone; refused past max_pixels."""
    with open_image(data, max_pixels, "the image") as im:
        return im.height, im.width


_DATA_URL = re.compile(r"^data:[^,]*;base64,", re.IGNORECASE)


def decode_b64(s: str) -> bytes:
    """The bytes of base64 text (standard or URL-safe, padding optional, data: URL allowed)."""
    if not isinstance(s, str):
        raise ImageError("b64 must be a string of base64 text")
    text = "".join(_DATA_URL.sub("", s.strip(), count=1).split())  # MIME line breaks
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"b64 is not valid base64: {exc}") from exc
    if not data:
        raise ImageError("b64 is empty; send the image's bytes as base64")
    return data
