"""Command lines of the package: `patchconvnet-train`, `patchconvnet-push-*` and `patchconvnet-demo`.

Each module has `main(argv=None) -> int`, the console script's entry point; `train.py`, `hub/*.py` and
`demo/app.py` of a checkout call the same functions. The console scripts are installed whatever the extras, so each
imports what its extra provides only inside `main`, and says which extra to install when a package is missing.
"""
import argparse
import sys
from pathlib import Path
from typing import Callable, Collection, Mapping, Optional, Tuple, Union

from ..config import Option, describe_range, options
from ..errors import install_hint, one_line

__all__ = ['OneLineErrorParser', 'add_option_arguments', 'check_fractions', 'missing_dependency',
           'run_upload_command', 'upload_parser', 'wrote_folder']

Number = Union[int, float]


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one `error:` line (exit code 2) like every other failure of a command."""

    def error(self, message: str) -> None:
        self.exit(2, f'error: {message} (see {self.prog} --help)\n')


def bounded(option: Option) -> Callable[[str], Number]:
    """An argparse `type` reading the option's number within its range; argparse names the flag in its message."""
    value_type = option.value_type

    def parse(text: str) -> Number:
        try:
            value = value_type(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if value_type is int else 'a number'} "
                                             f'{describe_range(option.range)}, got {text!r}') from None
        problem = option.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value
    parse.__name__ = value_type.__name__  # what argparse calls the type in its own messages
    return parse


def add_option_arguments(parser: argparse.ArgumentParser, names: Optional[Collection[str]] = None, *,
                         types: Optional[Mapping[str, Callable[[str], object]]] = None,
                         helps: Optional[Mapping[str, str]] = None) -> None:
    """A flag for each training option of `config.TrainConfig` (those named in `names`, else all), with the
    field's help, choices and range; `types` and `helps` replace a field's own where a command needs another."""
    for option in options():
        if names is not None and option.name not in names:
            continue
        help_text = (helps or {}).get(option.name, option.help)
        if option.value_type is bool:
            parser.add_argument(option.flag, action='store_true', help=help_text)
            continue
        parse = (types or {}).get(option.name) or (bounded(option) if option.range else option.value_type)
        allowed = f'; {describe_range(option.range)}' if option.range else ''
        parser.add_argument(option.flag, type=parse, default=option.default, choices=option.choices,
                            help=f"{help_text} (default: {'unset' if option.default is None else option.default}"
                                 f'{allowed})')


def check_fractions(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--val-fraction and --test-fraction together must leave data to train on."""
    if args.val_fraction + args.test_fraction >= 1:
        parser.error(f'argument --val-fraction/--test-fraction: must sum to < 1, got {args.val_fraction} + '
                     f'{args.test_fraction}')


def missing_dependency(err: ModuleNotFoundError, task: str, extras: str) -> int:
    """Report an optional package that `task` needs and that is not installed as one `error:` line naming the
    extras to install; returns the exit code, 2. A module of this package itself missing is a bug: re-raised."""
    package = (err.name or '').split('.')[0]
    if not package or package == __name__.split('.')[0]:
        raise err
    print(f'error: {task} needs the Python package {package!r}, which is not installed: {install_hint(extras)}',
          file=sys.stderr)
    return 2


def upload_parser(doc: str, *positionals: Tuple[str, str]) -> argparse.ArgumentParser:
    """The parser of a push command: `doc` (its module docstring) as the description, the positional arguments as
    (name, help) pairs, then the upload options of `hub.add_upload_arguments`; the command adds its own after."""
    from ..hub.upload import add_upload_arguments  # the hub extra: imported only when a command runs

    parser = OneLineErrorParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, help_text in positionals:
        parser.add_argument(name, help=help_text)
    add_upload_arguments(parser)
    return parser


def run_upload_command(args, errors, export: Callable[[str], str], push: Callable[..., str]) -> int:
    """What each push command does with the options of `hub.add_upload_arguments`: with --dry-run DIR,
    `export(DIR)` (it returns what to print); else `push(**upload_options)` (the fields of `hub.UploadOptions`; it
    returns the URL). The exception types `errors`, and OSError, become one `error:` line and exit code 2."""
    from ..hub.upload import UploadOptions

    try:
        if args.dry_run:
            print(export(args.dry_run))
        else:
            url = push(**vars(UploadOptions.from_args(args)))
            print(f'uploaded to {url}')
    except (*(errors if isinstance(errors, tuple) else (errors,)), OSError) as err:
        # OSError too: the export folder cannot be written (permissions, a full disk)
        print(f'error: {one_line(err)}', file=sys.stderr)  # one line, whatever the message holds
        return 2
    return 0


def wrote_folder(folder: Path) -> str:
    """The dry run's report of an export folder."""
    files = ', '.join(sorted(p.name for p in folder.iterdir()))
    return f'wrote {folder} ({files}); nothing uploaded'
