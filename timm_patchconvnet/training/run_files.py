"""The files of a training run besides its model folder: the resumable state (Accelerate's state and our
progress.json per epoch, `state/latest` naming the last complete one) and the clean-up of a killed run."""
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

from ..model_folder import atomic_file, atomic_write_json

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = ['PROGRESS_FILE', 'RUN_OUTPUTS', 'latest_training_state', 'remove_leftovers', 'save_training_state']

PROGRESS_FILE = 'progress.json'  # our progress and settings, beside Accelerate's state: JSON, never unpickled
RUN_OUTPUTS = ('model.safetensors', 'config.json', 'metrics.json', 'attention.png')  # a run's results


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


