"""RandAugment (timm's, from its string) and TrivialAugmentWide (torchvision's) on a batch on the device, each image
with its own draw.

kornia's and torchvision's policies draw one operation and magnitude per call, and a call costs about 0.2 ms
(torchvision) to 1.2 ms (kornia) of CPU whatever its size, so per-image draws through them cap a CPU loader far below
the recipe alone (benchmarks/README.md, "Recipe parts"). Here the draws come from the libraries' own definitions
(timm's `rand_augment_transform` parses the string, and each of its `AugmentOp`s gives its probability, magnitude
noise and arguments; torchvision's `TrivialAugmentWide` gives its operations and magnitude bins), and each layer
applies every operation once, to the images that drew it, with per-image arguments (`batch_ops`, PIL's
definitions); the geometric ones share one resampling.
"""
import random
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from timm.data.auto_augment import _LEVEL_DENOM, rand_augment_transform
from torchvision.transforms.v2 import TrivialAugmentWide

from .batch_ops import COLOR_OPS, GEOMETRIC_OPS, warp

__all__ = ['BatchRandAugment', 'BatchTrivialAugmentWide']

# one layer's draws: for each operation (by timm's function name), the images that drew it and their arguments
LayerDraw = Dict[str, Tuple[List[int], List[float]]]


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
        """Each layer sorts the batch by operation, so that each operation takes a slice of it, the geometric ones
        together; one gather per layer and one at the end put the images back in their order."""
        if not len(images):
            return images
        height, width = images.shape[-2:]
        x, order = images, list(range(len(images)))  # x[i] is image order[i]
        for layer in self.draw(len(x), height, width):
            colour = [(name, chosen, args) for name, (chosen, args) in layer.items() if name in COLOR_OPS]
            moved = [(name, chosen, args) for name, (chosen, args) in layer.items() if name in GEOMETRIC_OPS]
            drawn = [image for _, chosen, _ in (*colour, *moved) for image in chosen]
            taken = set(drawn)
            new_order = drawn + [image for image in order if image not in taken]
            position = {image: i for i, image in enumerate(order)}
            x = x.index_select(0, torch.tensor([position[image] for image in new_order], device=x.device))
            sizes = [len(chosen) for _, chosen, _ in colour]
            parts = list(x.split([*sizes, len(x) - sum(sizes)]))
            if colour:
                args = torch.tensor([arg for _, _, args in colour for arg in args], device=x.device).split(sizes)
                parts[:-1] = [COLOR_OPS[name](part, arg) for (name, _, _), part, arg in zip(colour, parts, args)]
            if moved:
                count = sum(len(chosen) for _, chosen, _ in moved)
                affine = torch.tensor([GEOMETRIC_OPS[name](arg, height, width) for name, _, args in moved
                                       for arg in args])
                parts[-1] = torch.cat([warp(parts[-1][:count], affine, self.fill, self.mode), parts[-1][count:]])
            x, order = torch.cat(parts), new_order
        return x.index_select(0, torch.tensor(order).argsort().to(x.device))


class BatchRandAugment(_BatchPolicy):
    """timm's RandAugment of `config_str` (e.g. 'rand-m9-mstd0.5-inc1') with `hparams` (timm's: `img_mean` the fill,
    `translate_pct`...): each image draws its `num_layers` operations and, for each, timm's chance of applying it,
    its magnitude noise and its arguments (`AugmentOp.level_fn`, random sign included). Bilinear resampling (timm
    picks bilinear or bicubic at random)."""

    def __init__(self, config_str: str, hparams: Dict):
        policy = rand_augment_transform(config_str, dict(hparams))  # timm adds the string's settings to it
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
    # torchvision's translate moves the image, PIL's affine data says where each pixel comes from: opposite signs
    TranslateX=('translate_x_abs', lambda m: -float(int(m))), TranslateY=('translate_y_abs', lambda m: -float(int(m))),
    Rotate=('rotate', float), Brightness=('brightness', lambda m: 1 + m), Color=('color', lambda m: 1 + m),
    Contrast=('contrast', lambda m: 1 + m), Sharpness=('sharpness', lambda m: 1 + m),
    Posterize=('posterize', lambda m: float(int(m))), Solarize=('solarize', lambda m: 255 * m),
    AutoContrast=('auto_contrast', float), Equalize=('equalize', float))


class BatchTrivialAugmentWide(_BatchPolicy):
    """torchvision's TrivialAugmentWide: each image one operation of its space, at one of `num_magnitude_bins`
    magnitudes, with a random sign where the operation has one; nearest resampling and black fill, its defaults."""

    def __init__(self, num_magnitude_bins: int = 31):
        super().__init__((0., 0., 0.), 'nearest')
        # a private attribute, the same table in torchvision's v1 class (the PIL path's): solarize there in 0..255
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
