"""`patchconvnet-demo`: serve the Gradio demo of PatchConvNet's attention maps (`timm_patchconvnet.demo.app`).

Needs the `demo` extra (Gradio), imported only when the command runs: nothing else of the package imports Gradio.
"""
import sys

from . import missing_dependency


def main(argv=None) -> int:
    try:
        from ..demo.app import main as serve
    except ModuleNotFoundError as err:
        return missing_dependency(err, 'the demo', 'demo')
    return serve(argv)


if __name__ == '__main__':
    sys.exit(main())
