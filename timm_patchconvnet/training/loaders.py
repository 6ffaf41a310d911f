"""The data loaders of a run: decoded batches preprocessed on the device (the default), or PIL per image.

`--loader decoded` reads each split from the decoded cache (`decode_cache`): a DataLoader of whole uint8 batches
cut from a memory-mapped array, with augmentation and normalisation on the training device (`BatchPreprocess`).
`--loader pil` is the per-image path: `datasets` rows decoded and transformed by PIL in worker processes.
"""
import os
from typing import Any, Dict, NamedTuple, Optional

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset

from ..config import DECODED, TrainConfig
from ..data import DataSplits, ImageClassificationDataset, build_transform
from ..dataset_specs import SPLIT_NAMES, dataset_spec
from ..data.decode_cache import DecodeSettings, cache_root, decode_split, keep_batch
from ..data.device_transforms import BatchPreprocess, auto_augment_policy
from .recipe import repeat_sampler

__all__ = ['Loaders', 'build_loaders', 'default_workers', 'model_input']

class Loaders(NamedTuple):
    train: DataLoader
    validation: DataLoader
    test: DataLoader
    # decoded batches (uint8) to model input on the device; None when the loaders already give model input (pil)
    preprocess: Optional[BatchPreprocess]
    unreadable: int = 0  # images of the splits that did not decode (only the decoded path finds them here)


def default_workers(num_processes: int, cuda: bool) -> int:
    """Worker processes of a PIL loader, from the cores of this process (its share of the machine's). Training on a
    GPU: all of them but one, at most 8. On a CPU the workers take cores from the model's own threads: none below 4
    cores (on 2 cores, ti12 trained at 392 img/s without a worker and 364 with one), else a quarter of them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    share = cores // max(1, num_processes)
    if cuda:
        return max(0, min(8, share - 1))
    return 0 if share < 4 else min(8, share // 4)


def build_loaders(cfg: TrainConfig, splits: DataSplits, data_config: Dict[str, Any],
                  accelerator: Accelerator) -> Loaders:
    """The train (shuffled), validation and test loaders of `splits` for a model's input (`data_config`, timm's
    resolved data config: size, crop, normalisation). On CUDA, batches are pinned and copied without blocking, in
    channels-last layout. `Loaders.unreadable` counts the images left out."""
    cuda = accelerator.device.type == 'cuda'
    if cfg.loader == DECODED:
        preprocess = BatchPreprocess.for_model(dataset_spec(splits.dataset).augmentation, data_config,
                                               channels_last=cuda,
                                               policy=auto_augment_policy(cfg.auto_augment, data_config)
                                               ).to(accelerator.device)
        settings = DecodeSettings.from_data_config(data_config, native_size=dataset_spec(splits.dataset).img_size)
        root = cache_root(cfg.cache_dir)
        # every process asks; the entry's file lock lets one decode while the others wait (no collective timeout)
        decoded = {name: decode_split(getattr(splits, name), settings, root, splits.source_key,
                                      name=f'{splits.dataset}-{name}', verify=cfg.verify_cache)
                   for name in SPLIT_NAMES}
        common = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers or 0, collate_fn=keep_batch,
                      pin_memory=cuda)
        return Loaders(_train_loader(cfg, decoded['train'], accelerator.num_processes, common),
                       DataLoader(decoded['validation'], **common), DataLoader(decoded['test'], **common),
                       preprocess, sum(d.unreadable for d in decoded.values()))
    workers = default_workers(accelerator.num_processes, cuda) if cfg.num_workers is None else cfg.num_workers
    common = dict(batch_size=cfg.batch_size, num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0)
    transforms = {train: build_transform(splits.dataset, data_config, train=train, auto_augment=cfg.auto_augment)
                  for train in (True, False)}
    return Loaders(
        _train_loader(cfg, ImageClassificationDataset(splits.train, transforms[True]), accelerator.num_processes,
                      common),
        DataLoader(ImageClassificationDataset(splits.validation, transforms[False]), **common),
        DataLoader(ImageClassificationDataset(splits.test, transforms[False]), **common),
        None)


def _train_loader(cfg: TrainConfig, dataset: Dataset, num_processes: int, common: Dict[str, Any]) -> DataLoader:
    """Shuffled, or with --aug-repeats over several processes laid out for Accelerate's sharding (recipe.py)."""
    sampler = repeat_sampler(cfg, dataset, num_processes)
    return DataLoader(dataset, shuffle=sampler is None, sampler=sampler, **common)


def model_input(images: torch.Tensor, preprocess: Optional[BatchPreprocess], train: bool) -> torch.Tensor:
    """A loader's batch as the model takes it."""
    return images if preprocess is None else preprocess(images, train=train)

