"""The training options, each described once: `TrainConfig`'s fields carry their help, allowed values and role.

From this one description come the command line of `patchconvnet-train` (`cli/train.py`), what `--resume` checks
(`resume_key`), the command line a model card shows (`public_command`) and the check of the presets
(`check_settings`). It imports no training stack (Accelerate, `datasets`, scikit-learn), so publishing a finished
run needs only the `hub` extra. A new option is one field here.
"""
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from .dataset_specs import DATASETS, PUBLISHED_SPLITS, SEEDED
from .model_ref import ModelRefError, parse_model_ref
from .patchconvnet import CLASS_TOKENS

__all__ = ['AUTO_AUGMENT_POLICIES', 'CIFAR10_HUB_ID', 'DECODED', 'LOADERS', 'PIL', 'TORCH_OPTIMIZER_LAMB', 'Option',
           'TrainConfig',
           'check_settings', 'describe_range', 'options', 'public_command', 'public_value', 'resume_key']

CIFAR10_HUB_ID = DATASETS['cifar10'].hub_id
TORCH_OPTIMIZER_LAMB = 'lamb_torch_optimizer'  # --opt value for torch-optimizer's Lamb, the seed paper's optimizer
DECODED, PIL = 'decoded', 'pil'  # --loader
LOADERS = (DECODED, PIL)
# --auto-augment, in timm's spelling (rand-m9-mstd0.5: RandAugment, 2 ops at magnitude 9 of 10 with noise of 0.5;
# -inc1: the operations that grow with the magnitude, DeiT's); data/batch_auto_augment.py runs them on batches
AUTO_AUGMENT_POLICIES = ('none', 'rand-m9-mstd0.5', 'rand-m9-mstd0.5-inc1', 'trivial')

Range = Tuple[float, Optional[float], bool, bool]  # lowest, highest (None: unbounded), whether each end is allowed


def option(default: Any, help: str, *, value_type: Optional[type] = None, choices: Optional[Tuple[str, ...]] = None,
           range: Optional[Range] = None, fixed_on_resume: bool = True, public: bool = True,
           placeholder: Optional[str] = None) -> Any:
    """A TrainConfig field. `value_type`: the type when the default is None; `fixed_on_resume`: `--resume` refuses to
    continue a run saved with another value; `public`: shown in the command line of a model card, with
    `placeholder` instead of a value that is a path on the trainer's machine."""
    return field(default=default, metadata=dict(help=help, value_type=value_type or type(default), choices=choices, range=range,
                                                fixed_on_resume=fixed_on_resume, public=public,
                                                placeholder=placeholder))


POSITIVE = (1, None, True, True)
FRACTION = (0, 1, False, False)
SHARE = (0, 1, True, False)  # 0 allowed, 1 not
# a length in (fractional) epochs: bounded, since it becomes a number of steps (1e308 epochs overflowed `round`)
EPOCH_SPAN = (0, 1_000_000, True, True)


@dataclass
class TrainConfig:
    dataset: str = option('digits', f"{', '.join(repr(n) for n in DATASETS)}, 'hub:<repo_id>' or a local folder "
                                     "(digits: scikit-learn's, offline)")
    data_dir: Optional[str] = option(None, 'local copy of the data: CIFAR-10 parquet (plain_text/*.parquet), the IDC '
                                           'Kaggle folder or parquet', value_type=str, placeholder='DATA_DIR')
    hub_id: Optional[str] = option(None, 'a Hugging Face Hub data set id to read instead (cifar10, idc)', value_type=str)
    model: str = option('patchconvnet_ti12_p4', 'any timm model name, e.g. patchconvnet_s60_p4 or resnet50')
    pretrained: Optional[str] = option(
        None, "start from weights: a tag of --model (e.g. fb_in1k; 'default' alone: its default tag), a timm name "
              'with tag, a training folder (or local-dir:DIR), hf-hub:ORG/REPO or a weights file', value_type=str)
    num_classes: Optional[int] = option(None, 'train a new head of this size on pretrained weights with another '
                                              'number of classes', value_type=int, range=(2, None, True, True))
    img_size: Optional[int] = option(None, "input size (default: the data set's, e.g. 32 for digits and CIFAR-10, 50 "
                                           "for IDC, else the model's)", value_type=int, range=(8, None, True, True))
    epochs: int = option(10, 'maximum number of epochs', range=POSITIVE)
    batch_size: int = option(64, 'images per step and process', range=POSITIVE)
    grad_accum_steps: int = option(1, 'accumulate gradients over this many batches per optimizer step',
                                   range=POSITIVE)
    opt: str = option('lamb', f"timm optimizer (sgd, momentum, adam, adamw, lamb, ...) or {TORCH_OPTIMIZER_LAMB} "
                              "(torch-optimizer's Lamb, the seed paper's)")
    lr: float = option(3e-3, 'peak learning rate', range=(0, None, False, True))
    weight_decay: float = option(0.01, 'weight decay (never on norms, biases, class tokens or layer scales)',
                                 range=(0, None, True, True))
    momentum: float = option(0.9, 'momentum of SGD-type optimizers', range=SHARE)
    sched: str = option('cosine', 'the schedule after the warm-up', choices=('cosine', 'constant'))
    warmup_epochs: float = option(0., 'linear warm-up length in epochs (fractions allowed)', range=EPOCH_SPAN)
    label_smoothing: float = option(0., 'label smoothing of the training loss', range=SHARE)
    drop_path: float = option(0., 'stochastic depth rate', range=SHARE)
    mixup: float = option(0., "Mixup's alpha (timm.data.Mixup; 0: off); the training loss then takes soft targets",
                          range=(0, None, True, True))
    cutmix: float = option(0., "CutMix's alpha (0: off)", range=(0, None, True, True))
    mixup_prob: float = option(1., 'share of batches mixed when --mixup or --cutmix is on', range=(0, 1, True, True))
    mixup_switch_prob: float = option(0.5, 'share of mixed batches that use CutMix when both are on',
                                      range=(0, 1, True, True))
    auto_augment: str = option('none', "timm's RandAugment or torchvision's TrivialAugmentWide after the data set's "
                                        'own augmentation, each image its own draw (on the decoded batch on the '
                                        'device; per image with --loader pil)',
                               choices=AUTO_AUGMENT_POLICIES)
    reprob: float = option(0., "random erasing: each training image's chance of a noise rectangle (timm's "
                               'RandomErasing, on the normalised batch)', range=SHARE)
    model_ema: bool = option(False, 'keep an exponential moving average of the weights (timm ModelEmaV3); '
                                    'validation reports both, and the better one on validation loss is saved')
    model_ema_decay: float = option(0.9998, 'decay of --model-ema per optimizer step', range=FRACTION)
    clip_grad: Optional[float] = option(None, 'clip the gradient norm to this (Accelerate clip_grad_norm_)',
                                        value_type=float, range=(0, None, False, True))
    layer_decay: Optional[float] = option(None, "layer-wise learning-rate decay for fine-tuning: each layer's rate "
                                                "times this per layer nearer the input (timm's param_groups_layer_"
                                                'decay over stem, blocks, pooling, head)', value_type=float,
                                          range=(0, 1, False, True))
    aug_repeats: int = option(0, "repeated augmentation: each image this many times per epoch, spread over the "
                                 "processes (timm's RepeatAugSampler; only with several processes; 0: off)",
                              range=(0, None, True, True))
    class_tokens: Optional[str] = option(
        None, "PatchConvNet's class tokens: 'single' (the paper's) or 'per_class', one token, attention map and output "
              "unit per class (the seed paper's proposed next step); pretrained tokens are averaged or copied to fit. "
              'Unset: single for a new model, as they are for --pretrained', value_type=str, choices=CLASS_TOKENS)
    patience: int = option(10, 'stop after this many epochs without a lower validation loss', range=POSITIVE,
                           fixed_on_resume=False)
    seed: int = option(0, 'seed of the split, the initialisation and the data order',
                       range=(0, 2 ** 32 - 1, True, True))
    split: str = option(SEEDED, "'seeded' (a seeded split, by patient where the data has patient ids) or a published "
                                "patient split of --dataset: 'janowczyk' for idc (Janowczyk & Madabhushi 2016, "
                                '84/29/49 patients)', choices=(SEEDED, *PUBLISHED_SPLITS))
    allow_missing_patients: bool = option(False, 'with a published --split, go on when listed patients are missing '
                                                 'from the data (they are counted in metrics.json)')
    val_fraction: float = option(0.1, 'share of the data (or of the patients) held out for validation', range=FRACTION)
    test_fraction: float = option(0.2, 'share held out for testing (when the source has no test split)',
                                  range=FRACTION)
    max_steps_per_epoch: Optional[int] = option(None, 'cut each epoch short (smoke tests)', value_type=int, range=POSITIVE)
    loader: str = option(DECODED, f"'{DECODED}': each split decoded once into a cached uint8 array (see --cache-dir), "
                                   'augmented and normalised in batches on the training device; '
                                   f"'{PIL}': PIL transforms per image in worker processes", choices=LOADERS)
    num_workers: Optional[int] = option(None, f'data-loading worker processes (default: with --loader {PIL}, on a '
                                              'GPU one per core of this process but one, at most 8, on a CPU none '
                                              f'below 4 cores, else a quarter of them; with {DECODED}, 0)',
                                        value_type=int, range=(0, None, True, True), fixed_on_resume=False, public=False)
    cache_dir: Optional[str] = option(None, 'where decoded splits and the check of an IDC folder are kept, shared by '
                                            'runs and processes (default: $PATCHCONVNET_CACHE or '
                                            '~/.cache/timm_patchconvnet); also datasets\' cache_dir', value_type=str,
                                      fixed_on_resume=False, public=False)
    mixed_precision: str = option('no', "through Accelerate; 'auto': bf16 where the CPU (AVX512-BF16, AMX) or GPU "
                                        "(Ampere on) runs it natively, fp16 on older GPUs, else no",
                                  choices=('no', 'auto', 'fp16', 'bf16'))
    verify_cache: bool = option(False, 'check the pixels of the decoded cache against the checksums recorded when it '
                                       'was built (reads it whole), rebuilding an entry that differs',
                                fixed_on_resume=False, public=False)
    compile: bool = option(False, 'torch.compile the model (inductor, fullgraph): faster steps on a GPU after a '
                                  'minute of compiling', fixed_on_resume=False, public=False)
    report_to: Optional[str] = option(None, "an Accelerate tracker: 'tensorboard', 'wandb', 'all', ...", value_type=str,
                                      fixed_on_resume=False, public=False)
    output_dir: str = option('runs/digits', 'where the model, metrics.json, attention.png and the resumable state go',
                             fixed_on_resume=False, public=False)
    resume: bool = option(False, 'continue the run saved in --output-dir', fixed_on_resume=False, public=False)
    overwrite: bool = option(False, 'replace a run saved in --output-dir', fixed_on_resume=False, public=False)


class Option:
    """One TrainConfig field with its description, as read from the field's metadata."""

    def __init__(self, name: str, default: Any, metadata: Mapping[str, Any]):
        self.name, self.default = name, default
        self.flag = '--' + name.replace('_', '-')
        self.help: str = metadata['help']
        self.value_type: type = metadata['value_type']
        self.choices: Optional[Tuple[str, ...]] = metadata['choices']
        self.range: Optional[Range] = metadata['range']
        self.fixed_on_resume: bool = metadata['fixed_on_resume']
        self.public: bool = metadata['public']
        self.placeholder: Optional[str] = metadata['placeholder']

    def problem(self, value: Any) -> Optional[str]:
        """Why `value` is not allowed for this option (as argparse would say it after the flag), or None."""
        if value is None and self.default is None:
            return None
        types = (int, float) if self.value_type is float else (self.value_type,)
        if not isinstance(value, types) or (isinstance(value, bool) and self.value_type is not bool):
            return f'must be {self.value_type.__name__}, got {value!r}'
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {value!r}"
        if self.range is not None and not in_range(value, self.range):
            return f'must be {describe_range(self.range)}, got {value}'
        return None


def options() -> Iterator[Option]:
    """The options of TrainConfig, in field order."""
    for f in fields(TrainConfig):
        default = f.default if f.default is not MISSING else None
        yield Option(f.name, default, f.metadata)


def in_range(value: float, allowed: Range) -> bool:
    low, high, low_closed, high_closed = allowed
    return (math.isfinite(value) and (value >= low if low_closed else value > low)
            and (high is None or (value <= high if high_closed else value < high)))


def describe_range(allowed: Range) -> str:
    low, high, low_closed, high_closed = allowed
    lower = f"{'>=' if low_closed else '>'} {low}"
    return lower if high is None else f"{lower} and {'<=' if high_closed else '<'} {high}"


def check_settings(settings: Mapping[str, Any]) -> List[str]:
    """What is wrong with a partial set of TrainConfig values (a preset), one phrase per problem."""
    known = {o.name: o for o in options()}
    problems = [f'{name} is not a training option' for name in settings if name not in known]
    problems += [f'{known[name].flag} {problem}' for name, value in settings.items() if name in known
                 for problem in [known[name].problem(value)] if problem]
    return problems


def resume_key(cfg: TrainConfig, num_processes: int) -> Dict[str, Any]:
    """The settings a resumed run must share with the saved one."""
    return {**{o.name: getattr(cfg, o.name) for o in options() if o.fixed_on_resume}, 'num_processes': num_processes}


def public_value(name: str, value: Any) -> Any:
    """`value` of the option `name` as a card publishes it: a placeholder where it is a path on the trainer's
    machine (a local data folder, a local model folder or weights file)."""
    if name == 'dataset' and not (value in DATASETS or str(value).startswith('hub:')):
        return 'DATA_FOLDER'
    if name == 'pretrained':
        try:  # recorded on the trainer's machine: its paths are told by their shape, not looked up here; a bare tag
            # stays a tag whatever the architecture, so none is named
            local = parse_model_ref(str(value), architecture='', look_on_disk=False).is_local
        except ModelRefError:  # not a model string of today's grammar (an older run's): never risk publishing a path
            local = True
        return 'PRETRAINED' if local else value
    placeholder = next(o.placeholder for o in options() if o.name == name)
    return placeholder or value


def public_command(settings: Mapping[str, Any], program: str = 'patchconvnet-train') -> str:
    """The command line of a run (its settings as metrics.json records them): the public options that differ
    from their defaults, paths replaced by placeholders (`public_value`)."""
    parts = [program]
    for o in options():
        value = settings.get(o.name, o.default)
        if o.public and value != o.default:
            parts.append(o.flag if isinstance(value, bool) else f'{o.flag} {public_value(o.name, value)}')
    return ' '.join(parts)
