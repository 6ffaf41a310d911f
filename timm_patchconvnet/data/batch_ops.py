"""PIL's image operations on batches of [0, 1] images, each image with its own argument: the colour operations of
`ImageOps` and `ImageEnhance`, and `Image.transform`'s affine maps, resampled with `grid_sample`. timm's RandAugment and
torchvision's transforms apply the same definitions to PIL images; `tests/test_batch_auto_augment.py` compares each
with timm's. The --auto-augment policies (`batch_auto_augment`) and the data sets' recipes (`device_transforms`) draw
the arguments.
"""
import math
from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F

__all__ = ['COLOR_OPS', 'GEOMETRIC_OPS', 'warp']

LUMA = (0.299, 0.587, 0.114)  # PIL's "L" conversion


def _levels(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images as the 8-bit levels that PIL's point operations see."""
    return x.mul(255).round_()


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance: from `degenerate` (factor 0) through the image (1) and beyond."""
    return (degenerate + _per_image(factor) * (x - degenerate)).clamp_(0, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(torch.zeros_like(x), x, factor)


def color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(_gray(x).expand_as(x), x, factor)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = _levels(_gray(x).mean((1, 2, 3), keepdim=True)) / 255  # PIL rounds the mean grey level
    return _blend(mean.expand_as(x), x, factor)


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Sharpness: a blend with ImageFilter.SMOOTH (weights 1, centre 5, over 13), which leaves the
    border pixels as they are; the 3x3 sums are shifted slices, cheaper than a convolution on small images."""
    rows = x[..., :, :-2] + x[..., :, 1:-1] + x[..., :, 2:]
    around = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    smooth = x.clone()
    smooth[..., 1:-1, 1:-1] = (around + 4 * x[..., 1:-1, 1:-1]) / 13
    return _blend(smooth, x, factor)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    step = _per_image(2 ** (8 - bits.clamp(0, 8)))
    levels = _levels(x)
    return (levels - torch.remainder(levels, step)) / 255


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return torch.where(_levels(x) >= _per_image(threshold), 1 - x, x)


def solarize_add(x: torch.Tensor, add: torch.Tensor, threshold: float = 128) -> torch.Tensor:
    levels = _levels(x)
    return torch.where(levels < threshold, (levels + _per_image(add)).clamp_(max=255) / 255, x)


def invert(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    return 1 - x


def auto_contrast(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """ImageOps.autocontrast without cut-off: each channel stretched from its lowest to its highest level."""
    levels = _levels(x)
    low, high = levels.amin((2, 3), keepdim=True), levels.amax((2, 3), keepdim=True)
    stretched = ((levels - low) * (255 / (high - low).clamp_(min=1))).floor_() / 255
    return torch.where(high > low, stretched, x)


def equalize(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """ImageOps.equalize: each channel's levels through PIL's lookup table of its cumulative histogram."""
    levels = _levels(x).long().flatten(2)  # (B, C, H*W)
    channels = levels.shape[0] * levels.shape[1]
    offsets = torch.arange(channels, device=x.device).view(*levels.shape[:2], 1) * 256
    histogram = torch.bincount((levels + offsets).flatten(), minlength=channels * 256).view(*levels.shape[:2], 256)
    top = 255 - torch.flip(histogram > 0, (2,)).int().argmax(2, keepdim=True)  # the highest level present
    spread = histogram.sum(2, keepdim=True) - histogram.gather(2, top)  # the pixels under it
    step = spread.div(255, rounding_mode='floor').clamp_(min=1)
    below = torch.cumsum(histogram, 2) - histogram  # the pixels under each level
    table = (step.div(2, rounding_mode='floor') + below).div(step, rounding_mode='floor').clamp_(max=255)
    equalized = table.gather(2, levels).view_as(x) / 255
    # PIL leaves a channel as it is where fewer than 255 pixels lie under its highest level (one level included)
    return torch.where((spread < 255).unsqueeze(-1), x, equalized)


# ImageOps and ImageEnhance operations, by the name of timm's function for each (timm.data.auto_augment.NAME_TO_OP)
COLOR_OPS: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = dict(
    brightness=brightness, color=color, contrast=contrast, sharpness=sharpness, posterize=posterize,
    solarize=solarize, solarize_add=solarize_add, invert=invert, auto_contrast=auto_contrast, equalize=equalize)


def _rotate(degrees: float, height: int, width: int) -> Tuple[float, ...]:
    """Image.rotate: anticlockwise about the centre."""
    angle = math.radians(-degrees)
    cos, sin, cx, cy = math.cos(angle), math.sin(angle), width / 2, height / 2
    return cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy


# Image.transform's affine data (a, b, c, d, e, f: the output pixel (x, y) is the input's (ax + by + c, dx + ey + f))
# of an image of (height, width), by timm's function names; the relative translations are shares of the image's size
GEOMETRIC_OPS: Dict[str, Callable[[float, int, int], Tuple[float, ...]]] = dict(
    shear_x=lambda factor, height, width: (1, factor, 0, 0, 1, 0),
    shear_y=lambda factor, height, width: (1, 0, 0, factor, 1, 0),
    translate_x_rel=lambda share, height, width: (1, 0, share * width, 0, 1, 0),
    translate_y_rel=lambda share, height, width: (1, 0, 0, 0, 1, share * height),
    translate_x_abs=lambda pixels, height, width: (1, 0, pixels, 0, 1, 0),
    translate_y_abs=lambda pixels, height, width: (1, 0, 0, 0, 1, pixels),
    rotate=_rotate)


def warp(x: torch.Tensor, data: torch.Tensor, fill: torch.Tensor, mode: str) -> torch.Tensor:
    """Image.transform of each image by its affine `data` (B, 6) (a `GEOMETRIC_OPS` value; PIL's convention: pixel
    i spans [i, i + 1)), `fill` where the input has no pixel."""
    height, width = x.shape[-2:]
    # the input position of each output pixel's centre, in grid_sample's [-1, 1] (align_corners=False)
    column = torch.arange(width, device=x.device, dtype=x.dtype).add_(0.5).view(1, 1, -1)
    row = torch.arange(height, device=x.device, dtype=x.dtype).add_(0.5).view(1, -1, 1)
    entry = data.to(x).view(-1, 6, 1, 1).unbind(1)
    grid = torch.stack([(entry[0] * column + entry[1] * row + entry[2]) * (2 / width) - 1,
                        (entry[3] * column + entry[4] * row + entry[5]) * (2 / height) - 1], -1)
    # PIL: the fill where the sample point lies outside the image, the edge pixels repeated where it lies inside
    inside = ((grid >= -1) & (grid < 1)).all(-1).unsqueeze(1)
    sampled = F.grid_sample(x, grid, mode=mode, padding_mode='border', align_corners=False)
    return torch.where(inside, sampled, fill.to(x).view(1, -1, 1, 1))
