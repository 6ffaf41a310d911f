"""Publish a model trained by patchconvnet-train on the Hugging Face Hub: weights, timm config.json, model card,
attention maps.

    patchconvnet-push-model runs/cifar10 ORG/NAME --dry-run hub-export/   # write exactly what would be uploaded
    patchconvnet-push-model runs/cifar10 ORG/NAME                         # upload (token: HF_TOKEN or `hf auth login`)
    patchconvnet-push-model runs/cifar10 timm-patchconvnet/patchconvnet_ti12_p4.cifar10 --private --revision v1 \\
        --commit-message "Ti12 on CIFAR-10, 100 epochs"                   # the repo the cifar10 tag loads from
    patchconvnet-push-model runs/idc ORG/NAME --dataset-id ORG/IDC        # name the Hub copy of local training data

It needs only the `hub` extra (pip install 'timm-patchconvnet[hub]'), not the training stack; from a checkout,
`python hub/push_model.py` is the same command. Then `timm.create_model('hf-hub:ORG/NAME', pretrained=True)` loads
it after `import timm_patchconvnet` (and the tag, e.g. `patchconvnet_ti12_p4.cifar10`, when pushed to its
`hf_hub_id`). Bad input, a missing token or a Hub error stop with one `error:` line and exit code 2; a failed
upload keeps the local export.
"""
import argparse
import sys

from . import missing_dependency, run_upload_command, upload_parser, wrote_folder


def build_parser() -> argparse.ArgumentParser:
    parser = upload_parser(__doc__, ('run_dir', 'the --output-dir of a finished patchconvnet-train (train.py) run'),
                           ('repo_id', 'the model repo, ORG/NAME'))
    parser.add_argument('--dataset-id', help="the training data's Hub id for the card, when trained on a local copy")
    return parser


def main(argv=None) -> int:
    try:
        from ..hub import HubError, export_model_folder, push_model
    except ModuleNotFoundError as err:
        return missing_dependency(err, 'publishing a model', 'hub')
    args = build_parser().parse_args(argv)
    return run_upload_command(
        args, HubError,
        export=lambda out: wrote_folder(export_model_folder(args.run_dir, out, args.repo_id,
                                                            dataset_id=args.dataset_id)),
        push=lambda **upload: push_model(args.run_dir, args.repo_id, dataset_id=args.dataset_id, **upload))


if __name__ == '__main__':
    sys.exit(main())
