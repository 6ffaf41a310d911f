"""The per-image (PIL) path's transforms: a data set's augmentation recipe as torchvision transforms, then the
model's preprocessing. `device_transforms` is the same recipe on decoded batches."""
from typing import Any, Callable, Dict, List, Optional

import torch
from PIL import Image
from torchvision import transforms

from ..dataset_specs import DATASETS, GENERIC, Augmentation, dataset_spec
from ..images import exact_size_transform
from .reader import DataError

__all__ = ['build_transform', 'pil_auto_augment', 'pil_transforms', 'rand_augment_hparams']


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


def rand_augment_hparams(data_config: Dict[str, Any]) -> Dict[str, Any]:
    """The hyper-parameters timm's `create_transform` gives RandAugment for a model's `data_config`: the fill is the
    mean colour, the absolute translations at most 45% of the input."""
    return dict(translate_const=int(min(data_config['input_size'][1:]) * 0.45),
                img_mean=tuple(min(255, round(255 * m)) for m in data_config['mean']))


def pil_auto_augment(name: str, data_config: Dict[str, Any]) -> Optional[Callable]:
    """An --auto-augment policy of a PIL image: timm's own RandAugment from its string (magnitude noise included),
    or torchvision's TrivialAugmentWide; None for 'none'."""
    if name == 'none':
        return None
    if name == 'trivial':
        return transforms.TrivialAugmentWide()
    from timm.data.auto_augment import rand_augment_transform
    return rand_augment_transform(name, rand_augment_hparams(data_config))


def build_transform(dataset: str, data_config: Dict[str, Any], train: bool,
                    auto_augment: str = 'none') -> Callable[[Image.Image], torch.Tensor]:
    """The model's preprocessing (exact resize to `input_size`, normalisation), after the augmentation of the data
    set `dataset` (its DatasetSpec's; 'generic' for any other source) and the `auto_augment` policy when training.
    `data_config` is timm's resolved data config of the model."""
    if dataset not in DATASETS and dataset != GENERIC.name:
        raise DataError(f'Unknown data set {dataset!r}: use one of {", ".join([*DATASETS, GENERIC.name])}.')
    augmentation = pil_transforms(dataset_spec(dataset).augmentation) if train else []
    policy = pil_auto_augment(auto_augment, data_config) if train else None
    if policy is not None:
        augmentation.append(policy)
    return transforms.Compose([*augmentation, *exact_size_transform(data_config).transforms])
