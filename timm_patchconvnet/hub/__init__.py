"""Publishing on the Hugging Face Hub: trained models with their model card, the IDC data set with patient ids,
and the demo as a Space. Needs the `hub` extra; imports nothing from `timm_patchconvnet.training`.

Every artifact goes one way (`upload.publish`): it is exported into a local folder that is exactly what gets
uploaded, then that folder is uploaded in one commit. A failed upload keeps the export for a retry.

- `upload.py`: the publish path, upload options, repo-id and token checks, Hub errors
- `runs.py`: reading a finished training run, every file checked
- `model.py`, `dataset.py`, `space.py`: one artifact each (export, card values, push)
- `cards.py` and `templates/`: the cards, rendered from Jinja templates
"""
from .model import build_model_card, export_model_folder, push_model
from .runs import TrainingRun, load_training_run
from .upload import (CARD_FILE, HubError, UploadOptions, add_upload_arguments, check_repo_id, new_export_folder,
                     publish, push_folder, resolve_token)

__all__ = [
    'CARD_FILE', 'HubError', 'TrainingRun', 'UploadOptions', 'add_upload_arguments', 'build_model_card',
    'check_repo_id', 'export_model_folder', 'load_training_run', 'new_export_folder', 'publish', 'push_folder',
    'push_model', 'resolve_token',
]
