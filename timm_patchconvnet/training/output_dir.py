"""The output folder of a training run: claimed and locked for the whole run, checked for a previous run (to resume,
or to replace only when asked), cleared of a replaced run's outputs and of a killed run's leftovers, and removed
again when a run that created it fails before writing anything. What a run writes there is `outputs.OUTPUTS`.

A run folder carries `RUN_MARKER`, written when a run claims a new or empty folder: only a folder that has it (or
the saved state of a run from before the marker) is ever written into or cleared; any other folder that is not
empty is the user's, and refused, --overwrite or not."""
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from accelerate import Accelerator
from filelock import FileLock, Timeout

from ..config import TrainConfig
from .model import TrainingError
from .outputs import OUTPUTS, WEIGHTS_FILE
from .run_files import PROGRESS_FILE, STATE_DIR, latest_training_state

__all__ = ['claimed_output_dir', 'ready_output_dir', 'remove_leftovers']

LOCK_FILE = '.lock'
RUN_MARKER = '.patchconvnet-run'  # proves that the folder is a run's: its outputs may be replaced
OWNED = tuple(name for output in OUTPUTS for name in output.owns)  # every file and folder a run's outputs write


@contextmanager
def claimed_output_dir(out: Path, main_process: bool) -> Iterator[None]:
    """The run's hold on `out`: the main process checks it can write there and locks it until the run ends; a run
    that fails before its first save leaves no empty folder behind."""
    created, lock_created, marked = not out.exists(), not (out / LOCK_FILE).exists(), (out / RUN_MARKER).exists()
    lock = _claim(out) if main_process else None
    try:
        yield
    except BaseException:
        if lock is not None and created:
            _remove_if_empty(out, lock)
        elif lock is not None:  # a folder of the user's (even `/`): no lock file or marker of ours left in it
            if lock_created:
                Path(lock.lock_file).unlink(missing_ok=True)
            if not marked and {p.name for p in out.iterdir()} <= {LOCK_FILE, RUN_MARKER}:  # nothing else written
                (out / RUN_MARKER).unlink(missing_ok=True)
        raise
    finally:
        if lock is not None:
            lock.release()


def _claim(out: Path) -> FileLock:
    """Make sure `out` is a folder this run can write to (now, not at the first save an epoch later) and lock it for
    the whole run: two runs in one folder would overwrite each other's model and metrics."""
    _refuse_foreign(out)
    probe = out / f'.probe-{os.getpid()}'
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b'probe')
        probe.unlink(missing_ok=True)  # another run's clean-up of a killed run's probe may have been faster
    except OSError as err:
        raise TrainingError(f'--output-dir {out} cannot be written to: {err.strerror or err}. Choose another '
                            '--output-dir.') from err
    lock = FileLock(out / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise TrainingError(f'{out} is in use by another run (lock {out / LOCK_FILE}): wait for it to end, or choose '
                            'another --output-dir.') from None
    try:
        _refuse_foreign(out)  # again, holding the lock: something may have been put there meanwhile
        if not (out / RUN_MARKER).is_file():  # written once: a refused run changes nothing, not even a time
            (out / RUN_MARKER).touch()
    except BaseException:
        lock.release()
        raise
    return lock


def _refuse_foreign(out: Path) -> None:
    """A folder that is not empty and not a run's (no RUN_MARKER, no saved state) holds the user's files: never
    written into, never cleared."""
    if not out.is_dir() or (out / RUN_MARKER).is_file() or _holds_unmarked_run(out):
        return
    theirs = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE and not p.name.startswith('.probe-'))
    if theirs:
        shown = ', '.join(theirs[:3]) + (', ...' if len(theirs) > 3 else '')
        raise TrainingError(f'{out} is not empty ({shown}) and is not the folder of a run ({RUN_MARKER} is missing): '
                            'its files are never replaced, --overwrite or not. Choose a new or empty --output-dir.')


def _holds_unmarked_run(out: Path) -> bool:
    """A run saved before RUN_MARKER existed: its `state/latest` names a saved state with our progress file."""
    try:
        state = latest_training_state(out / STATE_DIR)
    except (OSError, ValueError):
        return False
    return state is not None and (state / PROGRESS_FILE).is_file()


def _remove_if_empty(out: Path, lock: FileLock) -> None:
    """Remove the folder this failed run created, if it holds nothing but the lock and the marker."""
    if {p.name for p in out.iterdir()} <= {LOCK_FILE, RUN_MARKER}:
        lock.release()
        Path(lock.lock_file).unlink(missing_ok=True)
        (out / RUN_MARKER).unlink(missing_ok=True)
        try:
            out.rmdir()
        except OSError:  # something appeared meanwhile: keep it
            pass


def ready_output_dir(cfg: TrainConfig, out: Path, accelerator: Accelerator) -> Optional[Path]:
    """Check `out` for a previous run and, on the main process, clear what --overwrite replaces and what a killed
    run left; the state to resume from, if asked. The other processes look once the main one has cleared it. A
    refusal is raised after the barrier, which the other processes wait at for the main one."""
    resume_from, refusal = None, None
    with accelerator.main_process_first():
        try:
            resume_from = _check(cfg, out)
            if accelerator.is_main_process:
                if cfg.overwrite and resume_from is None:
                    _clear_previous_run(out)
                remove_leftovers(out)
        except TrainingError as err:
            refusal = err
    if refusal is not None:
        raise refusal
    return resume_from


def _check(cfg: TrainConfig, out: Path) -> Optional[Path]:
    """The state to resume from, if asked; refuses to start over a previous run unless told to. Any result or saved
    state in `out` counts as a run, so that a folder whose state/ was deleted is not silently replaced."""
    try:
        previous = latest_training_state(out / STATE_DIR)
    except (OSError, ValueError) as err:
        raise TrainingError(f'The saved state of {out} is unreadable ({err}): start a new run with --overwrite or in '
                            'another --output-dir.') from err
    if cfg.resume:
        if previous is None:
            raise TrainingError(f'Nothing to resume: {out / STATE_DIR} holds no saved training state.')
        if not (out / WEIGHTS_FILE).is_file():
            raise TrainingError(f'Cannot resume: {out / WEIGHTS_FILE} (the best model so far) is missing. '
                                'Start a new run with --overwrite.')
        if not (previous / PROGRESS_FILE).is_file():
            raise TrainingError(f'Cannot resume: {previous / PROGRESS_FILE} is missing, so {previous} is incomplete or '
                                'was saved by an older version. Start a new run with --overwrite.')
        return previous
    holds_run = previous is not None or any((out / o.marker).exists() for o in OUTPUTS if o.marker)
    if holds_run and not cfg.overwrite:
        raise TrainingError(f'{out} already holds a run: pass --resume to continue it, --overwrite to replace '
                            'it, or choose another --output-dir.')
    return None


def _clear_previous_run(out: Path) -> None:
    """--overwrite: remove the replaced run's outputs before training, so that nothing of it can pass as this
    run's (a crash before the first save, or a resume, would otherwise find it)."""
    for name in OWNED:
        _remove(out / name)


def remove_leftovers(folder: Path) -> None:
    """What a killed run leaves behind in its output `folder`: `save_model_folder`'s staging folders, `atomic_file`'s
    temporary files (`.NAME.*`) and states that `state/latest` does not name (a save cut short). Call it only while
    holding the folder's lock: a running run's files look the same."""
    state = folder / STATE_DIR
    try:
        latest = latest_training_state(state)
    except (OSError, ValueError):  # a broken pointer: keep every state, --resume says what is wrong
        return
    temporary = [f'.{name}.*' for name in (*OWNED, 'latest')]
    for parent, patterns in ((folder, ['.staging.*', '.probe-*', *temporary]), (state, ['epoch-*', *temporary])):
        for pattern in patterns:
            for path in parent.glob(pattern):
                if path != latest:
                    _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
