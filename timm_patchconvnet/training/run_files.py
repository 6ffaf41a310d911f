"""The resumable state of a training run: Accelerate's state, our progress.json and the recipe's tensors (the EMA
weights) per epoch, `state/latest` naming the last complete one; `Progress`, what early stopping and resuming need;
and reading a state back without unpickling code."""
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import RNG_STATE_NAME, load
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import options
from ..errors import one_line
from ..model_folder import atomic_file, atomic_write_json
from .model import FIRST_WORDS, TrainingError

__all__ = ['PROGRESS_FILE', 'STATE_DIR', 'Progress', 'latest_training_state', 'load_accelerate_state',
           'read_progress', 'read_state_tensors', 'save_training_state']

STATE_DIR = 'state'  # in the output folder
PROGRESS_FILE = 'progress.json'  # our progress and settings, beside Accelerate's state: JSON, never unpickled


class Progress:
    """What early stopping and resuming need. Saved as JSON beside Accelerate's state (PROGRESS_FILE), not with
    `register_for_checkpointing`, which pickles it: `--resume` must not run code found in an output folder."""

    def __init__(self, run_key: Dict[str, Any]):
        self.run_key = run_key
        self.epoch = 0
        self.best_val_loss = math.inf
        self.best_epoch = 0
        self.epochs_without_improvement = 0
        self.history: List[Dict[str, Any]] = []

    def add_epoch(self, record: Dict[str, Any], val_loss: float) -> bool:
        """Count the epoch that `record` (its history line) describes; True when `val_loss`, the validation loss of
        the weights it would save (the trained ones or their EMA), is the best."""
        self.epoch = record['epoch']
        self.history.append(record)
        improved = val_loss < self.best_val_loss
        if improved:
            self.best_val_loss, self.best_epoch = val_loss, self.epoch
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return improved

    def state_dict(self) -> Dict[str, Any]:
        return dict(vars(self))

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Take over a saved run's progress; refuses one saved with other settings, before any weight is loaded."""
        fields = {k: type(v) for k, v in vars(self).items()}
        if not isinstance(state, dict) or set(state) != set(fields) or not all(
                isinstance(state[k], (int, float) if kind is float else kind) for k, kind in fields.items()):
            raise TrainingError(f'Cannot resume: the saved progress is not what this version writes (fields and types '
                                f'of {sorted(fields)}). Start a new run with --overwrite.')
        saved, current = state['run_key'], self.run_key
        changed = {k: (saved[k], v) for k, v in current.items() if k in saved and saved[k] != v}
        if changed:
            raise TrainingError(f'--resume with other settings than the saved run (saved, now): {changed}. '
                                'Resume with the same settings, or start a new run in another --output-dir.')
        # an option newer than the saved run (e.g. --loader, 0.3) is not in its key: it resumes at its default
        newer = [o.flag for o in options()
                 if o.name in current and o.name not in saved and current[o.name] != o.default]
        if newer:
            raise TrainingError(f'--resume: {", ".join(newer)} did not exist when this run was saved; resume it '
                                'without them.')
        vars(self).update(state)
        self.run_key = current


def save_training_state(accelerator: Accelerator, root: Path, epoch: int, progress: Dict[str, Any],
                        tensors: Dict[str, Dict[str, torch.Tensor]]) -> None:
    """Accelerate's state (model, optimizer, scheduler, RNGs) after `epoch`, `progress` as PROGRESS_FILE and each of
    `tensors` as a safetensors file of that name (the EMA weights), in `root/epoch-NNNN`; `root/latest` names it once
    it is complete, then older states are removed."""
    folder = root / f'epoch-{epoch:04d}'
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder))  # every process writes its own RNG state here
    if accelerator.is_main_process:
        for name, state in tensors.items():
            atomic_file(folder / name, lambda tmp, state=state: save_file(state, tmp))
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


def read_progress(state: Path) -> Dict[str, Any]:
    try:
        return json.loads((state / PROGRESS_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TrainingError(f'Cannot resume: {state / PROGRESS_FILE} is unreadable ({err}). Start a new run with '
                            '--overwrite.') from err


def read_state_tensors(file: Path) -> Dict[str, torch.Tensor]:
    """A safetensors file that `save_training_state` wrote beside Accelerate's state (the EMA weights)."""
    try:
        return load_file(file)
    except (OSError, SafetensorError) as err:
        raise TrainingError(f'Cannot resume: {file} is missing or unreadable ({one_line(err, FIRST_WORDS)}). Start a '
                            'new run with --overwrite.') from err


def load_accelerate_state(accelerator: Accelerator, state: Path) -> None:
    """Accelerate's state, read without unpickling code: weights from safetensors, the optimizer, scheduler and RNG
    states with `torch.load(weights_only=True)`. A `custom_checkpoint_*.pkl` (what `register_for_checkpointing`
    writes) would be read with `weights_only=False`, so a folder holding one is refused rather than loaded."""
    pickled = sorted(p.name for p in state.glob('custom_checkpoint_*.pkl'))
    if pickled:
        raise TrainingError(f'Cannot resume: {state} holds {", ".join(pickled)}, which this version never writes and '
                            'Accelerate would unpickle (it can run code). Start a new run with --overwrite.')
    try:
        # Accelerate skips an unreadable RNG state with a log line, and the resumed run would quietly differ
        load(state / f'{RNG_STATE_NAME}_{accelerator.process_index}.pkl', weights_only=True)
        accelerator.load_state(str(state), load_kwargs={'weights_only': True})
    except Exception as err:  # a truncated or altered file fails in many ways (safetensors, torch.load, shapes)
        raise TrainingError(f'Cannot resume: the saved state in {state} is unreadable or does not fit the model '
                            f'({type(err).__name__}: {one_line(err, FIRST_WORDS)}). Start a new run with '
                            '--overwrite.') from err
