"""Files a training run writes, each written atomically: a reader or a crash never sees half a file."""
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import torch.nn as nn
from accelerate import Accelerator
from timm.models import save_for_hf

_UMASK = os.umask(0)
os.umask(_UMASK)

__all__ = ['atomic_file', 'atomic_write_json', 'latest_training_state', 'save_model_folder', 'save_training_state']


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


def save_training_state(accelerator: Accelerator, root: Path, epoch: int) -> None:
    """Accelerate's full state (model, optimizer, scheduler, RNGs, registered objects) after `epoch`, in
    `root/epoch-NNNN`; `root/latest` names it once it is complete, then older states are removed."""
    folder = root / f'epoch-{epoch:04d}'
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder))  # every process writes its own RNG state here
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_file(root / 'latest', lambda tmp: tmp.write_text(folder.name))
        for old in root.glob('epoch-*'):
            if old.name != folder.name:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def latest_training_state(root: Path) -> Optional[Path]:
    """The last complete state saved by `save_training_state`, or None."""
    pointer = root / 'latest'
    return root / pointer.read_text().strip() if pointer.exists() else None


def save_model_folder(model: nn.Module, folder: Path, label_names: Sequence[str]) -> None:
    """`model.safetensors` + `config.json` in timm's `save_for_hf` layout, each file replaced atomically, so that
    `timm.create_model('local-dir:FOLDER', pretrained=True)` rebuilds the model with its label names."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix='.staging.'))
    try:
        save_for_hf(model, staging, model_config={'label_names': list(label_names)}, safe_serialization=True)
        for name in ('model.safetensors', 'config.json'):  # weights first: config.json marks a complete model
            _fsync(staging / name)
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
