"""The model a run trains: timm's, random or from `--pretrained` weights, its head fitted to the data, and the
pretrained cfg that describes the data it is trained on."""
import pickle
from typing import Any, Dict

import timm
import torch
import torch.nn as nn
from safetensors import SafetensorError

from ..config import TrainConfig
from ..data import DataSplits
from ..dataset_specs import dataset_spec
from ..errors import one_line
from ..model_ref import ModelRefError, parse_model_ref
from ..pretrained import PretrainedWeightsUnavailableError, create_pretrained

__all__ = ['TrainingError', 'create_training_model', 'fitted_pretrained_cfg']

FIRST_WORDS = 300  # characters of a library's message quoted in ours (torch's weights_only refusal spans a dozen lines)


class TrainingError(RuntimeError):
    """A run cannot go on: the message says why and what to do; files already saved are kept."""


def create_training_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The model to train: random, or pretrained (a tag, `local-dir:`/`hf-hub:`, or a weights file) with its
    head replaced for `num_classes` when `--num-classes` says so."""
    if cfg.num_classes is not None and cfg.num_classes != num_classes:
        raise TrainingError(f'--num-classes {cfg.num_classes} does not match the data, which has {num_classes} '
                            'classes.')
    extra: Dict[str, Any] = dict(drop_path_rate=cfg.drop_path) if cfg.drop_path else {}
    if cfg.class_tokens is not None:
        extra['class_tokens'] = cfg.class_tokens
    try:
        if cfg.pretrained is None:  # an empty --pretrained is refused as a model string, not taken for none
            return timm.create_model(cfg.model, num_classes=num_classes, **extra)
        model = _create_pretrained(cfg, extra)
    except TypeError as err:
        if 'class_tokens' in str(err):  # a model without PatchConvNet's keyword
            raise TrainingError(f'--class-tokens {cfg.class_tokens} needs a PatchConvNet model (patchconvnet_*), '
                                f'not {cfg.pretrained or cfg.model}.') from err
        raise
    except RuntimeError as err:
        if 'Unknown model' in str(err):
            raise TrainingError(f'{err}. Models: any timm model, e.g. resnet50, or one of '
                                f'{timm.list_models("patchconvnet_*")}.') from err
        if cfg.pretrained and 'state_dict' in str(err):  # load_state_dict's missing keys or size mismatch
            raise TrainingError(f'--pretrained {cfg.pretrained} does not fit --model {cfg.model} (weights of another '
                                f'architecture or size?): {one_line(err, FIRST_WORDS)}') from err
        raise
    if model.num_classes != num_classes:
        if cfg.num_classes is None:
            raise TrainingError(
                f'The pretrained model has {model.num_classes} classes and the data {num_classes}: pass '
                f'--num-classes {num_classes} to train a new head on the pretrained features.')
        model.reset_classifier(num_classes)
    return model


def _create_pretrained(cfg: TrainConfig, extra: Dict[str, Any]) -> nn.Module:
    """`--pretrained`'s model (see `model_ref`); a string that names nothing, or what cannot be read (a truncated
    file, the Hub offline), is a TrainingError naming the value."""
    try:
        ref = parse_model_ref(cfg.pretrained, architecture=cfg.model)
    except ModelRefError as err:
        raise TrainingError(f'--pretrained {err}') from err
    try:
        if ref.source == 'file':
            file_classes = _head_size(timm.models.load_state_dict(str(ref.path)))
            overlay = dict(file=str(ref.path), num_classes=file_classes)
            return timm.create_model(ref.name, pretrained=True, num_classes=file_classes,
                                     pretrained_cfg_overlay=overlay, **extra)
        return create_pretrained(ref.timm_name, **extra)
    except PretrainedWeightsUnavailableError as err:
        raise TrainingError(f'--pretrained {cfg.pretrained}: {one_line(err)}') from err
    except (OSError, SafetensorError, pickle.UnpicklingError, EOFError) as err:
        raise TrainingError(f'--pretrained {cfg.pretrained} cannot be read ({type(err).__name__}: '
                            f'{one_line(err, FIRST_WORDS)}). Check the file, or for hf-hub: the network and '
                            'HF_HUB_OFFLINE.') from err


def fitted_pretrained_cfg(pretrained_cfg: Dict[str, Any], cfg: TrainConfig, splits: DataSplits) -> Dict[str, Any]:
    """A model's `pretrained_cfg` made to describe this training, as a new dict: the data's image size, classes and
    label names, and the normalisation of its pretrained weights (or, from scratch, of the data). A run decides it
    once, before anything reads it: the loaders, the saved config.json, the attention grid and the slide maps."""
    spec = dataset_spec(splits.dataset)
    # the data set's size, so that a model's default tag (e.g. 224 for ImageNet weights) does not decide it
    size = cfg.img_size or spec.img_size or pretrained_cfg['input_size'][-1]
    fitted = dict(pretrained_cfg, input_size=(3, size, size), crop_pct=1.0, num_classes=len(splits.label_names),
                  label_names=tuple(splits.label_names), pool_size=None)
    if not cfg.pretrained:
        mean, std = spec.mean_std
        fitted.update(mean=mean, std=std, tag=None)
    return fitted


def _head_size(state_dict: Dict[str, torch.Tensor]) -> int:
    if 'head.weight' in state_dict:
        return state_dict['head.weight'].shape[0]
    per_class_units = [k for k in state_dict if k.startswith('head.') and k.endswith('.weight')]
    if per_class_units:  # the official multi-class-token head, one Linear(dim, 1) per class
        return len(per_class_units)
    raise TrainingError('Cannot tell the number of classes of the --pretrained file (no head.weight): is it a '
                        'checkpoint of another architecture?')
