"""The Gradio demo as a Hugging Face Space: `demo/app.py`, its examples and this package in one folder.

`export_space_folder` writes exactly what the Space runs: app.py, the example images, requirements.txt, a README
(`templates/space_card.md`) whose front matter configures the Space, and a copy of the modules of
`timm_patchconvnet` (not on PyPI) that app.py imports (`import_closure`), so the Space imports them from its own
root. Nothing else: the Space is public (see `space_files`). `push_space` uploads that folder (`upload.publish`) and
sets the PATCHCONVNET_MODELS variable app.py reads.
"""
import logging
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import timm
from huggingface_hub import HfApi, SpaceCard, SpaceCardData

from ..demo.examples import EXAMPLE_SUFFIXES
from ..model_ref import ModelRefError, parse_model_ref
from ..pretrained import HUB_NAMESPACE
from .cards import render_card
from .import_closure import ImportClosure, import_closure
from .upload import CARD_FILE, HubError, UploadOptions, hub_errors, new_export_folder, publish

__all__ = ['CHECKPOINTS_VARIABLE', 'MODELS_VARIABLE', 'export_space_folder', 'push_space', 'space_closure',
           'space_files']

logger = logging.getLogger(__name__)
MODELS_VARIABLE = 'PATCHCONVNET_MODELS'
CHECKPOINTS_VARIABLE = MODELS_VARIABLE  # its name before 0.2
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# gradio comes from the Space's sdk_version; torch and torchvision are the Space's CPU build of the latest release.
# tests/test_hub.py checks that these cover every package the exported modules import (`SPACE_LEAVES_OUT` aside)
REQUIREMENTS = ('torch', 'torchvision', f'timm>={timm.__version__}', 'safetensors', 'huggingface_hub', 'pillow',
                'numpy', 'matplotlib', 'scikit-learn', 'grad-cam')
SDK_PACKAGES = ('gradio',)  # installed by the Space itself, at the card's sdk_version
# imports inside functions that the Space never runs, so neither their modules nor their packages are shipped:
# {(importing module, imported module or package): why}
SPACE_LEAVES_OUT = {
    ('timm_patchconvnet.slides.demo_tab', 'timm_patchconvnet.data'):
        "--slide-data's patient menu (`datasets`, the train extra): the Space's app.py is started without it",
    ('timm_patchconvnet.slides.wsi_tab', 'timm_patchconvnet.slides.predict_wsi'):
        'whole-slide inference (the slides extra): the tab is shown only where OpenSlide is installed',
    ('timm_patchconvnet.slides.wsi_tab', 'timm_patchconvnet.slides.wsi'):
        'whole-slide inference (the slides extra): the tab is shown only where OpenSlide is installed',
    ('timm_patchconvnet.export', 'onnx'): 'ONNX export (the onnx extra), which the demo never runs',
    ('timm_patchconvnet.export', 'onnxscript'): 'ONNX export (the onnx extra), which the demo never runs',
    ('timm_patchconvnet.precision', 'onnxruntime'): 'int8 inference, which the demo refuses (it has no calibration '
                                                    'images)',
    ('timm_patchconvnet.precision', 'openvino'): "bf16 through OpenVINO where it is installed; the Space's bf16 runs "
                                                 'in torch (openvino is not in its requirements)',
}


def check_space_models(models: Sequence[str]) -> List[str]:
    """The models a Space can load: Hub ids and timm names; a local folder exists on this machine only."""
    if not models:
        raise HubError('Name at least one --model for the Space: hf-hub:ORG/NAME or a timm name with tag.')
    for spec in models:  # no form of a model string takes a comma, which separates them in MODELS_VARIABLE
        try:
            ref = parse_model_ref(spec)
        except ModelRefError as err:
            raise HubError(f'--model {err}') from err
        if ref.is_local:
            raise HubError(f'{spec!r} is a local folder, which the Space cannot read: publish it first with '
                           '`patchconvnet-push-model RUN_DIR ORG/NAME` (python hub/push_model.py in a checkout), '
                           'then pass hf-hub:ORG/NAME.')
    return list(models)


def _gradio_version() -> str:
    try:
        return metadata.version('gradio')  # the Space runs the Gradio release the demo was tested with here
    except metadata.PackageNotFoundError as err:
        raise HubError("Gradio is not installed: install the demo extra (pip install -e '.[demo,hub]') so the "
                       'Space can pin the Gradio release the demo runs with.') from err


def build_space_card(models: Sequence[str], title: str) -> SpaceCard:
    hub_models = [ref.hub_id for ref in map(parse_model_ref, models) if ref.hub_id]
    data = SpaceCardData(title=title, emoji='🔎', colorFrom='indigo', colorTo='red', sdk='gradio',
                         sdk_version=_gradio_version(), app_file='app.py', pinned=False, license='apache-2.0',
                         models=hub_models or None, short_description='Where PatchConvNet looked: attention heatmaps')
    return render_card(SpaceCard, 'space_card.md', data, served=list(models), models_variable=MODELS_VARIABLE,
                       hub_namespace=HUB_NAMESPACE)


def export_space_folder(demo_dir: str, out_dir: str, models: Sequence[str],
                        title: str = 'PatchConvNet attention', package_dir: Optional[str] = None) -> Path:
    """Write the Space into the new or empty folder `out_dir` from the checkout's `demo_dir` and the package in
    `package_dir` (default: this one). Only an allow-list is copied (`space_files`): a Space is public, so a token
    in a dotfile, a file a symbolic link points at or a stray note beside the sources must never reach it."""
    models = check_space_models(models)
    demo = Path(demo_dir)
    app = demo / 'app.py'
    if app.is_symlink() or not app.is_file():
        raise HubError(f'{demo} has no app.py (a plain file, not a link): pass the demo/ folder of a '
                       'timm-patchconvnet checkout.')
    package = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    files = space_files(demo, package)
    card = build_space_card(models, title)  # before writing: a missing Gradio leaves no half export
    folder = new_export_folder(out_dir)
    for source, target in files.items():
        (folder / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / target, follow_symlinks=False)
    (folder / 'requirements.txt').write_text('\n'.join(REQUIREMENTS) + '\n')
    card.save(folder / CARD_FILE)
    return folder


def space_files(demo: Path, package: Path) -> Dict[Path, str]:
    """What the Space runs, as {source file: path in the Space}: demo/app.py, the example images of
    demo/examples/ (those the demo shows: see EXAMPLE_SUFFIXES) and the modules of the package that app.py imports
    (`import_closure`, less `SPACE_LEAVES_OUT`). Dotfiles are never taken; symbolic links are not followed: an
    example that is one is skipped and reported as a warning, an imported module that is one is refused."""
    files = {demo / 'app.py': 'app.py'}
    for source in _plain_files(demo / 'examples'):
        if source.suffix.lower() in EXAMPLE_SUFFIXES:
            files[source] = f'examples/{source.name}'
    for source in space_closure(demo / 'app.py', package).modules.values():
        files[source] = source.relative_to(package.parent).as_posix()
    return files


def space_closure(app: Path, package: Path) -> ImportClosure:
    """The modules of `package` that `app` imports, directly or not, and the third-party packages they import."""
    return import_closure(app, package, SPACE_LEAVES_OUT)


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


def push_space(demo_dir: str, repo_id: str, models: Sequence[str], *, api: Optional[HfApi] = None,
               **upload: Any) -> str:
    """Export the Space (`export_space_folder`), upload it to the Space `repo_id`, and set the variable that names
    its models; `upload` are the fields of `UploadOptions` (export_dir, token, private, revision, commit_message)."""
    options = UploadOptions(**upload)
    models = check_space_models(models)

    def set_models_variable(hub: HfApi, token: str) -> None:
        with hub_errors(f'The Space {repo_id} was uploaded, but setting its {MODELS_VARIABLE} variable failed', token,
                        f'Set it in the Space settings to {",".join(models)}.'):
            hub.add_space_variable(repo_id, MODELS_VARIABLE, ','.join(models),
                                   description='models app.py serves, comma-separated', token=token)

    return publish(repo_id, 'space', lambda out: export_space_folder(demo_dir, out, models), options,
                   commit_message='Upload the PatchConvNet attention demo', api=api, space_sdk='gradio',
                   after_upload=set_models_variable)
