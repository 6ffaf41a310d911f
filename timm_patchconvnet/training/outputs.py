"""The outputs of a training run, one entry of `OUTPUTS` each: the files or folders it owns in the output folder
and the function that writes them, after every epoch or once at the end. --overwrite removes what they own, their
markers make a folder hold a previous run, and the clean-up of a killed run finds their temporary files from here:
adding an output is one function and one entry."""
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from accelerate import Accelerator

from ..data import DataSplits, build_transform
from ..data.splits import column
from ..model_folder import MODEL_FILES, atomic_write_json, save_model_folder
from ..patchconvnet import PatchConvNet
from ..safe_paths import plain_name
from ..slides import SLIDES_DIR, predict_slide, render_slide, slide_from_rows
from .model import TrainingError
from .run_files import STATE_DIR, save_training_state
from .visualize import save_attention_grid

__all__ = ['ATTENTION_FILE', 'METRICS_FILE', 'OUTPUTS', 'WEIGHTS_FILE', 'EpochEnd', 'FinishedRun', 'Output',
           'write_outputs']

WEIGHTS_FILE = MODEL_FILES[0]  # the best model's weights; its config.json is MODEL_FILES[1]
METRICS_FILE = 'metrics.json'
ATTENTION_FILE = 'attention.png'


class EpochEnd(NamedTuple):
    """What the outputs written after each epoch read (on every process)."""
    accelerator: Accelerator
    model: nn.Module  # the weights saved when validation improves: the model being trained, unwrapped, or its EMA
    improved: bool  # its validation loss is the best so far
    label_names: Sequence[str]
    epoch: int
    progress: Dict[str, Any]  # Progress.state_dict()
    state_tensors: Dict[str, Dict[str, torch.Tensor]]  # Recipe.state_tensors(): safetensors files saved with the state
    mpp: Optional[float] = None  # microns per pixel of the data's images (DatasetSpec.mpp), saved in config.json


class FinishedRun(NamedTuple):
    """What the outputs written at the end read (on the main process)."""
    best: nn.Module  # the best epoch's model, unwrapped
    metrics: Dict[str, Any]  # metrics.json
    splits: DataSplits
    data_config: Dict[str, Any]  # the model's resolved data config, as the run decided it


class Output(NamedTuple):
    owns: Tuple[str, ...]  # files or folders in the output folder: what --overwrite removes
    write: Callable[[Any, Path], None]  # (an EpochEnd or a FinishedRun, the output folder)
    each_epoch: bool  # written after each epoch by every process, else once at the end by the main process
    marker: Optional[str] = None  # a file that shows a previous run: its folder is not started over unasked


def _save_best_model(epoch: EpochEnd, out: Path) -> None:
    if epoch.improved and epoch.accelerator.is_main_process:
        save_model_folder(epoch.model, out, epoch.label_names, mpp=epoch.mpp)


def _save_state(epoch: EpochEnd, out: Path) -> None:
    save_training_state(epoch.accelerator, out / STATE_DIR, epoch.epoch, epoch.progress, epoch.state_tensors)


def _save_metrics(run: FinishedRun, out: Path) -> None:
    atomic_write_json(out / METRICS_FILE, run.metrics)


def _has_attention(model: nn.Module) -> bool:
    return isinstance(model, PatchConvNet) and model.attn_pool is not None


def _save_attention_grid(run: FinishedRun, out: Path) -> None:
    if not _has_attention(run.best):
        return
    examples = run.splits.test.select(range(min(16, len(run.splits.test))))
    transform = build_transform(run.splits.dataset, run.data_config, train=False)
    save_attention_grid(run.best, examples['image'], examples['label'], run.splits.label_names, transform,
                        out / ATTENTION_FILE)


def _save_slides(run: FinishedRun, out: Path, most: int = 3) -> None:
    """Whole-slide maps of the `most` test patients with the most IDC patches, for two classes split by patient
    (where the test metrics hold a threshold chosen on validation)."""
    test = run.splits.test
    if not _has_attention(run.best) or 'threshold' not in run.metrics['test'] or 'patient_id' not in test.column_names:
        return
    threshold = run.metrics['test']['threshold']
    patients = column(test, 'patient_id').astype(str)
    positives = np.bincount(np.unique(patients, return_inverse=True)[1], weights=column(test, 'label'))
    for patient in np.unique(patients)[np.argsort(-positives, kind='stable')[:most]]:
        slide = slide_from_rows(test, patient)
        file = out / SLIDES_DIR / f'{plain_name(patient, "patient id")}.png'  # the loader refused others already
        render_slide(slide, predict_slide(run.best, slide), file, threshold,
                     title=f'test patient {patient}; threshold {threshold:.2f} (chosen on validation)')


OUTPUTS = (
    Output(MODEL_FILES, _save_best_model, each_epoch=True, marker=WEIGHTS_FILE),  # when validation improves
    Output((STATE_DIR,), _save_state, each_epoch=True),  # a previous run's state is found by its `latest`
    Output((METRICS_FILE,), _save_metrics, each_epoch=False, marker=METRICS_FILE),
    Output((ATTENTION_FILE,), _save_attention_grid, each_epoch=False),
    Output((SLIDES_DIR,), _save_slides, each_epoch=False),
)


def write_outputs(run: Union[EpochEnd, FinishedRun], out: Path) -> None:
    """Write the outputs of this point of the run (after an epoch, or at the end) into `out`, in OUTPUTS' order."""
    for output in OUTPUTS:
        if output.each_epoch == isinstance(run, EpochEnd):
            with _writing(out):
                output.write(run, out)


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """A full disk or a folder made read-only mid-run: one clear error. Every file is replaced atomically, so what
    was saved before stays whole."""
    try:
        yield
    except OSError as err:
        raise TrainingError(f'Cannot write to {out}: {err}. What was saved before is kept: free space or fix '
                            'the permissions, then --resume.') from err
