"""Publish a model trained by train.py on the Hugging Face Hub: weights, timm config.json, model card, attention maps.

    python hub/push_model.py runs/cifar10 ORG/NAME --dry-run hub-export/   # write exactly what would be uploaded
    python hub/push_model.py runs/cifar10 ORG/NAME                         # upload (token: HF_TOKEN or `hf auth login`)
    python hub/push_model.py runs/cifar10 timm-patchconvnet/patchconvnet_ti12_p4.cifar10 --private --revision v1 \\
        --commit-message "Ti12 on CIFAR-10, 100 epochs"                    # the repo the cifar10 tag loads from
    python hub/push_model.py runs/idc ORG/NAME --dataset-id ORG/IDC        # name the Hub copy of local training data

Then `timm.create_model('hf-hub:ORG/NAME', pretrained=True)` loads it after `import timm_patchconvnet` (and the
tag, e.g. `patchconvnet_ti12_p4.cifar10`, when pushed to its `hf_hub_id`). Bad input, a missing token or a Hub
error stop with one `error:` line and exit code 2; a failed upload keeps the local export.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: the package is one folder up

from timm_patchconvnet.hub import HubError, add_upload_arguments, export_model_folder, push_model  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('run_dir', help='the --output-dir of a finished train.py run')
    parser.add_argument('repo_id', help='the model repo, ORG/NAME')
    add_upload_arguments(parser)
    parser.add_argument('--dataset-id', help="the training data's Hub id for the card, when trained on a local copy")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.dry_run:
            folder = export_model_folder(args.run_dir, args.dry_run, args.repo_id, dataset_id=args.dataset_id)
            files = ', '.join(sorted(p.name for p in folder.iterdir()))
            print(f'wrote {folder} ({files}); nothing uploaded')
        else:
            url = push_model(args.run_dir, args.repo_id, export_dir=args.export_dir, dataset_id=args.dataset_id,
                             token=args.token, private=args.private, revision=args.revision,
                             commit_message=args.commit_message)
            print(f'uploaded to {url}')
    except HubError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
