"""The training engine behind `train.py`: Accelerate for devices, precision and processes; timm for models and
optimizers; `datasets` for data; scikit-learn for metrics. Reads top to bottom like Accelerate's examples."""
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from safetensors.torch import load_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_data_config
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoints import atomic_write_json, latest_training_state, save_model_folder, save_training_state
from .config import TORCH_OPTIMIZER_LAMB, TrainConfig  # re-exported; defined where the Hub tools read them
from .data import DataSplits, ImageClassificationDataset, build_transform, load_splits
from .metrics import classification_metrics
from .patchconvnet import PatchConvNet
from .visualize import save_attention_grid

__all__ = ['TORCH_OPTIMIZER_LAMB', 'TrainConfig', 'TrainingError', 'train', 'evaluate_checkpoint',
           'create_training_model']

_logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A run cannot go on: the message says why and what to do; files already saved are kept."""


class Progress:
    """What early stopping and resuming need, saved with Accelerate's state (`register_for_checkpointing`)."""

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
        if state['run_key'] != self.run_key:
            changed = {k: (state['run_key'].get(k), v) for k, v in self.run_key.items() if state['run_key'].get(k) != v}
            raise TrainingError(f'--resume with other settings than the saved run (saved, now): {changed}. '
                                'Resume with the same settings, or start a new run in another --output-dir.')
        vars(self).update(state)


def create_training_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The model to train: random, or pretrained (a tag, `local-dir:`/`hf-hub:`, or a checkpoint file) with its
    head replaced for `num_classes` when `--num-classes` says so."""
    if cfg.num_classes is not None and cfg.num_classes != num_classes:
        raise TrainingError(f'--num-classes {cfg.num_classes} does not match the data, which has {num_classes} '
                            'classes.')
    extra = dict(drop_path_rate=cfg.drop_path) if cfg.drop_path else {}
    try:
        if not cfg.pretrained:
            return timm.create_model(cfg.model, num_classes=num_classes, **extra)
        if cfg.pretrained.startswith(('local-dir:', 'hf-hub:')):
            model = timm.create_model(cfg.pretrained, pretrained=True, **extra)
        elif os.path.isfile(cfg.pretrained):
            file_classes = _head_size(timm.models.load_state_dict(cfg.pretrained))
            overlay = dict(file=cfg.pretrained, num_classes=file_classes)
            model = timm.create_model(cfg.model, pretrained=True, num_classes=file_classes,
                                      pretrained_cfg_overlay=overlay, **extra)
        else:  # a pretrained tag of --model, 'default' for its default tag
            name = cfg.model if cfg.pretrained == 'default' else f'{cfg.model}.{cfg.pretrained}'
            model = timm.create_model(name, pretrained=True, **extra)
    except RuntimeError as err:
        if 'Unknown model' in str(err):
            raise TrainingError(f'{err}. Models: any timm model, e.g. resnet50, or one of '
                                f'{timm.list_models("patchconvnet_*")}.') from err
        raise
    if model.num_classes != num_classes:
        if cfg.num_classes is None:
            raise TrainingError(
                f'The pretrained model has {model.num_classes} classes and the data {num_classes}: pass '
                f'--num-classes {num_classes} to train a new head on the pretrained features.')
        model.reset_classifier(num_classes)
    return model


# Image sizes of the data sets, so that a model's default tag (e.g. 224 for ImageNet weights) does not decide them.
DATA_IMG_SIZES = {'digits': 32, 'cifar10': 32, 'idc': 50}
CIFAR10_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def fit_to_data(model: nn.Module, cfg: TrainConfig, splits: DataSplits) -> None:
    """Make the model's pretrained cfg describe this training: the data's image size, classes and label names,
    and the normalisation of its pretrained weights (or, from scratch, of the data). Training, evaluation and
    the saved config.json all read the preprocessing from it."""
    pretrained_cfg = model.pretrained_cfg  # the same dict as model.default_cfg: update in place
    size = cfg.img_size or DATA_IMG_SIZES.get(splits.kind) or pretrained_cfg['input_size'][-1]
    pretrained_cfg.update(input_size=(3, size, size), crop_pct=1.0, num_classes=len(splits.label_names),
                          label_names=tuple(splits.label_names), pool_size=None)
    if not cfg.pretrained:
        mean, std = CIFAR10_MEAN_STD if splits.kind == 'cifar10' else (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
        pretrained_cfg.update(mean=mean, std=std, tag=None)


def _head_size(state_dict: Dict[str, torch.Tensor]) -> int:
    if 'head.weight' in state_dict:
        return state_dict['head.weight'].shape[0]
    per_class_units = [k for k in state_dict if k.startswith('head.') and k.endswith('.weight')]
    if per_class_units:  # the official multi-class-token head, one Linear(dim, 1) per class
        return len(per_class_units)
    raise TrainingError('Cannot tell the number of classes of the checkpoint file (no head.weight).')


def _create_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.opt == TORCH_OPTIMIZER_LAMB:
        import torch_optimizer  # the package the seed paper used; timm's 'lamb' is deit's recipe (see README)
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
def _predict(model: nn.Module, loader: DataLoader, accelerator: Accelerator) -> Tuple[np.ndarray, np.ndarray, float]:
    """Labels, class probabilities and mean loss over a whole split, gathered from every process."""
    model.eval()
    labels, probs, loss_sum = [], [], 0.
    for images, targets in loader:
        logits = model(images)
        logits, targets = accelerator.gather_for_metrics((logits.float(), targets))
        loss_sum += F.cross_entropy(logits, targets, reduction='sum').item()
        labels.append(targets.cpu())
        probs.append(logits.softmax(-1).cpu())
    labels, probs = torch.cat(labels).numpy(), torch.cat(probs).numpy()
    return labels, probs, loss_sum / max(1, len(labels))


def _loaders(cfg: TrainConfig, splits: DataSplits, model: nn.Module) -> Tuple[DataLoader, DataLoader, DataLoader]:
    data_config = resolve_data_config(model=model)
    train_tf = build_transform(splits.kind, data_config, train=True)
    eval_tf = build_transform(splits.kind, data_config, train=False)
    if cfg.batch_size > len(splits.train):
        raise TrainingError(f'--batch-size {cfg.batch_size} is larger than the {len(splits.train)} training images: '
                            'lower it or use more data.')
    common = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    return (
        DataLoader(ImageClassificationDataset(splits.train, train_tf), shuffle=True, **common),
        DataLoader(ImageClassificationDataset(splits.validation, eval_tf), **common),
        DataLoader(ImageClassificationDataset(splits.test, eval_tf), **common),
    )


def _processes_without_gpus() -> bool:
    """Several processes (accelerate launch --multi_gpu, torchrun) on a machine without GPUs: Accelerate only sets up
    its gloo CPU backend when told `cpu=True`, and `accelerate launch --cpu` starts a single process."""
    return int(os.environ.get('WORLD_SIZE', '1')) > 1 and not torch.cuda.is_available()


def _check_output_dir(cfg: TrainConfig, out: Path, is_main: bool) -> Optional[Path]:
    """The state to resume from, if asked; refuses to start over a previous run unless told to."""
    previous = latest_training_state(out / 'state')
    if cfg.resume:
        if previous is None:
            raise TrainingError(f'Nothing to resume: {out / "state"} holds no saved training state.')
        return previous
    if previous is not None:
        if not cfg.overwrite:
            raise TrainingError(f'{out} already holds a run: pass --resume to continue it, --overwrite to replace '
                                'it, or choose another --output-dir.')
        if is_main:  # a crash before this run's first save must not --resume the replaced run
            (out / 'state' / 'latest').unlink()
    return None


def _run_key(cfg: TrainConfig, num_processes: int) -> Dict[str, Any]:
    """Settings a resumed run must share with the saved one."""
    keys = ('dataset', 'data_dir', 'hub_id', 'model', 'pretrained', 'num_classes', 'img_size', 'epochs', 'batch_size',
            'grad_accum_steps', 'opt', 'lr', 'weight_decay', 'momentum', 'sched', 'warmup_epochs', 'label_smoothing',
            'drop_path', 'seed', 'val_fraction', 'test_fraction', 'max_steps_per_epoch', 'mixed_precision')
    return {**{k: getattr(cfg, k) for k in keys}, 'num_processes': num_processes}


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Train, keep the best model on validation loss, stop early, evaluate it on the test split.

    Writes into `cfg.output_dir`: model.safetensors + config.json (the best model), metrics.json, attention.png
    and state/ (Accelerate state to resume from).
    """
    started = time.time()
    accelerator = Accelerator(
        cpu=_processes_without_gpus(),
        gradient_accumulation_steps=cfg.grad_accum_steps,
        mixed_precision=cfg.mixed_precision,
        log_with=cfg.report_to,
        project_dir=cfg.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(cfg.seed)
    if accelerator.device.type == 'cpu' and torch.get_num_threads() * accelerator.num_processes < (os.cpu_count() or 1):
        accelerator.print(f'note: {accelerator.num_processes} process(es) x {torch.get_num_threads()} thread(s) on '
                          f'{os.cpu_count()} CPUs (accelerate launch sets OMP_NUM_THREADS=1 unless given '
                          '--num_cpu_threads_per_process)')
    out = Path(cfg.output_dir)
    resume_from = _check_output_dir(cfg, out, accelerator.is_main_process)

    with accelerator.main_process_first():
        splits = load_splits(cfg.dataset, data_dir=cfg.data_dir, hub_id=cfg.hub_id, seed=cfg.seed,
                             val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction)
    accelerator.print(f'data: {splits.source}: {len(splits.train)} train, {len(splits.validation)} validation, '
                      f'{len(splits.test)} test images, {len(splits.label_names)} classes. {splits.protocol}')
    model = create_training_model(cfg, len(splits.label_names))
    fit_to_data(model, cfg, splits)
    train_loader, val_loader, test_loader = _loaders(cfg, splits, model)

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
    progress = Progress(_run_key(cfg, accelerator.num_processes))
    accelerator.register_for_checkpointing(progress)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        accelerator.print(f'resumed from {resume_from} after epoch {progress.epoch}')
    if cfg.report_to:
        accelerator.init_trackers('patchconvnet', config={k: v for k, v in asdict(cfg).items() if v is not None})
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    while progress.epoch < cfg.epochs and progress.epochs_without_improvement < cfg.patience:
        epoch_started = time.time()
        train_loader.set_epoch(progress.epoch)  # the seeded sampler's order depends on the epoch alone
        model.train()
        loss_sum, batches = 0., 0
        bar = tqdm(train_loader, desc=f'epoch {progress.epoch + 1}/{cfg.epochs}', leave=False,
                   disable=None if accelerator.is_local_main_process else True)  # None: only on a terminal
        for step, (images, targets) in enumerate(bar):
            if cfg.max_steps_per_epoch and step >= cfg.max_steps_per_epoch * cfg.grad_accum_steps:
                train_loader.end()  # what finishing the loop would do: Accelerate drops its reference to it
                break
            with accelerator.accumulate(model):
                loss = criterion(model(images), targets)
                if not torch.isfinite(accelerator.gather(loss.detach())).all():
                    raise TrainingError(
                        f'The loss is not finite at epoch {progress.epoch + 1}, step {step + 1}: lower --lr, or check '
                        f'the data. The best model so far is kept in {out}.')
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            loss_sum += loss.item()
            batches += 1
            bar.set_postfix(loss=f'{loss.item():.4f}')

        labels, probs, val_loss = _predict(model, val_loader, accelerator)
        if not math.isfinite(val_loss):
            raise TrainingError(f'The validation loss is not finite after epoch {progress.epoch + 1}: lower --lr. '
                                f'The best model so far is kept in {out}.')
        progress.epoch += 1
        train_loss = accelerator.reduce(torch.tensor(loss_sum / max(1, batches), device=accelerator.device), 'mean')
        record = dict(epoch=progress.epoch, train_loss=train_loss.item(), validation_loss=val_loss,
                      validation_accuracy=float((probs.argmax(1) == labels).mean()),
                      lr=scheduler.get_last_lr()[0], seconds=time.time() - epoch_started)
        progress.history.append(record)
        if val_loss < progress.best_val_loss:
            progress.best_val_loss, progress.best_epoch = val_loss, progress.epoch
            progress.epochs_without_improvement = 0
            if accelerator.is_main_process:
                save_model_folder(accelerator.unwrap_model(model), out, splits.label_names)
        else:
            progress.epochs_without_improvement += 1
        save_training_state(accelerator, out / 'state', progress.epoch)
        accelerator.log(record, step=progress.epoch)
        accelerator.print(' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in record.items()))

    # the best model, not the last one, is the result
    best = accelerator.unwrap_model(model)
    best.load_state_dict(load_file(out / 'model.safetensors'))
    labels, probs, test_loss = _predict(model, test_loader, accelerator)
    result = {
        'test': dict(classification_metrics(labels, probs, splits.label_names), loss=test_loss),
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
        atomic_write_json(out / 'metrics.json', result)
        if isinstance(best, PatchConvNet) and best.attn_pool is not None:
            examples = splits.test.select(range(min(16, len(splits.test))))
            transform = build_transform(splits.kind, resolve_data_config(model=best), train=False)
            save_attention_grid(best, examples['image'], examples['label'], splits.label_names, transform,
                                out / 'attention.png')
    accelerator.end_training()
    return result


def _data_record(splits: DataSplits) -> Dict[str, Any]:
    return {
        'kind': splits.kind, 'source': splits.source, 'protocol': splits.protocol,
        'patient_level': splits.patient_level, 'skipped_images': splits.skipped_images,
        'sizes': {'train': len(splits.train), 'validation': len(splits.validation), 'test': len(splits.test)},
        'label_names': list(splits.label_names),
    }


def evaluate_checkpoint(cfg: TrainConfig) -> Dict[str, Any]:
    """Test metrics of a saved model (`cfg.pretrained`, e.g. `local-dir:runs/digits`) on `cfg.dataset`'s test
    split, as in training (same split, same preprocessing, gathered over processes)."""
    accelerator = Accelerator(cpu=_processes_without_gpus(), mixed_precision=cfg.mixed_precision)
    splits = load_splits(cfg.dataset, data_dir=cfg.data_dir, hub_id=cfg.hub_id, seed=cfg.seed,
                         val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction)
    model = create_training_model(cfg, len(splits.label_names))
    if not cfg.pretrained.startswith(('local-dir:', 'hf-hub:')):  # a saved run's config.json already fits its data
        fit_to_data(model, cfg, splits)
    _, _, test_loader = _loaders(cfg, splits, model)
    model, test_loader = accelerator.prepare(model, test_loader)
    labels, probs, test_loss = _predict(model, test_loader, accelerator)
    return {'test': dict(classification_metrics(labels, probs, splits.label_names), loss=test_loss),
            'data': _data_record(splits)}

