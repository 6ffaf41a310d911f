"""A finished train.py run as the benchmarks read it: its model, and its data split exactly as the run split it, so
that its test split is the run's own held-out one (faithfulness.py, precision_agreement.py)."""
import argparse
import json
from typing import Optional, Tuple

import timm
import torch
from timm.data import resolve_data_config

from timm_patchconvnet.model_ref import ModelRef, ModelRefError, parse_model_ref  # the package registers the models


def training_run(text: str) -> ModelRef:
    """An argparse type: a training folder (with its metrics.json), read as every command reads a model."""
    try:
        ref = parse_model_ref(text)
    except ModelRefError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    if ref.run_folder is None:
        raise argparse.ArgumentTypeError(f'{text!r} is not a training folder (train.py --output-dir, with its '
                                         'metrics.json)')
    return ref


def recorded_config(run: ModelRef) -> dict:
    """The run's training options, as train.py recorded them in metrics.json."""
    return json.loads((run.run_folder / 'metrics.json').read_text())['config']


def load_run_splits(run: ModelRef, data_dir: Optional[str]):
    """The run's model (eval mode) and its `DataSplits`, read from `data_dir` (default: where the run read them)
    with the run's data set, seed, fractions and patient split."""
    from timm_patchconvnet.data import load_splits

    model = timm.create_model(run.timm_name, pretrained=True).eval()
    config = recorded_config(run)
    # `split` (a published patient split) is only recorded by newer runs
    published = {name: config[key] for key, name in (('split', 'split_protocol'),
                                                      ('allow_missing_patients', 'allow_missing_patients'))
                 if key in config}
    splits = load_splits(config['dataset'], data_dir=data_dir or config['data_dir'], hub_id=config['hub_id'],
                         seed=config['seed'], val_fraction=config['val_fraction'],
                         test_fraction=config['test_fraction'], **published)
    return model, splits


def preprocessed(model: torch.nn.Module, dataset_name: str, split) -> Tuple[torch.Tensor, torch.Tensor]:
    """The images of `split` (a `datasets.Dataset` of the data set `dataset_name`) preprocessed as in evaluation
    (N, C, H, W), and their labels (N,)."""
    from timm_patchconvnet.data import build_transform

    transform = build_transform(dataset_name, resolve_data_config(model=model), train=False)
    images = torch.stack([transform(image.convert('RGB')) for image in split['image']])
    return images, torch.tensor(split['label'])
