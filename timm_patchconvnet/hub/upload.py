"""The one way every artifact reaches the Hub: export into a local folder, then upload that folder in one commit.

`publish` is used by the model, the data set and the Space alike: it checks the repo id and the token before any
work, exports into `--export-dir` (kept) or a temporary folder (removed after a successful upload), uploads with
`HfApi`, and turns any Hub or network error into one `HubError` that says how to retry from the kept export.
Tokens come from the caller, `HF_TOKEN` or `hf auth login` (huggingface_hub's `get_token`), go only to `HfApi`,
and are never printed or written.
"""
import argparse
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HFValidationError, HfHubHTTPError
from huggingface_hub.utils import validate_repo_id

from ..errors import one_line

__all__ = ['CARD_FILE', 'HubError', 'UploadOptions', 'add_upload_arguments', 'brief', 'check_repo_id', 'hub_errors',
           'new_export_folder', 'publish', 'push_folder', 'resolve_token']

CARD_FILE = 'README.md'
# HfHubHTTPError derives from OSError and from the HTTP client's base error (httpx's; requests' in older releases).
# Catching its bases also catches the client's connection and timeout errors, which are not OSErrors in httpx.
# huggingface_hub reads a successful answer without checking its shape: a proxy or captive portal answering 200 with
# an HTML page makes it raise json's ValueError, JSON of another shape a KeyError, TypeError or AttributeError.
# These wrap HfApi calls only, so they cannot hide a mistake of this module.
MALFORMED_ANSWER_ERRORS = (ValueError, LookupError, TypeError, AttributeError)
HUB_ERRORS = tuple({OSError, *HfHubHTTPError.__bases__, *MALFORMED_ANSWER_ERRORS})


class HubError(RuntimeError):
    """Publishing cannot go on: the message says why and what to do; a local export already written is kept."""


@dataclass
class UploadOptions:
    """Where the export goes and how it is uploaded: the options every push command shares."""
    export_dir: Optional[str] = None  # keep the export there; default: a temporary folder, removed after upload
    token: Optional[str] = None  # default: HF_TOKEN or `hf auth login`
    private: bool = False  # for a repo created now; an existing repo keeps its visibility
    revision: Optional[str] = None  # a branch, created from main if missing
    commit_message: Optional[str] = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> 'UploadOptions':
        return cls(export_dir=args.export_dir, token=args.token, private=args.private, revision=args.revision,
                   commit_message=args.commit_message)


def add_upload_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the push command lines: where the export goes and how it is uploaded (`UploadOptions`)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument('--dry-run', metavar='DIR', help='only write the folder that would be uploaded into DIR')
    where.add_argument('--export-dir', metavar='DIR',
                       help='export into DIR (kept) before uploading; default: a temporary folder, removed after a '
                            'successful upload')
    parser.add_argument('--private', action='store_true', help='create the repo private (an existing repo keeps '
                                                               'its visibility)')
    parser.add_argument('--revision', help='branch to upload to (created from main if missing; default: main)')
    parser.add_argument('--commit-message', help='message of the upload commit')
    parser.add_argument('--token', help='a Hub token with write access (default: HF_TOKEN or `hf auth login`; '
                                        'prefer those: a command line is visible to other users)')


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if it is a valid `ORG/NAME` Hub id; a HubError otherwise (an owner is required: no guessing
    which account a bare name would land in)."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(f'Malformed repo id {repo_id!r}: {err}') from err
    if repo_id.count('/') != 1:
        raise HubError(f'Malformed repo id {repo_id!r}: use ORG/NAME (a user or organisation, then the repo name).')
    return repo_id


def resolve_token(token: Optional[str] = None) -> str:
    """`token`, else the one huggingface_hub finds (HF_TOKEN, then `hf auth login`'s file); a HubError if none,
    raised before anything is written or uploaded. The token itself never appears in a message."""
    token = token or get_token()
    if not token:
        raise HubError('No Hugging Face token: set HF_TOKEN to a token with write access, run `hf auth login`, '
                       'or pass --token. Nothing was uploaded.')
    return token


def new_export_folder(path: str) -> Path:
    """`path` as a new or empty folder: exporting over old files would upload stale ones too."""
    folder = Path(path).expanduser()
    if folder.exists() and (not folder.is_dir() or next(folder.iterdir(), None) is not None):
        raise HubError(f'{folder} already exists and is not an empty folder: export into a new or empty folder, '
                       'so that it holds exactly what is uploaded.')
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def brief(value: Any, most: int = 4) -> str:
    """`value` for a message, a long list cut to its first `most` items."""
    if isinstance(value, list) and len(value) > most:
        return '[' + ', '.join(repr(v) for v in value[:most]) + f', ... ({len(value)} in all)]'
    return repr(value)


@contextmanager
def hub_errors(what: str, token: Optional[str], advice: str = '') -> Iterator[None]:
    """Any Hub or network error inside becomes a one-line HubError: `what` failed, why, then `advice`."""
    try:
        yield
    except HUB_ERRORS as err:
        hint = (" (an answer that is not the Hub's: a proxy or captive portal in the way?)"
                if isinstance(err, MALFORMED_ANSWER_ERRORS) else '')
        message = f'{what}: {type(err).__name__}: {one_line(err)}{hint}.{" " + advice if advice else ""}'
        # server messages never echo the token, but an error text is the one place it could leak from
        raise HubError(message.replace(token, '***') if token else message) from err


def push_folder(
        folder: str,
        repo_id: str,
        repo_type: str,
        *,
        token: Optional[str] = None,
        private: bool = False,
        revision: Optional[str] = None,
        commit_message: Optional[str] = None,
        api: Optional[HfApi] = None,
        space_sdk: Optional[str] = None,
) -> str:
    """Upload every file of `folder` to the Hub repo `repo_id` ('model', 'dataset' or 'space') in one commit,
    creating the repo (`private` and, for a Space, `space_sdk` apply only then) and the branch `revision` if
    missing. Returns the repo URL. `api` is an `HfApi` (or a stand-in for tests); the token goes to it alone."""
    repo_id = check_repo_id(repo_id)
    local = Path(folder)
    if not local.is_dir() or next(local.iterdir(), None) is None:
        raise HubError(f'Nothing to upload: {local} is not a folder with files.')
    token = resolve_token(token)
    api = api or HfApi()
    retry = f'hf upload {repo_id} {local} . --repo-type {repo_type}' + (f' --revision {revision}' if revision else '')
    advice = f'The local export in {local} is kept: upload it with `{retry}`, or run this again.'
    where = f'on the Hugging Face Hub for {repo_type} {repo_id}'
    with hub_errors(f'Could not create the repo {where}', token, advice):
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, token=token,
                              space_sdk=space_sdk)
        _check_answer(url, 'a repo URL')
    if revision and revision != 'main':
        with hub_errors(f'Could not create the branch {revision!r} {where}', token, advice):
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True, token=token)
    with hub_errors(f'Could not upload {where}', token, advice):
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(local), repo_type=repo_type, revision=revision,
                                   commit_message=commit_message or f'Upload {local.name}', token=token)
        _check_answer(commit, 'a commit URL')  # anything else: the upload may not have happened
    return str(url)


def _check_answer(answer: Any, expected: str) -> None:
    """A ValueError unless `answer` is a URL, as HfApi returns it (a str subclass) for a repo or a commit."""
    if not (isinstance(answer, str) and answer.startswith(('https://', 'http://')) and ' ' not in answer):
        raise ValueError(f'the Hub answered {brief(str(answer)[:80])} instead of {expected}')


def publish(
        repo_id: str,
        repo_type: str,
        export: Callable[[str], Path],
        options: UploadOptions,
        *,
        commit_message: str,
        api: Optional[HfApi] = None,
        space_sdk: Optional[str] = None,
        after_upload: Optional[Callable[[HfApi, str], None]] = None,
) -> str:
    """Export with `export(folder)` and upload the folder to `repo_id`: the one publish path of every artifact.

    The repo id and the token are checked before the export (a long one, for a data set); the export goes to
    `options.export_dir`, or a temporary folder removed after a successful upload (and after a failed export); a
    failed upload keeps it. `after_upload(api, token)` runs once the files are up (e.g. to set a Space variable).
    Returns the repo URL."""
    repo_id = check_repo_id(repo_id)
    token = resolve_token(options.token)
    api = api or HfApi()
    if options.export_dir is not None:
        folder = export(options.export_dir)
    else:
        staging = tempfile.mkdtemp(prefix=f'patchconvnet-{repo_type}-')
        try:
            folder = export(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    url = push_folder(str(folder), repo_id, repo_type, token=token, private=options.private,
                      revision=options.revision, commit_message=options.commit_message or commit_message, api=api,
                      space_sdk=space_sdk)
    if after_upload is not None:
        after_upload(api, token)
    if options.export_dir is None:
        shutil.rmtree(folder, ignore_errors=True)
    return url
