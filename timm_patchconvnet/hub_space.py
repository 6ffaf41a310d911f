"""The Gradio demo as a Hugging Face Space: `demo/app.py`, its examples and this package in one folder.

`export_space_folder` writes exactly what the Space runs: app.py, examples/, requirements.txt, a README whose
front matter configures the Space, and a copy of `timm_patchconvnet` (not on PyPI), so the Space imports it from
its own root. `push_space` uploads that folder and sets the PATCHCONVNET_CHECKPOINTS variable app.py reads.
"""
import shutil
from importlib import metadata
from pathlib import Path
from typing import List, Optional, Sequence

import timm
from huggingface_hub import HfApi, SpaceCard, SpaceCardData

from .hub import CARD_FILE, HubError, _HUB_ERRORS, _scrub, check_repo_id, export_or_stage, new_export_folder
from .hub import push_folder, resolve_token
from .patchconvnet import HUB_NAMESPACE

__all__ = ['CHECKPOINTS_VARIABLE', 'export_space_folder', 'push_space']

CHECKPOINTS_VARIABLE = 'PATCHCONVNET_CHECKPOINTS'
PACKAGE_DIR = Path(__file__).resolve().parent
# gradio comes from the Space's sdk_version; torch and torchvision are the Space's CPU build of the latest release
REQUIREMENTS = ('torch', 'torchvision', f'timm>={timm.__version__}', 'safetensors', 'huggingface_hub', 'pillow',
                'numpy', 'matplotlib', 'scikit-learn')


def check_space_checkpoints(checkpoints: Sequence[str]) -> List[str]:
    """The checkpoints a Space can load: Hub ids and timm names; a local folder exists on this machine only."""
    if not checkpoints:
        raise HubError('Name at least one --checkpoint for the Space: hf-hub:ORG/NAME or a timm name with tag.')
    for spec in checkpoints:
        if spec.startswith('local-dir:') or Path(spec).expanduser().exists():
            raise HubError(f'{spec!r} is a local folder, which the Space cannot read: publish it first with '
                           '`patchconvnet-push-model RUN_DIR ORG/NAME` (python hub/push_model.py in a checkout), '
                           'then pass hf-hub:ORG/NAME.')
        if ',' in spec:
            raise HubError(f'{spec!r}: a checkpoint name cannot contain a comma.')
    return list(checkpoints)


def _gradio_version() -> str:
    try:
        return metadata.version('gradio')  # the Space runs the Gradio release the demo was tested with here
    except metadata.PackageNotFoundError as err:
        raise HubError("Gradio is not installed: install the demo extra (pip install -e '.[demo,hub]') so the "
                       'Space can pin the Gradio release the demo runs with.') from err


def build_space_card(checkpoints: Sequence[str], title: str) -> SpaceCard:
    models = [spec[len('hf-hub:'):] for spec in checkpoints if spec.startswith('hf-hub:')]
    data = SpaceCardData(title=title, emoji='🔎', colorFrom='indigo', colorTo='red', sdk='gradio',
                         sdk_version=_gradio_version(), app_file='app.py', pinned=False, license='apache-2.0',
                         models=models or None, short_description='Where PatchConvNet looked: attention heatmaps')
    listing = '\n'.join(f'- `{spec}`' for spec in checkpoints)
    body = f"""
# {title}

Upload an image and see where PatchConvNet's attention-based pooling looked: the top classes, the pooling's
attention as a heatmap over the image, and its raw map on the token grid. For models with per-class tokens, choose
the class whose map is shown.

Models served (the `{CHECKPOINTS_VARIABLE}` variable of this Space, comma-separated; change it in the settings):

{listing}

Built with [timm-patchconvnet](https://huggingface.co/{HUB_NAMESPACE}): PatchConvNet
(Touvron et al. 2021, [arXiv:2112.13692](https://arxiv.org/abs/2112.13692)) as a timm plugin. Run it locally with
`patchconvnet-demo --checkpoint CHECKPOINT` (timm-patchconvnet with its `demo` extra). Not a medical device:
heatmaps show what the model weighed, not what is in the tissue.
"""
    return SpaceCard(f'---\n{data.to_yaml()}\n---\n{body}')


def export_space_folder(demo_dir: str, out_dir: str, checkpoints: Sequence[str],
                        title: str = 'PatchConvNet attention') -> Path:
    """Write the Space into the new or empty folder `out_dir` from the checkout's `demo_dir`."""
    checkpoints = check_space_checkpoints(checkpoints)
    demo = Path(demo_dir)
    if not (demo / 'app.py').is_file():
        raise HubError(f'{demo} has no app.py: pass the demo/ folder of a timm-patchconvnet checkout.')
    folder = new_export_folder(out_dir)
    shutil.copy2(demo / 'app.py', folder / 'app.py')
    if (demo / 'examples').is_dir():
        shutil.copytree(demo / 'examples', folder / 'examples')
    # the library and its demo module; not the console commands (cli/), which the Space does not run
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', 'cli')
    shutil.copytree(PACKAGE_DIR, folder / PACKAGE_DIR.name, ignore=ignore)
    (folder / 'requirements.txt').write_text('\n'.join(REQUIREMENTS) + '\n')
    build_space_card(checkpoints, title).save(folder / CARD_FILE)
    return folder


def push_space(
        demo_dir: str,
        repo_id: str,
        checkpoints: Sequence[str],
        *,
        export_dir: Optional[str] = None,
        token: Optional[str] = None,
        private: bool = False,
        revision: Optional[str] = None,
        commit_message: Optional[str] = None,
        api: Optional[HfApi] = None,
) -> str:
    """Export the Space (`export_space_folder`), upload it to the Space `repo_id`, and set the variable that names
    its checkpoints. The export goes to `export_dir`, or a temporary folder removed after a successful upload."""
    repo_id = check_repo_id(repo_id)
    checkpoints = check_space_checkpoints(checkpoints)
    token = resolve_token(token)
    api = api or HfApi()
    folder = export_or_stage(export_dir, 'patchconvnet-space-',
                             lambda out: export_space_folder(demo_dir, out, checkpoints))
    url = push_folder(folder, repo_id, 'space', token=token, private=private, revision=revision,
                      commit_message=commit_message or 'Upload the PatchConvNet attention demo', api=api,
                      space_sdk='gradio')
    try:
        api.add_space_variable(repo_id, CHECKPOINTS_VARIABLE, ','.join(checkpoints),
                               description='checkpoints app.py serves, comma-separated', token=token)
    except _HUB_ERRORS as err:
        raise HubError(_scrub(
            f'The Space {repo_id} was uploaded, but setting its {CHECKPOINTS_VARIABLE} variable failed: '
            f'{type(err).__name__}: {err}. Set it in the Space settings to {",".join(checkpoints)}.', token)) from err
    if export_dir is None:
        shutil.rmtree(folder, ignore_errors=True)
    return url
