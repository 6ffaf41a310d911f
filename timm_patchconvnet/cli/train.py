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
import sys
from dataclasses import asdict

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', choices=sorted(PRESETS), help='one of the seed paper runs; flags override it')
    parser.add_argument('--list-presets', action='store_true', help='list the presets with the paper figures')
    parser.add_argument('--eval-only', action='store_true', help='only evaluate --pretrained on the test split')
    for name, value in asdict(TrainConfig()).items():
        flag = '--' + name.replace('_', '-')
        if isinstance(value, bool):
            parser.add_argument(flag, action='store_true', help=HELP[name])
        else:
            kind = type(value) if value is not None else (int if name in OPTIONAL_INTS else str)
            parser.add_argument(flag, type=kind, default=value, choices=CHOICES.get(name),
                                help=f'{HELP[name]} (default: {value})')
    return parser


def parse_config(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset:  # the preset's values become defaults, so explicit flags still win
        parser.set_defaults(**{k: v for k, v in PRESETS[args.preset].items() if k != 'paper'})
        args = parser.parse_args(argv)
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
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
