"""Web app for human preference annotation over ``alignment.annotations`` (``python -m annotation_ui``).

``build_app``, ``serve`` and ``AnnotationAPI`` live in ``annotation_ui.app``; they are loaded on first
use so that ``python -m annotation_ui users add ...`` does not pay for importing Gradio.
"""

__all__ = ["AnnotationAPI", "build_app", "serve"]


def __getattr__(name: str):
    if name in __all__:
        from annotation_ui import app

        return getattr(app, name)
    raise AttributeError(f"module 'annotation_ui' has no attribute {name!r}")
