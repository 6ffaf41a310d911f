"""The Gradio demo (the `demo` extra) and the app of the Hugging Face Space: `app` builds and serves it."""
from .app import *  # noqa: F401,F403
from .app import __doc__ as _app_doc
from .models import *  # noqa: F401,F403

__doc__ = _app_doc
