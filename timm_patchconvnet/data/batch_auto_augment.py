"""RandAugment (timm's, from its string) and TrivialAugmentWide (torchvision's) on a batch on the device, each image
with its own draw.

kornia's and torchvision's policies draw one operation and magnitude per call, and a call costs about 0.3 ms on a CPU
whatever its size, so per-image draws through them cap a CPU loader far below the recipe alone (benchmarks/README.md,
"Recipe parts"). Here the draws come from the libraries' own definitions (timm's `rand_augment_transform` parses the
string, and each of its `AugmentOp`s gives its probability, magnitude noise and arguments; torchvision's
`TrivialAugmentWide` gives its operations and magnitude bins), and each layer applies every operation once, to the
images that drew it, with per-image arguments; the geometric ones share one resampling. The operations follow PIL's
definitions (`ImageOps`, `ImageEnhance`, `Image.transform`), as timm's (on PIL images) and torchvision's do;
`tests/test_batch_auto_augment.py` compares each with timm's.
"""
import math
import random
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data.auto_augment import _LEVEL_DENOM, rand_augment_transform

__all__ = ['BatchRandAugment', 'BatchTrivialAugmentWide', 'COLOR_OPS', 'GEOMETRIC_OPS']

LUMA = (0.299, 0.587, 0.114)  # PIL's "L" conversion
# one layer's draws: for each operation (by timm's function name), the images that drew it and their arguments
LayerDraw = Dict[str, Tuple[List[int], List[float]]]


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
    fill = fill.view(1, -1, 1, 1)
    # zeros outside, shifted by the fill: the pixels near the border blend with it as they would with a mask
    return F.grid_sample(x - fill, grid, mode=mode, padding_mode='zeros', align_corners=False).add_(fill).clamp_(0, 1)


class _BatchPolicy(nn.Module):
    """Applies per-image draws: for each layer, each operation once, to the images that drew it."""

    def __init__(self, fill: Sequence[float], mode: str):
        super().__init__()
        self.register_buffer('fill', torch.tensor(fill, dtype=torch.float32), persistent=False)
        self.mode = mode

    def draw(self, count: int, height: int, width: int) -> List[LayerDraw]:
        """Each layer's draws for `count` images of (height, width)."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Each layer sorts the batch by operation, so that each operation takes a slice of it; one gather per layer
        and one at the end put the images back in their order."""
        height, width = images.shape[-2:]
        x, order = images, list(range(len(images)))  # x[i] is image order[i]
        for layer in self.draw(len(x), height, width):
            moved, affine = [], []
            groups = []
            for name, (chosen, args) in layer.items():
                if name in GEOMETRIC_OPS:  # all in one resampling
                    moved += chosen
                    affine += [GEOMETRIC_OPS[name](arg, height, width) for arg in args]
                else:
                    groups.append((COLOR_OPS[name], chosen, args))
            if moved:
                groups.append((self._warp, moved, affine))
            drawn = {image for _, chosen, _ in groups for image in chosen}
            new_order = [image for _, chosen, _ in groups for image in chosen]
            new_order += [image for image in order if image not in drawn]
            position = {image: i for i, image in enumerate(order)}
            x = x[torch.tensor([position[image] for image in new_order], device=x.device)]
            parts, start = [], 0
            for op, chosen, args in groups:
                parts.append(op(x[start:start + len(chosen)], torch.tensor(args, device=x.device)))
                start += len(chosen)
            x, order = torch.cat([*parts, x[start:]]), new_order
        return x[torch.tensor(order).argsort().to(x.device)]

    def _warp(self, x: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
        return warp(x, affine, self.fill, self.mode)


class BatchRandAugment(_BatchPolicy):
    """timm's RandAugment of `config_str` (e.g. 'rand-m9-mstd0.5-inc1') with `hparams` (timm's: `img_mean` the fill,
    `translate_pct`...): each image draws its `num_layers` operations and, for each, timm's chance of applying it,
    its magnitude noise and its arguments (`AugmentOp.level_fn`, random sign included). Bilinear resampling (timm
    picks bilinear or bicubic at random)."""

    def __init__(self, config_str: str, hparams: Dict):
        policy = rand_augment_transform(config_str, hparams)
        unknown = sorted({op.aug_fn.__name__ for op in policy.ops} - {*COLOR_OPS, *GEOMETRIC_OPS})
        if unknown:
            raise ValueError(f'{config_str!r} uses {", ".join(unknown)}, which the batch RandAugment does not have: '
                             'use --loader pil for it.')
        super().__init__([v / 255 for v in policy.ops[0].kwargs['fillcolor']], 'bilinear')
        self.ops, self.num_layers, self.choice_weights = policy.ops, policy.num_layers, policy.choice_weights

    def _magnitude(self, op) -> float:
        """AugmentOp.__call__'s magnitude: noise around the policy's, clipped to its range."""
        magnitude = op.magnitude
        if op.magnitude_std == float('inf'):
            magnitude = random.uniform(0, magnitude)
        elif op.magnitude_std > 0:
            magnitude = random.gauss(magnitude, op.magnitude_std)
        return max(0., min(magnitude, op.magnitude_max or _LEVEL_DENOM))

    def draw(self, count: int, height: int, width: int) -> List[LayerDraw]:
        if self.choice_weights is None:  # timm's draw, for all images at once
            choices = np.random.choice(len(self.ops), (count, self.num_layers))
        else:  # weighted: without replacement, image by image
            choices = np.stack([np.random.choice(len(self.ops), self.num_layers, replace=False,
                                                 p=self.choice_weights) for _ in range(count)])
        layers = []
        for layer in range(self.num_layers):
            drawn: LayerDraw = {}
            for image, choice in enumerate(choices[:, layer].tolist()):
                op = self.ops[choice]
                if op.prob < 1.0 and random.random() > op.prob:
                    continue
                args = op.level_fn(self._magnitude(op), op.hparams) if op.level_fn is not None else (0.,)
                chosen, values = drawn.setdefault(op.aug_fn.__name__, ([], []))
                chosen.append(image)
                values.append(float(args[0]))
            layers.append(drawn)
        return layers


# torchvision's TrivialAugmentWide operations as (timm's function name, its argument from torchvision's magnitude),
# as torchvision's `_apply_image_or_video_transform` applies them (posterize as on uint8 images)
_TRIVIAL_OPS: Dict[str, Tuple[str, Callable[[float], float]]] = dict(
    ShearX=('shear_x', float), ShearY=('shear_y', float),
    TranslateX=('translate_x_abs', lambda m: float(int(m))), TranslateY=('translate_y_abs', lambda m: float(int(m))),
    Rotate=('rotate', float), Brightness=('brightness', lambda m: 1 + m), Color=('color', lambda m: 1 + m),
    Contrast=('contrast', lambda m: 1 + m), Sharpness=('sharpness', lambda m: 1 + m),
    Posterize=('posterize', lambda m: float(int(m))), Solarize=('solarize', lambda m: 255 * m),
    AutoContrast=('auto_contrast', float), Equalize=('equalize', float))


class BatchTrivialAugmentWide(_BatchPolicy):
    """torchvision's TrivialAugmentWide: each image one operation of its space, at one of `num_magnitude_bins`
    magnitudes, with a random sign where the operation has one; nearest resampling and black fill, its defaults."""

    def __init__(self, num_magnitude_bins: int = 31):
        from torchvision.transforms.v2 import TrivialAugmentWide
        super().__init__((0., 0., 0.), 'nearest')
        self.space = TrivialAugmentWide._AUGMENTATION_SPACE
        self.num_magnitude_bins = num_magnitude_bins

    def draw(self, count: int, height: int, width: int) -> List[LayerDraw]:
        names = list(self.space)
        magnitudes = {name: values(self.num_magnitude_bins, height, width) for name, (values, _) in self.space.items()}
        drawn: LayerDraw = {}
        ops = torch.randint(len(names), (count,)).tolist()
        bins = torch.randint(self.num_magnitude_bins, (count,)).tolist()
        negative = (torch.rand(count) <= 0.5).tolist()
        for image, (op, magnitude_bin, negate) in enumerate(zip(ops, bins, negative)):
            if names[op] == 'Identity':
                continue
            values, signed = magnitudes[names[op]], self.space[names[op]][1]
            magnitude = float(values[magnitude_bin]) if values is not None else 0.
            name, argument = _TRIVIAL_OPS[names[op]]
            chosen, args = drawn.setdefault(name, ([], []))
            chosen.append(image)
            args.append(argument(-magnitude if signed and negate else magnitude))
        return [drawn]
