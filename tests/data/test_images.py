"""ZIP-of-images ingest, its limits, the loader, and the decoder serving shares with ingest."""

from __future__ import annotations

import base64
import io
import json
import stat
import struct
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from app.data.formats import IngestError
from app.data.images import ImageError, decode_b64, decode_image
from app.data.inspect import detect_format, inspect_file
from app.data.inspect.archive import ZipLimits, ingest_zip
from app.data.loaders import load_images

# ----------------------------------------------------------------------------------- helpers


@lru_cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits as uint8 0..255 images, and their labels."""
    d = load_digits()
    return (d.images * 255 / 16).round().astype(np.uint8), d.target.astype(np.int64)


def png(arr: np.ndarray, **save: object) -> bytes:
    """An array (HxW, HxWx3 or HxWx4 uint8; or a PIL image) as PNG bytes."""
    im = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
    buf = io.BytesIO()
    im.save(buf, "PNG", **save)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes] | list[tuple[str | zipfile.ZipInfo, bytes]],
              compression: int = zipfile.ZIP_STORED) -> bytes:
    """A ZIP holding the members, names written as given (no sanitising)."""
    buf = io.BytesIO()
    items = members.items() if isinstance(members, dict) else members
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in items:
            zf.writestr(name, data)
    return buf.getvalue()


@lru_cache
def flat_digits_zip() -> bytes:
    """Every digit at the top level, named by row: unlabelled."""
    images, _ = digits()
    return zip_bytes({f"{i:04d}.png": png(im) for i, im in enumerate(images)})


@lru_cache
def class_digits_zip(wrapper: str = "") -> bytes:
    """One folder per digit ("0".."9"), optionally inside a wrapper folder: labelled."""
    images, labels = digits()
    return zip_bytes({f"{wrapper}{y}/{i:04d}.png": png(im)
                      for i, (im, y) in enumerate(zip(images, labels))})


def symlink_member(name: str = "link.png", target: bytes = b"/etc/passwd") -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix, where the mode bits in external_attr mean something
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


@lru_cache
def bomb_zip() -> bytes:
    """One "image" of 50 MB of zeros, deflated to ~50 KB."""
    info = zipfile.ZipInfo("bomb.png")
    info.compress_type = zipfile.ZIP_DEFLATED
    return zip_bytes([(info, bytes(50 << 20))])


def ingest(tmp_path: Path, data: bytes, limits: ZipLimits | None = None, name: str = "d.zip"):
    path = tmp_path / name
    path.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return inspect_file(path, name, derived_dir=out, zip_limits=limits), out


def refused(tmp_path: Path, data: bytes, kind: str, *words: str,
            limits: ZipLimits | None = None) -> IngestError:
    with pytest.raises(IngestError) as caught:
        ingest(tmp_path, data, limits)
    exc = caught.value
    assert exc.kind == kind, exc.reason
    for word in words:
        assert word in exc.reason, (word, exc.reason)
    assert list((tmp_path / "out").iterdir()) == [], "nothing may be left behind"
    return exc


# ---------------------------------------------------------------------------- layouts, arrays


def test_flat_zip_is_unlabelled_and_lossless(tmp_path):
    images, _ = digits()
    info, out = ingest(tmp_path, flat_digits_zip())
    assert (info.kind, info.format, info.n_rows, info.columns) == ("image", "zip", 1797, [])
    assert info.details == {
        "image": {"height": 8, "width": 8, "channels": 1, "sizes": {"8x8": 1797},
                  "modes": {"L": 1797}},
        "classes": [], "labelled": False}
    x, y, classes = load_images(out)
    assert y is None and classes == []
    assert x.dtype == np.uint8 and x.shape == (1797, 8, 8, 1)
    np.testing.assert_array_equal(x[..., 0], images)
    assert np.load(out / "labels.npy").tolist() == [-1] * 1797
    assert json.loads((out / "index.json").read_text())["members"][:2] == ["0000.png", "0001.png"]


@pytest.mark.parametrize("wrapper", ["", "digits/"])
def test_class_folders_are_labelled_in_sorted_order(tmp_path, wrapper):
    images, labels = digits()
    info, out = ingest(tmp_path, class_digits_zip(wrapper))
    counts = np.bincount(labels)
    assert info.details["labelled"] is True
    assert info.details["classes"] == [{"name": str(k), "count": int(counts[k])} for k in range(10)]
    x, y, classes = load_images(out)
    assert classes == [str(k) for k in range(10)] and y.dtype == np.int64
    # Rows are sorted by class folder, then file name: map each back to its source row.
    members = json.loads((out / "index.json").read_text())["members"]
    source = [int(Path(m).stem) for m in members]
    assert members[0] == f"{wrapper}0/0000.png"
    np.testing.assert_array_equal(y, labels[source])
    np.testing.assert_array_equal(x[..., 0], images[source])
    assert [classes[k] for k in y[:3]] == [m.split("/")[-2] for m in members[:3]]


def test_one_folder_holding_everything_is_a_wrapper_not_a_class(tmp_path):
    img = png(digits()[0][0])
    info, _ = ingest(tmp_path, zip_bytes({"cats/a.png": img, "cats/b.png": img}))
    assert info.details["labelled"] is False and info.n_rows == 2


def test_junk_is_skipped(tmp_path):
    img = png(digits()[0][0])
    info, out = ingest(tmp_path, zip_bytes({
        "set/": b"", "set/a/": b"", "set/a/1.png": img, "set/b/2.png": img, "set/b/3.PNG": img,
        "__MACOSX/set/a/._1.png": b"\x00\x05\x16\x07", "set/.DS_Store": b"\x00\x00",
        "set/a/._1.png": b"\x00\x05\x16\x07", "set/README.md": b"# digits", "LICENSE": b"MIT",
        "set/b/Thumbs.db": b"\x00"}))
    assert info.n_rows == 3 and [c["name"] for c in info.details["classes"]] == ["a", "b"]
    assert json.loads((out / "index.json").read_text())["members"] == [
        "set/a/1.png", "set/b/2.png", "set/b/3.PNG"]


def test_modal_size_wins_and_others_are_resized_bilinear(tmp_path):
    small = digits()[0][:3]
    big = np.kron(digits()[0][3], np.ones((2, 2), np.uint8))  # 16x16
    info, out = ingest(tmp_path, zip_bytes({"a.png": png(small[0]), "b.png": png(small[1]),
                                            "c.png": png(big), "d.png": png(small[2])}))
    assert info.details["image"]["sizes"] == {"8x8": 3, "16x16": 1}
    x, _, _ = load_images(out)
    assert x.shape == (4, 8, 8, 1)
    expected = np.asarray(Image.fromarray(big).resize((8, 8), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(x[2, ..., 0], expected)
    # Serving decodes the same bytes the same way.
    np.testing.assert_array_equal(
        decode_image(png(big), height=8, width=8, channels=1, max_pixels=10_000), x[2])


def test_wide_images_report_width_first_in_sizes(tmp_path):
    info, out = ingest(tmp_path, zip_bytes({"a.png": png(np.zeros((4, 6), np.uint8))}))
    assert info.details["image"]["sizes"] == {"6x4": 1}
    assert load_images(out)[0].shape == (1, 4, 6, 1)


def test_rgb_with_gray_makes_three_channels(tmp_path):
    gray = digits()[0][0]
    rgb = np.stack([gray, 255 - gray, np.full_like(gray, 7)], axis=-1)
    info, out = ingest(tmp_path, zip_bytes({"a.png": png(gray), "b.png": png(rgb)}))
    assert info.details["image"]["channels"] == 3
    assert info.details["image"]["modes"] == {"L": 1, "RGB": 1}
    x, _, _ = load_images(out)
    np.testing.assert_array_equal(x[0], np.repeat(gray[..., None], 3, axis=-1))
    np.testing.assert_array_equal(x[1], rgb)


def test_rgba_is_flattened_onto_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: kept
    rgba[0, 1] = (10, 20, 30, 0)  # transparent: white
    rgba[1] = (200, 0, 0, 255)
    info, out = ingest(tmp_path, zip_bytes({"a.png": png(rgba)}))
    assert info.details["image"]["channels"] == 3 and info.details["image"]["modes"] == {"RGBA": 1}
    x, _, _ = load_images(out)
    assert x[0, 0, 0].tolist() == [10, 20, 30] and x[0, 0, 1].tolist() == [255, 255, 255]
    assert x[0, 1, 0].tolist() == [200, 0, 0]


def test_gray_alpha_palette_and_16_bit_stay_one_channel(tmp_path):
    gray = digits()[0][0]
    la = Image.fromarray(np.stack([gray, np.full_like(gray, 255)], axis=-1), "LA")
    wide = gray.astype(np.uint16) * 257  # 16-bit gray: 0..65535
    info, out = ingest(tmp_path, zip_bytes({
        "a.png": png(la), "b.png": png(Image.fromarray(gray).convert("P")), "c.png": png(wide)}))
    assert info.details["image"]["channels"] == 1
    x, _, _ = load_images(out)
    for row in range(3):
        np.testing.assert_array_equal(x[row, ..., 0], gray)


def test_color_palette_makes_three_channels(tmp_path):
    pal = Image.new("RGB", (4, 4), (255, 0, 0)).convert("P")
    info, out = ingest(tmp_path, zip_bytes({"a.png": png(pal)}))
    assert info.details["image"]["channels"] == 3
    assert load_images(out)[0][0, 0, 0].tolist() == [255, 0, 0]


def test_jpeg_is_decoded(tmp_path):
    rgb = np.dstack([np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))] * 3)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95)
    info, out = ingest(tmp_path, zip_bytes({"a.jpg": buf.getvalue(), "b.jpeg": buf.getvalue()}))
    assert info.n_rows == 2 and info.details["image"]["modes"] == {"RGB": 2}
    x, _, _ = load_images(out)
    assert np.abs(x[0].astype(int) - rgb).max() < 12


def test_zip_is_detected_by_magic_and_needs_derived_dir(tmp_path):
    path = tmp_path / "upload.bin"
    path.write_bytes(flat_digits_zip())
    assert detect_format(path, "upload.bin") == "zip"
    assert detect_format(path, "x.ZIP") == "zip"
    with pytest.raises(ValueError, match="derived_dir"):
        inspect_file(path, "upload.bin")


# ---------------------------------------------------------------------------- refused layouts


def test_mixed_layout_is_refused(tmp_path):
    img = png(digits()[0][0])
    refused(tmp_path, zip_bytes({"a.png": img, "cats/b.png": img}), "invalid", "mixes", "a.png",
            "cats/b.png")


def test_nesting_deeper_than_class_folders_is_refused(tmp_path):
    img = png(digits()[0][0])
    refused(tmp_path, zip_bytes({"x/cats/small/a.png": img, "y/b.png": img}), "invalid",
            "x/cats/small/a.png", "deep")


def test_non_image_members_are_named(tmp_path):
    img = png(digits()[0][0])
    exc = refused(tmp_path, zip_bytes({"a.png": img, "notes.txt": b"hi", "data.csv": b"a\n1\n"}),
                  "invalid", "notes.txt", "data.csv", "PNG and JPEG")
    assert "a.png" not in exc.reason


def test_empty_archive_and_only_junk_are_refused(tmp_path):
    refused(tmp_path, zip_bytes({}), "invalid", "no PNG or JPEG")
    refused(tmp_path, zip_bytes({"README.md": b"x", "__MACOSX/._a.png": b"x"}), "invalid", "no PNG")


def test_not_a_zip_is_refused(tmp_path):
    refused(tmp_path, b"this is not a zip at all", "invalid", "not a valid ZIP")
    refused(tmp_path, flat_digits_zip()[:5000], "invalid", "ZIP")  # truncated: no central directory


# -------------------------------------------------------------------------------- unsafe names


@pytest.mark.parametrize("name", ["../evil.png", "a/../../evil.png", "/etc/x.png",
                                  "C:/x.png", "..\\evil.png"])
def test_escaping_names_are_refused(tmp_path, name):
    img = png(digits()[0][0])
    refused(tmp_path, zip_bytes([("ok.png", img), (name, img)]), "invalid", json.dumps(name)[1:-1])


def test_symlink_member_is_refused(tmp_path):
    img = png(digits()[0][0])
    refused(tmp_path, zip_bytes([("ok.png", img), symlink_member()]), "invalid", "link.png",
            "symbolic link")


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_duplicate_members_are_refused(tmp_path):
    img = png(digits()[0][0])
    refused(tmp_path, zip_bytes([("a.png", img), ("a.png", img)]), "invalid", "a.png", "twice")


# ------------------------------------------------------------------------------------- limits


def test_zip_bomb_is_stopped_by_the_ratio(tmp_path):
    exc = refused(tmp_path, bomb_zip(), "too_large", "bomb.png", "PRETRAINER_MAX_ZIP_RATIO")
    assert "200:1" in exc.reason


def test_total_uncompressed_bytes_are_capped(tmp_path):
    img = png(digits()[0][0])
    limits = ZipLimits(max_uncompressed_bytes=len(img) * 3)
    refused(tmp_path, zip_bytes({f"{i}.png": img for i in range(5)}), "too_large",
            "PRETRAINER_MAX_ZIP_UNCOMPRESSED_BYTES", str(len(img) * 3), limits=limits)


def test_lying_header_sizes_do_not_get_past(tmp_path):
    # The central directory claims 100 bytes for a 5 MB member: zipfile stops at the claimed
    # size, the CRC then fails, and the bytes that did come out were counted.
    info = zipfile.ZipInfo("big.png")
    info.compress_type = zipfile.ZIP_DEFLATED
    data = bytearray(zip_bytes([(info, bytes(5 << 20))]))
    central = data.index(b"PK\x01\x02")
    data[central + 24:central + 28] = struct.pack("<I", 100)
    refused(tmp_path, bytes(data), "invalid", "big.png")


def test_member_count_is_capped(tmp_path):
    img = png(digits()[0][0])
    refused(tmp_path, zip_bytes({f"{i}.png": img for i in range(6)}), "too_large",
            "PRETRAINER_MAX_ZIP_MEMBERS", "5", limits=ZipLimits(max_members=5))
    # Directory entries and junk count too: they are all parsed.
    refused(tmp_path, zip_bytes({"a/": b"", "a/1.png": img, ".DS_Store": b"", "b/2.png": img}),
            "too_large", "PRETRAINER_MAX_ZIP_MEMBERS", limits=ZipLimits(max_members=3))


def test_member_count_is_checked_before_zipfile_parses_the_directory(tmp_path, monkeypatch):
    # The end record says 1 entry; the central directory holds 6. The count comes from the
    # central headers themselves, before zipfile builds a ZipInfo for each.
    from app.data.inspect import archive

    img = png(digits()[0][0])
    data = bytearray(zip_bytes({f"{i}.png": img for i in range(6)}))
    end = data.rindex(b"PK\x05\x06")
    data[end + 8:end + 12] = struct.pack("<HH", 1, 1)

    def parse(*args: object, **kw: object) -> None:
        raise AssertionError("zipfile must not parse an archive over the member limit")

    monkeypatch.setattr(archive.zipfile, "ZipFile", parse)
    refused(tmp_path, bytes(data), "too_large", "PRETRAINER_MAX_ZIP_MEMBERS", limits=ZipLimits(max_members=5))


def test_image_over_the_pixel_limit_is_422(tmp_path):
    refused(tmp_path, zip_bytes({"a.png": png(digits()[0][0])}), "invalid", "a.png", "8x8",
            "PRETRAINER_MAX_IMAGE_PIXELS", limits=ZipLimits(max_image_pixels=50))


def test_pillow_decompression_bomb_is_a_pixel_limit_error(tmp_path):
    refused(tmp_path, zip_bytes({"huge.png": _huge_header_png()}), "invalid", "huge.png",
            "PRETRAINER_MAX_IMAGE_PIXELS")


def _huge_header_png() -> bytes:
    """A 1x1 PNG whose header claims 100000x100000 pixels (CRC fixed up)."""
    import zlib

    data = bytearray(png(np.zeros((1, 1), np.uint8)))
    at = data.index(b"IHDR")
    data[at + 4:at + 12] = struct.pack(">II", 100_000, 100_000)
    data[at + 17:at + 21] = struct.pack(">I", zlib.crc32(bytes(data[at:at + 17])))
    return bytes(data)


# ------------------------------------------------------------------------------ undecodable


def noise_png() -> bytes:
    """A 32x32 PNG of noise: big enough that cutting it truncates the pixel data."""
    return png(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8))


def test_undecodable_images_are_named(tmp_path):
    img = png(digits()[0][0])
    truncated = noise_png()[:600]  # header intact, pixel data cut: fails only when decoded
    exc = refused(tmp_path, zip_bytes({"a.png": img, "broken.png": b"\x89PNG\r\n\x1a\nnope",
                                       "cut.png": truncated, "gif.png": _gif()}),
                  "invalid", "broken.png", "cut.png", "gif.png", "3 image(s)")
    assert '"a.png"' not in exc.reason


def test_many_undecodable_images_are_listed_up_to_ten(tmp_path):
    members = {f"{i:02d}.png": b"junk" for i in range(13)}
    members["ok.png"] = png(digits()[0][0])
    exc = refused(tmp_path, zip_bytes(members), "invalid", "00.png", "09.png", "and 3 more")
    assert "10.png" not in exc.reason


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (2, 2)).save(buf, "GIF")
    return buf.getvalue()


# ------------------------------------------------------------------------------------ serving


def test_decode_image_converts_like_ingest():
    gray = digits()[0][5]
    out = decode_image(png(gray), height=8, width=8, channels=1, max_pixels=64)
    assert out.dtype == np.uint8 and out.shape == (8, 8, 1)
    np.testing.assert_array_equal(out[..., 0], gray)
    rgb = decode_image(png(gray), height=4, width=4, channels=3, max_pixels=64)
    assert rgb.shape == (4, 4, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    color = np.dstack([gray, np.zeros_like(gray), np.zeros_like(gray)])
    as_gray = decode_image(png(color), height=8, width=8, channels=1, max_pixels=64)
    np.testing.assert_array_equal(as_gray[..., 0], np.asarray(Image.fromarray(color).convert("L")))


def test_decode_image_errors():
    with pytest.raises(ImageError, match="not a PNG or JPEG"):
        decode_image(b"garbage", height=8, width=8, channels=1, max_pixels=64)
    with pytest.raises(ImageError, match="PRETRAINER_MAX_IMAGE_PIXELS"):
        decode_image(png(digits()[0][0]), height=8, width=8, channels=1, max_pixels=63)
    with pytest.raises(ImageError, match="cannot be decoded"):
        decode_image(noise_png()[:600], height=8, width=8, channels=1, max_pixels=32 * 32)
    with pytest.raises(ValueError):
        decode_image(png(digits()[0][0]), height=8, width=8, channels=2, max_pixels=64)


def test_decode_b64():
    data = png(digits()[0][0])
    std = base64.b64encode(data).decode()
    assert decode_b64(std) == data
    assert decode_b64(std.rstrip("=")) == data
    assert decode_b64(base64.urlsafe_b64encode(data).decode()) == data
    assert decode_b64("data:image/png;base64," + std) == data
    assert decode_b64("\n".join(std[i:i + 76] for i in range(0, len(std), 76))) == data
    for bad in ("not base64!", "a", "", "é" * 4):
        with pytest.raises(ImageError, match="b64"):
            decode_b64(bad)
    with pytest.raises(ImageError):
        decode_b64(b"bytes")  # type: ignore[arg-type]


def test_ingest_zip_directly_writes_the_three_files(tmp_path):
    path = tmp_path / "d.zip"
    path.write_bytes(class_digits_zip())
    out = tmp_path / "out"
    out.mkdir()
    found = ingest_zip(path, out, ZipLimits())
    assert sorted(p.name for p in out.iterdir()) == ["images.npy", "index.json", "labels.npy"]
    assert found.n_images == 1797 and found.labelled and found.channels == 1
