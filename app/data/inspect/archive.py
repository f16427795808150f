"""ZIP inspection: a ZIP of PNG/JPEG images, read member by member and decoded into arrays
written next to the upload (app.data.images decodes each one).


Layout (Keras' `flow_from_directory` convention):
- every image at the top level, or every image in one folder: unlabelled;
- one folder per class with the images inside: labelled. Class names are the folder names sorted
  as strings; a label is the class's index in that list (-1 when unlabelled).
One folder holding everything is a wrapper, not a class: it is dropped once, so
`digits/0/a.png, digits/1/b.png` has classes "0" and "1" and `cats/a.png, cats/b.png` is
unlabelled. Images both at the top level and in folders (mixed), or nested deeper than one class
folder, are refused with a reason that says so. Rows are ordered by path (class folder, then name).

Members skipped without complaint: directory entries; everything under `__MACOSX/`; any path with
a component starting with "." (.DS_Store, AppleDouble `._x.png`, `.git/`); Thumbs.db and
desktop.ini; and README* / LICENSE* / LICENCE* files anywhere (notes shipped with a dataset).
Any other member that is not .png/.jpg/.jpeg is refused (naming up to 10 of them).

Safety: members are read one at a time into memory, never extracted, and only the derived arrays
are written (into a folder the caller gives), so no member name ever becomes a path. Even so a
name that is absolute, has a ".." component, or is a symlink marks a malformed or hostile archive:
refused naming it, before anything is written. Limits come from settings as `ZipLimits`:
- members (PRETRAINER_MAX_ZIP_MEMBERS): too large, counted before zipfile parses the central
  directory;
- bytes decompressed (PRETRAINER_MAX_ZIP_UNCOMPRESSED_BYTES): too large, counted over the bytes
  that actually come out, since headers can lie and overlapping members reuse the same bytes;
- compression ratio of a member, or of the whole archive against its size on disk
  (PRETRAINER_MAX_ZIP_RATIO): too large; PNG and JPEG barely compress, so a high ratio is a bomb;
- pixels per image (PRETRAINER_MAX_IMAGE_PIXELS): invalid, checked from the header before decoding.
  Pillow's `Image.MAX_IMAGE_PIXELS` is process-wide (not ours to set per request); its own
  DecompressionBombError is reported the same way.

"""

from __future__ import annotations

import json
import re
import stat
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.data.formats import IngestError
from app.data.images import (
    IMAGES_FILE,
    INDEX_FILE,
    LABELS_FILE,
    ImageError,
    Undecodable,
    is_gray,
    open_image,
    pixels,
)
from app.data.schema import DatasetInfo

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_OS_JUNK = frozenset({"thumbs.db", "desktop.ini"})
_NOTES = re.compile(r"(readme|licen[cs]e)(\..*)?", re.IGNORECASE)
_DRIVE = re.compile(r"[A-Za-z]:")
_MAX_LISTED = 10
_TOP_SIZES = 20
_CHUNK = 1 << 16
# zipfile builds a ZipInfo for every central-directory header before anything can be counted;
# each header starts with this signature, so counting it first bounds that work, whatever the
# end-of-central-directory record claims.
_CENTRAL_HEADER = b"PK\x01\x02"
# Ratios are judged once this much has come out of a member (or the archive): below it a high
# ratio costs nothing, and the ratios of tiny members are noise.
_RATIO_FLOOR = 1 << 20
# The most a PNG/JPEG within the pixel limit can take: 16-bit RGBA is 8 bytes a pixel, plus a PNG
# filter byte a row (at most 1 a pixel), plus room for metadata chunks. Bounds one member in memory.
_BYTES_PER_PIXEL = 9
_METADATA_ROOM = 1 << 20


@dataclass(frozen=True)
class ZipLimits:
    """Bounds on a ZIP upload, enforced while reading it; defaults are Settings' defaults."""

    max_members: int = 200_000
    max_uncompressed_bytes: int = 8 * 1024**3
    max_ratio: float = 200.0
    max_image_pixels: int = 40_000_000
    # The decoded arrays (images.npy), absolutely and against the archive's size on disk; the
    # ratio is judged only past decoded_floor (see Settings.max_dataset_decoded_*).
    max_decoded_bytes: int = 8 * 1024**3
    max_decoded_ratio: float = 200.0
    decoded_floor: int = 64 * 1024**2


@dataclass
class ImageSetInfo:
    """What ingest learned about an image archive; its arrays are already on disk."""

    n_images: int
    height: int
    width: int
    channels: int
    classes: list[str]
    class_counts: list[int]
    sizes: Counter[tuple[int, int]]  # original (height, width) -> images
    modes: Counter[str]  # original Pillow mode -> images

    @property
    def labelled(self) -> bool:
        """Whether the archive had one folder per class."""
        return bool(self.classes)

    def details(self) -> dict[str, Any]:
        """The dataset's `details`: geometry, original sizes ("WxH") and modes, classes."""
        sizes = {f"{w}x{h}": n for (h, w), n in self.sizes.most_common(_TOP_SIZES)}
        return {
            "image": {"height": self.height, "width": self.width, "channels": self.channels,
                      "sizes": sizes, "modes": dict(self.modes.most_common())},
            "classes": [{"name": c, "count": n} for c, n in zip(self.classes, self.class_counts)],
            "labelled": self.labelled,
        }


@dataclass
class _Row:
    """One image member: where it is in the archive and its path without the wrapper folder."""

    info: zipfile.ZipInfo
    parts: tuple[str, ...]


# ------------------------------------------------------------------------------------- ingest


def ingest_zip(path: Path, out_dir: Path, limits: ZipLimits | None = None) -> ImageSetInfo:
    """Validate a ZIP of images and write images.npy, labels.npy and index.json into out_dir."""
    path, out_dir, limits = Path(path), Path(out_dir), limits or ZipLimits()
    if _count_central_headers(path, limits.max_members) > limits.max_members:
        raise _too_many(limits)
    outputs = [out_dir / IMAGES_FILE, out_dir / LABELS_FILE, out_dir / INDEX_FILE]
    try:
        with _open_zip(path) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_members:
                raise _too_many(limits)
            rows, classes = _plan(infos)
            return _build(zf, rows, classes, limits, path.stat().st_size, out_dir)
    except BaseException:
        for p in outputs:  # half-written arrays must not be mistaken for a dataset
            p.unlink(missing_ok=True)
        raise


def _too_many(limits: ZipLimits) -> ImageError:
    return ImageError(f"the archive has more than {limits.max_members} members, the limit "
                      "(PRETRAINER_MAX_ZIP_MEMBERS)", kind="too_large")


def _count_central_headers(path: Path, stop: int) -> int:
    """Occurrences of the central-directory signature in the file, counted up to stop + 1."""
    count, tail = 0, b""
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            data = tail + chunk
            count += data.count(_CENTRAL_HEADER)
            if count > stop:
                break
            tail = data[-3:]  # a signature split across reads; 3 bytes cannot hold a whole one
    return count


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except MemoryError:
        raise
    except Exception as exc:  # BadZipFile mostly, but hostile headers also raise struct/Unicode errors
        raise ImageError(f"this is not a valid ZIP archive: {exc}") from exc


def _quote(name: str) -> str:
    shown = json.dumps(name, ensure_ascii=False)
    return shown if len(shown) <= 200 else shown[:196] + '..."'


def _listed(names: list[str]) -> str:
    more = len(names) - _MAX_LISTED
    return ", ".join(_quote(n) for n in names[:_MAX_LISTED]) + (f" and {more} more" if more > 0 else "")


# --------------------------------------------------------------------------------------- plan


def _plan(infos: list[zipfile.ZipInfo]) -> tuple[list[_Row], list[str]]:
    """The image members in row order and the class names; refuses unsafe or stray members."""
    rows: list[_Row] = []
    others: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for info in infos:
        _check_safe(info)
        parts = _parts(info.filename)
        if info.filename.endswith(("/", "\\")) or not parts or _is_os_junk(parts):
            continue
        if not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
            if not _NOTES.fullmatch(parts[-1]):
                others.append(info.filename)
            continue
        if parts in seen:
            raise ImageError(f"member {_quote(info.filename)} appears twice in the archive")
        seen.add(parts)
        rows.append(_Row(info, parts))
    if others:
        raise ImageError("only PNG and JPEG images (.png, .jpg, .jpeg) are accepted in a ZIP; "
                         f"these members are not: {_listed(others)}")
    if not rows:
        raise ImageError("the archive holds no PNG or JPEG images (.png, .jpg, .jpeg)")
    return _layout(_unwrap(rows))


def _check_safe(info: zipfile.ZipInfo) -> None:
    name = info.filename
    raw = name.replace("\\", "/")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise ImageError(f"member {_quote(name)} has an absolute path; archive members must be "
                         "relative")
    if ".." in raw.split("/"):
        raise ImageError(f'member {_quote(name)} has a ".." component (it points outside the '
                         "archive)")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ImageError(f"member {_quote(name)} is a symbolic link; the archive must hold the "
                         "images themselves")


def _parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def _is_os_junk(parts: tuple[str, ...]) -> bool:
    # Checked before the extension: macOS writes AppleDouble "._cat.png" files that are not PNGs.
    return (parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)
            or parts[-1].lower() in _OS_JUNK)


def _unwrap(rows: list[_Row]) -> list[_Row]:
    """Drop one folder that holds every image (zipping a folder makes one)."""
    tops = {r.parts[0] for r in rows}
    if len(tops) == 1 and all(len(r.parts) > 1 for r in rows):
        return [_Row(r.info, r.parts[1:]) for r in rows]
    return rows


def _layout(rows: list[_Row]) -> tuple[list[_Row], list[str]]:
    deep = next((r for r in rows if len(r.parts) > 2), None)
    if deep is not None:
        raise ImageError(f"image {_quote(deep.info.filename)} is nested too deep; put images "
                         "at the top level (unlabelled) or directly in one folder per class "
                         '(labelled, e.g. "cats/1.png"), optionally all inside one folder')
    flat = [r for r in rows if len(r.parts) == 1]
    nested = [r for r in rows if len(r.parts) == 2]
    if flat and nested:
        raise ImageError(
            f"the archive mixes images at the top level (e.g. {_quote(flat[0].info.filename)}) "
            f"with images in class folders (e.g. {_quote(nested[0].info.filename)}); put every "
            "image in a folder named after its class for a labelled dataset, or all of them at "
            "the top level for an unlabelled one")
    rows.sort(key=lambda r: r.parts)
    return rows, sorted({r.parts[0] for r in nested})


# ------------------------------------------------------------------------------------ reading


class _Reader:
    """Reads members whole, counting the bytes that actually come out against the limits."""

    def __init__(self, zf: zipfile.ZipFile, limits: ZipLimits, archive_size: int) -> None:
        self.zf = zf
        self.limits = limits
        self.archive_size = max(archive_size, 1)
        self.total = 0
        self.member_cap = limits.max_image_pixels * _BYTES_PER_PIXEL + _METADATA_ROOM

    def read(self, info: zipfile.ZipInfo) -> bytes:
        """The member's bytes; ImageError (too large) as soon as a limit is passed."""
        # The header's compressed size can lie; the archive's size on disk cannot.
        packed = max(min(info.compress_size, self.archive_size), 1)
        chunks: list[bytes] = []
        got = 0
        try:
            with self.zf.open(info) as fh:
                while chunk := fh.read(_CHUNK):
                    chunks.append(chunk)
                    got += len(chunk)
                    self.total += len(chunk)
                    self._check(info.filename, got, packed)
        except ImageError:
            raise
        except MemoryError:
            raise
        except Exception as exc:  # bad CRC, truncated data, encryption, unknown compression...
            raise ImageError(f"member {_quote(info.filename)} cannot be read from the archive: "
                             f"{exc}") from exc
        return b"".join(chunks)

    def _check(self, name: str, got: int, packed: int) -> None:
        lim = self.limits
        if self.total > lim.max_uncompressed_bytes:
            raise ImageError(f"the archive decompresses to more than {lim.max_uncompressed_bytes}"
                             " bytes, the limit (PRETRAINER_MAX_ZIP_UNCOMPRESSED_BYTES)", kind="too_large")
        if got > self.member_cap:
            raise ImageError(f"member {_quote(name)} decompresses to more than {self.member_cap} "
                             "bytes, more than an image within the pixel limit of "
                             f"{lim.max_image_pixels} (PRETRAINER_MAX_IMAGE_PIXELS) can take",
                             kind="too_large")
        if got > _RATIO_FLOOR and got > lim.max_ratio * packed:
            raise ImageError(f"member {_quote(name)} is compressed more than {lim.max_ratio:g}:1, "
                             "the limit (PRETRAINER_MAX_ZIP_RATIO); PNG and JPEG images barely "
                             "compress, so this looks like a zip bomb", kind="too_large")
        if self.total > _RATIO_FLOOR and self.total > lim.max_ratio * self.archive_size:
            raise ImageError(f"the archive decompresses to more than {lim.max_ratio:g} times its "
                             "size, the limit (PRETRAINER_MAX_ZIP_RATIO); overlapping members "
                             "or a zip bomb", kind="too_large")


# -------------------------------------------------------------------------------------- build


@dataclass
class _Survey:
    """First pass: each row's original (height, width), or None where it did not open."""

    sizes: list[tuple[int, int] | None]
    modes: Counter[str]
    gray: bool
    broken: dict[int, str]  # row -> reason


def _survey(reader: _Reader, rows: list[_Row], max_pixels: int) -> _Survey:
    survey = _Survey(sizes=[], modes=Counter(), gray=True, broken={})
    for i, row in enumerate(rows):
        data = reader.read(row.info)
        try:
            with open_image(data, max_pixels, f"image {_quote(row.info.filename)}") as im:
                survey.sizes.append((im.height, im.width))
                survey.modes[im.mode] += 1
                survey.gray = survey.gray and is_gray(im)
        except Undecodable as exc:
            survey.sizes.append(None)
            survey.broken[i] = exc.message
    return survey


def _modal_size(sizes: list[tuple[int, int] | None]) -> tuple[int, int]:
    counts = Counter(s for s in sizes if s is not None)
    # max() keeps the first of equal counts, and a Counter keeps first-seen order: ties go to
    # the size met first in row order.
    return max(counts.items(), key=lambda kv: kv[1])[0]


def _build(zf: zipfile.ZipFile, rows: list[_Row], classes: list[str], limits: ZipLimits,
           archive_size: int, out_dir: Path) -> ImageSetInfo:
    survey = _survey(_Reader(zf, limits, archive_size), rows, limits.max_image_pixels)
    if len(survey.broken) == len(rows):
        raise _broken_error(rows, survey.broken)
    height, width = _modal_size(survey.sizes)
    mode = "L" if survey.gray else "RGB"
    _check_decoded(len(rows) * height * width * len(mode), archive_size, limits)
    images = np.lib.format.open_memmap(out_dir / IMAGES_FILE, mode="w+", dtype=np.uint8,
                                       shape=(len(rows), height, width, len(mode)))
    reader = _Reader(zf, limits, archive_size)
    broken = dict(survey.broken)
    for i, row in enumerate(rows):
        if i in broken:
            continue
        what = f"image {_quote(row.info.filename)}"
        try:
            with open_image(reader.read(row.info), limits.max_image_pixels, what) as im:
                images[i] = pixels(im, mode, height, width, what)
        except Undecodable as exc:
            broken[i] = exc.message
    if broken:
        raise _broken_error(rows, broken)
    images.flush()
    del images
    return _write_index(rows, classes, survey, (height, width, len(mode)), out_dir)


def _check_decoded(decoded: int, archive_size: int, limits: ZipLimits) -> None:
    """Refuse (too large) arrays past the absolute cap, or past the ratio to the upload's size.

    Checked from the headers, before anything is decoded or written: a few KB of 1-bit PNG
    decode to tens of MB each, so the archive's own limits (on what it decompresses to) do not
    bound the arrays.
    """
    if decoded > limits.max_decoded_bytes:
        raise ImageError(f"the images decode to {decoded} bytes (images x height x width x "
                         f"channels), more than the limit of {limits.max_decoded_bytes} "
                         "(PRETRAINER_MAX_DATASET_DECODED_BYTES)", kind="too_large")
    allowed = max(limits.decoded_floor, limits.max_decoded_ratio * archive_size)
    if decoded > allowed:
        times = decoded / max(archive_size, 1)
        raise ImageError(f"the images decode to {decoded} bytes, {times:.0f} times the "
                         f"archive's {archive_size} bytes; past "
                         f"{limits.decoded_floor} bytes the limit is {limits.max_decoded_ratio:g} "
                         "times (PRETRAINER_MAX_DATASET_DECODED_RATIO)", kind="too_large")


def _broken_error(rows: list[_Row], broken: dict[int, str]) -> ImageError:
    names = [rows[i].info.filename for i in sorted(broken)]
    first = broken[min(broken)]
    return ImageError(f"{len(names)} image(s) cannot be decoded as PNG or JPEG: {_listed(names)} "
                      f"(first error: {first})")


def _write_index(rows: list[_Row], classes: list[str], survey: _Survey,
                 shape: tuple[int, int, int], out_dir: Path) -> ImageSetInfo:
    index = {c: k for k, c in enumerate(classes)}
    labels = np.array([index[r.parts[0]] if classes else -1 for r in rows], dtype=np.int64)
    np.save(out_dir / LABELS_FILE, labels, allow_pickle=False)
    members = [r.info.filename for r in rows]
    (out_dir / INDEX_FILE).write_text(json.dumps({"members": members, "classes": classes}),
                                      encoding="utf-8")
    counts = [int(c) for c in np.bincount(labels, minlength=len(classes))] if classes else []
    return ImageSetInfo(n_images=len(rows), height=shape[0], width=shape[1], channels=shape[2],
                        classes=classes, class_counts=counts,
                        sizes=Counter(s for s in survey.sizes if s is not None),
                        modes=survey.modes)


def inspect_zip(path: Path, derived_dir: Path, limits: ZipLimits) -> DatasetInfo:
    """An image dataset's facts; its arrays are written into derived_dir."""
    try:
        found = ingest_zip(path, derived_dir, limits)
    except ImageError as exc:  # an archive that cannot be used is a refused upload
        raise IngestError(exc.message, kind=exc.kind) from exc
    return DatasetInfo("image", "zip", found.n_images, [], details=found.details())
