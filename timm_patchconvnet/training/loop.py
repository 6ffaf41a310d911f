"""The training engine behind `train.py`: Accelerate for devices, precision and processes; timm for models and
optimizers; `datasets` for data; scikit-learn for metrics. `train` reads top to bottom like Accelerate's
examples/complete_cv_example.py: accelerator, data, model, the strong-training recipe, optimizer and schedule,
prepare, resume, then per epoch training, validation (of the EMA weights too) and the epoch's outputs, and at the
end the best model's test metrics and the run's outputs."""
import math
import os
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import TorchDynamoPlugin, broadcast_object_list, set_seed
from safetensors.torch import load_file
from timm.data import resolve_data_config
from timm.optim import create_optimizer_v2
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import TORCH_OPTIMIZER_LAMB, TrainConfig, resume_key
from ..data import DataSplits, load_splits
from ..data.decode_cache import DecodeCacheError, ImageReadError
from ..data.device_transforms import BatchPreprocess
from ..data.splits import column
from ..dataset_specs import DATASETS, SPLIT_NAMES, dataset_spec
from ..model_ref import parse_model_ref
from ..precision import PrecisionError, detect_hardware, training_mixed_precision
from .loaders import Loaders, build_loaders, model_input
from .metrics import classification_metrics, patient_results
from .model import TrainingError, create_training_model, fitted_pretrained_cfg
from .output_dir import claimed_output_dir, ready_output_dir
from .outputs import WEIGHTS_FILE, EpochEnd, FinishedRun, write_outputs
from .recipe import EMA_FILE, Recipe
from .run_files import Progress, load_accelerate_state, read_progress, read_state_tensors

__all__ = ['PreparedTraining', 'Progress', 'TrainingError', 'create_training_model', 'evaluate_checkpoint',
           'evaluate_pretrained', 'prepare_training', 'train', 'train_step']

LOG_EVERY = 50  # steps between reads of the training loss (each read waits for the device)


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Train, keep the best model on validation loss, stop early, evaluate it on the test split.

    Writes into `cfg.output_dir` the outputs of `outputs.OUTPUTS`: model.safetensors + config.json (the best
    model), state/ (Accelerate's state and our progress.json, to resume from), metrics.json, attention.png and for
    IDC slides/, holding `.lock` while it runs.
    """
    started = time.time()
    accelerator = _accelerator(cfg, gradient_accumulation_steps=cfg.grad_accum_steps, log_with=cfg.report_to,
                               project_dir=cfg.output_dir)
    set_seed(cfg.seed)
    _note_cpu_threads(accelerator)
    out = Path(cfg.output_dir)
    _refuse_output_inside_data(cfg, out)
    with ExitStack() as hold:
        _on_every_process(accelerator, lambda: hold.enter_context(claimed_output_dir(out, accelerator.is_main_process)))
        return _train(cfg, accelerator, out, started)


def _refuse_output_inside_data(cfg: TrainConfig, out: Path) -> None:
    """A run's files inside the data folder would be read as data by the next run (attention.png as an image of a
    class named after the run, parquet-less folders with no label column)."""
    local = cfg.data_dir or (cfg.dataset if cfg.dataset not in DATASETS and not cfg.dataset.startswith('hub:')
                             else None)
    if local and out.expanduser().resolve().is_relative_to(Path(local).expanduser().resolve()):
        raise TrainingError(f'--output-dir {out} lies inside the data folder {local}: the run\'s files would be read '
                            'as data by later runs. Choose an --output-dir outside it.')


def _on_every_process(accelerator: Accelerator, step: Callable[[], Any]) -> Any:
    """Run `step` (on every process) and raise its TrainingError on every process, with the main process's message:
    a refusal on the main process alone (the output folder's lock, a previous run) would leave the others waiting
    at a barrier. `step`'s result otherwise."""
    failure: Optional[TrainingError] = None
    result = None
    try:
        result = step()
    except TrainingError as err:
        failure = err
    if accelerator.num_processes > 1:
        shared = [str(failure) if failure else None]
        broadcast_object_list(shared)
        if shared[0] is not None and failure is None:
            failure = TrainingError(shared[0])
    if failure is not None:
        raise failure
    return result


def _train(cfg: TrainConfig, accelerator: Accelerator, out: Path, started: float) -> Dict[str, Any]:
    """`train` in an output folder this process holds (the main process the lock, the others after it)."""
    resume_from = _on_every_process(accelerator, lambda: ready_output_dir(cfg, out, accelerator))
    progress = Progress(resume_key(cfg, accelerator.num_processes))
    if resume_from is not None:  # the settings first: another model's weights would fail as a size mismatch
        progress.load_state_dict(read_progress(resume_from))

    splits = _prepare_data(cfg, accelerator)
    run = prepare_training(cfg, accelerator, splits)
    model, trained, optimizer, scheduler, recipe, loaders = (run.model, run.trained, run.optimizer, run.scheduler,
                                                              run.recipe, run.loaders)
    train_loader, val_loader, test_loader = run.train_loader, run.val_loader, run.test_loader
    # the model is built alike everywhere; from here each process draws its own augmentations (on the decoded loader
    # they are drawn in the process itself): with one seed, repeated augmentation's copies of an image on the other
    # processes would be augmented alike (a resume restores each process's own state)
    set_seed(cfg.seed, device_specific=True)
    if resume_from is not None:
        _resume(accelerator, recipe, resume_from, progress.epoch)
    if cfg.report_to:
        accelerator.init_trackers('patchconvnet', config={k: v for k, v in asdict(cfg).items() if v is not None})
    criterion = recipe.criterion()

    while progress.epoch < cfg.epochs and progress.epochs_without_improvement < cfg.patience:
        epoch_started = time.time()
        train_loss = _train_epoch(cfg, accelerator, model, train_loader, optimizer, scheduler, criterion, recipe,
                                  loaders.preprocess, progress.epoch, out)
        validation, val_loss, candidate = _validate_with_ema(accelerator, model, trained, recipe.ema_model,
                                                             val_loader, loaders.preprocess, progress.epoch, out)
        improved = progress.add_epoch(dict(
            epoch=progress.epoch + 1, train_loss=train_loss, **validation, lr=scheduler.get_last_lr()[0],
            seconds=time.time() - epoch_started), val_loss)
        write_outputs(EpochEnd(accelerator, candidate, improved, splits.label_names, progress.epoch,
                               progress.state_dict(), recipe.state_tensors(), dataset_spec(splits.dataset).mpp), out)
        _report(accelerator, progress.history[-1])

    best = _reload_best(accelerator, model, out)  # the best model, not the last one, is the result
    test = _test_metrics(best.prepared, splits, val_loader, test_loader, accelerator, loaders.preprocess)
    metrics = _run_record(cfg, accelerator, progress, test, splits, loaders.unreadable, best.plain, started)
    if accelerator.is_main_process:
        write_outputs(FinishedRun(best.plain, metrics, splits, run.data_config), out)
    accelerator.end_training()
    return metrics


class PreparedTraining(NamedTuple):
    """What a run trains with, as Accelerate prepared it (`trained`: the model unwrapped, which the EMA averages and
    the outputs save)."""
    model: nn.Module
    trained: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    recipe: Recipe
    loaders: Loaders
    train_loader: DataLoader
    val_loader: DataLoader
    test_loader: DataLoader
    data_config: Dict[str, Any]


def prepare_training(cfg: TrainConfig, accelerator: Accelerator, splits: DataSplits) -> PreparedTraining:
    """The model, the strong-training parts (recipe.py), the loaders, the optimizer and schedule, prepared by
    Accelerate, and the EMA started: what `train` builds before its first epoch (`benchmarks/recipe.py` too)."""
    model, data_config = _prepare_model(cfg, splits)
    recipe = Recipe(cfg, len(splits.label_names), accelerator.device)
    loaders = _loaders(cfg, splits, data_config, accelerator)
    if accelerator.device.type == 'cuda':
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = _optimizer_and_schedule(cfg, recipe.param_groups(model), len(loaders.train),
                                                   accelerator.num_processes)
    model, optimizer, train_loader, val_loader, test_loader, scheduler = accelerator.prepare(
        model, optimizer, loaders.train, loaders.validation, loaders.test, scheduler)
    trained = accelerator.unwrap_model(model, keep_torch_compile=False)
    recipe.start_ema(trained, accelerator.device)
    return PreparedTraining(model, trained, optimizer, scheduler, recipe, loaders, train_loader, val_loader,
                            test_loader, data_config)


def _accelerator(cfg: TrainConfig, **kwargs: Any) -> Accelerator:
    """Accelerate for `cfg`: its precision, torch.compile (inductor, fullgraph) with --compile, and on CUDA
    copies of pinned batches that do not block."""
    dynamo = TorchDynamoPlugin(backend='inductor', fullgraph=True) if cfg.compile else None
    try:  # Accelerate autocasts to bf16 on the CPU too: where it is native (AVX512-BF16, AMX), 'auto' chooses it
        hardware = detect_hardware('cuda' if torch.cuda.is_available() else 'cpu')
        mixed_precision = training_mixed_precision(cfg.mixed_precision, hardware)
    except PrecisionError as err:
        raise TrainingError(f'--mixed-precision: {err}') from err
    return Accelerator(
        cpu=_processes_without_gpus(), mixed_precision=mixed_precision, dynamo_plugin=dynamo,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, non_blocking=torch.cuda.is_available()),
        **kwargs)


def _processes_without_gpus() -> bool:
    """Several processes (accelerate launch --multi_gpu, torchrun) on a machine without GPUs: Accelerate only sets up
    its gloo CPU backend when told `cpu=True`, and `accelerate launch --cpu` starts a single process."""
    return int(os.environ.get('WORLD_SIZE', '1')) > 1 and not torch.cuda.is_available()


def _note_cpu_threads(accelerator: Accelerator) -> None:
    if accelerator.device.type == 'cpu' and torch.get_num_threads() * accelerator.num_processes < (os.cpu_count() or 1):
        accelerator.print(f'note: {accelerator.num_processes} process(es) x {torch.get_num_threads()} thread(s) on '
                          f'{os.cpu_count()} CPUs (accelerate launch sets OMP_NUM_THREADS=1 unless given '
                          '--num_cpu_threads_per_process)')


def _prepare_data(cfg: TrainConfig, accelerator: Accelerator) -> DataSplits:
    with accelerator.main_process_first():  # the main process lists and checks the source; the others reuse it
        splits = _load_data(cfg)
    accelerator.print(f'data: {splits.source}: {len(splits.train)} train, {len(splits.validation)} validation, '
                      f'{len(splits.test)} test images, {len(splits.label_names)} classes. {splits.protocol}')
    return splits


def _load_data(cfg: TrainConfig) -> DataSplits:
    return load_splits(cfg.dataset, data_dir=cfg.data_dir, hub_id=cfg.hub_id, seed=cfg.seed,
                       val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, split_protocol=cfg.split,
                       allow_missing_patients=cfg.allow_missing_patients, cache_dir=cfg.cache_dir)


def _prepare_model(cfg: TrainConfig, splits: DataSplits, fit: bool = True) -> Tuple[nn.Module, Dict[str, Any]]:
    """The model of `cfg` for `splits` and its data config (timm's resolved one: input size, crop, normalisation),
    decided here once. Fitted (`fitted_pretrained_cfg`), the model takes the pretrained cfg of this training as it
    is made, before anything reads it: timm's save_for_hf writes it into config.json, the slide maps read it."""
    model = create_training_model(cfg, len(splits.label_names))
    if fit:
        model.pretrained_cfg = model.default_cfg = fitted_pretrained_cfg(model.pretrained_cfg, cfg, splits)
    return model, resolve_data_config(model=model)


def _loaders(cfg: TrainConfig, splits: DataSplits, data_config: Dict[str, Any], accelerator: Accelerator) -> Loaders:
    if cfg.batch_size > len(splits.train):
        raise TrainingError(f'--batch-size {cfg.batch_size} is larger than the {len(splits.train)} training images: '
                            'lower it or use more data.')
    try:
        return build_loaders(cfg, splits, data_config, accelerator)
    except (DecodeCacheError, ImageReadError, ImportError) as err:
        raise TrainingError(str(err)) from err


def _optimizer_and_schedule(cfg: TrainConfig, param_groups: List[Dict[str, Any]], batches_per_epoch: int,
                            num_processes: int) -> Tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer of the recipe's `param_groups` and its learning-rate schedule (warmup, then cosine or constant).
    Planned before `prepare`, on the whole data: each process does 1/num_processes of these optimizer steps, and
    Accelerate steps the scheduler num_processes times per optimizer step."""
    if cfg.opt == TORCH_OPTIMIZER_LAMB:
        import torch_optimizer  # the package the seed paper used; timm's 'lamb' is deit's algorithm
        optimizer = torch_optimizer.Lamb(param_groups, lr=cfg.lr)
    else:
        optimizer = create_optimizer_v2(param_groups, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                        momentum=cfg.momentum)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum_steps)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch * num_processes)
    total_steps, warmup_steps = cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if cfg.sched == 'constant':
            return 1.
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1. + math.cos(math.pi * min(1., progress)))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _train_epoch(cfg: TrainConfig, accelerator: Accelerator, model: nn.Module, loader: DataLoader,
                 optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                 criterion: nn.Module, recipe: Recipe, preprocess: Optional[BatchPreprocess], epoch: int,
                 out: Path) -> float:
    """One epoch of training (at most --max-steps-per-epoch optimizer steps); its mean loss over all processes."""
    loader.set_epoch(epoch)  # the seeded sampler's order depends on the epoch alone
    model.train()
    plain = accelerator.unwrap_model(model, keep_torch_compile=False)  # what the EMA averages
    # summed on the device and read every LOG_EVERY steps: reading it each step would wait for the GPU each step
    loss_sum, batches = torch.zeros((), device=accelerator.device), 0
    bar = tqdm(loader, desc=f'epoch {epoch + 1}/{cfg.epochs}', leave=False,
               disable=None if accelerator.is_local_main_process else True)  # None: only on a terminal
    for step, (images, targets) in enumerate(bar):
        if cfg.max_steps_per_epoch and step >= cfg.max_steps_per_epoch * cfg.grad_accum_steps:
            loader.end()  # what finishing the loop would do: Accelerate drops its reference to it
            break
        loss = train_step(accelerator, model, plain, optimizer, scheduler, criterion, recipe, preprocess, images,
                          targets)
        loss_sum += loss.detach()
        batches += 1
        if batches % LOG_EVERY == 0:
            bar.set_postfix(loss=f'{_finite_mean(accelerator, loss_sum, batches, epoch, out):.4f}')
    return _finite_mean(accelerator, loss_sum, batches, epoch, out)


def train_step(accelerator: Accelerator, model: nn.Module, plain: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, criterion: nn.Module, recipe: Recipe,
               preprocess: Optional[BatchPreprocess], images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One training batch of a loader's (`model`, `optimizer` and `scheduler` as Accelerate prepared them, `plain`
    the model unwrapped): model input, the recipe's erasing and mixing, loss, backward, clipping, optimizer and
    schedule steps, and after an optimizer step the EMA update of `plain`'s average. The loss, left on the device.
    `benchmarks/recipe.py` times this step."""
    with accelerator.accumulate(model):
        images, targets = recipe.train_batch(model_input(images, preprocess, train=True), targets)
        loss = criterion(model(images), targets)
        accelerator.backward(loss)
        recipe.clip(accelerator, model)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        if accelerator.sync_gradients:  # an optimizer step was taken
            recipe.update_ema(plain)
    return loss


def _finite_mean(accelerator: Accelerator, loss_sum: torch.Tensor, batches: int, epoch: int, out: Path) -> float:
    """The mean training loss so far in this epoch, over all processes; a TrainingError when it is not finite
    (every process raises together)."""
    mean = accelerator.reduce(loss_sum / max(1, batches), 'mean').item()
    if not math.isfinite(mean):
        raise TrainingError(f'The loss is not finite in epoch {epoch + 1} (by step {batches}): lower --lr, or check '
                            f'the data. The best model so far is kept in {out}.')
    return mean


def _validate(accelerator: Accelerator, model: nn.Module, loader: DataLoader, preprocess: Optional[BatchPreprocess],
              epoch: int, out: Path) -> Tuple[float, float]:
    """The validation loss and accuracy after `epoch`, over all processes."""
    labels, probs, loss = _predict(model, loader, accelerator, preprocess)
    if not math.isfinite(loss):
        raise TrainingError(f'The validation loss is not finite after epoch {epoch + 1}: lower --lr. '
                            f'The best model so far is kept in {out}.')
    return loss, float((probs.argmax(1) == labels).mean())


def _validate_with_ema(accelerator: Accelerator, model: nn.Module, trained: nn.Module, ema: Optional[nn.Module],
                       loader: DataLoader, preprocess: Optional[BatchPreprocess], epoch: int,
                       out: Path) -> Tuple[Dict[str, Any], float, nn.Module]:
    """Validation of the trained weights (`model` prepared, `trained` unwrapped) and with --model-ema of their average:
    the history's fields, and the validation loss and module of the better, which selection takes."""
    val_loss, val_accuracy = _validate(accelerator, model, loader, preprocess, epoch, out)
    fields = dict(validation_loss=val_loss, validation_accuracy=val_accuracy)
    if ema is None:
        return fields, val_loss, trained
    ema_loss, ema_accuracy = _validate(accelerator, ema, loader, preprocess, epoch, out)
    ema_better = ema_loss < val_loss
    fields.update(validation_loss_ema=ema_loss, validation_accuracy_ema=ema_accuracy,
                  weights='ema' if ema_better else 'raw')
    return (fields, ema_loss, ema) if ema_better else (fields, val_loss, trained)


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


def _resume(accelerator: Accelerator, recipe: Recipe, state: Path, epoch: int) -> None:
    """The saved `state` into the prepared objects (Accelerate's) and the recipe (the EMA weights)."""
    load_accelerate_state(accelerator, state)
    if recipe.ema is not None:
        recipe.load_ema_state(read_state_tensors(state / EMA_FILE))
    accelerator.print(f'resumed from {state} after epoch {epoch}')


def _report(accelerator: Accelerator, record: Dict[str, Any]) -> None:
    accelerator.log(record, step=record['epoch'])
    accelerator.print(' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in record.items()))


class BestModel(NamedTuple):
    prepared: nn.Module  # as Accelerate prepared it (device, precision, compile, processes): what evaluates
    plain: nn.Module  # the same modules unwrapped: what the outputs are written from


def _reload_best(accelerator: Accelerator, trained: nn.Module, out: Path) -> BestModel:
    """The best epoch's model: its weights, saved when validation improved, loaded on every process into the modules
    that trained (`trained` is the best model from here on), so that it evaluates as training did."""
    plain = accelerator.unwrap_model(trained, keep_torch_compile=False)
    plain.load_state_dict(load_file(out / WEIGHTS_FILE))
    return BestModel(trained, plain)


def _test_metrics(model: nn.Module, splits: DataSplits, val_loader: DataLoader, test_loader: DataLoader,
                  accelerator: Accelerator, preprocess: Optional[BatchPreprocess]) -> Dict[str, Any]:
    """The test metrics of `model` (prepared, on every process); for two classes split by patient, also per patient
    and per slide at a threshold chosen on validation (`metrics.patient_results`)."""
    labels, probs, test_loss = _predict(model, test_loader, accelerator, preprocess)
    test = dict(classification_metrics(labels, probs, splits.label_names), loss=test_loss)
    if splits.patient_level and len(splits.label_names) == 2:
        val_labels, val_probs, _ = _predict(model, val_loader, accelerator, preprocess)
        test.update(patient_results(val_labels, val_probs, labels, probs, column(splits.test, 'patient_id')))
    return test


def _run_record(cfg: TrainConfig, accelerator: Accelerator, progress: Progress, test: Dict[str, Any],
                splits: DataSplits, unreadable: int, best: nn.Module, started: float) -> Dict[str, Any]:
    """metrics.json: the best model's test metrics, the run's history, data, model, settings and environment."""
    return {
        'test': test,
        'best_epoch': progress.best_epoch,
        # which weights model.safetensors holds: the EMA's or the trained ones
        'best_weights': (progress.history[progress.best_epoch - 1].get('weights', 'raw') if progress.best_epoch
                         else 'raw'),
        'best_validation_loss': progress.best_val_loss,
        'epochs_run': progress.epoch,
        'stopped_early': progress.epoch < cfg.epochs,
        'history': progress.history,
        'data': _data_record(splits, unreadable),
        'model': {'architecture': getattr(best, 'pretrained_cfg', {}).get('architecture', cfg.model),
                  'params': sum(p.numel() for p in best.parameters())},
        'config': asdict(cfg),
        'environment': {'num_processes': accelerator.num_processes, 'device': str(accelerator.device),
                        'mixed_precision': accelerator.mixed_precision, 'torch': torch.__version__,
                        'timm': timm.__version__},
        'seconds': time.time() - started,
    }


def _data_record(splits: DataSplits, unreadable: int) -> Dict[str, Any]:
    """The data of a run; `unreadable` counts the images the loaders left out, besides those the listing skipped."""
    record = {
        'dataset': splits.dataset, 'source': splits.source, 'protocol': splits.protocol,
        'protocol_kind': splits.protocol_kind,
        'patient_level': splits.patient_level, 'skipped_images': splits.left_out.skipped_images + unreadable,
        'ignored_files': splits.left_out.ignored_files,
        'unreachable': splits.left_out.unreachable, 'empty_classes': splits.left_out.empty_classes,
        'contradictory_patches': splits.left_out.contradictory_patches,
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
    saved_model = parse_model_ref(cfg.pretrained, cfg.model).is_saved_model  # its config.json already fits its data
    model, data_config = _prepare_model(cfg, splits, fit=not saved_model)
    loaders = _loaders(cfg, splits, data_config, accelerator)
    model, val_loader, test_loader = accelerator.prepare(model, loaders.validation, loaders.test)
    return {'test': _test_metrics(model, splits, val_loader, test_loader, accelerator, loaders.preprocess),
            'data': _data_record(splits, loaders.unreadable)}


evaluate_checkpoint = evaluate_pretrained  # its name before 0.2
