"""Images in: checked with Pillow on the way in, normalized, and kept per user.

Every image, from the chat's message box or the API, is hostile input until this module
has read it.  What it checks, in this order, before a pixel is decoded:

- bytes: at most MAX_IMAGE_BYTES (a body is capped earlier; this is the image's own cap);
- format, from the content (never the file name): PNG, JPEG, WebP or GIF only;
- frames: one.  Animated GIF/WebP/APNG are refused rather than read as their first
  frame: a model told nothing about the other frames would answer about a picture the
  user did not mean (they can send the frame they want as a PNG);
- size, from the header: each side at most MAX_SIDE, width x height at most MAX_PIXELS
  (so a decompression bomb -- a small file declaring 100,000 x 100,000 pixels -- is
  refused before Pillow allocates anything), and an aspect ratio within MAX_ASPECT
  (a 1 x 100,000 strip becomes an absurd number of patches in a vision encoder).

Then it decodes (a truncated or corrupt file is refused here; at most DECODES_AT_ONCE
at a time), turns the picture upright (EXIF orientation), converts it to plain RGB (CMYK,
palette, greyscale and 16-bit images are converted, transparency is laid over white) and
scales it down to KEPT_SIDE on its longest side.  The stored copy is a fresh PNG
of those pixels alone, so EXIF (camera, time, GPS location), XMP, ICC and text chunks are
all gone from it.

An image's id is the SHA-256 of its normalized pixels (mode, size, bytes): the same
picture pasted twice, or sent once as JPEG and once as PNG of the same pixels, is one
stored file, and the engine's prefix cache keys image tokens by this id
(webui/generation/vision.py), so a follow-up turn about the same image reuses its KV.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from webui.errors import AppError
from webui.storage import atomic_write_bytes

MAX_IMAGE_BYTES = 20 << 20
MAX_SIDE = 8192
MAX_PIXELS = 32_000_000
# Longest side over shortest: a tall phone screenshot is ~1:2.2, a wide panorama ~1:8.
MAX_ASPECT = 20.0
# The longest side kept: a bigger picture is scaled down (its aspect kept) once read.  No
# vision processor here reads more (LLaVA 336, SmolVLM 1456, Gemma 3 896, Pixtral 1024),
# and it bounds what each image holds in memory (12 MB of RGB) and costs the model thread.
KEPT_SIDE = 2048
# Images decoded at once, across all requests: a 32-megapixel decode takes ~100 MB for a
# moment, and the API's thread pool would otherwise run dozens side by side.
DECODES_AT_ONCE = 4
_decoding = threading.BoundedSemaphore(DECODES_AT_ONCE)
FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
# Images one message (or one API request) may carry.
MAX_IMAGES_PER_MESSAGE = 8
# What one user's stored images may take together.
STORE_QUOTA_BYTES = 2 << 30
SUFFIX = ".png"
_ID = re.compile(r"[0-9a-f]{32}")


class ImageRefused(AppError, ValueError):
    """An image that is not read: the message says why and what is allowed."""

    code = "invalid_image"


class ImageStoreFull(ImageRefused):
    status, code = 507, "image_store_full"


@dataclass(frozen=True, eq=False)
class ImageInput:
    """A checked, normalized image: RGB pixels and the id naming their content."""

    id: str
    image: object = field(repr=False)  # a PIL.Image.Image in mode RGB

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def is_image_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def _pil():
    from PIL import Image, ImageFile

    # A truncated file is an error, never a half-grey picture.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    return Image


def check_image(data: bytes, param: str | None = None) -> ImageInput:
    """Read `data` as an image under every limit above; ImageRefused (naming `param`)
    when it is not one we read."""
    if not isinstance(data, (bytes, bytearray)):
        raise ImageRefused("an image must be sent as bytes", param=param)
    if not data:
        raise ImageRefused("the image is empty", param=param)
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageRefused(f"an image may be at most {MAX_IMAGE_BYTES >> 20} MB; this one is "
                           f"{len(data) / 2**20:.1f} MB", param=param, code="image_too_large")
    Image = _pil()
    from PIL import ImageOps, UnidentifiedImageError

    allowed = ", ".join(f.replace("WEBP", "WebP") for f in FORMATS)
    with warnings.catch_warnings():
        # Pillow's own bomb check warns (and raises past 2x its limit); ours comes first.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            picture = Image.open(io.BytesIO(bytes(data)), formats=FORMATS)
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRefused(f"not an image in an allowed format ({allowed})", param=param,
                               code="image_format") from None
        except Exception as exc:  # noqa: BLE001 - a hostile header can raise anything in a plugin
            raise ImageRefused(f"the image cannot be read ({exc.__class__.__name__})", param=param,
                               code="image_corrupt") from None
        with picture:
            width, height = picture.size
            if width < 1 or height < 1:
                raise ImageRefused("the image has no pixels", param=param, code="image_corrupt")
            if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
                raise ImageRefused(
                    f"the image is {width} x {height} pixels; at most {MAX_SIDE} on a side and "
                    f"{MAX_PIXELS / 1e6:.0f} megapixels are read", param=param, code="image_too_large")
            if max(width, height) / min(width, height) > MAX_ASPECT:
                raise ImageRefused(
                    f"the image is {width} x {height} pixels: sides further apart than 1:{MAX_ASPECT:.0f} "
                    "are not read", param=param, code="image_aspect")
            if getattr(picture, "is_animated", False) or getattr(picture, "n_frames", 1) > 1:
                raise ImageRefused("animated images are not read; send the frame you mean as a PNG or JPEG",
                                   param=param, code="image_animated")
            try:
                with _decoding:
                    picture.load()
                    upright = ImageOps.exif_transpose(picture)
                    rgb = kept_size(to_rgb(upright))
            except ImageRefused as exc:
                exc.blame(param) if param else None
                raise
            except Exception as exc:  # noqa: BLE001 - truncated data, a bad chunk, a codec error
                raise ImageRefused(f"the image is truncated or corrupt ({exc.__class__.__name__})", param=param,
                                   code="image_corrupt") from None
    return ImageInput(pixel_id(rgb), rgb)


def to_rgb(picture):
    """Plain 8-bit RGB: transparency over white, every other mode converted."""
    Image = _pil()
    if picture.mode == "RGB":
        return picture.copy() if picture.info else picture
    if picture.mode == "P":
        picture = picture.convert("RGBA" if "transparency" in picture.info else "RGB")
    if picture.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits (convert("L") would clip at 255).
        picture = picture.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if picture.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = picture.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    rgb = picture.convert("RGB")
    if rgb.mode != "RGB":
        raise ImageRefused(f"images in mode {picture.mode} are not read", code="image_format")
    return rgb


def kept_size(rgb):
    """`rgb`, scaled down so that its longest side is at most KEPT_SIDE."""
    width, height = rgb.size
    if max(width, height) <= KEPT_SIDE:
        return rgb
    scale = KEPT_SIDE / max(width, height)
    Image = _pil()
    return rgb.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.LANCZOS)


def pixel_id(rgb) -> str:
    digest = hashlib.sha256(f"{rgb.mode}:{rgb.size[0]}x{rgb.size[1]}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()[:32]


def png_bytes(rgb) -> bytes:
    """The stored form: a PNG of the pixels and nothing else (no EXIF, ICC or text)."""
    out = io.BytesIO()
    rgb.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


# -- data: URLs and base64 ------------------------------------------------------------------
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,",
                       re.IGNORECASE)
# base64 of MAX_IMAGE_BYTES, plus room for line breaks and padding.
MAX_ENCODED_CHARS = MAX_IMAGE_BYTES * 4 // 3 + 4096


def decode_base64(text: object, param: str | None = None) -> bytes:
    if not isinstance(text, str):
        raise ImageRefused("an image must be a base64 string", param=param)
    if len(text) > MAX_ENCODED_CHARS:
        raise ImageRefused(f"an image may be at most {MAX_IMAGE_BYTES >> 20} MB", param=param,
                           code="image_too_large")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ImageRefused("the image is not valid base64", param=param) from None


def decode_data_url(url: str, param: str | None = None) -> bytes:
    """The bytes of a `data:image/...;base64,...` URL."""
    match = _DATA_URL.match(url[:512])
    if match is None or not match.group("b64"):
        raise ImageRefused("an image URL must be a base64 data: URL (data:image/png;base64,...)", param=param)
    kind = (match.group("type") or "").lower()
    if kind and not kind.startswith("image/"):
        raise ImageRefused(f"a data: URL of type {kind} is not an image", param=param, code="image_format")
    return decode_base64(url[match.end():], param)


# -- per-user storage ----------------------------------------------------------------------
class ImageStore:
    """One user's images, in `folder` (next to their chats), named by content id.

    Writes are atomic (webui/storage.py) and idempotent: an image already stored is not
    written again.  An id from a request becomes a path only if it is a 32-hex-digit id,
    so no name can leave the folder.
    """

    def __init__(self, folder: Path, quota: int = STORE_QUOTA_BYTES):
        self.folder = folder
        self.quota = quota
        self._lock = threading.Lock()

    def put(self, data: bytes, param: str | None = None) -> ImageInput:
        """Check and store an image; its ImageInput (id and pixels)."""
        image = check_image(data, param)
        self.save(image)
        return image

    def save(self, image: ImageInput) -> None:
        path = self.folder / f"{image.id}{SUFFIX}"
        if path.is_file():
            return
        encoded = png_bytes(image.image)
        with self._lock:
            if self.used() + len(encoded) > self.quota:
                raise ImageStoreFull(f"your stored images take their whole quota ({self.quota >> 20} MB); "
                                     "delete chats with images you no longer need")
            atomic_write_bytes(path, encoded)

    def used(self) -> int:
        if not self.folder.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.folder.glob(f"*{SUFFIX}") if p.is_file())

    def has(self, image_id: object) -> bool:
        return is_image_id(image_id) and (self.folder / f"{image_id}{SUFFIX}").is_file()

    def path(self, image_id: object) -> Path:
        if not self.has(image_id):
            raise ImageRefused("unknown image", param="images", code="image_not_found", status=404)
        return self.folder / f"{image_id}{SUFFIX}"

    def load(self, image_id: object) -> ImageInput:
        """A stored image, read back through the same checks (a file changed on disk is
        refused like any other input)."""
        image = check_image(self.path(image_id).read_bytes(), "images")
        return ImageInput(str(image_id), image.image)
