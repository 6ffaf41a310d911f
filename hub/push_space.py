"""Publish the Gradio demo as a Hugging Face Space, from a checkout: `python hub/push_space.py ...`.

The same command as `patchconvnet-push-space`; its options and examples: `python hub/push_space.py --help`, or
timm_patchconvnet/cli/push_space.py.
"""
import sys

from timm_patchconvnet.cli.push_space import main

if __name__ == '__main__':
    sys.exit(main())
