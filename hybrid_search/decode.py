"""Turn the bytes of a photo into a fully loaded, upright RGB picture, or say plainly why not.

Every failure is an ``ImageDecodeError`` whose reason is written for people: "empty file
(0 bytes)", "not an image: the bytes look like text", "truncated or corrupt JPEG data",
"image is 20000x20000 = 400000000 pixels, over the limit of 50000000 (setting
max_image_pixels)", "unsupported format SVG". Pillow's own exceptions and warnings never
escape from here.

How decoding goes:

1. The header is parsed with the plugins of ``SUPPORTED_FORMATS`` only, taken straight from
   Pillow's registry (``Image.OPEN``). Going around ``Image.open`` skips Pillow's open-time
   decompression-bomb check, which reads the global ``Image.MAX_IMAGE_PIXELS``; our own limit,
   ``max_pixels``, is checked against the header's size instead, before a single pixel is
   decoded. Nothing global is changed, so concurrent calls with different limits do not
   interfere, and a ``max_pixels`` above Pillow's default still works.
2. ``load()`` runs inside ``warnings.catch_warnings()``, so a ``DecompressionBombWarning``
   (or any other Pillow warning) from the TIFF and GIF loaders is silenced;
   ``DecompressionBombError``, which those loaders raise past twice Pillow's limit, is
   reported as an ``ImageDecodeError``. Truncated data is an error:
   ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone.
3. EXIF orientation is applied, and every colour mode is turned into RGB: alpha is laid
   over white, 16-bit and 32-bit samples are scaled rather than clipped, CMYK (including
   Adobe's inverted CMYK JPEGs, which Pillow undoes itself) goes through Pillow's conversion.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Importing a plugin registers its opener in Image.OPEN, which _open_header reads.
from PIL import (
    BmpImagePlugin,  # noqa: F401
    GifImagePlugin,  # noqa: F401
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,  # noqa: F401
    MpoImagePlugin,  # noqa: F401
    PngImagePlugin,  # noqa: F401
    TiffImagePlugin,  # noqa: F401
    WebPImagePlugin,  # noqa: F401
)

from hybrid_search.exceptions import ImageDecodeError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "EXTENSIONS",
    "SUPPORTED_FORMATS",
    "DecodedImage",
    "decode_image",
    "make_thumbnail",
    "read_image_file",
]

DEFAULT_MAX_PIXELS = 50_000_000

SUPPORTED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"})
EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
)

# The order the header is tried in: the most common first. MPO comes through the JPEG opener.
_OPEN_ORDER: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
_FORMAT_ALIASES: dict[str, str] = {"MPO": "JPEG"}
_WHITE = (255, 255, 255)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_TEXT_CONTROL_BYTES_ALLOWED = frozenset(b"\t\n\r\f\v\x1b")


@dataclass(frozen=True)
class DecodedImage:
    """A decoded picture: RGB, upright, fully loaded, with its format and size."""

    image: Image.Image
    format: str
    width: int
    height: int


def decode_image(
    data: bytes, *, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """Decode image bytes into an upright RGB picture, or raise ImageDecodeError saying why."""
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, not {max_pixels}")
    if not data:
        raise ImageDecodeError(name, "empty file (0 bytes)")
    data = bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fmt, opened, header_failure = _open_header(data, name)
        if opened is None:
            raise ImageDecodeError(name, _diagnose(data, header_failure))
        try:
            return _decode_opened(opened, fmt, name, max_pixels)
        finally:
            opened.close()


def read_image_file(
    path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[bytes, DecodedImage]:
    """Read a file and decode it; a missing or unreadable file is an ImageDecodeError too."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ImageDecodeError(str(path), "file not found") from exc
    except IsADirectoryError as exc:
        raise ImageDecodeError(str(path), "is a directory, not a file") from exc
    except PermissionError as exc:
        raise ImageDecodeError(str(path), "permission denied") from exc
    except OSError as exc:
        raise ImageDecodeError(str(path), f"cannot read the file ({exc.strerror or exc})") from exc
    return data, decode_image(data, name=str(path), max_pixels=max_pixels)


def make_thumbnail(image: Image.Image, size: int) -> Image.Image:
    """Return an RGB copy whose longer side is at most size pixels, aspect ratio kept."""
    if size < 1:
        raise ValueError(f"thumbnail size must be at least 1, not {size}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        thumb = _to_rgb(image)
        thumb.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return thumb


def _open_header(data: bytes, name: str) -> tuple[str, ImageFile.ImageFile | None, str | None]:
    """Parse the header with the first supported plugin whose magic bytes match; read no pixels."""
    prefix = data[:16]
    failure: str | None = None
    for fmt in _OPEN_ORDER:
        entry = Image.OPEN.get(fmt)
        if entry is None:
            continue
        factory, accept = entry
        try:
            verdict = accept(prefix) if accept is not None else True
        except Exception:
            continue
        if not verdict or isinstance(verdict, str):
            continue
        try:
            return fmt, factory(io.BytesIO(data), ""), None
        except Image.DecompressionBombError as exc:
            # WebP's opener runs Pillow's bomb check itself, before we can see the size.
            raise ImageDecodeError(
                name, f"image is over Pillow's own decompression-bomb limit ({exc})"
            ) from exc
        except Exception as exc:
            failure = failure or f"corrupt {fmt} header ({_describe(exc)})"
    return "", None, failure


def _decode_opened(
    opened: ImageFile.ImageFile, fmt: str, name: str, max_pixels: int
) -> DecodedImage:
    """Check the size, load the pixels, orient them and convert them to RGB."""
    fmt = _FORMAT_ALIASES.get(fmt, fmt)
    _check_size(name, opened.size, max_pixels)
    width, height = opened.size
    try:
        opened.load()
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(
            name,
            f"image is {width}x{height} = {width * height} pixels, which Pillow refuses as a "
            f"possible decompression bomb ({exc})",
        ) from exc
    except Exception as exc:
        raise ImageDecodeError(name, f"truncated or corrupt {fmt} data ({_describe(exc)})") from exc
    # A GIF frame may reach past the logical screen, and Pillow then grows the canvas.
    _check_size(name, opened.size, max_pixels)
    upright = _upright(opened)
    try:
        rgb = _to_rgb(upright)
    except Exception as exc:
        raise ImageDecodeError(
            name, f"cannot convert colour mode {upright.mode} to RGB ({_describe(exc)})"
        ) from exc
    return DecodedImage(image=rgb, format=fmt, width=rgb.width, height=rgb.height)


def _check_size(name: str, size: tuple[int, int], max_pixels: int) -> None:
    """Refuse an image with no pixels or with more pixels than max_pixels."""
    width, height = size
    if width < 1 or height < 1:
        raise ImageDecodeError(name, f"image has no pixels ({width}x{height})")
    pixels = width * height
    if pixels > max_pixels:
        raise ImageDecodeError(
            name,
            f"image is {width}x{height} = {pixels} pixels, over the limit of {max_pixels} "
            "(setting max_image_pixels)",
        )


def _upright(image: Image.Image) -> Image.Image:
    """Return a copy turned as its EXIF orientation says; unreadable EXIF leaves it as it is."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        return image.copy()


def _to_rgb(image: Image.Image) -> Image.Image:
    """Return a new RGB image: alpha laid over white, high bit depths scaled to 8 bits."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return Image.fromarray(_gray_to_uint8(image)).convert("RGB")
    if mode == "La":
        image = image.convert("LA")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        flattened = Image.new("RGB", rgba.size, _WHITE)
        flattened.paste(rgba, (0, 0), rgba)
        return flattened
    return image.convert("RGB")


def _gray_to_uint8(image: Image.Image) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float grey image to 8 bits without clipping."""
    mode = image.mode
    if mode == "F":
        return _float_to_uint8(np.asarray(image, dtype=np.float32))
    samples = np.asarray(image if mode == "I" else image.convert("I"), dtype=np.int32)
    low, high = int(samples.min()), int(samples.max())
    if mode in _SIXTEEN_BIT_MODES or (low >= 0 and high <= 65535):
        # 0..65535 onto 0..255 with rounding: 65535 // 257 == 255 exactly.
        return ((samples.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return _stretch(samples.astype(np.float32), float(low), float(high))


def _float_to_uint8(samples: np.ndarray) -> np.ndarray:
    """Map float samples to 8 bits: 0..1 and 0..255 taken as they are, anything else stretched."""
    finite = np.isfinite(samples)
    if not finite.any():
        return np.zeros(samples.shape, dtype=np.uint8)
    low, high = float(samples[finite].min()), float(samples[finite].max())
    samples = np.where(np.isposinf(samples), high, samples)
    samples = np.where(np.isfinite(samples), samples, low).astype(np.float32)
    if low >= 0.0 and high <= 1.0:
        return np.rint(samples * 255.0).astype(np.uint8)
    if low >= 0.0 and high <= 255.0:
        return np.rint(samples).astype(np.uint8)
    return _stretch(samples, low, high)


def _stretch(samples: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map low..high linearly onto 0..255."""
    if high <= low:
        return np.zeros(samples.shape, dtype=np.uint8)
    scaled = (samples - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def _diagnose(data: bytes, header_failure: str | None) -> str:
    """Say in plain words what bytes that no supported plugin could open are."""
    sniffed = _sniff_unsupported(data)
    if sniffed is not None:
        return f"unsupported format {sniffed}"
    if _looks_like_text(data):
        start = data[:40].decode("utf-8", errors="replace").strip()
        return f"not an image: the bytes look like text (starting {start!r})"
    if header_failure is not None:
        return header_failure
    identified = _identify_with_pillow(data)
    if identified is not None:
        return f"unsupported format {identified}"
    return f"not an image: unrecognised data (first bytes {data[:8].hex(' ')})"


def _sniff_unsupported(data: bytes) -> str | None:
    """Name common formats that Pillow cannot read at all (SVG, PDF, HEIC, AVIF, JPEG XL)."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<") and b"<svg" in head:
        return "SVG"
    if data.startswith(b"%PDF-"):
        return "PDF"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return "HEIC"
    if data.startswith(b"\xff\x0a") or data.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "JPEG XL"
    return None


def _looks_like_text(data: bytes) -> bool:
    """Tell whether the first few KiB read as UTF-8 text with hardly any control bytes."""
    head = data[:4096]
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Only a character cut in half by the end of the sample is forgiven.
        cut_short = len(data) > len(head) and exc.reason == "unexpected end of data"
        if not cut_short:
            return False
    control = sum(1 for byte in head if byte < 32 and byte not in _TEXT_CONTROL_BYTES_ALLOWED)
    return control * 100 <= len(head)


def _identify_with_pillow(data: bytes) -> str | None:
    """Name the format of bytes that another Pillow plugin recognises by its magic bytes."""
    Image.init()
    # Plugins without a magic-bytes check (TGA and a few more) would claim almost anything.
    candidates = [
        fmt
        for fmt, (_, accept) in Image.OPEN.items()
        if accept is not None and fmt not in _OPEN_ORDER
    ]
    try:
        with Image.open(io.BytesIO(data), formats=candidates) as other:
            return other.format
    except Exception:
        return None


def _describe(exc: BaseException) -> str:
    """Render an exception from Pillow as a short phrase."""
    text = str(exc).strip()
    return text or type(exc).__name__
