"""Cards (the README.md of a Hub repo) rendered from the Jinja templates in `templates/`: the prose lives there,
the values come from the artifact's module (`model.py`, `dataset.py`, `space.py`).

Every value is escaped before rendering (`markdown_text`), whatever template uses it: a label name or a source name
from the data must not add HTML (`<img onerror=...>`), headings (a newline, then `#`), table cells (`|`) or links
to a public page. Only what we compose ourselves for a code block or the YAML header is `Verbatim`."""
import re
from pathlib import Path
from typing import Any, Type, TypeVar

import jinja2
from huggingface_hub import CardData, RepoCard

__all__ = ['TEMPLATES', 'Verbatim', 'markdown_text', 'render_card']

TEMPLATES = Path(__file__).resolve().parent / 'templates'
Card = TypeVar('Card', bound=RepoCard)
# HTML's own three, then what ends a table cell, a link or a code span; line breaks and control characters fold
_ESCAPES = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '|': r'\|', '[': r'\[', ']': r'\]', '`': r'\`'}
_CONTROL = re.compile(r'[\x00-\x1f\x7f\u2028\u2029]+')


class Verbatim(str):
    """Text rendered as it is: the YAML metadata, a command for a code block (composed here, not from data)."""


def markdown_text(value: Any) -> Any:
    """`value` with every string in it (through lists, tuples and dicts) made inline Markdown text that shows as
    written: HTML and Markdown structure escaped, on one line. Numbers, None and `Verbatim` pass unchanged."""
    if isinstance(value, Verbatim) or not isinstance(value, (str, list, tuple, dict)):
        return value
    if isinstance(value, dict):
        return {key: markdown_text(item) for key, item in value.items()}
    if not isinstance(value, str):
        items = [markdown_text(item) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    return ''.join(_ESCAPES.get(char, char) for char in _CONTROL.sub(' ', value))


def render_card(card_class: Type[Card], template: str, card_data: CardData, **context: Any) -> Card:
    """`card_class` (ModelCard, DatasetCard, SpaceCard) from `templates/<template>`: YAML metadata from `card_data`,
    the body from the template filled with `context`, every value escaped (`markdown_text`) before the template
    sees it, so that its own separators (a table's `|`) stay. As `RepoCard.from_template`, with the escaping."""
    values = markdown_text({**card_data.to_dict(), **context})
    body = jinja2.Template((TEMPLATES / template).read_text(encoding='utf-8'))
    return card_class(body.render(**values, card_data=card_data.to_yaml()))
