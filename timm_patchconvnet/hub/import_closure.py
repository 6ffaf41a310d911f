"""The modules of a package that a script imports, found by reading their sources (`ast`), never by running them:
what a Space must ship, and the third-party packages those modules import, which its requirements must list.

Every import statement counts, also one inside a function (it runs when the function does), except the ones named
in `left_out`: imports inside functions for a feature the script's users cannot reach, each with its reason. An
import the script makes by name at run time (`importlib.import_module`, a timm entry point) is not seen.
"""
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Mapping, Optional, Set, Tuple

from .upload import HubError

__all__ = ['ImportClosure', 'import_closure']


@dataclass
class ImportClosure:
    modules: Dict[str, Path] = field(default_factory=dict)  # module name: its file, for every module imported
    third_party: Set[str] = field(default_factory=set)  # top-level names outside the package and the standard library
    left_out: Set[Tuple[str, str]] = field(default_factory=set)  # the (importer, imported) pairs of `left_out` met


def import_closure(entry: Path, package: Path,
                   left_out: Optional[Mapping[Tuple[str, str], str]] = None) -> ImportClosure:
    """What the script `entry` imports of `package` (a folder, whose name is the package's), directly or through
    other modules of it; `left_out`: {(importing module, imported module or top-level package): why} for imports
    inside functions that are not followed. A module that is missing or a symbolic link is a HubError."""
    left_out = left_out or {}
    closure = ImportClosure()
    pending = [(None, entry)]
    while pending:
        importer, path = pending.pop()
        for imported, in_function, maybe_name in _imports(path, importer):
            top = imported.split('.')[0]
            skipped = [(importer, prefix) for prefix in _prefixes(imported) if (importer, prefix) in left_out]
            if skipped:
                if not in_function:
                    raise HubError(f'{importer} imports {imported} when it is imported: it cannot be left out.')
                closure.left_out.add(skipped[0])
            elif top != package.name:
                if not maybe_name and top not in sys.stdlib_module_names and top != '__future__':
                    closure.third_party.add(top)
            elif not (maybe_name and _source(imported, package) is None):  # else a name in a module, not a module
                for name in _prefixes(imported):  # importing a module runs the __init__.py of each package above it
                    if name not in closure.modules:
                        closure.modules[name] = _module_file(name, package, importer or entry.name)
                        pending.append((name, closure.modules[name]))
    return closure


def _imports(path: Path, module: Optional[str]) -> Iterator[Tuple[str, bool, bool]]:
    """(absolute module name, whether inside a function, whether maybe a name) of every import in `path`, the
    module `module` (None: a script); `from X import a` gives X, and X.a, which may name a module or not."""
    tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
    in_functions = {id(node) for function in ast.walk(tree)
                    if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                    for node in ast.walk(function)}
    for node in ast.walk(tree):
        lazy = id(node) in in_functions
        if isinstance(node, ast.Import):
            yield from ((alias.name, lazy, False) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, path)
            yield base, lazy, False
            yield from ((f'{base}.{alias.name}', lazy, True) for alias in node.names if alias.name != '*')


def _absolute(node: ast.ImportFrom, module: Optional[str], path: Path) -> str:
    """The module a `from ... import` statement of `module` reads, its dots resolved."""
    if not node.level:
        return node.module
    if module is None:
        raise HubError(f'{path} is a script: it cannot import relatively (from {"." * node.level}...).')
    parts = module.split('.')
    if path.name != '__init__.py':
        parts = parts[:-1]  # a module's dots count from its package; a package's from itself
    parts = parts[:len(parts) - node.level + 1]
    return '.'.join(parts + ([node.module] if node.module else []))


def _prefixes(name: str) -> Iterator[str]:
    """a, a.b, a.b.c for a.b.c."""
    parts = name.split('.')
    return ('.'.join(parts[:end]) for end in range(1, len(parts) + 1))


def _source(name: str, package: Path) -> Optional[Path]:
    """The file of module `name` in `package`: a.b is package/b.py or package/b/__init__.py; None when neither."""
    folder = package.joinpath(*name.split('.')[1:])
    for candidate in (folder / '__init__.py', folder.with_suffix('.py')):
        if candidate.is_symlink() or candidate.is_file():
            return candidate
    return None


def _module_file(name: str, package: Path, importer: str) -> Path:
    source = _source(name, package)
    if source is None:
        raise HubError(f'{importer} imports {name}, which {package} does not hold.')
    if source.is_symlink():
        raise HubError(f'{source} is a symbolic link: the Space gets plain files only, and this one is imported.')
    return source
