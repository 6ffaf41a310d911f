"""The strong-training parts of a run, each from the library that has it, built from its `TrainConfig`.

Mixup and CutMix (`timm.data.Mixup` with `SoftTargetCrossEntropy`), random erasing (`timm.data.random_erasing.RandomErasing`), EMA weights
(`timm.utils.ModelEmaV3`), gradient clipping (Accelerate's `clip_grad_norm_`), layer-wise learning-rate decay
(`timm.optim.param_groups_layer_decay` over the model's `group_matcher`) and repeated augmentation
(`timm.data.distributed_sampler.RepeatAugSampler`). Every part is off unless its option turns it on. RandAugment and
TrivialAugment (--auto-augment) belong to the loaders, before normalisation: `data/batch_auto_augment.py` on decoded
batches, `data/transforms.py` per PIL image.

The loop calls a `Recipe` at a few points: `criterion()` for the training loss, `param_groups(model)` for the
optimizer, `train_batch(images, targets)` on each normalised training batch, `clip(accelerator, model)` between
backward and the optimizer step, `update_ema(model)` after it, `ema_model` to validate with EMA weights, and
`state_tensors()` / `load_ema_state()` to save and resume. Validation and test always use hard labels.
"""
from typing import Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.data import Mixup
from timm.data.distributed_sampler import RepeatAugSampler
from timm.data.random_erasing import RandomErasing
from timm.loss import SoftTargetCrossEntropy
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from timm.utils import ModelEmaV3
from torch.utils.data import Dataset, Sampler

from ..config import TrainConfig
from .model import TrainingError

__all__ = ['EMA_FILE', 'EMA_STEPS_KEY', 'EMA_WARMUP_POWER', 'Recipe', 'RepeatedAugmentation',
           'repeat_sampler']

EMA_FILE = 'ema.safetensors'  # the EMA weights in a saved state, beside Accelerate's files
EMA_STEPS_KEY = 'recipe.ema_steps'  # the EMA's update count in EMA_FILE: its warm-up resumes where it stopped
# ModelEmaV3's warm-up, decay = min(--model-ema-decay, 1 - (1 + step) ** -power). Without it a decay of 0.9998
# leaves the average ~95% at the initialisation after a few hundred steps, and selection can save those weights
# (a short run then tests at chance). With power 3/4 the warm-up reaches 0.9998 after ~85k steps (cifar10-strong
# takes ~70k), where timm's default 2/3 would cap the average below 0.9995 for the whole run.
EMA_WARMUP_POWER = 3 / 4

class RepeatedAugmentation(Sampler[int]):
    """timm's `RepeatAugSampler` for every one of `num_processes` processes, interleaved batch by batch.

    Accelerate shards a prepared loader by batches: process k takes batches k, k + N, k + 2N, ... of its sampler.
    This sampler lays out the world's epoch so that those batches are exactly process k's `RepeatAugSampler` share
    (cut to whole batches), in which each image's --aug-repeats copies land on different processes. The loader then
    goes through `accelerator.prepare` like any other; its epoch reaches every share through `set_epoch`."""

    def __init__(self, dataset: Dataset, num_processes: int, batch_size: int, num_repeats: int):
        self.shares = [RepeatAugSampler(dataset, num_replicas=num_processes, rank=rank, num_repeats=num_repeats)
                       for rank in range(num_processes)]
        self.batch_size = batch_size
        self.share_length = len(self.shares[0]) // batch_size * batch_size  # whole batches: none padded or wrapped

    def set_epoch(self, epoch: int) -> None:
        for share in self.shares:
            share.set_epoch(epoch)

    def __len__(self) -> int:
        return self.share_length * len(self.shares)

    def __iter__(self) -> Iterator[int]:
        shares = [list(share)[:self.share_length] for share in self.shares]
        for start in range(0, self.share_length, self.batch_size):
            for share in shares:
                yield from share[start:start + self.batch_size]


def repeat_sampler(cfg: TrainConfig, dataset: Dataset, num_processes: int) -> Optional[RepeatedAugmentation]:
    """The training loader's sampler with --aug-repeats over several processes; None (shuffle as usual) with one
    process or without repeats. A refusal when a process's share is less than one batch."""
    if cfg.aug_repeats < 2 or num_processes < 2:
        return None
    sampler = RepeatedAugmentation(dataset, num_processes, cfg.batch_size, cfg.aug_repeats)
    if not len(sampler):
        raise TrainingError(f'--aug-repeats {cfg.aug_repeats} over {num_processes} processes leaves each process '
                         f'{len(sampler.shares[0])} of the {len(dataset)} training images an epoch, less than one '
                         f'batch of --batch-size {cfg.batch_size}: lower the batch size or use more data.')
    return sampler


class Recipe:
    """The parts of `cfg` for a model with `num_classes` outputs, trained on `device`."""

    def __init__(self, cfg: TrainConfig, num_classes: int, device: Union[str, torch.device] = 'cpu'):
        self.cfg = cfg
        self.mixup = None
        if cfg.mixup or cfg.cutmix:
            # label smoothing folded into the soft targets, as timm's train.py does
            self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                               switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.label_smoothing,
                               num_classes=num_classes)
        # pixel mode: per-pixel normal noise, the right fill for a normalised batch
        self.erase = RandomErasing(cfg.reprob, mode='pixel', device=device) if cfg.reprob else None
        self.ema: Optional[ModelEmaV3] = None
        self.ema_steps = 0

    def criterion(self) -> nn.Module:
        """The training loss: soft-target cross-entropy on mixed batches, else cross-entropy with smoothing."""
        if self.mixup is not None:
            return SoftTargetCrossEntropy()
        return nn.CrossEntropyLoss(label_smoothing=self.cfg.label_smoothing)

    @torch.no_grad()
    def train_batch(self, images: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """A normalised training batch and its labels after random erasing and mixing (then the
        targets are soft, (B, num_classes)). Mixing pairs the batch with its reverse, so an odd batch loses its
        last image (timm's own loader drops the last batch instead)."""
        if self.erase is not None:
            images = self.erase(images)
        if self.mixup is not None:
            even = len(images) - len(images) % 2
            images, targets = self.mixup(images[:even], targets[:even])
        return images, targets

    def param_groups(self, model: nn.Module) -> List[Dict]:
        """The optimizer's parameter groups: no weight decay on norms, biases and the model's `no_weight_decay()`
        (what timm's create_optimizer_v2 does), and with --layer-decay timm's layer-wise groups, each with its
        learning rate set (timm's schedulers read `lr_scale`; the loop's LambdaLR scales each group's starting
        rate instead)."""
        no_decay = model.no_weight_decay() if hasattr(model, 'no_weight_decay') else ()
        if self.cfg.layer_decay is None:
            return param_groups_weight_decay(model, self.cfg.weight_decay, no_weight_decay_list=no_decay)
        groups = param_groups_layer_decay(model, self.cfg.weight_decay, no_weight_decay_list=no_decay,
                                          layer_decay=self.cfg.layer_decay)
        for group in groups:
            group['lr'] = self.cfg.lr * group['lr_scale']
        return groups

    def clip(self, accelerator, model: nn.Module) -> None:
        """Clip the gradient norm (--clip-grad) once gradients are whole (at the last accumulated batch)."""
        if self.cfg.clip_grad is not None and accelerator.sync_gradients:
            accelerator.clip_grad_norm_(model.parameters(), self.cfg.clip_grad)

    def start_ema(self, model: nn.Module, device: Optional[torch.device] = None) -> None:
        """Begin the average from `model`'s weights (the unwrapped model, before training), kept on `device`."""
        if self.cfg.model_ema:
            self.ema = ModelEmaV3(model, decay=self.cfg.model_ema_decay, use_warmup=True,
                                  warmup_power=EMA_WARMUP_POWER, device=device)

    def update_ema(self, model: nn.Module) -> None:
        """One step of the average, after an optimizer step."""
        if self.ema is not None:
            self.ema_steps += 1
            self.ema.update(model, step=self.ema_steps)

    @property
    def ema_model(self) -> Optional[nn.Module]:
        return None if self.ema is None else self.ema.module

    def state_tensors(self) -> Dict[str, Dict[str, torch.Tensor]]:
        """The safetensors files to save with the run's state, by name: EMA_FILE with --model-ema, else none."""
        return {EMA_FILE: self.ema_state()} if self.ema is not None else {}

    def ema_state(self) -> Dict[str, torch.Tensor]:
        """The EMA weights to save with the run's state (empty without --model-ema)."""
        if self.ema is None:
            return {}
        state = {k: v.detach().contiguous() for k, v in self.ema.module.state_dict().items()}
        return {**state, EMA_STEPS_KEY: torch.tensor(self.ema_steps)}

    def load_ema_state(self, state: Dict[str, torch.Tensor]) -> None:
        """The EMA weights of a saved state; a TrainingError when they are not this model's (another model's file,
        or one edited by hand), rather than torch's list of mismatched keys."""
        if self.ema is None:
            return
        state = dict(state)
        steps = state.pop(EMA_STEPS_KEY, None)
        expected = self.ema.module.state_dict()
        wrong = sorted(set(expected) ^ set(state)) + sorted(
            k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
        if steps is None or wrong:
            missing = f'no {EMA_STEPS_KEY}' if steps is None else f'{len(wrong)} tensors that differ, e.g. {wrong[0]}'
            raise TrainingError(f'Cannot resume: the saved {EMA_FILE} does not hold this model\'s EMA weights '
                                f'({missing}). Start a new run with --overwrite.')
        self.ema_steps = int(steps)
        self.ema.module.load_state_dict(state)
