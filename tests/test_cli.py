"""The console commands, run as a user runs them, and publishing from a virtual environment with only the `hub` extra.

The last test builds that environment for real: a fresh venv that sees this environment's torch and torchvision
(and their dependencies) through a folder of symbolic links, so the multi-GB CUDA build is neither copied nor
downloaded, then `pip install '<package>[hub]'` from the package registries, then `patchconvnet-push-model`.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Dict, FrozenSet, List

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT
from timm_patchconvnet.cli import push_idc_dataset as push_idc_cli, slides as slides_cli, train as train_cli

BIN = Path(sys.executable).parent  # the scripts folder of the environment the tests run in
COMMANDS = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['scripts']
TRAINING_STACK = ('accelerate', 'datasets', 'sklearn', 'gradio', 'torch_optimizer', 'tensorboard')
TINY = ['--dataset', 'digits', '--model', 'patchconvnet_test_p4', '--epochs', '1', '--max-steps-per-epoch', '2']


def _run(command: List[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout, **kwargs)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------------------------
# The console scripts in this environment


def test_the_console_scripts_are_the_ones_pyproject_declares():
    installed = {ep.name: ep.value for ep in metadata.distribution('timm-patchconvnet').entry_points
                 if ep.group == 'console_scripts'}
    assert installed == COMMANDS
    assert set(COMMANDS) == {'patchconvnet-train', 'patchconvnet-push-model', 'patchconvnet-push-idc',
                             'patchconvnet-push-space', 'patchconvnet-demo', 'patchconvnet-slides'}


@pytest.fixture(scope='module')
def help_answers() -> Dict[str, subprocess.CompletedProcess]:
    """`COMMAND --help` of every installed console script, three at a time (each mostly imports, on one core)."""
    installed = [c for c in sorted(COMMANDS) if (BIN / c).is_file() and os.access(BIN / c, os.X_OK)]
    with ThreadPoolExecutor(3) as pool:
        return dict(zip(installed, pool.map(lambda command: _run([BIN / command, '--help'], timeout=120), installed)))


@pytest.mark.parametrize('command', sorted(COMMANDS))
def test_every_console_script_is_installed_and_answers_help(command, help_answers):
    assert command in help_answers, f'{BIN / command} is missing: pip install -e .'
    result = help_answers[command]
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f'usage: {command} ') and result.stderr == ''


@pytest.fixture(scope='module')
def console_run(tmp_path_factory) -> Path:
    """A finished tiny training run made by `patchconvnet-train` from an unrelated working directory."""
    cwd = tmp_path_factory.mktemp('anywhere')
    out = cwd / 'run'
    result = _run([BIN / 'patchconvnet-train', *TINY, '--output-dir', 'run'], cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'test accuracy' in result.stdout
    return out


def test_patchconvnet_train_trains_and_writes_a_run(console_run):
    metrics = json.loads((console_run / 'metrics.json').read_text())
    assert metrics['epochs_run'] == 1 and metrics['config']['max_steps_per_epoch'] == 2
    assert metrics['test']['num_samples'] == 359
    for name in ('model.safetensors', 'config.json', 'attention.png'):
        assert (console_run / name).is_file(), name


def test_python_train_py_still_trains_from_a_checkout(tmp_path):
    result = _run([sys.executable, ROOT / 'train.py', *TINY, '--output-dir', tmp_path / 'run'], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith('test accuracy ')
    assert json.loads((tmp_path / 'run' / 'metrics.json').read_text())['epochs_run'] == 1


@pytest.mark.parametrize('command', [[BIN / 'patchconvnet-train'], [sys.executable, ROOT / 'train.py']],
                         ids=['console-script', 'train.py'])
def test_a_training_error_is_one_line_and_exit_code_2(command, tmp_path):
    result = _run([*command, '--dataset', 'mnist', '--output-dir', tmp_path / 'out'], cwd=tmp_path)
    assert "Unknown --dataset 'mnist'" in _one_error_line(result)
    assert not (tmp_path / 'out').exists()


def test_a_push_error_is_one_line_and_exit_code_2(tmp_path):
    result = _run([BIN / 'patchconvnet-push-model', tmp_path, 'someone/model', '--dry-run', tmp_path / 'out'])
    assert 'is not a training output folder' in _one_error_line(result)


@pytest.mark.parametrize('flags, named', [
    (['--val-fraction', '1.5'], '--val-fraction'),
    (['--val-fraction', '0.6', '--test-fraction', '0.5'], '--val-fraction/--test-fraction'),
    (['--split', 'cruz-roa'], '--split'),
    (['--seed', '-1'], '--seed'),
], ids=['fraction-range', 'fractions-sum', 'split-choice', 'seed-range'])
def test_push_idc_checks_its_split_flags_as_training_does(flags, named, tmp_path, capsys):
    # one description of the split options (config.TrainConfig) for both commands: the same refusals, one line each
    for main, positionals in ((push_idc_cli.main, [str(tmp_path), 'someone/idc', '--dry-run', str(tmp_path / 'o')]),
                              (train_cli.main, ['--output-dir', str(tmp_path / 'run')])):
        with pytest.raises(SystemExit) as stopped:
            main([*positionals, *flags])
        lines = capsys.readouterr().err.strip().splitlines()
        assert stopped.value.code == 2 and len(lines) == 1, lines
        assert lines[0].startswith(f'error: argument {named}'), lines
    assert not (tmp_path / 'o').exists() and not (tmp_path / 'run').exists()


@pytest.mark.parametrize('flags, named', [(['--batch-size', '0'], '--batch-size'),
                                         (['--threshold', '1.5'], '--threshold'),
                                         (['--hub-id', 'someone/idc'], '--hub-id')],
                         ids=['batch-size', 'threshold', 'two-sources'])
def test_a_bad_slides_command_line_is_one_error_line(flags, named, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        slides_cli.main(['--model', 'patchconvnet_test_p4', '--data-dir', str(tmp_path), '--patient', '1', *flags])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(lines) == 1 and lines[0].startswith(f'error: argument {named}'), lines


def test_the_demo_command_refuses_a_missing_examples_folder(tmp_path):
    result = _run([BIN / 'patchconvnet-demo', '--examples', tmp_path / 'none'], cwd=tmp_path,
                  env=dict(os.environ, HF_HUB_OFFLINE='1'))
    assert '--examples' in _one_error_line(result)


# ---------------------------------------------------------------------------------------------------------------
# Which modules import what


def _imported(statements: str) -> List[str]:
    """The top-level packages of the training stack that `statements` import, in a fresh interpreter."""
    code = f'{statements}\nimport json, sys\nprint(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))'
    result = _run([sys.executable, '-c', code], timeout=180)
    assert result.returncode == 0, result.stderr
    return sorted(set(json.loads(result.stdout.strip().splitlines()[-1])) & set(TRAINING_STACK))


def test_publishing_and_the_package_import_no_training_stack_and_no_gradio():
    # all in one interpreter: what none of them imports together, none imports alone
    assert _imported('import timm_patchconvnet\n'
                     'import timm_patchconvnet.hub, timm_patchconvnet.hub.space, timm_patchconvnet.config\n'
                     'from timm_patchconvnet.cli import demo, push_idc_dataset, push_model, push_space, train\n'
                     'push_model.build_parser(), push_space.build_parser(), train.build_parser()\n'
                     'assert push_model.main(["/no/such/run", "someone/name", "--dry-run", "/no/such/out"]) == 2'
                     ) == []


def test_the_demo_alone_imports_gradio():  # and so the check above sees an import when there is one
    with ThreadPoolExecutor(2) as pool:  # both interpreters at once: each spends its time importing, on one core
        package, app = pool.map(_imported, ['import timm_patchconvnet.demo', 'import timm_patchconvnet.demo.app'])
    assert package == []  # the package itself is light: its app is not
    assert app == ['gradio']


@pytest.mark.parametrize('command, extras', [('push_model', 'hub'), ('push_space', 'hub,demo')])
def test_a_missing_hub_extra_is_one_error_line_naming_it(command, extras, tmp_path):
    # the hub-only venv below checks the other commands with their packages really missing
    code = ('import sys; sys.modules["huggingface_hub"] = None  # as if not installed\n'
            f'from timm_patchconvnet.cli.{command} import main\n'
            'sys.exit(main(["someone/name"]))')
    line = _one_error_line(_run([sys.executable, '-c', code], cwd=tmp_path, timeout=180))
    assert "'huggingface_hub'" in line and f"pip install 'timm-patchconvnet[{extras}]'" in line


# ---------------------------------------------------------------------------------------------------------------
# A virtual environment with only the hub extra


def _requirement_closure(names: List[str]) -> Dict[str, metadata.Distribution]:
    """The installed distributions `names` need, recursively, with the extras their requirements ask for."""
    found: Dict[str, FrozenSet[str]] = {}
    dists: Dict[str, metadata.Distribution] = {}
    todo = [(name, frozenset()) for name in names]
    while todo:
        name, extras = todo.pop()
        dist = metadata.distribution(name)
        key = canonicalize_name(dist.metadata['Name'])
        if key in found and extras <= found[key]:
            continue
        found[key] = found.get(key, frozenset()) | extras
        dists[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or any(requirement.marker.evaluate({'extra': extra})
                                                 for extra in ('', *extras)):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return dists


def _link_distributions(names: List[str], folder: Path) -> List[str]:
    """Symbolic links in `folder` to every top-level file and folder (packages, modules, *.dist-info) of `names`
    and their requirements, as installed here. Returns the distributions linked."""
    folder.mkdir()
    dists = _requirement_closure(names)
    for key, dist in dists.items():
        assert dist.files is not None, f'{key} has no RECORD: cannot tell its files'
        for top in {f.parts[0] for f in dist.files}:
            if top in ('..', '__pycache__') or top.endswith('.pth') or os.path.lexists(folder / top):
                continue  # scripts, caches, .pth files (read in site-packages only), shared namespace folders
            (folder / top).symlink_to(Path(dist.locate_file(top)).resolve())
    return sorted(dists)


@pytest.fixture(scope='module')
def hub_only_venv(tmp_path_factory) -> Dict[str, object]:
    """A new venv: torch and torchvision from here through a .pth file, then `pip install '<package>[hub]'` (a wheel
    of this checkout's package, built here without network; its dependencies from the package registries)."""
    started = time.time()
    root = tmp_path_factory.mktemp('hub-only')
    venv = root / 'venv'
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV')}
    env.update(PYTHONNOUSERSITE='1', PIP_DISABLE_PIP_VERSION_CHECK='1', PIP_NO_INPUT='1')
    result = _run([sys.executable, '-m', 'venv', venv], env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    python = venv / 'bin' / 'python'
    site_packages = Path(_run([python, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
                              env=env).stdout.strip())
    linked = _link_distributions(['torch', 'torchvision'], root / 'torch-links')
    (site_packages / '_torch_from_the_test_environment.pth').write_text(f'{root / "torch-links"}\n')

    # pip must see torch and torchvision as installed, or it would fetch gigabytes
    check = _run([python, '-m', 'pip', 'install', '--dry-run', '--no-deps', '--report', '-', '--quiet',
                  f'torch=={metadata.version("torch")}', f'torchvision=={metadata.version("torchvision")}'],
                 env=env, cwd=root)
    assert check.returncode == 0 and json.loads(check.stdout)['install'] == [], check.stdout + check.stderr

    # a wheel of the package from a copy of its sources (the build writes into the source tree)
    source = root / 'source'
    source.mkdir()
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / 'timm_patchconvnet', source / 'timm_patchconvnet',
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    wheel = _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--quiet',
                  '--wheel-dir', root / 'dist', source], env=env, cwd=root)
    assert wheel.returncode == 0, wheel.stdout[-3000:] + wheel.stderr[-3000:]
    built = next((root / 'dist').glob('timm_patchconvnet-*.whl'))

    install = _run([python, '-m', 'pip', 'install', '--report', root / 'report.json', f'{built}[hub]'],
                   env=env, cwd=root, timeout=900)
    assert install.returncode == 0, install.stdout[-5000:] + install.stderr[-5000:]
    installed = sorted(canonicalize_name(item['metadata']['name'])
                       for item in json.loads((root / 'report.json').read_text())['install'])
    return dict(root=root, python=python, bin=venv / 'bin', env=env, linked=linked, installed=installed,
                seconds=time.time() - started)


def test_a_finished_run_is_published_with_only_the_hub_extra(hub_only_venv, console_run, tmp_path):
    venv = hub_only_venv
    print(f"hub-only venv ready in {venv['seconds']:.0f} s; pip installed {', '.join(venv['installed'])}")
    # torch and its dependencies came from the links, not from pip; the package and the hub extra from pip
    assert not {'torch', 'torchvision', 'numpy', 'pillow'} & set(venv['installed'])
    assert {'timm-patchconvnet', 'huggingface-hub', 'timm', 'safetensors', 'matplotlib'} <= set(venv['installed'])

    pool = ThreadPoolExecutor(3)  # the commands below at once: each spends most of its time importing, on one core

    def run(*command, **kwargs):
        return pool.submit(_run, list(command), env=venv['env'], cwd=tmp_path, **kwargs)

    accelerate = run(venv['python'], '-c', 'import accelerate')
    probe = run(venv['python'], '-c', 'import importlib.util, json, timm_patchconvnet\n'
                f'present = [m for m in {list(TRAINING_STACK)!r} if importlib.util.find_spec(m)]\n'
                'print(json.dumps([timm_patchconvnet.__file__, present]))')
    out = tmp_path / 'export'
    export = run(venv['bin'] / 'patchconvnet-push-model', console_run, 'someone/patchconvnet-digits', '--dry-run', out)
    # the commands that need another extra
    missing = {extra: run(venv['bin'] / command, *TINY, '--output-dir', tmp_path / 'train')
               if command == 'patchconvnet-train' else run(venv['bin'] / command, 'x', 'y/z')
               for command, extra in (('patchconvnet-train', 'train'), ('patchconvnet-demo', 'demo'),
                                      ('patchconvnet-push-idc', 'hub,train'))}
    pool.shutdown()

    # isolation: the training stack and Gradio are not there, and the package is the installed wheel
    assert accelerate.result().returncode != 0
    probe = probe.result()
    assert probe.returncode == 0, probe.stderr
    location, present = json.loads(probe.stdout)
    assert Path(location).is_relative_to(venv['root'] / 'venv') and present == []

    result = export.result()
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'nothing uploaded' in result.stdout and result.stderr == ''
    assert {'model.safetensors', 'config.json', 'README.md'} <= {p.name for p in out.iterdir()}
    assert (out / 'model.safetensors').read_bytes() == (console_run / 'model.safetensors').read_bytes()
    assert json.loads((out / 'config.json').read_text())['architecture'] == 'patchconvnet_test_p4'
    assert 'patchconvnet-digits' in (out / 'README.md').read_text()

    # the commands that need another extra say which, in one line
    for extra, answer in missing.items():
        assert f"pip install 'timm-patchconvnet[{extra}]'" in _one_error_line(answer.result())
