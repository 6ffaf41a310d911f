"""Preprocessing of decoded batches on the training device: augmentation (train only) and normalisation.

The counterpart of `transforms.build_transform` for `decode_cache.DecodedImages`: the images arrive as uint8
(B, 3, H, W) at the model's input size, or at their own where that is smaller. What is left is the data set's
augmentation recipe, run on the whole batch with per-image randomness (`BatchRecipe`), then a resize to the model's
input where the images were stored smaller (a data set of small images for a model at 224), a training run's
--auto-augment policy (timm's RandAugment or torchvision's TrivialAugmentWide, drawn per image,
`batch_auto_augment`), and the model's normalisation: one pass over [0, 1] images.
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import transforms

from ..dataset_specs import Augmentation
from .batch_auto_augment import BatchRandAugment, BatchTrivialAugmentWide
from .batch_ops import COLOR_OPS, warp
from .transforms import rand_augment_hparams

__all__ = ['BatchPreprocess', 'BatchRecipe', 'RESIZE_MODES', 'auto_augment_policy', 'batch_transforms']

RESIZE_MODES = ('bicubic', 'bilinear', 'nearest')  # timm's interpolation names that torch's interpolate takes
AFFINE_DRAWS = {'degrees', 'translate', 'scale', 'shear'}  # the RandomAffine arguments BatchRecipe draws from


def auto_augment_policy(name: str, data_config: Dict[str, Any]) -> Optional[nn.Module]:
    """The batch policy of an --auto-augment value for a model's `data_config` (timm's resolved one), taking and
    giving float batches in [0, 1]: timm's RandAugment of the string, with the hyper-parameters of the PIL path
    (`transforms.rand_augment_hparams`), or torchvision's TrivialAugmentWide; None for 'none'."""
    if name == 'none':
        return None
    if name == 'trivial':
        return BatchTrivialAugmentWide()
    return BatchRandAugment(name, rand_augment_hparams(data_config))


def _inverse_affine(angle: torch.Tensor, translate: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor,
                    center: Tuple[float, float]) -> torch.Tensor:
    """torchvision's `_get_inverse_affine_matrix` for a batch of parameters (B,), (B, 2), (B,), (B, 2): each image's
    map from output to input pixels, as (B, 3, 3)."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear[:, 0]), torch.deg2rad(shear[:, 1])
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    matrix = torch.zeros(len(angle), 3, 3)
    matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 1, 0], matrix[:, 1, 1] = d / scale, -b / scale, -c / scale, a / scale
    (cx, cy), shift = center, -torch.tensor(center) - translate
    matrix[:, 0, 2] = matrix[:, 0, 0] * shift[:, 0] + matrix[:, 0, 1] * shift[:, 1] + cx
    matrix[:, 1, 2] = matrix[:, 1, 0] * shift[:, 0] + matrix[:, 1, 1] * shift[:, 1] + cy
    matrix[:, 2, 2] = 1
    return matrix


def _uniform(count: int, low_high: Sequence[float]) -> torch.Tensor:
    return torch.empty(count).uniform_(float(low_high[0]), float(low_high[1]))


class BatchRecipe(nn.Module):
    """A data set's `Augmentation` on float batches (B, 3, H, W) in [0, 1], on any device, each image with its own
    draw from the ranges of torchvision's transforms on the PIL path (`transforms.pil_transforms`): flips with
    probability 1/2, `RandomRotation`, `RandomAffine` (translations rounded to pixels), nearest-pixel resampling and
    zeros outside, then `ColorJitter` with PIL's operations (its order drawn per batch, not per image). The flips,
    rotation and affine map are composed into one resampling, where the PIL path resamples twice."""

    def __init__(self, augmentation: Augmentation):
        super().__init__()
        self.hflip, self.vflip = augmentation.hflip, augmentation.vflip
        self.rotation = transforms.RandomRotation(augmentation.rotation) if augmentation.rotation else None
        ignored = sorted(set(augmentation.affine or {}) - AFFINE_DRAWS)
        if ignored:
            raise ValueError(f"The batch recipe draws RandomAffine's {', '.join(sorted(AFFINE_DRAWS))}; its "
                             f'{", ".join(ignored)} would be ignored: use --loader pil.')
        self.affine = transforms.RandomAffine(**augmentation.affine) if augmentation.affine is not None else None
        self.jitter: List[Tuple[Callable, Tuple[float, float]]] = []
        if augmentation.color_jitter is not None:
            jitter = transforms.ColorJitter(*augmentation.color_jitter)
            # torchvision's ranges, as it parsed them; none where a factor of 0 turns the property off
            ranges = (COLOR_OPS['brightness'], jitter.brightness), (COLOR_OPS['contrast'], jitter.contrast), \
                (COLOR_OPS['color'], jitter.saturation)
            self.jitter = [(op, factor) for op, factor in ranges if factor is not None]

    def _resampling(self, count: int, height: int, width: int) -> torch.Tensor:
        """Each image's map from output to input pixels: the affine map's, then the rotation's, then the flips'."""
        center, no_shift, ones = (width / 2, height / 2), torch.zeros(count, 2), torch.ones(count)
        matrix = torch.eye(3).repeat(count, 1, 1)
        if self.affine is not None:  # drawn in RandomAffine.get_params's order
            angle = _uniform(count, self.affine.degrees)
            translate = torch.zeros(count, 2)
            if self.affine.translate is not None:
                for axis, size in enumerate((width, height)):
                    limit = self.affine.translate[axis] * size
                    translate[:, axis] = _uniform(count, (-limit, limit)).round()
            scale = _uniform(count, self.affine.scale) if self.affine.scale is not None else ones
            shear = torch.zeros(count, 2)
            if self.affine.shear is not None:
                shear[:, 0] = _uniform(count, self.affine.shear[:2])
                if len(self.affine.shear) == 4:
                    shear[:, 1] = _uniform(count, self.affine.shear[2:])
            matrix = _inverse_affine(angle, translate, scale, shear, center)
        if self.rotation is not None:  # Image.rotate turns anticlockwise, torchvision's affine map clockwise
            rotation = _inverse_affine(-_uniform(count, self.rotation.degrees), no_shift, ones, no_shift, center)
            matrix = rotation @ matrix
        for flip, axis, size in ((self.vflip, 1, height), (self.hflip, 0, width)):
            if flip:
                flipped = torch.rand(count) < 0.5
                mirror = torch.eye(3).repeat(count, 1, 1)
                mirror[flipped, axis, axis], mirror[flipped, axis, 2] = -1., float(size)
                matrix = mirror @ matrix
        return matrix[:, :2].reshape(count, 6)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if self.hflip or self.vflip or self.rotation is not None or self.affine is not None:
            data = self._resampling(len(x), *x.shape[-2:]).to(x.device)
            x = warp(x, data, x.new_zeros(x.shape[1]), 'nearest')
        for index in torch.randperm(len(self.jitter)).tolist():
            op, factor = self.jitter[index]
            x = op(x, _uniform(len(x), factor).to(x.device))
        return x


def batch_transforms(augmentation: Augmentation) -> Optional[nn.Module]:
    """The recipe as a `BatchRecipe`; None when there is nothing to do."""
    empty = not (augmentation.hflip or augmentation.vflip or augmentation.rotation or augmentation.affine is not None
                 or augmentation.color_jitter is not None)
    return None if empty else BatchRecipe(augmentation)


class BatchPreprocess(nn.Module):
    """uint8 (B, 3, H, W) batches to normalised float batches, augmented by `augmentation` when training, resized to
    `size` (H, W) with `interpolation` where they differ, then augmented by `policy` (an `auto_augment_policy`) when
    training."""

    def __init__(self, augmentation: Optional[Augmentation], mean: Any, std: Any, channels_last: bool = False,
                 policy: Optional[nn.Module] = None, size: Optional[Tuple[int, int]] = None,
                 interpolation: str = 'bicubic'):
        super().__init__()
        if interpolation not in RESIZE_MODES:
            raise ValueError(f'BatchPreprocess resizes with {" or ".join(RESIZE_MODES)}, not {interpolation!r}.')
        self.augment = batch_transforms(augmentation) if augmentation is not None else None
        self.policy = policy
        self.size, self.interpolation = size, interpolation
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    @classmethod
    def for_model(cls, augmentation: Optional[Augmentation], data_config: Dict[str, Any],
                  channels_last: bool = False, policy: Optional[nn.Module] = None) -> 'BatchPreprocess':
        """For a model of timm's resolved `data_config` (its mean, std, input size and interpolation)."""
        interpolation = data_config['interpolation'] if data_config['interpolation'] in RESIZE_MODES else 'bicubic'
        return cls(augmentation, data_config['mean'], data_config['std'], channels_last, policy,
                   tuple(data_config['input_size'][1:]), interpolation)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, train: bool = False) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != self.mean.shape[1]:
            raise ValueError(f'BatchPreprocess takes uint8 batches (B, {self.mean.shape[1]}, H, W), got '
                             f'{images.dtype} {tuple(images.shape)}.')
        x = images.float().div_(255)
        if train and self.augment is not None:
            x = self.augment(x)
        if self.size is not None and tuple(x.shape[-2:]) != tuple(self.size):
            x = F.interpolate(x, size=self.size, mode=self.interpolation).clamp_(0, 1)
        if train and self.policy is not None:
            x = self.policy(x)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)
