"""The one rule for paths that come from data or from a folder we read: a name from data (a patient id, a label)
becomes a file name only if it is one plain name, and a symbolic link is followed only where it stays inside the
folder being read; anything else is refused with a message naming it, never dropped without a word."""
import os
import re
from pathlib import Path

__all__ = ['UnsafePathError', 'inside', 'link_target', 'plain_name']

# one path component of ordinary characters: no separator, no leading dot ('..', hidden files), no control character
_PLAIN_NAME = re.compile(r'[A-Za-z0-9_+=,@-][A-Za-z0-9._+=,@ -]{0,127}')


class UnsafePathError(ValueError):
    """A name from data that is not a plain file name, or a link that leads out of the folder being read."""


def plain_name(name: object, what: str) -> str:
    """`name` if it is safe as one file name (letters, digits, `._+=,@ -`, not starting with a dot, at most 128
    characters); UnsafePathError naming `what` otherwise (`../../x`, `/abs/x`, a newline)."""
    text = str(name)
    if not _PLAIN_NAME.fullmatch(text) or text != text.strip():
        raise UnsafePathError(f'{what} {text[:60]!r} cannot be a file name: only letters, digits and ._+=,@- '
                              '(not first: a dot) are allowed, at most 128 characters.')
    return text


def inside(path: Path, root: Path) -> bool:
    """Whether the real location of `path` (links resolved) lies in the real location of `root`."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def link_target(link: Path, root: Path) -> Path:
    """The real path a symbolic link `link` leads to, if it exists and lies inside `root`; UnsafePathError naming the
    link if it leads out of `root`, and OSError if it loops or leads nowhere."""
    try:
        target = Path(link).resolve(strict=True)
    except RuntimeError as err:  # a loop, before Python 3.13 (an OSError since)
        raise OSError(f'{link} is a symbolic link that loops') from err
    if not inside(target, root):
        raise UnsafePathError(f'{link} is a symbolic link to {target}, outside {root}: links are followed only inside '
                              'the folder being read. Copy the file or folder in, or pass the folder it lies in.')
    return target
