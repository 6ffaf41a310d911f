"""Train PatchConvNet (or any timm model) on digits, CIFAR-10, IDC or any image-classification data set.

    python train.py --dataset digits                          # one process, offline quick start
    accelerate launch train.py --dataset idc --data-dir IDC   # one CPU, or every GPU Accelerate is set up for
    accelerate launch --multi_gpu --num_processes 2 train.py  # two processes (on CPUs when there is no GPU)
    python train.py --preset table2-lamb --data-dir cifar10/  # one of the seed paper's runs (--list-presets)

`patchconvnet-train` is the same command wherever the package is installed (with the `train` extra), and
`accelerate launch -m timm_patchconvnet.cli.train ...` launches it; `python train.py` runs it from a checkout.
"""
import argparse
import json
import math
import sys
from dataclasses import asdict
from typing import Callable, Optional, Tuple, Union

from .. import PretrainedWeightsUnavailableError
from ..config import TORCH_OPTIMIZER_LAMB, TrainConfig
from ..presets import PRESETS
from . import missing_dependency

HELP = {
    'dataset': "'digits' (scikit-learn's, offline), 'cifar10', 'idc', 'hub:<repo_id>' or a local folder",
    'data_dir': 'local copy of the data: CIFAR-10 parquet (plain_text/*.parquet), the IDC Kaggle folder or parquet',
    'hub_id': 'a Hugging Face Hub data set id to read instead (cifar10, idc)',
    'model': 'any timm model name, e.g. patchconvnet_s60_p4 or resnet50',
    'pretrained': "start from weights: a tag of --model (e.g. fb_in1k; 'default' alone: its default tag), "
                  "local-dir:DIR, hf-hub:ORG/REPO or a checkpoint file",
    'num_classes': 'train a new head of this size on pretrained weights with another number of classes',
    'img_size': 'input size (default: 32 for digits and CIFAR-10, 50 for IDC, else the model\'s)',
    'epochs': 'maximum number of epochs',
    'batch_size': 'images per step and process',
    'grad_accum_steps': 'accumulate gradients over this many batches per optimizer step',
    'opt': f"timm optimizer (sgd, momentum, adam, adamw, lamb, ...) or {TORCH_OPTIMIZER_LAMB} (torch-optimizer's Lamb)",
    'lr': 'peak learning rate',
    'weight_decay': 'weight decay (never on norms, biases, class tokens or layer scales)',
    'momentum': 'momentum of SGD-type optimizers',
    'sched': "'cosine' or 'constant', after the warm-up",
    'warmup_epochs': 'linear warm-up length in epochs (fractions allowed)',
    'label_smoothing': 'label smoothing of the training loss',
    'drop_path': 'stochastic depth rate',
    'patience': 'stop after this many epochs without a lower validation loss',
    'seed': 'seed of the split, the initialisation and the data order',
    'val_fraction': 'share of the data (or of the patients) held out for validation',
    'test_fraction': 'share held out for testing (when the source has no test split)',
    'max_steps_per_epoch': 'cut each epoch short (smoke tests)',
    'num_workers': 'data-loading worker processes',
    'mixed_precision': "'no', 'fp16' or 'bf16' (through Accelerate)",
    'report_to': "an Accelerate tracker: 'tensorboard', 'wandb', 'all', ...",
    'output_dir': 'where the model, metrics.json, attention.png and the resumable state go',
    'resume': 'continue the run saved in --output-dir',
    'overwrite': 'replace a run saved in --output-dir',
}


OPTIONAL_INTS = ('num_classes', 'img_size', 'max_steps_per_epoch')
CHOICES = {'sched': ('cosine', 'constant'), 'mixed_precision': ('no', 'fp16', 'bf16')}

Number = Union[int, float]
# The allowed range of each numeric flag: (lowest, highest, whether the ends are allowed themselves). Checked when
# the command line is read, so a bad value stops at once instead of training nothing or crashing an epoch later.
RANGES = {
    'num_classes': (2, None, True, True), 'img_size': (8, None, True, True), 'epochs': (1, None, True, True),
    'batch_size': (1, None, True, True), 'grad_accum_steps': (1, None, True, True), 'lr': (0, None, False, True),
    'weight_decay': (0, None, True, True), 'momentum': (0, 1, True, False), 'warmup_epochs': (0, None, True, True),
    'label_smoothing': (0, 1, True, False), 'drop_path': (0, 1, True, False), 'patience': (1, None, True, True),
    'seed': (0, 2 ** 32 - 1, True, True), 'val_fraction': (0, 1, False, False), 'test_fraction': (0, 1, False, False),
    'max_steps_per_epoch': (1, None, True, True), 'num_workers': (0, None, True, True),
}


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one `error:` line (exit code 2) like every other failure of the command."""

    def error(self, message: str) -> None:
        self.exit(2, f'error: {message} (see {self.prog} --help)\n')


def _describe_range(low: Number, high: Optional[Number], closed: Tuple[bool, bool]) -> str:
    lower = f"{'>=' if closed[0] else '>'} {low}"
    return lower if high is None else f"{lower} and {'<=' if closed[1] else '<'} {high}"


def bounded(kind: type, low: Number, high: Optional[Number], low_closed: bool, high_closed: bool) -> Callable:
    """An argparse `type` reading a `kind` number within the range; argparse names the flag in its message."""
    allowed = _describe_range(low, high, (low_closed, high_closed))

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'} {allowed}, "
                                             f'got {text!r}') from None
        inside = (math.isfinite(value) and (value >= low if low_closed else value > low)
                  and (high is None or (value <= high if high_closed else value < high)))
        if not inside:
            raise argparse.ArgumentTypeError(f'must be {allowed}, got {text}')
        return value
    parse.__name__ = kind.__name__  # what argparse calls the type in its own messages
    return parse


def tracker(text: str) -> str:
    """--report-to: one of Accelerate's trackers, checked now rather than after the data is loaded."""
    try:
        from accelerate.utils import LoggerType
    except ModuleNotFoundError:  # no training stack: main() says which extra to install
        return text
    names = [t.value for t in LoggerType]
    if text not in names:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(names)}, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', choices=sorted(PRESETS), help='one of the seed paper runs; flags override it')
    parser.add_argument('--list-presets', action='store_true', help='list the presets with the paper figures')
    parser.add_argument('--eval-only', action='store_true', help='only evaluate --pretrained on the test split')
    for name, value in asdict(TrainConfig()).items():
        flag = '--' + name.replace('_', '-')
        if isinstance(value, bool):
            parser.add_argument(flag, action='store_true', help=HELP[name])
            continue
        kind = type(value) if value is not None else (int if name in OPTIONAL_INTS else str)
        if name in RANGES:
            low, high, low_closed, high_closed = RANGES[name]
            kind = bounded(kind, low, high, low_closed, high_closed)
            allowed = f'; {_describe_range(low, high, (low_closed, high_closed))}'
        else:
            kind, allowed = (tracker if name == 'report_to' else kind), ''
        parser.add_argument(flag, type=kind, default=value, choices=CHOICES.get(name),
                            help=f'{HELP[name]} (default: {value}{allowed})')
    return parser


def parse_config(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset:  # the preset's values become defaults, so explicit flags still win
        parser.set_defaults(**{k: v for k, v in PRESETS[args.preset].items() if k != 'paper'})
        args = parser.parse_args(argv)
    if args.val_fraction + args.test_fraction >= 1:
        parser.error(f'argument --val-fraction/--test-fraction: must sum to < 1, got {args.val_fraction} + '
                     f'{args.test_fraction}')
    return args


def main(argv=None) -> int:
    args = parse_config(argv)
    if args.list_presets:
        for name, preset in PRESETS.items():
            settings = ' '.join(f'--{k.replace("_", "-")} {v}' for k, v in preset.items() if k != 'paper')
            print(f'{name:28s} paper: {preset["paper"] or "-":28s} {settings}')
        return 0
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__})
    try:  # the training stack, only now: --help and --list-presets work without it
        from ..data import DataError
        from ..training import TrainingError, evaluate_checkpoint, train
    except ModuleNotFoundError as err:
        return missing_dependency(err, 'training', 'train')
    try:
        if args.eval_only:
            if not config.pretrained:
                raise TrainingError('--eval-only needs --pretrained (e.g. local-dir:runs/digits).')
            print(json.dumps(evaluate_checkpoint(config)['test'], indent=2))
        else:
            result = train(config)
            test = result['test']
            print(f"test accuracy {test['accuracy']:.4f} (best epoch {result['best_epoch']}); "
                  f"metrics in {config.output_dir}/metrics.json")
    except (DataError, TrainingError, PretrainedWeightsUnavailableError) as err:
        print('error: ' + ' '.join(str(err).split()), file=sys.stderr)  # one line, whatever a library said
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
