"""What a model string names, read one way by every command: `patchconvnet-train --pretrained`, the demo's and
`patchconvnet-slides`' `--model`, the Space's models and the model card.

    source 'timm'       patchconvnet_s60_p16.fb_in1k: a timm name with an optional pretrained tag
    source 'hf-hub'     hf-hub:ORG/NAME (optionally @REVISION): a model on the Hugging Face Hub
    source 'local-dir'  local-dir:FOLDER, or FOLDER: a saved model folder (a training run, timm's save_for_hf)
    --pretrained only   cifar10, default: a tag of --model ('default': its default tag; a bare model name is that
                        model); runs/w.pth: a weights file for --model's architecture (source 'file')

The prefixes are timm's (`timm.models.parse_model_name`), the tag split is timm's `split_model_name_tag`. A string
without a prefix is a folder or file when one exists by that name; one shaped like a path that names nothing is
refused, since timm would read it as a model name. Every refusal is one `ModelRefError` line naming the string and
the forms accepted.
"""
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import timm
from timm.models import get_pretrained_cfg, split_model_name_tag

__all__ = ['FORMS', 'ModelRef', 'ModelRefError', 'WEIGHTS_FILE_SUFFIXES', 'parse_model_ref']

HUB, LOCAL_DIR = 'hf-hub:', 'local-dir:'
WEIGHTS_FILE_SUFFIXES = ('.safetensors', '.pth', '.pt', '.bin', '.tar', '.ckpt')
DEFAULT_TAG = 'default'  # --pretrained default: the default tag of --model
# timm's source prefix: two characters or more, so that a Windows drive letter (C:) is not one
SOURCE_PREFIX = re.compile(r'[a-zA-Z][a-zA-Z0-9+.\-_]+')
NAME_OR_TAG = re.compile(r'[\w\-]+')  # timm's model names and tags: letters, digits, '_' and '-'
FORMS = ('A model is a timm name[.tag] (patchconvnet_s60_p16.fb_in1k), hf-hub:ORG/NAME, local-dir:FOLDER or a '
         'training folder; --pretrained also takes a tag of --model ("default": its default tag) or a weights file.')


class ModelRefError(ValueError):
    """A string that names no model: the message (one line) names it, says why, and lists the forms accepted."""

    def __init__(self, text: str, why: str):
        super().__init__(f'{text!r} {why}. {FORMS}')


@dataclass(frozen=True)
class ModelRef:
    """A parsed model string. `name`: the timm architecture ('timm' and 'file'), the Hub repository ('hf-hub',
    with an optional @revision) or the folder's name ('local-dir'); `tag`: the timm pretrained tag ('' for the
    default); `path`: the folder or weights file of a local source."""
    source: Literal['timm', 'hf-hub', 'local-dir', 'file']
    name: str
    tag: str = ''
    path: Optional[Path] = None

    @property
    def timm_name(self) -> str:
        """What `timm.create_model(..., pretrained=True)` is given (a weights file's own path goes in its
        `pretrained_cfg_overlay`)."""
        if self.source == 'hf-hub':
            return f'{HUB}{self.name}'
        if self.source == 'local-dir':
            return f'{LOCAL_DIR}{self.path}'
        return f'{self.name}.{self.tag}' if self.tag else self.name

    @property
    def display_name(self) -> str:
        """What users are shown: a folder's or file's name (its path stays on this machine), else the timm name."""
        if self.source == 'local-dir':
            return self.name
        return self.path.name if self.source == 'file' else self.timm_name

    @property
    def is_local(self) -> bool:
        """Whether only this machine can read it (a Space cannot; a model card shows a placeholder)."""
        return self.path is not None

    @property
    def hub_id(self) -> Optional[str]:
        """The Hub repository of an `hf-hub:` model, without its revision."""
        return self.name.partition('@')[0] if self.source == 'hf-hub' else None

    @property
    def is_saved_model(self) -> bool:
        """A folder or Hub repository with its own config.json, which already describes its data and preprocessing."""
        return self.source in ('hf-hub', 'local-dir')

    @property
    def run_folder(self) -> Optional[Path]:
        """The training run's folder (the model folder with a metrics.json), if this is one."""
        if self.source == 'local-dir' and (self.path / 'metrics.json').is_file():
            return self.path
        return None


def parse_model_ref(text: str, architecture: Optional[str] = None, *, look_on_disk: bool = True) -> ModelRef:
    """The model `text` names. `architecture`: --model, for --pretrained's bare tags and weights files (without
    it, a bare word is a model name and a weights file is refused). `look_on_disk`: False for a string recorded on
    another machine (a run's --pretrained, for its card): paths are then told by their shape, not looked up.
    Raises ModelRefError for a string that names nothing."""
    if not text.strip():
        raise ModelRefError(text, 'is empty')
    prefix, colon, rest = text.partition(':')
    if colon and prefix.lower() in ('hf-hub', 'local-dir'):
        if not rest:
            raise ModelRefError(text, f'names nothing after {prefix}:')
        return _hub_ref(text, rest) if prefix.lower() == 'hf-hub' else _folder_ref(text, rest, look_on_disk)
    path = Path(text).expanduser()
    if look_on_disk and path.is_dir():
        return _folder_ref(text, text, look_on_disk)
    if look_on_disk and path.exists():
        if architecture is None or not path.is_file():
            raise ModelRefError(text, 'is a file, not a model folder: a weights file is for --pretrained, with --model')
        return ModelRef('file', architecture, path=path)
    if colon and SOURCE_PREFIX.fullmatch(prefix):
        raise ModelRefError(text, f'has an unknown source {prefix}: (hf-hub: or local-dir:)')
    if colon or any(c in text for c in ('/', os.sep)) or text.startswith(('.', '~')) \
            or text.lower().endswith(WEIGHTS_FILE_SUFFIXES):
        if look_on_disk:
            raise ModelRefError(text, 'is no such folder or file')
        if text.lower().endswith(WEIGHTS_FILE_SUFFIXES):
            return ModelRef('file', architecture or '', path=path)
        return _folder_ref(text, text, look_on_disk)
    return _timm_ref(text, architecture)


def _hub_ref(text: str, repo: str) -> ModelRef:
    # imported here: the package imports without huggingface_hub, and its commands name the extra when it is missing
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id
    try:
        validate_repo_id(repo.partition('@')[0])
    except HFValidationError:
        raise ModelRefError(text, 'is not a Hub repository id (hf-hub:ORG/NAME, letters, digits, "-", "_", ".")') \
            from None
    return ModelRef('hf-hub', repo)


def _folder_ref(text: str, folder: str, look_on_disk: bool) -> ModelRef:
    path = Path(folder).expanduser()
    if look_on_disk and not path.is_dir():
        raise ModelRefError(text, 'is a file, not a model folder' if path.exists() else 'is no such folder')
    if look_on_disk and not (path / 'config.json').is_file():  # train.py writes one, and so does timm's save_for_hf
        raise ModelRefError(text, "has no config.json: it is not a training folder (nor timm's save_for_hf "
                                  'layout)')
    name = path.resolve().name if look_on_disk else path.name  # resolved: '.' and 'runs/x/..' have names too
    return ModelRef('local-dir', name or str(path), path=path)


def _timm_ref(text: str, architecture: Optional[str]) -> ModelRef:
    if architecture is not None and '.' not in text and not timm.is_model(text):  # --pretrained's tag of --model
        if not NAME_OR_TAG.fullmatch(text):
            raise ModelRefError(text, 'is not a tag (letters, digits, "_" and "-")')
        name, tag = architecture, '' if text == DEFAULT_TAG else text
    else:
        name, tag = split_model_name_tag(text)
        if not (NAME_OR_TAG.fullmatch(name) and (not tag or NAME_OR_TAG.fullmatch(tag)) and timm.is_model(name)):
            raise ModelRefError(text, 'is not a timm model name')
    if tag:
        try:
            get_pretrained_cfg(f'{name}.{tag}')  # None for an architecture timm holds no cfgs of (an unknown --model)
        except RuntimeError:  # timm's "Invalid pretrained tag", which create_model would raise as a traceback
            tags = [pretrained.partition('.')[2] for pretrained in timm.list_pretrained(f'{name}.*')]
            raise ModelRefError(text, f'names no pretrained tag of {name} (its tags: {", ".join(tags) or "none"})') \
                from None
    return ModelRef('timm', name, tag)
