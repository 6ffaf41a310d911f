"""The folder of a trained model, as timm's `save_for_hf` writes it (model.safetensors + config.json), and the
atomic writes behind every file a run or an export writes: a reader or a crash never sees half a file.

Training writes these folders and the Hub export copies them; `timm.create_model('local-dir:FOLDER',
pretrained=True)` and transformers' `AutoModelForImageClassification.from_pretrained(FOLDER)` load them.
"""
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import torch
import torch.nn as nn
from timm.models import save_for_hf

__all__ = ['MODEL_FILES', 'TRANSFORMERS_OWN_ARGS', 'atomic_file', 'atomic_write_json', 'portable_model_config',
           'save_model_folder', 'write_model_config']

_UMASK = os.umask(0)
os.umask(_UMASK)

MODEL_FILES = ('model.safetensors', 'config.json')

# What transformers' timm wrapper (TimmWrapperForImageClassification, TimmWrapperModel) passes to timm.create_model
# itself, besides `**model_args`: `pretrained=False`, and `num_classes` (the config's num_labels, read from the
# top-level num_classes; 0 for TimmWrapperModel). Repeated in model_args, they collide: "got multiple values for
# keyword argument 'num_classes'". timm's save_for_hf (get_model_args) puts num_classes there.
TRANSFORMERS_OWN_ARGS = ('pretrained', 'num_classes')


def atomic_file(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then move it over `path` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        _fsync(tmp)  # on disk before it takes the name: a power cut leaves the old file or the new one
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; give it the permissions of a plain open()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync(path) -> None:
    with open(path, 'rb+') as written:
        os.fsync(written.fileno())


def atomic_write_json(path: Path, data: Dict[str, Any]) -> None:
    atomic_file(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + '\n'))


def save_model_folder(model: nn.Module, folder: Path, label_names: Sequence[str], mpp: Optional[float] = None) -> None:
    """`model.safetensors` + `config.json` in timm's `save_for_hf` layout, each file replaced atomically, so that
    `timm.create_model('local-dir:FOLDER', pretrained=True)` rebuilds the model with its label names, and so does
    transformers' `AutoModelForImageClassification.from_pretrained(FOLDER)` (see `portable_model_config`). `mpp`:
    the microns per pixel of the training images, where known (whole-slide inference reads slides at that scale)."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix='.staging.'))
    try:
        with _default_layout(model):
            extra = {'mpp': mpp} if mpp else {}
            save_for_hf(model, staging, model_config={'label_names': list(label_names), **extra},
                        safe_serialization=True)
        write_model_config(staging / 'config.json', json.loads((staging / 'config.json').read_text()))
        for name in ('model.safetensors', 'config.json'):  # weights first: config.json marks a complete model
            _fsync(staging / name)
            os.chmod(staging / name, 0o666 & ~_UMASK)  # as atomic_file: what a plain open() would have made
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def _default_layout(model: nn.Module) -> Iterator[None]:
    """The model's weights in the default (contiguous) layout for the duration: safetensors refuses the strided
    tensors of a channels-last model, as training on CUDA makes it; channels-last again afterwards."""
    channels_last = any(not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
                        for p in model.parameters() if p.dim() == 4)
    if not channels_last:
        yield
        return
    model.to(memory_format=torch.contiguous_format)
    try:
        yield
    finally:
        model.to(memory_format=torch.channels_last)


def portable_model_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """timm's `save_for_hf` config.json (as a dict) made loadable by transformers as well as timm: `model_args`
    without `TRANSFORMERS_OWN_ARGS`. timm reads the class count from the top-level `num_classes`, which stays
    (and is taken from model_args if it is missing there). Fixes configs written before this too; the rest of the
    config, key order included, is unchanged, and a config that needs no fix comes back equal."""
    config = dict(config)
    model_args = dict(config.get('model_args') or {})
    num_classes = model_args.get('num_classes')
    if num_classes is not None and config.setdefault('num_classes', num_classes) != num_classes:
        raise ValueError(f"config.json disagrees with itself: num_classes {config['num_classes']} at the top, "
                         f'{num_classes} in model_args.')
    for key in TRANSFORMERS_OWN_ARGS:
        model_args.pop(key, None)
    if model_args:
        config['model_args'] = model_args
    else:  # save_for_hf writes no model_args when there are none
        config.pop('model_args', None)
    return config


def write_model_config(path: Path, config: Dict[str, Any]) -> None:
    """Write `config` (timm's save_for_hf model config) to `path` atomically, made portable
    (`portable_model_config`), in save_for_hf's format (json.dump, indent 2): the one way our config.json files are
    written, by training and by the Hub export, so the export of a new run is byte for byte the run's file."""
    text = json.dumps(portable_model_config(config), indent=2)
    atomic_file(path, lambda tmp: tmp.write_text(text))
