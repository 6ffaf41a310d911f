"""Publish a model trained by train.py on the Hugging Face Hub, from a checkout: `python hub/push_model.py ...`.

The same command as `patchconvnet-push-model`; its options and examples: `python hub/push_model.py --help`, or
timm_patchconvnet/cli/push_model.py.
"""
import sys

from timm_patchconvnet.cli.push_model import main

if __name__ == '__main__':
    sys.exit(main())
