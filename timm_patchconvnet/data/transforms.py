"""The per-image (PIL) path's transforms: a data set's augmentation recipe as torchvision transforms, then the
model's preprocessing. `device_transforms` is the same recipe on decoded batches."""
from typing import Any, Callable, Dict, List

import torch
from PIL import Image
from torchvision import transforms

from ..dataset_specs import DATASETS, GENERIC, Augmentation, dataset_spec
from ..images import exact_size_transform
from .reader import DataError

__all__ = ['build_transform', 'pil_transforms']


def pil_transforms(augmentation: Augmentation) -> List[Callable]:
    """The recipe as torchvision transforms of a PIL image."""
    steps: List[Callable] = []
    if augmentation.hflip:
        steps.append(transforms.RandomHorizontalFlip())
    if augmentation.vflip:
        steps.append(transforms.RandomVerticalFlip())
    if augmentation.rotation:
        steps.append(transforms.RandomRotation(augmentation.rotation))
    if augmentation.affine is not None:
        steps.append(transforms.RandomAffine(**augmentation.affine))
    if augmentation.color_jitter is not None:
        steps.append(transforms.ColorJitter(*augmentation.color_jitter))
    return steps


def build_transform(dataset: str, data_config: Dict[str, Any], train: bool) -> Callable[[Image.Image], torch.Tensor]:
    """The model's preprocessing (exact resize to `input_size`, normalisation), after the augmentation of the data
    set `dataset` (its DatasetSpec's; 'generic' for any other source) when training. `data_config` is timm's resolved
    data config of the model."""
    if dataset not in DATASETS and dataset != GENERIC.name:
        raise DataError(f'Unknown data set {dataset!r}: use one of {", ".join([*DATASETS, GENERIC.name])}.')
    augmentation = pil_transforms(dataset_spec(dataset).augmentation) if train else []
    return transforms.Compose([*augmentation, *exact_size_transform(data_config).transforms])
