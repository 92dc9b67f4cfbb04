"""Images in (webui/images.py): hostile files get clear errors, good ones come out as
plain RGB with nothing but pixels in the stored copy."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from webui.images import (
    MAX_IMAGE_BYTES,
    ImageRefused,
    ImageStore,
    ImageStoreFull,
    check_image,
    decode_base64,
    decode_data_url,
    is_image_id,
)


def encode(image, fmt="PNG", **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def refused(data, code=None, words=()):
    with pytest.raises(ImageRefused) as caught:
        check_image(data, "messages[0].content[1]")
    assert caught.value.param == "messages[0].content[1]"
    assert caught.value.status == 400
    if code:
        assert caught.value.code == code
    for word in words:
        assert word in str(caught.value)
    return caught.value


def test_a_plain_png_is_read_as_rgb_with_a_content_id():
    image = Image.new("RGB", (40, 30), (10, 200, 30))
    got = check_image(encode(image))
    assert got.image.mode == "RGB" and got.size == (40, 30)
    assert is_image_id(got.id)
    # The id names the pixels, not the encoding: the same picture as a lossless WebP is one image.
    assert check_image(encode(image, "WEBP", lossless=True)).id == got.id
    assert check_image(encode(Image.new("RGB", (40, 30), (10, 200, 31)))).id != got.id


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_allowed_formats(fmt):
    image = Image.new("RGB", (16, 16), (250, 0, 0))
    assert check_image(encode(image, fmt)).size == (16, 16)


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "ICO", "PPM"])
def test_other_formats_are_refused_whatever_the_name(fmt):
    # A BMP called photo.png is still a BMP: the content decides, never the name.
    refused(encode(Image.new("RGB", (16, 16)), fmt), "image_format", ["PNG", "JPEG", "WebP", "GIF"])


def test_text_and_empty_and_svg_are_refused():
    refused(b"hello, I am not an image", "image_format")
    refused(b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>", "image_format")
    refused(b"", None, ["empty"])


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb:
    its data would inflate to gigabytes; here it is not even all there)."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(
        b"IEND", b"")


def test_decompression_bombs_are_refused_from_the_header():
    error = refused(png_declaring(100_000, 100_000), None)
    assert error.code in ("image_too_large", "image_format")
    refused(png_declaring(8000, 8000), "image_too_large", ["8000 x 8000"])


def test_a_real_bomb_file_is_refused_before_decoding():
    # 6000 x 6000 of one colour compresses to a few kB and would decode to 108 MB.
    data = encode(Image.new("RGB", (6000, 6000)), optimize=True)
    assert len(data) < 200_000
    refused(data, "image_too_large", ["megapixels"])


def test_absurd_aspect_ratios_are_refused():
    refused(encode(Image.new("RGB", (1, 8000))), "image_aspect", ["1 x 8000"])
    refused(png_declaring(1, 100_000), None)
    assert check_image(encode(Image.new("RGB", (100, 1000)))).size == (100, 1000)


def test_animated_images_are_refused():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    refused(gif, "image_animated", ["animated"])
    webp = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)
    refused(webp, "image_animated")
    apng = encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)
    refused(apng, "image_animated")


def test_truncated_and_corrupt_files_are_refused():
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"))
    refused(data[: len(data) // 2], "image_corrupt", ["truncated"])
    jpeg = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    refused(jpeg[: len(jpeg) // 2], "image_corrupt")
    broken = bytearray(data)
    broken[60:80] = b"\xff" * 20  # inside the compressed data
    refused(bytes(broken), "image_corrupt")


def test_too_many_bytes_are_refused_before_reading():
    refused(b"\x89PNG" + b"\x00" * (MAX_IMAGE_BYTES + 1), "image_too_large", ["MB"])


def test_cmyk_palette_alpha_and_16_bit_become_rgb():
    cmyk = check_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=100))
    assert cmyk.image.mode == "RGB"
    r, g, b = cmyk.image.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60  # cyan 0, magenta and yellow full: red
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert check_image(encode(clear)).image.getpixel((0, 0)) == (255, 255, 255)  # over white, not black
    palette = Image.new("P", (8, 8), 3)
    palette.putpalette([0, 0, 0, 10, 10, 10, 20, 20, 20, 200, 100, 50] + [0] * 756)
    assert check_image(encode(palette)).image.getpixel((1, 1)) == (200, 100, 50)
    grey16 = Image.new("I;16", (8, 8), 65535)
    assert check_image(encode(grey16)).image.getpixel((0, 0)) == (255, 255, 255)
    assert check_image(encode(Image.new("LA", (8, 8), (100, 255)))).image.getpixel((0, 0)) == (100, 100, 100)


def jpeg_with_gps(orientation: int = 1) -> bytes:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red on the left
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0112] = orientation
    gps = {1: "N", 2: (51.0, 30.0, 12.0), 3: "W", 4: (0.0, 7.0, 39.0)}
    exif[0x8825] = gps
    return encode(image, "JPEG", exif=exif.tobytes(), quality=95)


def test_exif_and_location_are_gone_from_the_stored_copy(tmp_path):
    data = jpeg_with_gps()
    assert b"PhoneMaker" in data and Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)
    store = ImageStore(tmp_path / "images")
    image = store.put(data, "image")
    stored = store.path(image.id).read_bytes()
    assert b"PhoneMaker" not in stored and b"Exif" not in stored
    reread = Image.open(io.BytesIO(stored))
    assert reread.format == "PNG" and not reread.getexif() and "exif" not in reread.info
    assert not {"icc_profile", "XML:com.adobe.xmp"} & set(reread.info)
    assert store.load(image.id).id == image.id


def test_exif_orientation_is_applied_before_it_is_dropped():
    upright = check_image(jpeg_with_gps(orientation=6))  # "rotate 90 clockwise to view"
    assert upright.size == (20, 40)
    r, g, b = upright.image.getpixel((10, 2))  # the red left side is now on top
    assert r > 200 and b < 60


def test_store_is_content_addressed_and_refuses_odd_ids(tmp_path):
    store = ImageStore(tmp_path / "images")
    one = store.put(encode(Image.new("RGB", (8, 8), (1, 2, 3))))
    again = store.put(encode(Image.new("RGB", (8, 8), (1, 2, 3)), "WEBP", lossless=True))
    assert one.id == again.id and len(list((tmp_path / "images").iterdir())) == 1
    for bad in ("../../etc/passwd", one.id + ".png", one.id.upper(), "", None, 5, "a" * 32):
        assert not store.has(bad)
        with pytest.raises(ImageRefused):
            store.path(bad)


def test_store_quota(tmp_path):
    store = ImageStore(tmp_path / "images", quota=2000)
    store.put(encode(Image.effect_noise((24, 24), 80).convert("RGB")))
    with pytest.raises(ImageStoreFull) as caught:
        store.put(encode(Image.effect_noise((32, 32), 90).convert("RGB")))
    assert caught.value.status == 507


def test_data_urls_and_base64():
    data = encode(Image.new("RGB", (4, 4)))
    import base64

    text = base64.b64encode(data).decode()
    assert decode_data_url(f"data:image/png;base64,{text}") == data
    assert decode_base64(text[:40] + "\n" + text[40:]) == data
    for bad in ("http://example.com/x.png", "data:text/html;base64,PGI+", "data:image/png,rawdata",
                "data:image/png;base64,!!!notbase64"):
        with pytest.raises(ImageRefused) as caught:
            decode_data_url(bad, "messages[0].content[0].image_url.url")
        assert caught.value.param == "messages[0].content[0].image_url.url"
    with pytest.raises(ImageRefused):
        decode_base64(["not", "a", "string"], "images[0]")
    with pytest.raises(ImageRefused) as caught:
        decode_base64("A" * (MAX_IMAGE_BYTES * 2), "images[0]")
    assert caught.value.code == "image_too_large"


def test_big_pictures_are_kept_at_most_2048_on_a_side(tmp_path):
    from webui.images import KEPT_SIDE

    big = check_image(encode(Image.effect_noise((4000, 3000), 40).convert("RGB"), "JPEG"))
    assert big.size == (KEPT_SIDE, 1536)
    store = ImageStore(tmp_path / "images")
    store.save(big)
    assert Image.open(store.path(big.id)).size == (KEPT_SIDE, 1536)
    assert check_image(encode(Image.new("RGB", (2048, 200)))).size == (2048, 200)
