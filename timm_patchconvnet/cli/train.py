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

from ..config import TrainConfig
from ..errors import one_line
from ..pretrained import PretrainedWeightsUnavailableError
from ..training.presets import PRESETS, preset_settings
from . import OneLineErrorParser, add_option_arguments, check_fractions, missing_dependency


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
    parser.add_argument('--preset', choices=sorted(PRESETS),
                        help='one of the seed paper runs or a strong recipe; flags override it')
    parser.add_argument('--list-presets', action='store_true', help="list the presets with the literature's figures")
    parser.add_argument('--eval-only', action='store_true', help='only evaluate --pretrained on the test split')
    add_option_arguments(parser, types={'report_to': tracker})
    return parser


def parse_config(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset:  # the preset's values become defaults, so explicit flags still win
        parser.set_defaults(**preset_settings(args.preset))
        args = parser.parse_args(argv)
    check_fractions(parser, args)
    return args


def main(argv=None) -> int:
    args = parse_config(argv)
    if args.list_presets:
        print('paper: the figure the literature reports for each run (its source below it where the seed paper '
              'is not it), not one measured here')
        for name, preset in PRESETS.items():
            settings = ' '.join(f'--{k.replace("_", "-")}' + ('' if v is True else f' {v}')
                                for k, v in preset_settings(name).items())
            print(f'{name:28s} paper: {preset["paper"] or "-":28s} {settings}')
            if preset.get('source'):
                print(f'{"":28s} source: {preset["source"]}')
        return 0
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__})
    try:  # the training stack, only now: --help and --list-presets work without it
        from ..data import DataError
        from ..training import TrainingError, evaluate_pretrained, train
    except ModuleNotFoundError as err:
        return missing_dependency(err, 'training', 'train')
    try:
        if args.eval_only:
            if not config.pretrained:
                raise TrainingError('--eval-only needs --pretrained (e.g. local-dir:runs/digits).')
            if config.class_tokens is not None:  # it would change the model evaluated
                raise TrainingError('--eval-only evaluates the --pretrained model as it is: drop --class-tokens.')
            print(json.dumps(evaluate_pretrained(config)['test'], indent=2))
        else:
            result = train(config)
            test = result['test']
            print(f"test accuracy {test['accuracy']:.4f} (best epoch {result['best_epoch']}); "
                  f"metrics in {config.output_dir}/metrics.json")
    except (DataError, TrainingError, PretrainedWeightsUnavailableError) as err:
        print(f'error: {one_line(err)}', file=sys.stderr)  # one line, whatever a library said
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
