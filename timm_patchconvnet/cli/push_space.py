"""Publish the Gradio demo as a Hugging Face Space that shows PatchConvNet's attention heatmaps.

    patchconvnet-push-space ORG/NAME --model hf-hub:ORG/MODEL --dry-run space-export/   # write it only
    patchconvnet-push-space ORG/NAME --model hf-hub:ORG/MODEL \\
        --model patchconvnet_s60_p16.fb_in1k                                            # upload

The Space holds demo/app.py (as app.py), demo/examples/, a copy of the timm_patchconvnet package, a
requirements.txt and a README whose front matter configures it; its PATCHCONVNET_MODELS variable names the
models it serves. Local training folders must be pushed first (patchconvnet-push-model). It needs the `hub` and
`demo` extras and a checkout's demo/ folder (found beside the package of an editable install, else --demo-dir);
from a checkout, `python hub/push_space.py` is the same command. Bad input, a missing token or a Hub error stop
with one `error:` line and exit code 2; a failed upload keeps the local export.
"""
import argparse
import sys
from pathlib import Path

from . import missing_dependency, run_upload_command, upload_parser, wrote_folder

CHECKOUT_DEMO_DIR = Path(__file__).resolve().parents[2] / 'demo'  # there when the package runs from a checkout


def build_parser() -> argparse.ArgumentParser:
    parser = upload_parser(__doc__, ('repo_id', 'the Space, ORG/NAME'))
    parser.add_argument('--model', '--checkpoint', dest='models', action='append', required=True, metavar='MODEL',
                        help='hf-hub:ORG/NAME or a timm name with tag, served by the Space; repeatable '
                             '(--checkpoint: its name before 0.2)')
    parser.add_argument('--demo-dir', help="the demo to publish, a checkout's demo/ folder (default: the one of "
                                           'the checkout the package runs from)')
    return parser


def main(argv=None) -> int:
    try:
        from ..hub import HubError
        from ..hub.space import export_space_folder, push_space
    except ModuleNotFoundError as err:
        return missing_dependency(err, 'publishing the Space', 'hub,demo')
    args = build_parser().parse_args(argv)

    def demo_dir() -> str:
        if args.demo_dir is None and not (CHECKOUT_DEMO_DIR / 'app.py').is_file():
            raise HubError('The package is not run from a checkout, so there is no demo/ folder to publish: pass '
                           '--demo-dir, the demo/ folder of a timm-patchconvnet checkout.')
        return args.demo_dir or str(CHECKOUT_DEMO_DIR)

    return run_upload_command(
        args, HubError,
        export=lambda out: wrote_folder(export_space_folder(demo_dir(), out, args.models)),
        push=lambda **upload: push_space(demo_dir(), args.repo_id, args.models, **upload))


if __name__ == '__main__':
    sys.exit(main())
