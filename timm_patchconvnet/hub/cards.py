"""Cards (the README.md of a Hub repo) rendered from the Jinja templates in `templates/`: the prose lives there,
the values come from the artifact's module (`model.py`, `dataset.py`, `space.py`)."""
from pathlib import Path
from typing import Any, Type, TypeVar

from huggingface_hub import CardData, RepoCard

__all__ = ['TEMPLATES', 'render_card']

TEMPLATES = Path(__file__).resolve().parent / 'templates'
Card = TypeVar('Card', bound=RepoCard)


def render_card(card_class: Type[Card], template: str, card_data: CardData, **context: Any) -> Card:
    """`card_class` (ModelCard, DatasetCard, SpaceCard) from `templates/<template>`: YAML metadata from `card_data`,
    the body from the template filled with `context`."""
    return card_class.from_template(card_data, template_path=str(TEMPLATES / template), **context)
