"""Preprocessing of decoded batches on the training device: augmentation (train only) and normalisation.

The counterpart of `transforms.build_transform` for `decode_cache.DecodedImages`: the images arrive as uint8
(B, 3, H, W) at the model's input size, or at their own where that is smaller. What is left is the data set's
augmentation recipe, run on the whole batch with per-image randomness, then a resize to the model's input where the images were stored smaller
(a data set of small images for a model at 224), a training run's --auto-augment policy (timm's RandAugment or
torchvision's TrivialAugmentWide, drawn per image, `batch_auto_augment`), and the model's normalisation: one pass
over [0, 1] images.
"""
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..dataset_specs import Augmentation
from .batch_auto_augment import BatchRandAugment, BatchTrivialAugmentWide
from .transforms import rand_augment_hparams

__all__ = ['BatchPreprocess', 'RESIZE_MODES', 'auto_augment_policy', 'batch_transforms']

RESIZE_MODES = ('bicubic', 'bilinear', 'nearest')  # timm's interpolation names that torch's interpolate takes

def auto_augment_policy(name: str, data_config: Dict[str, Any]) -> Optional[nn.Module]:
    """The batch policy of an --auto-augment value for a model's `data_config` (timm's resolved one), taking and
    giving float batches in [0, 1]: timm's RandAugment of the string, with the hyper-parameters of the PIL path
    (`transforms.rand_augment_hparams`), or torchvision's TrivialAugmentWide; None for 'none'."""
    if name == 'none':
        return None
    if name == 'trivial':
        return BatchTrivialAugmentWide()
    return BatchRandAugment(name, rand_augment_hparams(data_config))


def batch_transforms(augmentation: Augmentation) -> Optional[nn.Module]:
    """The recipe on float batches (B, 3, H, W) in [0, 1], on any device, each image with its own random parameters
    (kornia.augmentation); None when there is nothing to do. Like `transforms.pil_transforms`: nearest-pixel
    resampling, zeros outside, rotation and affine always applied, each flip with probability 1/2, and torchvision's
    colour jitter (a random factor per property in [1 - v, 1 + v], applied in a random order, drawn per batch rather
    than per image). A rotation before an affine map that has no rotation of its own is drawn by the affine map, in one
    resampling: kornia's cost is per call. It runs on images already at the model's input size."""
    import kornia.augmentation as K  # the train extra's; only training on decoded batches needs it
    steps: List[nn.Module] = []
    if augmentation.hflip:
        steps.append(K.RandomHorizontalFlip(p=0.5))
    if augmentation.vflip:
        steps.append(K.RandomVerticalFlip(p=0.5))
    affine = dict(augmentation.affine) if augmentation.affine is not None else None
    if augmentation.rotation and affine is not None and not affine.get('degrees'):
        affine['degrees'] = augmentation.rotation
    elif augmentation.rotation:
        steps.append(K.RandomRotation(augmentation.rotation, resample='nearest', p=1.0))
    if affine is not None:
        steps.append(K.RandomAffine(**affine, resample='nearest', p=1.0))
    if augmentation.color_jitter is not None:
        steps.append(K.ColorJitter(*augmentation.color_jitter, p=1.0))
    # nn.Sequential, not kornia's AugmentationSequential, which tracks what masks and boxes would need (a third more
    # time here)
    return nn.Sequential(*steps) if steps else None


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
