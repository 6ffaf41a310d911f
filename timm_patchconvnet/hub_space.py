"""The Gradio demo as a Hugging Face Space: `demo/app.py`, its examples and this package in one folder.

`export_space_folder` writes exactly what the Space runs: app.py, the example images, requirements.txt, a README
whose front matter configures the Space, and a copy of the modules of `timm_patchconvnet` (not on PyPI), so the
Space imports it from its own root. Nothing else: the Space is public (see `space_files`). `push_space` uploads
that folder and sets the PATCHCONVNET_CHECKPOINTS variable app.py reads.
"""
import logging
import shutil
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import timm
from huggingface_hub import HfApi, SpaceCard, SpaceCardData

from .hub import CARD_FILE, HubError, _HUB_ERRORS, _scrub, check_repo_id, export_or_stage, new_export_folder
from .hub import push_folder, resolve_token
from .patchconvnet import HUB_NAMESPACE

__all__ = ['CHECKPOINTS_VARIABLE', 'export_space_folder', 'push_space', 'space_files']

logger = logging.getLogger(__name__)
CHECKPOINTS_VARIABLE = 'PATCHCONVNET_CHECKPOINTS'
PACKAGE_DIR = Path(__file__).resolve().parent
# the example images the demo shows (demo.EXAMPLE_SUFFIXES, not imported: demo.py imports Gradio)
EXAMPLE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp')
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
                        title: str = 'PatchConvNet attention', package_dir: Optional[str] = None) -> Path:
    """Write the Space into the new or empty folder `out_dir` from the checkout's `demo_dir` and the package in
    `package_dir` (default: this one). Only an allow-list is copied (`space_files`): a Space is public, so a token
    in a dotfile, a file a symbolic link points at or a stray note beside the sources must never reach it."""
    checkpoints = check_space_checkpoints(checkpoints)
    demo = Path(demo_dir)
    app = demo / 'app.py'
    if app.is_symlink() or not app.is_file():
        raise HubError(f'{demo} has no app.py (a plain file, not a link): pass the demo/ folder of a '
                       'timm-patchconvnet checkout.')
    package = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    files = space_files(demo, package)
    card = build_space_card(checkpoints, title)  # before writing: a missing Gradio leaves no half export
    folder = new_export_folder(out_dir)
    for source, target in files.items():
        (folder / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / target, follow_symlinks=False)
    (folder / 'requirements.txt').write_text('\n'.join(REQUIREMENTS) + '\n')
    card.save(folder / CARD_FILE)
    return folder


def space_files(demo: Path, package: Path) -> Dict[Path, str]:
    """What the Space runs, as {source file: path in the Space}: demo/app.py, the example images of
    demo/examples/ (those the demo shows: see EXAMPLE_SUFFIXES) and the package's modules (its *.py files; not
    its subpackages: cli/ holds console commands the Space does not run). Dotfiles are never taken; symbolic links
    are not followed but skipped, each reported as a warning."""
    files = {demo / 'app.py': 'app.py'}
    for source in _plain_files(demo / 'examples'):
        if source.suffix.lower() in EXAMPLE_SUFFIXES:
            files[source] = f'examples/{source.name}'
    for source in _plain_files(package):
        if source.suffix == '.py':
            files[source] = f'{PACKAGE_DIR.name}/{source.name}'  # the name app.py imports
    return files


def _plain_files(folder: Path) -> List[Path]:
    """The regular files directly in `folder` whose names do not start with a dot, in name order."""
    if _is_link(folder) or not folder.is_dir():
        return []
    return [path for path in sorted(folder.iterdir())
            if not path.name.startswith('.') and not _is_link(path) and path.is_file()]


def _is_link(path: Path) -> bool:
    """Whether `path` is a symbolic link, reported as a warning: never followed, since its target may be anything
    on this machine (/etc, a token file) and the Space is public."""
    if path.is_symlink():
        logger.warning('skipped %s: a symbolic link, not followed (the Space gets plain files only)', path)
        return True
    return False


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
