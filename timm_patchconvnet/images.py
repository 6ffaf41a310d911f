"""Images of any PIL mode as the 8-bit RGB (or grayscale) the models see, and the tensors made of them."""
from typing import Any, Dict

import numpy as np
from PIL import Image
from timm.data.transforms import str_to_interp_mode
from torchvision import transforms

__all__ = ['exact_size_transform', 'is_high_bit_depth', 'to_gray', 'to_rgb']

_HIGH_DEPTH_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I', 'F')


def is_high_bit_depth(image: Image.Image) -> bool:
    """16-bit, 32-bit integer or float pixels, which PIL's `convert('RGB')` clips at 255 (a 16-bit scan turns white)."""
    return image.mode in _HIGH_DEPTH_MODES


def _scale(image: Image.Image, pixels: np.ndarray) -> float:
    """The value that maps to white: 16-bit ranges (0..65535) map by 255/65535, so that equal values give equal
    grays in every image; float images in [0, 1] by 255; `I` images by the smallest of 255, 65535 that holds
    them (16-bit PNGs open as `I` in older Pillows); anything larger by its own maximum."""
    if image.mode.startswith('I;16'):
        return 65535.
    top = float(pixels.max(initial=0.))
    if image.mode == 'F' and top <= 1.:
        return 1.
    return 255. if top <= 255. else 65535. if top <= 65535. else top


def _to_8_bit(image: Image.Image) -> Image.Image:
    """Grayscale of 16 bits or more, scaled (not clipped) to 8 bits; a transparent value (16-bit PNG tRNS) is white."""
    pixels = np.asarray(image, dtype=np.float64)
    if not np.isfinite(pixels).all():  # NaN would become an arbitrary gray, and a NaN input a NaN prediction
        raise ValueError(f'The {image.mode} image has NaN or infinite pixels: it has no 8-bit equivalent.')
    gray = np.clip(np.rint(pixels * (255. / _scale(image, pixels))), 0, 255).astype(np.uint8)
    transparent = image.info.get('transparency')
    if isinstance(transparent, (int, float)):
        gray[np.asarray(image) == transparent] = 255
    return Image.fromarray(gray, mode='L')


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB as a viewer sees the image: high-bit-depth grayscale scaled (not clipped) to 8 bits, transparent
    parts laid on white (not on whatever colour they hide), palettes and grayscale expanded.

    Raises ValueError for a float image with NaN or infinite pixels."""
    if is_high_bit_depth(image):
        return _to_8_bit(image).convert('RGB')
    if image.mode == 'La':  # premultiplied alpha: PIL converts it to LA only, not to RGBA
        image = image.convert('LA')
    if image.mode in ('RGBA', 'RGBa', 'LA', 'PA') or 'transparency' in image.info:
        rgba = image.convert('RGBA')
        return Image.alpha_composite(Image.new('RGBA', rgba.size, 'white'), rgba).convert('RGB')
    return image.convert('RGB')


def to_gray(image: Image.Image) -> Image.Image:
    """8-bit grayscale (`L`) of what `to_rgb` shows, for one-channel models: a 16-bit value v gives the same gray
    as in `to_rgb` (PIL's luma weights sum to exactly 1 on equal channels)."""
    return to_rgb(image).convert('L')


def exact_size_transform(data_config: Dict[str, Any]) -> transforms.Compose:
    """The preprocessing of training and evaluation: an exact resize to the model's `input_size` (not timm's
    resize-and-crop: IDC edge patches are not square and digits are tiny), then its normalisation.
    `data_config` is timm's resolved data config of the model."""
    _, height, width = data_config['input_size']
    return transforms.Compose([
        transforms.Resize((height, width), interpolation=str_to_interp_mode(data_config['interpolation'])),
        transforms.ToTensor(),
        transforms.Normalize(data_config['mean'], data_config['std']),
    ])
