"""The package's layout keeps its promises: ARCHITECTURE.md names every module (and only those), each shared
constant and helper has one home, and no function grows past what one reads at once (issue 25)."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'timm_patchconvnet'
# the code of the product: the package and the checkout's thin entry points and benchmarks (tests may build fixtures)
SOURCES = sorted([*PACKAGE.rglob('*.py'), *(ROOT / 'benchmarks').glob('*.py'), *(ROOT / 'hub').glob('*.py'),
                  ROOT / 'demo' / 'app.py', ROOT / 'train.py'])
# the knowledge that used to be written several times, and its one home
ONE_HOME = {
    'SPLIT_NAMES': 'dataset_specs.py',
    'STEM_STRIDES': 'patchconvnet.py',
    'EXAMPLE_SUFFIXES': 'demo/examples.py',
    'IDC_PATCH_NAME': 'dataset_specs.py',
    'one_line': 'errors.py',
    'install_hint': 'errors.py',
    'parse_model_ref': 'model_ref.py',
}
MAX_BODY_LINES = 50
LONG_FUNCTION_NOTE = '# longer than 50 lines:'  # the comment above a def that says why it may be longer


def _architecture_modules() -> set:
    text = (PACKAGE / 'ARCHITECTURE.md').read_text()
    section = text.split('## Where each thing lives', 1)[1].split('\n## ', 1)[0]
    return set(re.findall(r'^\| `([\w/]+\.(?:py|json))` \|', section, flags=re.M))


def test_architecture_names_every_module_and_only_existing_ones():
    on_disk = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob('*') if p.suffix in ('.py', '.json')
               and '__pycache__' not in p.parts}
    listed = _architecture_modules()
    assert listed, 'no module table found in ARCHITECTURE.md'
    assert sorted(on_disk - listed) == [], 'modules missing from ARCHITECTURE.md'
    assert sorted(listed - on_disk) == [], 'ARCHITECTURE.md names modules that do not exist'


def _definitions(name: str):
    """(file, line) of every module-level or nested assignment to `name`, and of every `def name`."""
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                targets = [t.id for t in targets if isinstance(t, ast.Name)]
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                targets = [node.name]
            if name in targets:
                found.append((str(path.relative_to(ROOT)), node.lineno))
    return found


@pytest.mark.parametrize('name', sorted(ONE_HOME))
def test_each_shared_name_is_defined_once_in_its_home(name):
    found = _definitions(name)
    assert [file for file, _ in found] == [f'timm_patchconvnet/{ONE_HOME[name]}'], found


def test_the_split_names_and_the_one_line_idiom_are_written_once():
    """Caught by text, not by name: a copy under another name is still a copy."""
    split_tuple = re.compile(r"""\(\s*['"]train['"],\s*['"]validation['"],\s*['"]test['"]\s*\)""")
    one_line_idiom = re.compile(r"""['"] ['"]\.join\(str\(\w+\)\.split\(\)\)""")
    copies = [(str(path.relative_to(ROOT)), what) for path in SOURCES
              for what, pattern in (('split names', split_tuple), ('one-line idiom', one_line_idiom))
              if pattern.search(path.read_text())]
    assert sorted(copies) == [('timm_patchconvnet/dataset_specs.py', 'split names'),
                              ('timm_patchconvnet/errors.py', 'one-line idiom')]


def test_no_function_body_is_longer_than_one_reads_at_once():
    """Body lines (after the docstring) of every function of the package; a longer one needs a comment above its
    def saying why."""
    long = []
    for path in sorted(PACKAGE.rglob('*.py')):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse('\n'.join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body[1:] if len(node.body) > 1 and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant) else node.body
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            noted = first >= 2 and lines[first - 2].strip().startswith(LONG_FUNCTION_NOTE)
            if node.end_lineno - body[0].lineno + 1 > MAX_BODY_LINES and not noted:
                long.append(f'{path.relative_to(ROOT)}:{node.lineno} {node.name}')
    assert long == []


def test_the_demo_and_slides_packages_import_without_gradio_or_datasets():
    """Importing a package of the layout pulls in only what its extra needs: the demo package and the slides API
    are read by the Space export and the model card, which have neither Gradio nor `datasets`."""
    import subprocess
    import sys
    code = ('import sys, timm_patchconvnet.demo, timm_patchconvnet.demo.models, timm_patchconvnet.demo.examples, '
            'timm_patchconvnet.slides, timm_patchconvnet.model_ref, timm_patchconvnet.dataset_specs\n'
            "print(sorted(m for m in ('gradio', 'datasets', 'accelerate') if m in sys.modules))")
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == '[]'
