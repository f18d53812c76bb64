"""op4ksr.images.codec by values: bad inputs, orientation, ICC colour, CMYK, alpha, 16 bits, gray, metadata.

Colour is checked through the decode -> bicubic baseline -> encode path, not the tiny random
model, which does not preserve colour; the pipeline runs the same functions around the model.
"""
import io
import json
import struct
import zlib

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageCms, ImageOps

from op4ksr.images import png16
from op4ksr.images.codec import (ImageDecodeError, ImageTooLargeError, decode_image, encode_image, finish_output,
                              orient)
from op4ksr.imageops import bicubic_resize
from op4ksr.sizing import OutputSizeError, plan_output_size
from tests.badinputs import FRAME_COLOURS, corpus, encode, flat, multi_frame, noise, over_limit_input
from tests.icc_profiles import ADOBE_RGB, DISPLAY_P3, rgb_profile

PROVENANCE = {"version": "0.1.0", "model_id": "preset:tiny:seed0", "params_hash": "0123456789abcdef"}
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:source="archive box 17"/>'
       b"</rdf:RDF></x:xmpmeta>")


def upscale_bicubic(image, factor=4):
    """The bicubic baseline around the same alpha handling the model gets: (rgb, alpha) at factor x."""
    size = (image.size[0] * factor, image.size[1] * factor)
    alpha = None if image.alpha is None else bicubic_resize(image.alpha[None], size)[0].clamp(0, 1)
    return finish_output(bicubic_resize(image.rgb[None], size)[0].clamp(0, 1), alpha), alpha


def reopen(data):
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


# -- bad inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", corpus() + [over_limit_input()], ids=lambda b: b.key)
def test_bad_inputs_fail_with_a_clear_class_and_message(bad):
    limit = 3 if "big-output" in bad.key else 40.0
    with pytest.raises((ImageDecodeError, OutputSizeError), match=bad.message) as caught:
        image = decode_image(bad.data)
        plan_output_size(*image.size, scale=4, min_side=32, max_megapixels=limit)
    assert type(caught.value).__name__ == bad.error_class


def test_declared_size_over_the_configured_limit_is_refused_before_decoding():
    with pytest.raises(ImageTooLargeError, match=r"declares 64x48 = 0\.0 MP, over the limit"):
        decode_image(encode(noise(48, 64), "PNG"), max_pixels=1000)


def test_extreme_aspect_ratio_is_allowed_while_both_output_limits_hold():
    assert plan_output_size(16, 10000, scale=4) == (64, 40000)  # 10000x16 -> 40000x64, 2.6 MP
    with pytest.raises(OutputSizeError, match="over sr.max_output_megapixels=2"):
        plan_output_size(16, 10000, scale=4, max_megapixels=2)


@pytest.mark.parametrize("name", ["animated.gif", "apng.png", "pages.tif"])
def test_multi_frame_files_use_the_first_frame_and_say_so(name):
    image = decode_image(multi_frame()[name])
    assert image.info == {"source_frames": 3, "frame_used": 0}
    assert torch.allclose(image.rgb[:, 0, 0] * 255, torch.tensor(FRAME_COLOURS[0], dtype=torch.float32), atol=1)
    out = reopen(encode_image(image.rgb, image, "png", provenance=PROVENANCE))
    assert json.loads(out.info["op4ksr"]) == {**PROVENANCE, "source_frames": 3, "frame_used": 0}


# -- orientation ---------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_and_reset(orientation):
    pixels = noise(6, 10, orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(pixels, "PNG", exif=exif.tobytes())
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    image = decode_image(data)
    assert np.array_equal((image.rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), upright)
    assert np.array_equal(orient(pixels, orientation), upright)  # the 16-bit path's own rotation
    out = reopen(encode_image(image.rgb, image, "jpeg", provenance=PROVENANCE))
    assert out.size == (upright.shape[1], upright.shape[0]) and out.getexif()[0x0112] == 1


# -- colour: ICC profiles, CMYK ----------------------------------------------------------------


@pytest.mark.parametrize("profile", [ADOBE_RGB, DISPLAY_P3], ids=["adobe-rgb", "display-p3"])
@pytest.mark.parametrize("fmt,tolerance", [("png", 0), ("tiff", 0), ("jpeg", 2), ("webp", 3)])
def test_icc_profile_is_reembedded_and_colour_values_are_kept(profile, fmt, tolerance):
    icc, colour = rgb_profile(profile), (200, 100, 50)
    image = decode_image(encode(flat(12, 16, colour), "PNG", icc_profile=icc))
    assert image.icc_profile == icc
    assert torch.equal((image.rgb * 255).round(), torch.tensor(colour, dtype=torch.float32)[:, None, None].expand(3, 12, 16))
    rgb, _ = upscale_bicubic(image)
    out = reopen(encode_image(rgb, image, fmt, provenance=PROVENANCE))
    assert out.info["icc_profile"] == icc and out.size == (64, 48)
    values = np.asarray(out.convert("RGB")).reshape(-1, 3).astype(int)
    assert np.abs(values - colour).max() <= tolerance
    # the same colour to the eye: input and output agree after a colour-managed conversion to sRGB
    to_srgb = ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"),
                                      "RGB", "RGB")
    seen_in = ImageCms.applyTransform(Image.new("RGB", (1, 1), colour), to_srgb).getpixel((0, 0))
    seen_out = ImageCms.applyTransform(out.convert("RGB"), to_srgb).getpixel((8, 8))
    assert np.abs(np.subtract(seen_in, seen_out)).max() <= tolerance + 1


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_is_converted_to_rgb_as_pillow_converts_it(fmt):
    cmyk = np.concatenate([noise(8, 12, 5, 4)[..., :3], np.full((8, 12, 1), 40, np.uint8)], axis=-1)
    cmyk[0, 0] = (255, 0, 0, 0)  # pure cyan
    out = io.BytesIO()
    Image.fromarray(cmyk, "CMYK").save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    image = decode_image(out.getvalue())
    expected = np.asarray(Image.open(io.BytesIO(out.getvalue())).convert("RGB"))
    got = (image.rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(got, expected) and image.icc_profile is None and not image.grayscale
    if fmt == "TIFF":
        assert tuple(got[0, 0]) == (0, 255, 255)


# -- alpha -------------------------------------------------------------------------------


def test_alpha_is_kept_and_premultiplied_colour_leaves_no_dark_fringe():
    rgba = np.zeros((16, 16, 4), np.uint8)  # right half: fully transparent black, as editors store it
    rgba[:, :8] = (255, 0, 0, 255)
    rgba[:, 8] = (255, 0, 0, 128)  # a half-transparent edge
    image = decode_image(encode(rgba, "PNG"))
    assert image.alpha is not None and torch.allclose(image.rgb[0], image.alpha[0])  # red premultiplied
    rgb, alpha = upscale_bicubic(image)
    out = np.asarray(reopen(encode_image(rgb, image, "png", alpha=alpha, provenance=PROVENANCE)))
    assert out.shape == (64, 64, 4)
    assert np.abs(out[..., 3].astype(int) - np.round(alpha[0].numpy() * 255)).max() <= 1
    visible = out[..., 3] >= 8
    assert visible[:, 33:36].all() and not visible[:, 40:].any()
    assert out[visible][:, 0].min() >= 250 and out[visible][:, 1:3].max() <= 5  # red stays red at the edge
    # without premultiplication the same bicubic step darkens the edge: the test can see a fringe
    straight = bicubic_resize(torch.from_numpy(rgba[..., :3] / 255.0).permute(2, 0, 1)[None].float(), (64, 64))[0]
    assert straight[0][torch.from_numpy(visible)].min() < 0.8


# -- 16 bits ----------------------------------------------------------------------------------


def _png_with_every_filter(samples: np.ndarray) -> bytes:
    """A PNG written row by row with filter types 0-4 in turn (reference filters, PNG spec §9)."""
    h, w, c = samples.shape
    depth = samples.dtype.itemsize * 8
    raw = np.ascontiguousarray(samples, ">u2" if depth == 16 else np.uint8).view(np.uint8).reshape(h, -1).astype(int)
    bpp, rows, previous = c * depth // 8, [], np.zeros(raw.shape[1], int)
    for y, row in enumerate(raw):
        kind = y % 5
        left = np.concatenate([np.zeros(bpp, int), row[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, int), previous[:-bpp]])
        p = left + previous - up_left
        paeth = np.where((abs(p - left) <= abs(p - previous)) & (abs(p - left) <= abs(p - up_left)), left,
                         np.where(abs(p - previous) <= abs(p - up_left), previous, up_left))
        predictor = [0, left, previous, (left + previous) // 2, paeth][kind]
        rows.append(bytes([kind]) + bytes(((row - predictor) % 256).astype(np.uint8)))
        previous = row
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    return (png16.SIGNATURE + png16.chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0))
            + png16.chunk(b"IDAT", zlib.compress(b"".join(rows))) + png16.chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_colour_png_is_read_at_full_precision_through_every_row_filter(channels):
    samples = np.random.default_rng(channels).integers(0, 65536, (11, 13, channels)).astype(np.uint16)
    data = _png_with_every_filter(samples)
    assert np.array_equal(png16.read_pixels(data), samples)
    # Pillow reads the same file at 8 bits: its high bytes agree, so the file itself is right
    assert np.array_equal(np.asarray(reopen(data)), (samples >> 8).astype(np.uint8))
    image = decode_image(data)
    assert image.bit_depth == 16 and not image.grayscale and (image.alpha is not None) == (channels == 4)
    got = image.rgb if channels == 3 else image.rgb / image.alpha.clamp_min(1e-6)
    assert np.abs(got[0].numpy() * 65535 - samples[..., 0])[samples[..., -1] > 1000 * (channels == 4)].max() < 2


def test_png_reader_agrees_with_pillow_on_its_own_adaptive_filters():
    yy, xx = np.mgrid[0:41, 0:57]
    smooth = np.stack([xx * 3 + yy, yy * 4, xx + 2 * yy], -1) % 256
    for pixels in (smooth.astype(np.uint8), (xx * 700 + yy * 13).astype(np.uint16)):
        data = encode(pixels, "PNG")
        assert np.array_equal(png16.read_pixels(data).reshape(pixels.shape), pixels)


@pytest.mark.parametrize("fmt", ["png", "tiff"])
@pytest.mark.parametrize("source", ["gray-png", "rgb-tiff", "rgba-tiff", "rgb-png"])
def test_16_bit_input_gives_16_bit_output(source, fmt):
    rng = np.random.default_rng(7)
    if source == "gray-png":
        samples = rng.integers(0, 65536, (9, 14, 1)).astype(np.uint16)
        data = encode(samples[..., 0], "PNG")
    elif source.endswith("tiff"):
        samples = rng.integers(1, 65536, (9, 14, 4 if source == "rgba-tiff" else 3)).astype(np.uint16)
        out = io.BytesIO()
        tifffile.imwrite(out, samples, photometric="rgb", compression="zlib",
                         extrasamples=("unassalpha",) if samples.shape[-1] == 4 else None)
        data = out.getvalue()
    else:
        samples = rng.integers(0, 65536, (9, 14, 3)).astype(np.uint16)
        data = _png_with_every_filter(samples)
    image = decode_image(data)
    assert image.bit_depth == 16 and image.grayscale == (samples.shape[-1] == 1)
    rgb = finish_output(image.rgb, image.alpha)  # written back at the same size: values must survive exactly
    encoded = encode_image(rgb, image, fmt, alpha=image.alpha, provenance=PROVENANCE)
    back = tifffile.imread(io.BytesIO(encoded)) if fmt == "tiff" else png16.read_pixels(encoded)
    assert back.dtype == np.uint16 and np.array_equal(back.reshape(samples.shape), samples)
    assert decode_image(encoded).bit_depth == 16


def test_16_bit_input_to_an_8_bit_format_is_8_bit():
    image = decode_image(encode(np.full((8, 8), 40000, np.uint16), "PNG"))
    out = reopen(encode_image(image.rgb, image, "jpeg", provenance=PROVENANCE))
    assert out.mode == "L" and abs(out.getpixel((4, 4)) - 40000 / 257) <= 1


def test_truncated_16_bit_png_is_a_decode_error():
    data = _png_with_every_filter(np.zeros((40, 40, 3), np.uint16) + 1234)
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


# -- grayscale, bilevel, palette -----------------------------------------------------------------


@pytest.mark.parametrize("mode,fmt,expected", [("L", "png", "L"), ("LA", "png", "LA"), ("L", "jpeg", "L"),
                                               ("1", "tiff", "L"), ("L", "tiff", "L")])
def test_grayscale_stays_grayscale(mode, fmt, expected):
    pixels = Image.fromarray(noise(10, 12, 3, 2 if mode == "LA" else 1), "LA" if mode == "LA" else "L")
    data = io.BytesIO()
    pixels.convert(mode).save(data, "TIFF" if mode == "1" else "PNG")
    image = decode_image(data.getvalue())
    assert image.grayscale and image.bit_depth == 8
    if mode == "1":  # bilevel scans decode to black and white, not to 1/255
        assert set(torch.unique(image.rgb).tolist()) <= {0.0, 1.0} and image.rgb.max() == 1.0
    rgb, alpha = upscale_bicubic(image, 2)
    assert reopen(encode_image(rgb, image, fmt, alpha=alpha, provenance=PROVENANCE)).mode == expected


def test_palette_with_transparency_keeps_colour_and_alpha():
    img = Image.fromarray(flat(6, 6, (10, 200, 30))).convert("P")
    img.info["transparency"] = 0
    data = io.BytesIO()
    img.save(data, "PNG", transparency=0)
    image = decode_image(data.getvalue())
    assert image.alpha is not None and not image.grayscale


# -- metadata -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "tiff"])
def test_exif_and_xmp_are_copied_and_provenance_is_written(fmt):
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Archive Scanner Co", "Model 9", 6
    data = encode(noise(10, 14, 9), "JPEG", exif=exif.tobytes(), xmp=XMP, quality=95)
    image = decode_image(data)
    assert image.exif and image.xmp == XMP
    rgb, _ = upscale_bicubic(image, 2)
    out = reopen(encode_image(rgb, image, fmt, provenance=PROVENANCE))
    tags = out.getexif()
    assert (tags[0x010F], tags[0x0110], tags[0x0112]) == ("Archive Scanner Co", "Model 9", 1)
    assert json.loads(tags[0x010E]) == PROVENANCE and tags[0x0131] == "op4ksr 0.1.0"
    assert out.info["xmp"] == XMP
    if fmt == "png":
        assert json.loads(out.info["op4ksr"]) == PROVENANCE


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_16_bit_outputs_carry_icc_xmp_and_provenance(fmt):
    icc = rgb_profile(DISPLAY_P3)
    samples = np.random.default_rng(3).integers(0, 65536, (8, 8, 3)).astype(np.uint16)
    out = io.BytesIO()
    tifffile.imwrite(out, samples, photometric="rgb", iccprofile=icc, extratags=[(700, 1, len(XMP), XMP, True)])
    image = decode_image(out.getvalue())
    assert image.bit_depth == 16 and image.icc_profile == icc and image.xmp == XMP
    back = reopen(encode_image(image.rgb, image, fmt, provenance=PROVENANCE))
    assert back.info["icc_profile"] == icc and back.info["xmp"] == XMP
    description = back.info["op4ksr"] if fmt == "png" else back.tag_v2[270]
    assert json.loads(description) == PROVENANCE
