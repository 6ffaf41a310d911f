"""The training engine behind `train.py`: Accelerate for devices, precision and processes; timm for models and
optimizers; `datasets` for data; scikit-learn for metrics. Reads top to bottom like Accelerate's examples."""
import json
import logging
import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import RNG_STATE_NAME, TorchDynamoPlugin, load, set_seed
from filelock import FileLock, Timeout
from safetensors.torch import load_file
from timm.data import resolve_data_config
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import TORCH_OPTIMIZER_LAMB, TrainConfig, options, resume_key
from ..data import DataSplits, build_transform, load_splits
from ..data.decode_cache import DecodeCacheError, ImageReadError
from ..data.device_transforms import BatchPreprocess
from ..data.splits import column
from ..dataset_specs import SPLIT_NAMES
from ..errors import one_line
from ..model_folder import atomic_write_json, save_model_folder
from ..patchconvnet import PatchConvNet
from ..slides import SLIDES_DIR, predict_slide, render_slide, slide_from_rows
from .loaders import Loaders, build_loaders, model_input
from .metrics import classification_metrics, patient_results
from .model import FIRST_WORDS, TrainingError, create_training_model, fit_to_data
from .run_files import PROGRESS_FILE, RUN_OUTPUTS, latest_training_state, remove_leftovers, save_training_state
from .visualize import save_attention_grid

__all__ = ['TrainingError', 'create_training_model', 'evaluate_checkpoint', 'evaluate_pretrained', 'train']

_logger = logging.getLogger(__name__)


LOG_EVERY = 50  # steps between reads of the training loss (each read waits for the device)


class Progress:
    """What early stopping and resuming need. Saved as JSON beside Accelerate's state (PROGRESS_FILE), not with
    `register_for_checkpointing`, which pickles it: `--resume` must not run code found in an output folder."""

    def __init__(self, run_key: Dict[str, Any]):
        self.run_key = run_key
        self.epoch = 0
        self.best_val_loss = math.inf
        self.best_epoch = 0
        self.epochs_without_improvement = 0
        self.history: List[Dict[str, float]] = []

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


def _create_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.opt == TORCH_OPTIMIZER_LAMB:
        import torch_optimizer  # the package the seed paper used; timm's 'lamb' is deit's algorithm
        no_decay = model.no_weight_decay() if hasattr(model, 'no_weight_decay') else ()
        groups = param_groups_weight_decay(model, cfg.weight_decay, no_weight_decay_list=no_decay)
        return torch_optimizer.Lamb(groups, lr=cfg.lr)
    return create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)


def _lr_lambda(cfg: TrainConfig, total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if cfg.sched == 'constant':
            return 1.
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1. + math.cos(math.pi * min(1., progress)))
    return factor


@torch.no_grad()
def _predict(model: nn.Module, loader: DataLoader, accelerator: Accelerator,
             preprocess: Optional[BatchPreprocess]) -> Tuple[np.ndarray, np.ndarray, float]:
    """Labels, class probabilities and mean loss over a whole split, gathered from every process."""
    model.eval()
    labels, logits = [], []
    for images, targets in loader:  # kept on the device until the end: reading each batch would wait for it
        batch_logits, targets = accelerator.gather_for_metrics(
            (model(model_input(images, preprocess, train=False)).float(), targets))
        labels.append(targets)
        logits.append(batch_logits)
    labels, logits = torch.cat(labels), torch.cat(logits)
    return labels.cpu().numpy(), logits.softmax(-1).cpu().numpy(), F.cross_entropy(logits, labels).item()


def _loaders(cfg: TrainConfig, splits: DataSplits, model: nn.Module, accelerator: Accelerator) -> Loaders:
    if cfg.batch_size > len(splits.train):
        raise TrainingError(f'--batch-size {cfg.batch_size} is larger than the {len(splits.train)} training images: '
                            'lower it or use more data.')
    try:
        loaders = build_loaders(cfg, splits, model, accelerator)
    except (DecodeCacheError, ImageReadError, ImportError) as err:
        raise TrainingError(str(err)) from err
    if loaders.unreadable:
        splits.left_out.skipped_images += loaders.unreadable
    return loaders


def _accelerator(cfg: TrainConfig, **kwargs: Any) -> Accelerator:
    """Accelerate for `cfg`: its precision, torch.compile (inductor, fullgraph) with --compile, and on CUDA
    copies of pinned batches that do not block."""
    dynamo = TorchDynamoPlugin(backend='inductor', fullgraph=True) if cfg.compile else None
    return Accelerator(
        cpu=_processes_without_gpus(), mixed_precision=cfg.mixed_precision, dynamo_plugin=dynamo,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, non_blocking=torch.cuda.is_available()),
        **kwargs)


def _processes_without_gpus() -> bool:
    """Several processes (accelerate launch --multi_gpu, torchrun) on a machine without GPUs: Accelerate only sets up
    its gloo CPU backend when told `cpu=True`, and `accelerate launch --cpu` starts a single process."""
    return int(os.environ.get('WORLD_SIZE', '1')) > 1 and not torch.cuda.is_available()


def _claim_output_dir(out: Path) -> FileLock:
    """Make sure `out` is a folder this run can write to (now, not at the first save an epoch later) and lock it for
    the whole run: two runs in one folder would overwrite each other's model and metrics."""
    probe = out / f'.probe-{os.getpid()}'
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b'probe')
        probe.unlink(missing_ok=True)  # another run's clean-up of a killed run's probe may have been faster
    except OSError as err:
        raise TrainingError(f'--output-dir {out} cannot be written to: {err.strerror or err}. Choose another '
                            '--output-dir.') from err
    lock = FileLock(out / '.lock', timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise TrainingError(f'{out} is in use by another run (lock {out / ".lock"}): wait for it to end, or choose '
                            'another --output-dir.') from None
    return lock


def _check_output_dir(cfg: TrainConfig, out: Path) -> Optional[Path]:
    """The state to resume from, if asked; refuses to start over a previous run unless told to. Any result or saved
    state in `out` counts as a run, so that a folder whose state/ was deleted is not silently replaced."""
    try:
        previous = latest_training_state(out / 'state')
    except (OSError, ValueError) as err:
        raise TrainingError(f'The saved state of {out} is unreadable ({err}): start a new run with --overwrite or in '
                            'another --output-dir.') from err
    if cfg.resume:
        if previous is None:
            raise TrainingError(f'Nothing to resume: {out / "state"} holds no saved training state.')
        if not (out / 'model.safetensors').is_file():
            raise TrainingError(f'Cannot resume: {out / "model.safetensors"} (the best model so far) is missing. '
                                'Start a new run with --overwrite.')
        if not (previous / PROGRESS_FILE).is_file():
            raise TrainingError(f'Cannot resume: {previous / PROGRESS_FILE} is missing, so {previous} is incomplete or '
                                'was saved by an older version. Start a new run with --overwrite.')
        return previous
    holds_run = previous is not None or any((out / name).exists() for name in ('model.safetensors', 'metrics.json'))
    if holds_run and not cfg.overwrite:
        raise TrainingError(f'{out} already holds a run: pass --resume to continue it, --overwrite to replace '
                            'it, or choose another --output-dir.')
    return None


def _clear_previous_run(out: Path) -> None:
    """--overwrite: remove the replaced run's results and state before training, so that nothing of it can pass
    as this run's (a crash before the first save, or a resume, would otherwise find it)."""
    for name in RUN_OUTPUTS:
        (out / name).unlink(missing_ok=True)
    for folder in ('state', SLIDES_DIR):
        shutil.rmtree(out / folder, ignore_errors=True)


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """A full disk or a folder made read-only mid-run: one clear error. Every file is replaced atomically, so what
    was saved before stays whole."""
    try:
        yield
    except OSError as err:
        raise TrainingError(f'Cannot write to {out}: {err}. What was saved before is kept: free space or fix '
                            'the permissions, then --resume.') from err


def _read_progress(state: Path) -> Dict[str, Any]:
    try:
        return json.loads((state / PROGRESS_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TrainingError(f'Cannot resume: {state / PROGRESS_FILE} is unreadable ({err}). Start a new run with '
                            '--overwrite.') from err


def _load_accelerate_state(accelerator: Accelerator, state: Path) -> None:
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
                            f'({type(err).__name__}: {one_line(err, FIRST_WORDS)}). Start a new run with --overwrite.') from err


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Train, keep the best model on validation loss, stop early, evaluate it on the test split.

    Writes into `cfg.output_dir`: model.safetensors + config.json (the best model), metrics.json, attention.png
    and state/ (Accelerate's state and our progress.json, to resume from), holding `.lock` while it runs.
    """
    started = time.time()
    accelerator = _accelerator(cfg, gradient_accumulation_steps=cfg.grad_accum_steps, log_with=cfg.report_to,
                               project_dir=cfg.output_dir)
    set_seed(cfg.seed)
    if accelerator.device.type == 'cpu' and torch.get_num_threads() * accelerator.num_processes < (os.cpu_count() or 1):
        accelerator.print(f'note: {accelerator.num_processes} process(es) x {torch.get_num_threads()} thread(s) on '
                          f'{os.cpu_count()} CPUs (accelerate launch sets OMP_NUM_THREADS=1 unless given '
                          '--num_cpu_threads_per_process)')
    out = Path(cfg.output_dir)
    created = not out.exists()
    lock = _claim_output_dir(out) if accelerator.is_main_process else None
    try:
        return _train(cfg, accelerator, out, started)
    except BaseException:
        if lock is not None and created:  # a run that failed before its first save leaves no empty folder behind
            _remove_if_empty(out, lock)
        raise
    finally:
        if lock is not None:
            lock.release()


def _remove_if_empty(out: Path, lock: FileLock) -> None:
    """Remove the folder this failed run created, if it holds nothing but the lock."""
    if {p.name for p in out.iterdir()} == {'.lock'}:
        lock.release()
        Path(lock.lock_file).unlink(missing_ok=True)
        try:
            out.rmdir()
        except OSError:  # something appeared meanwhile: keep it
            pass


def _train(cfg: TrainConfig, accelerator: Accelerator, out: Path, started: float) -> Dict[str, Any]:
    """`train` in an output folder this process holds (the main process the lock, the others after it)."""
    with accelerator.main_process_first():  # the others see the folder once the main process has cleared it
        resume_from = _check_output_dir(cfg, out)
        if accelerator.is_main_process:
            if cfg.overwrite and resume_from is None:
                _clear_previous_run(out)
            remove_leftovers(out)
    progress = Progress(resume_key(cfg, accelerator.num_processes))
    if resume_from is not None:  # the settings first: another model's weights would fail as a size mismatch
        progress.load_state_dict(_read_progress(resume_from))

    with accelerator.main_process_first():
        splits = _load_data(cfg)
    accelerator.print(f'data: {splits.source}: {len(splits.train)} train, {len(splits.validation)} validation, '
                      f'{len(splits.test)} test images, {len(splits.label_names)} classes. {splits.protocol}')
    model = create_training_model(cfg, len(splits.label_names))
    fit_to_data(model, cfg, splits)
    train_loader, val_loader, test_loader, preprocess, _ = _loaders(cfg, splits, model, accelerator)
    if accelerator.device.type == 'cuda':
        model = model.to(memory_format=torch.channels_last)

    optimizer = _create_optimizer(cfg, model)
    # Planned before `prepare`, on the whole data: each process does 1/num_processes of these optimizer steps,
    # and Accelerate steps the scheduler num_processes times per optimizer step.
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum_steps)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch * accelerator.num_processes)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(
        cfg, total_steps=cfg.epochs * steps_per_epoch, warmup_steps=round(cfg.warmup_epochs * steps_per_epoch)))
    model, optimizer, train_loader, val_loader, test_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, test_loader, scheduler)
    if resume_from is not None:
        _load_accelerate_state(accelerator, resume_from)
        accelerator.print(f'resumed from {resume_from} after epoch {progress.epoch}')
    if cfg.report_to:
        accelerator.init_trackers('patchconvnet', config={k: v for k, v in asdict(cfg).items() if v is not None})
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    while progress.epoch < cfg.epochs and progress.epochs_without_improvement < cfg.patience:
        epoch_started = time.time()
        train_loader.set_epoch(progress.epoch)  # the seeded sampler's order depends on the epoch alone
        model.train()
        # summed on the device and read every LOG_EVERY steps: reading it each step would wait for the GPU each step
        loss_sum, batches = torch.zeros((), device=accelerator.device), 0
        bar = tqdm(train_loader, desc=f'epoch {progress.epoch + 1}/{cfg.epochs}', leave=False,
                   disable=None if accelerator.is_local_main_process else True)  # None: only on a terminal
        for step, (images, targets) in enumerate(bar):
            if cfg.max_steps_per_epoch and step >= cfg.max_steps_per_epoch * cfg.grad_accum_steps:
                train_loader.end()  # what finishing the loop would do: Accelerate drops its reference to it
                break
            with accelerator.accumulate(model):
                loss = criterion(model(model_input(images, preprocess, train=True)), targets)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            loss_sum += loss.detach()
            batches += 1
            if batches % LOG_EVERY == 0:
                bar.set_postfix(loss=f'{_finite_mean(accelerator, loss_sum, batches, progress.epoch, out):.4f}')
        _finite_mean(accelerator, loss_sum, batches, progress.epoch, out)

        labels, probs, val_loss = _predict(model, val_loader, accelerator, preprocess)
        if not math.isfinite(val_loss):
            raise TrainingError(f'The validation loss is not finite after epoch {progress.epoch + 1}: lower --lr. '
                                f'The best model so far is kept in {out}.')
        progress.epoch += 1
        train_loss = accelerator.reduce(loss_sum / max(1, batches), 'mean')
        record = dict(epoch=progress.epoch, train_loss=train_loss.item(), validation_loss=val_loss,
                      validation_accuracy=float((probs.argmax(1) == labels).mean()),
                      lr=scheduler.get_last_lr()[0], seconds=time.time() - epoch_started)
        progress.history.append(record)
        if val_loss < progress.best_val_loss:
            progress.best_val_loss, progress.best_epoch = val_loss, progress.epoch
            progress.epochs_without_improvement = 0
            if accelerator.is_main_process:
                with _writing(out):
                    save_model_folder(accelerator.unwrap_model(model, keep_torch_compile=False), out,
                                      splits.label_names)
        else:
            progress.epochs_without_improvement += 1
        with _writing(out):
            save_training_state(accelerator, out / 'state', progress.epoch, progress.state_dict())
        accelerator.log(record, step=progress.epoch)
        accelerator.print(' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in record.items()))

    # the best model, not the last one, is the result
    best = accelerator.unwrap_model(model, keep_torch_compile=False)
    best.load_state_dict(load_file(out / 'model.safetensors'))
    result = {
        'test': _test_metrics(model, splits, val_loader, test_loader, accelerator, preprocess),
        'best_epoch': progress.best_epoch,
        'best_validation_loss': progress.best_val_loss,
        'epochs_run': progress.epoch,
        'stopped_early': progress.epoch < cfg.epochs,
        'history': progress.history,
        'data': _data_record(splits),
        'model': {'architecture': getattr(best, 'pretrained_cfg', {}).get('architecture', cfg.model),
                  'params': sum(p.numel() for p in best.parameters())},
        'config': asdict(cfg),
        'environment': {'num_processes': accelerator.num_processes, 'device': str(accelerator.device),
                        'mixed_precision': accelerator.mixed_precision, 'torch': torch.__version__,
                        'timm': timm.__version__},
        'seconds': time.time() - started,
    }
    if accelerator.is_main_process:
        with _writing(out):
            atomic_write_json(out / 'metrics.json', result)
        if isinstance(best, PatchConvNet) and best.attn_pool is not None:
            examples = splits.test.select(range(min(16, len(splits.test))))
            transform = build_transform(splits.dataset, resolve_data_config(model=best), train=False)
            with _writing(out):
                save_attention_grid(best, examples['image'], examples['label'], splits.label_names, transform,
                                    out / 'attention.png')
            if 'threshold' in result['test'] and 'patient_id' in splits.test.column_names:
                with _writing(out):
                    _save_slides(best, splits, result['test']['threshold'], out)
    accelerator.end_training()
    return result


def _finite_mean(accelerator: Accelerator, loss_sum: torch.Tensor, batches: int, epoch: int, out: Path) -> float:
    """The mean training loss so far in this epoch, over all processes; a TrainingError when it is not finite
    (every process raises together)."""
    mean = accelerator.reduce(loss_sum / max(1, batches), 'mean').item()
    if not math.isfinite(mean):
        raise TrainingError(f'The loss is not finite in epoch {epoch + 1} (by step {batches}): lower --lr, or check '
                            f'the data. The best model so far is kept in {out}.')
    return mean


def _load_data(cfg: TrainConfig) -> DataSplits:
    return load_splits(cfg.dataset, data_dir=cfg.data_dir, hub_id=cfg.hub_id, seed=cfg.seed,
                       val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, split_protocol=cfg.split,
                       allow_missing_patients=cfg.allow_missing_patients, cache_dir=cfg.cache_dir)


def _test_metrics(model: nn.Module, splits: DataSplits, val_loader: DataLoader, test_loader: DataLoader,
                  accelerator: Accelerator, preprocess: Optional[BatchPreprocess]) -> Dict[str, Any]:
    """The test metrics of `model`; for two classes split by patient, also per patient and per slide at a threshold
    chosen on validation (`metrics.patient_results`)."""
    labels, probs, test_loss = _predict(model, test_loader, accelerator, preprocess)
    test = dict(classification_metrics(labels, probs, splits.label_names), loss=test_loss)
    if splits.patient_level and len(splits.label_names) == 2:
        val_labels, val_probs, _ = _predict(model, val_loader, accelerator, preprocess)
        test.update(patient_results(val_labels, val_probs, labels, probs, column(splits.test, 'patient_id')))
    return test


def _save_slides(model: PatchConvNet, splits: DataSplits, threshold: float, out: Path, most: int = 3) -> None:
    """Whole-slide maps of the `most` test patients with the most IDC patches, into out/slides/."""
    patients = column(splits.test, 'patient_id').astype(str)
    positives = np.bincount(np.unique(patients, return_inverse=True)[1], weights=column(splits.test, 'label'))
    chosen = np.unique(patients)[np.argsort(-positives, kind='stable')[:most]]
    for patient in chosen:
        slide = slide_from_rows(splits.test, patient)
        render_slide(slide, predict_slide(model, slide), out / SLIDES_DIR / f'{patient}.png', threshold,
                     title=f'test patient {patient}; threshold {threshold:.2f} (chosen on validation)')


def _data_record(splits: DataSplits) -> Dict[str, Any]:
    record = {
        'dataset': splits.dataset, 'source': splits.source, 'protocol': splits.protocol,
        'protocol_kind': splits.protocol_kind,
        'patient_level': splits.patient_level, 'skipped_images': splits.left_out.skipped_images,
        'ignored_files': splits.left_out.ignored_files,
        'sizes': {name: len(getattr(splits, name)) for name in SPLIT_NAMES},
        'label_names': list(splits.label_names),
    }
    if splits.patient_level:
        record['patients'] = {name: len(set(column(getattr(splits, name), 'patient_id')))
                              for name in SPLIT_NAMES}
        record['test_patients'] = sorted(set(column(splits.test, 'patient_id').tolist()))
    return record


def evaluate_pretrained(cfg: TrainConfig) -> Dict[str, Any]:
    """Test metrics of a saved model (`cfg.pretrained`, e.g. `local-dir:runs/digits`) on `cfg.dataset`'s test
    split, as in training (same split, same preprocessing, gathered over processes)."""
    accelerator = _accelerator(cfg)
    splits = _load_data(cfg)
    model = create_training_model(cfg, len(splits.label_names))
    if not cfg.pretrained.startswith(('local-dir:', 'hf-hub:')):  # a saved run's config.json already fits its data
        fit_to_data(model, cfg, splits)
    _, val_loader, test_loader, preprocess, _ = _loaders(cfg, splits, model, accelerator)
    model, val_loader, test_loader = accelerator.prepare(model, val_loader, test_loader)
    return {'test': _test_metrics(model, splits, val_loader, test_loader, accelerator, preprocess),
            'data': _data_record(splits)}


evaluate_checkpoint = evaluate_pretrained  # its name before 0.2
