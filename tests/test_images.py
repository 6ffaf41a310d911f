"""images.to_rgb / to_gray: every PIL mode as the 8-bit image a viewer sees, from real files where PIL writes them."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from timm_patchconvnet.images import is_high_bit_depth, to_gray, to_rgb


def _channels_equal_to(image: Image.Image, gray) -> None:
    pixels = np.asarray(image)
    assert image.mode == 'RGB' and pixels.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], np.asarray(gray, dtype=np.uint8))


def test_16_bit_png_is_scaled_by_its_full_range(tmp_path: Path):
    Image.fromarray(np.array([[0, 257, 32896, 65535]], np.uint16)).save(tmp_path / 'scan.png')
    image = Image.open(tmp_path / 'scan.png')
    assert image.mode == 'I;16' and is_high_bit_depth(image)
    _channels_equal_to(to_rgb(image), [[0, 1, 128, 255]])
    assert to_gray(image).mode == 'L' and np.asarray(to_gray(image)).tolist() == [[0, 1, 128, 255]]
    assert np.asarray(image.convert('RGB'))[0, 1:, 0].tolist() == [255, 255, 255]  # PIL's own convert clips


def test_16_bit_png_transparency_is_white(tmp_path: Path):
    Image.fromarray(np.array([[0, 257, 32896]], np.uint16)).save(tmp_path / 'scan.png', transparency=0)
    _channels_equal_to(to_rgb(Image.open(tmp_path / 'scan.png')), [[255, 1, 128]])


def test_32_bit_integer_images_scale_by_the_range_they_fit():
    _channels_equal_to(to_rgb(Image.fromarray(np.array([[0, 100, 255]], np.int32))), [[0, 100, 255]])  # 8-bit data
    _channels_equal_to(to_rgb(Image.fromarray(np.array([[0, 32896, 65535]], np.int32))), [[0, 128, 255]])
    _channels_equal_to(to_rgb(Image.fromarray(np.array([[-5, 100_000, 200_000]], np.int32))), [[0, 128, 255]])


def test_float_images_in_0_1_scale_by_255_and_non_finite_ones_are_refused():
    floats = Image.fromarray(np.array([[0., .25, .5, 1.]], np.float32), mode='F')
    _channels_equal_to(to_rgb(floats), [[0, 64, 128, 255]])
    _channels_equal_to(to_rgb(Image.fromarray(np.array([[0., 128., 255.]], np.float32), mode='F')), [[0, 128, 255]])
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match='NaN or infinite'):
            to_rgb(Image.fromarray(np.array([[0., bad]], np.float32), mode='F'))


def test_transparency_is_laid_on_white(tmp_path: Path):
    rgba = Image.fromarray(np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], np.uint8), mode='RGBA')
    rgba.save(tmp_path / 'rgba.png')
    pixels = np.asarray(to_rgb(Image.open(tmp_path / 'rgba.png'))).astype(int)
    assert pixels[0, 0].tolist() == [255, 255, 255]  # the hidden red is not shown
    assert pixels[0, 1].tolist() == [0, 0, 255]
    assert all(abs(v - 127) <= 1 for v in pixels[0, 2])  # half black over white
    la = Image.fromarray(np.array([[[0, 0], [40, 255]]], np.uint8), mode='LA')
    _channels_equal_to(to_rgb(la), [[255, 40]])
    _channels_equal_to(to_rgb(la.convert('La')), [[255, 40]])  # premultiplied: PIL converts it only to LA


def test_palette_with_a_transparent_index(tmp_path: Path):
    palette = Image.new('P', (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / 'palette.png', transparency=0)
    image = Image.open(tmp_path / 'palette.png')
    assert image.mode == 'P' and image.info['transparency'] == 0
    assert np.asarray(to_rgb(image)).tolist() == [[[255, 255, 255], [0, 0, 255]]]


def test_plain_8_bit_images_are_what_convert_gives(tmp_path: Path):
    pixels = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    rgb = Image.fromarray(pixels)
    assert to_rgb(rgb).tobytes() == rgb.tobytes() and not is_high_bit_depth(rgb)
    gray = rgb.convert('L')
    _channels_equal_to(to_rgb(gray), np.asarray(gray))
    assert to_gray(gray).tobytes() == gray.tobytes()
    for mode in ('1', 'CMYK', 'YCbCr', 'P'):
        image = rgb.convert(mode)
        assert to_rgb(image).tobytes() == image.convert('RGB').tobytes(), mode
