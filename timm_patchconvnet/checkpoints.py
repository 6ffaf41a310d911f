"""Files a training run writes, each written atomically: a reader or a crash never sees half a file."""
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence

import torch.nn as nn
from timm.models import save_for_hf

if TYPE_CHECKING:  # Accelerate only for training: the Hub export uses this module without it
    from accelerate import Accelerator

_UMASK = os.umask(0)
os.umask(_UMASK)

__all__ = ['PROGRESS_FILE', 'RUN_OUTPUTS', 'TRANSFORMERS_OWN_ARGS', 'atomic_file', 'atomic_write_json',
           'latest_training_state', 'portable_model_config', 'remove_leftovers', 'save_model_folder',
           'save_training_state', 'write_model_config']

PROGRESS_FILE = 'progress.json'  # our progress and settings, beside Accelerate's state: JSON, never unpickled
RUN_OUTPUTS = ('model.safetensors', 'config.json', 'metrics.json', 'attention.png')  # a run's results

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


def save_training_state(accelerator: 'Accelerator', root: Path, epoch: int, progress: Dict[str, Any]) -> None:
    """Accelerate's state (model, optimizer, scheduler, RNGs) after `epoch` and `progress` as PROGRESS_FILE, in
    `root/epoch-NNNN`; `root/latest` names it once it is complete, then older states are removed."""
    folder = root / f'epoch-{epoch:04d}'
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder))  # every process writes its own RNG state here
    if accelerator.is_main_process:
        atomic_write_json(folder / PROGRESS_FILE, progress)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_file(root / 'latest', lambda tmp: tmp.write_text(folder.name))
        for old in root.glob('epoch-*'):
            if old.name != folder.name:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def latest_training_state(root: Path) -> Optional[Path]:
    """The last complete state saved by `save_training_state`, or None; ValueError if `root/latest` names anything
    but one of its `epoch-NNNN` folders (it must not lead a resume out of `root`)."""
    pointer = root / 'latest'
    if not pointer.exists():
        return None
    name = pointer.read_text(errors='replace').strip()
    if not re.fullmatch(r'epoch-\d{4,}', name):
        raise ValueError(f'{pointer} should name an epoch-NNNN folder, not {name[:40]!r}')
    return root / name


def remove_leftovers(folder: Path) -> None:
    """What a killed run leaves behind in its output `folder`: `save_model_folder`'s staging folders, `atomic_file`'s
    temporary files (`.NAME.*`) and states that `state/latest` does not name (a save cut short). Call it only while
    holding the folder's lock: a running run's files look the same."""
    state = folder / 'state'
    try:
        latest = latest_training_state(state)
    except (OSError, ValueError):  # a broken pointer: keep every state, --resume says what is wrong
        return
    temporary = [f'.{name}.*' for name in (*RUN_OUTPUTS, 'latest')]
    for parent, patterns in ((folder, ['.staging.*', '.probe-*', *temporary]), (state, ['epoch-*', *temporary])):
        for pattern in patterns:
            for path in parent.glob(pattern):
                if path == latest:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def save_model_folder(model: nn.Module, folder: Path, label_names: Sequence[str]) -> None:
    """`model.safetensors` + `config.json` in timm's `save_for_hf` layout, each file replaced atomically, so that
    `timm.create_model('local-dir:FOLDER', pretrained=True)` rebuilds the model with its label names, and so does
    transformers' `AutoModelForImageClassification.from_pretrained(FOLDER)` (see `portable_model_config`)."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix='.staging.'))
    try:
        save_for_hf(model, staging, model_config={'label_names': list(label_names)}, safe_serialization=True)
        write_model_config(staging / 'config.json', json.loads((staging / 'config.json').read_text()))
        for name in ('model.safetensors', 'config.json'):  # weights first: config.json marks a complete model
            _fsync(staging / name)
            os.chmod(staging / name, 0o666 & ~_UMASK)  # as atomic_file: what a plain open() would have made
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
