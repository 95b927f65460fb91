"""Tests for hybrid_search.decode: every image is generated here, in memory or under tmp_path."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hybrid_search.decode import (
    EXTENSIONS,
    SUPPORTED_FORMATS,
    DecodedImage,
    decode_image,
    make_thumbnail,
    read_image_file,
)
from hybrid_search.exceptions import HybridSearchError, ImageDecodeError

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    """Save an image into bytes in the given format."""
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """Build one PNG chunk with its length and CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims width x height 1-bit pixels; its body is a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 6) -> None:
    """Assert two colours differ by at most tolerance per channel."""
    assert len(actual) == len(expected)
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), (
        actual,
        expected,
    )


def reason_of(data: bytes, **kwargs: object) -> str:
    """Decode bytes that must fail and return the error's reason."""
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, **kwargs)
    return info.value.reason


# --- constants -------------------------------------------------------------------------------


def test_supported_formats_and_extensions() -> None:
    assert {"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"} == SUPPORTED_FORMATS
    assert {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"} == (
        EXTENSIONS
    )
    assert all(ext == ext.lower() and ext.startswith(".") for ext in EXTENSIONS)


# --- broken input ----------------------------------------------------------------------------


def test_zero_byte_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError) as info:
        read_image_file(path)
    assert info.value.reason == "empty file (0 bytes)"
    assert str(path) in str(info.value)


def test_text_named_jpg_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>\n")
    with pytest.raises(ImageDecodeError) as info:
        read_image_file(path)
    assert info.value.reason.startswith("not an image: the bytes look like text")
    assert "DOCTYPE" in info.value.reason
    assert info.value.name == str(path)


def test_text_starting_like_a_bmp_is_still_called_text() -> None:
    assert "look like text" in reason_of(b"BMW and Audi are car makers.\n" * 3)


def test_truncated_jpeg_is_refused() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG", quality=90)
    reason = reason_of(data[: len(data) // 2], name="cut.jpg")
    assert reason.startswith("truncated or corrupt JPEG data")


def test_truncated_png_is_refused() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "PNG")
    assert reason_of(data[: len(data) // 2]).startswith("truncated or corrupt PNG data")


def test_png_magic_with_garbage_header_is_a_corrupt_header() -> None:
    reason = reason_of(b"\x89PNG\r\n\x1a\n" + b"\x01\x02\x03\x04" * 20)
    assert reason.startswith("corrupt PNG header")


def test_wrong_magic_bytes_are_unrecognised() -> None:
    reason = reason_of(bytes([0x00, 0x9F, 0x13, 0x37, 0xFE]) * 40)
    assert reason == "not an image: unrecognised data (first bytes 00 9f 13 37 fe 00 9f 13)"


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (
            b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" '
            b'height="10"><rect width="10" height="10" fill="red"/></svg>\n',
            "SVG",
        ),
        (b"\xef\xbb\xbf  <svg viewBox='0 0 1 1'></svg>", "SVG"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 32, "HEIC"),
    ],
)
def test_unsupported_formats_are_named(data: bytes, fmt: str) -> None:
    assert reason_of(data) == f"unsupported format {fmt}"


def test_pdf_and_ico_made_by_pillow_are_unsupported() -> None:
    picture = Image.new("RGB", (32, 32), RED)
    assert reason_of(encode(picture, "PDF")) == "unsupported format PDF"
    assert reason_of(encode(picture, "ICO")) == "unsupported format ICO"


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "photo.jpg"
    with pytest.raises(ImageDecodeError) as info:
        read_image_file(path)
    assert str(path) in str(info.value)
    assert info.value.reason == "file not found"
    assert isinstance(info.value, HybridSearchError)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="is a directory"):
        read_image_file(tmp_path)


# --- size limits -----------------------------------------------------------------------------


def test_decompression_bomb_is_refused_from_the_header_alone() -> None:
    data = png_header_claiming(30_000, 30_000)
    assert len(data) < 200
    started = time.perf_counter()
    reason = reason_of(data, name="bomb.png")
    assert time.perf_counter() - started < 0.5
    assert reason == (
        "image is 30000x30000 = 900000000 pixels, over the limit of 50000000 "
        "(setting max_image_pixels)"
    )


def test_max_pixels_is_inclusive() -> None:
    data = encode(Image.new("RGB", (40, 25), RED), "PNG")
    assert decode_image(data, max_pixels=1000).width == 40
    reason = reason_of(data, max_pixels=999)
    assert "40x25 = 1000 pixels, over the limit of 999" in reason


def test_max_pixels_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        decode_image(b"x", max_pixels=0)


def test_pillows_global_limit_does_not_refuse_what_max_pixels_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With Pillow's limit at 1000 pixels, 1600 pixels would warn (an error under
    # filterwarnings=error) and 10000 would raise DecompressionBombError in Image.open.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for side in (40, 100):
        data = encode(Image.new("RGB", (side, side), BLUE), "PNG")
        decoded = decode_image(data, max_pixels=50_000)
        assert (decoded.width, decoded.height) == (side, side)
        assert decoded.image.getpixel((side - 1, side - 1)) == BLUE
    # The TIFF loader checks Pillow's limit again; the warning band is silenced ...
    assert decode_image(encode(Image.new("RGB", (40, 40), RED), "TIFF")).format == "TIFF"
    # ... and past twice the limit Pillow refuses, which is reported plainly.
    reason = reason_of(encode(Image.new("RGB", (100, 100), RED), "TIFF"))
    assert reason.startswith("image is 100x100 = 10000 pixels, which Pillow refuses")


# --- colour modes ----------------------------------------------------------------------------


def test_cmyk_jpeg_gives_rgb_red() -> None:
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    decoded = decode_image(data)
    assert decoded.format == "JPEG"
    assert decoded.image.mode == "RGB"
    assert_close(decoded.image.getpixel((8, 8)), RED)


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    samples = np.array([[65535, 32768, 0, 257]], dtype=np.uint16)
    source = Image.fromarray(samples)
    assert source.mode == "I;16"
    decoded = decode_image(encode(source, "PNG"))
    assert decoded.format == "PNG"
    assert [decoded.image.getpixel((x, 0)) for x in range(4)] == [
        (255, 255, 255),
        (128, 128, 128),
        (0, 0, 0),
        (1, 1, 1),
    ]


def test_big_endian_sixteen_bit_and_32_bit_tiff() -> None:
    big_endian = Image.new("I;16B", (2, 1))
    big_endian.putpixel((0, 0), 65535)
    big_endian.putpixel((1, 0), 32768)
    rgb = decode_image(encode(big_endian, "TIFF")).image
    assert [rgb.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (128, 128, 128)]

    wide = Image.fromarray(np.array([[-1000, 0, 1000]], dtype=np.int32))
    assert wide.mode == "I"
    rgb = decode_image(encode(wide, "TIFF")).image
    assert [rgb.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_float_tiff_in_unit_range() -> None:
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert floats.mode == "F"
    rgb = decode_image(encode(floats, "TIFF")).image
    assert [rgb.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), WHITE]


def test_transparent_rgba_becomes_white() -> None:
    rgba = Image.new("RGBA", (4, 2), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (255, 0, 0, 255))
    rgba.putpixel((2, 0), (255, 0, 0, 128))
    image = decode_image(encode(rgba, "PNG")).image
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == WHITE
    assert image.getpixel((1, 0)) == RED
    assert_close(image.getpixel((2, 0)), (255, 127, 127), tolerance=2)


def test_grey_with_alpha_becomes_white() -> None:
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (0, 255))
    image = decode_image(encode(la, "PNG")).image
    assert [image.getpixel((x, 0)) for x in range(2)] == [WHITE, (0, 0, 0)]


def test_palette_with_transparency() -> None:
    palette = Image.new("P", (4, 1), 0)
    palette.putpalette([0, 0, 0, 0, 0, 255])
    palette.putpixel((2, 0), 1)
    palette.putpixel((3, 0), 1)
    image = decode_image(encode(palette, "PNG", transparency=0)).image
    assert [image.getpixel((x, 0)) for x in range(4)] == [WHITE, WHITE, BLUE, BLUE]


def test_palette_without_transparency_and_one_bit() -> None:
    palette = Image.new("P", (2, 1), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30])
    assert decode_image(encode(palette, "PNG")).image.getpixel((0, 0)) == (10, 200, 30)
    bilevel = Image.new("1", (3, 3), 1)
    bilevel.putpixel((0, 0), 0)
    image = decode_image(encode(bilevel, "PNG")).image
    assert image.getpixel((0, 0)) == (0, 0, 0)
    assert image.getpixel((2, 2)) == WHITE


def test_grey_png_with_transparent_key() -> None:
    grey = Image.new("L", (2, 1), 0)
    grey.putpixel((1, 0), 90)
    image = decode_image(encode(grey, "PNG", transparency=0)).image
    assert [image.getpixel((x, 0)) for x in range(2)] == [WHITE, (90, 90, 90)]


# --- formats ---------------------------------------------------------------------------------


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (8, 6), colour) for colour in (RED, BLUE, (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    decoded = decode_image(data)
    assert decoded.format == "GIF"
    assert (decoded.width, decoded.height) == (8, 6)
    assert decoded.image.getpixel((4, 3)) == RED


def test_gif_transparency_becomes_white() -> None:
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.putpixel((1, 0), 1)
    image = decode_image(encode(palette, "GIF", transparency=0)).image
    assert [image.getpixel((x, 0)) for x in range(2)] == [WHITE, RED]


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("WEBP", {"lossless": True}),
        ("BMP", {}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("PNG", {}),
    ],
)
def test_round_trip(fmt: str, params: dict[str, object]) -> None:
    source = Image.new("RGB", (30, 20), (10, 200, 30))
    source.paste(BLUE, (0, 0, 10, 10))
    decoded = decode_image(encode(source, fmt, **params))
    assert isinstance(decoded, DecodedImage)
    assert decoded.format == fmt
    assert (decoded.width, decoded.height) == (30, 20)
    assert decoded.image.size == (30, 20)
    assert decoded.image.getpixel((5, 5)) == BLUE
    assert decoded.image.getpixel((25, 15)) == (10, 200, 30)


def test_multi_picture_jpeg_counts_as_jpeg() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, BLUE)]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    with Image.open(io.BytesIO(data)) as check:
        assert check.format == "MPO"
    decoded = decode_image(data)
    assert decoded.format == "JPEG"
    assert_close(decoded.image.getpixel((8, 8)), RED)


def test_content_decides_the_format_not_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(encode(Image.new("RGB", (3, 3), RED), "PNG"))
    data, decoded = read_image_file(path)
    assert data == path.read_bytes()
    assert decoded.format == "PNG"
    assert decoded.image.getpixel((1, 1)) == RED


# --- orientation and detachment --------------------------------------------------------------


def test_exif_orientation_six_turns_the_picture() -> None:
    source = Image.new("RGB", (40, 20), BLUE)
    source.paste(RED, (0, 0, 10, 10))  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    decoded = decode_image(encode(source, "PNG", exif=exif))
    assert (decoded.width, decoded.height) == (20, 40)
    assert decoded.image.size == (20, 40)
    assert decoded.image.getpixel((15, 5)) == RED  # now top-right
    assert decoded.image.getpixel((5, 5)) == BLUE


def test_exif_orientation_in_jpeg() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.new("RGB", (64, 32), RED), "JPEG", exif=exif)
    decoded = decode_image(data)
    assert (decoded.width, decoded.height) == (32, 64)


def test_result_is_loaded_and_detached() -> None:
    buffer = bytearray(encode(Image.new("RGB", (5, 5), RED), "GIF"))
    decoded = decode_image(bytes(buffer))
    buffer[:] = b"\x00" * len(buffer)
    assert type(decoded.image) is Image.Image
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((2, 2)) == RED


# --- thumbnails ------------------------------------------------------------------------------


def test_make_thumbnail_keeps_aspect_ratio() -> None:
    source = Image.new("RGB", (400, 200), RED)
    thumb = make_thumbnail(source, 100)
    assert thumb.size == (100, 50)
    assert thumb.mode == "RGB"
    assert thumb.getpixel((50, 25)) == RED
    assert source.size == (400, 200)
    assert make_thumbnail(Image.new("RGB", (30, 90)), 60).size == (20, 60)


def test_make_thumbnail_never_enlarges_and_flattens_alpha() -> None:
    small = Image.new("RGBA", (10, 5), (0, 0, 0, 0))
    thumb = make_thumbnail(small, 100)
    assert thumb.size == (10, 5)
    assert thumb.mode == "RGB"
    assert thumb.getpixel((0, 0)) == WHITE
    assert thumb is not small


def test_make_thumbnail_rejects_nonpositive_size() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        make_thumbnail(Image.new("RGB", (4, 4)), 0)


# --- robustness ------------------------------------------------------------------------------


def _samples() -> list[bytes]:
    """One small valid file of each supported format, to mutate."""
    picture = Image.new("RGB", (12, 9), (10, 200, 30))
    return [
        encode(picture, "JPEG"),
        encode(picture, "PNG"),
        encode(picture.convert("P"), "GIF"),
        encode(picture, "WEBP"),
        encode(picture, "BMP"),
        encode(picture, "TIFF"),
    ]


SAMPLES = _samples()


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A valid image with some bytes overwritten and maybe cut short."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.one_of(st.binary(min_size=1, max_size=300), mutated_images()))
def test_anything_either_decodes_to_rgb_or_raises_image_decode_error(data: bytes) -> None:
    try:
        decoded = decode_image(data, max_pixels=1_000_000)
    except ImageDecodeError as exc:
        assert exc.reason
        return
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (decoded.width, decoded.height)
    assert decoded.format in SUPPORTED_FORMATS
