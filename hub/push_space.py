"""Publish the Gradio demo as a Hugging Face Space that shows PatchConvNet's attention heatmaps.

    python hub/push_space.py ORG/NAME --checkpoint hf-hub:ORG/MODEL --dry-run space-export/   # write it only
    python hub/push_space.py ORG/NAME --checkpoint hf-hub:ORG/MODEL \\
        --checkpoint patchconvnet_s60_p16.fb_in1k                                             # upload

The Space holds demo/app.py (as app.py), demo/examples/, a copy of the timm_patchconvnet package, a
requirements.txt and a README whose front matter configures it; its PATCHCONVNET_CHECKPOINTS variable names the
models it serves. Local training folders must be pushed first (hub/push_model.py). Bad input, a missing token or
a Hub error stop with one `error:` line and exit code 2; a failed upload keeps the local export.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout: the package is one folder up

from timm_patchconvnet.hub import HubError, add_upload_arguments  # noqa: E402
from timm_patchconvnet.hub_space import export_space_folder, push_space  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('repo_id', help='the Space, ORG/NAME')
    parser.add_argument('--checkpoint', action='append', required=True, metavar='CHECKPOINT',
                        help='hf-hub:ORG/NAME or a timm name with tag, served by the Space; repeatable')
    parser.add_argument('--demo-dir', default=str(ROOT / 'demo'), help='the demo to publish (default: demo/)')
    add_upload_arguments(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.dry_run:
            folder = export_space_folder(args.demo_dir, args.dry_run, args.checkpoint)
            files = ', '.join(sorted(p.name for p in folder.iterdir()))
            print(f'wrote {folder} ({files}); nothing uploaded')
        else:
            url = push_space(args.demo_dir, args.repo_id, args.checkpoint, export_dir=args.export_dir,
                             token=args.token, private=args.private, revision=args.revision,
                             commit_message=args.commit_message)
            print(f'uploaded to {url}')
    except HubError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
