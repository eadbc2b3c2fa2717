"""Web app for human preference annotation over ``alignment.annotations`` (``python -m annotation_ui``).

``build_app``, ``serve`` and ``AnnotationAPI`` are loaded from ``annotation_ui.app`` on first use, so that
``python -m annotation_ui users add ...`` does not pay for importing Gradio. The modules: ``app`` (the Blocks and
``serve``), ``server`` (login page, session, logout, admin downloads), ``api`` (the named endpoints), ``rater`` and
``admin`` (the tabs), ``render`` (untrusted text made safe to show).
"""

__all__ = ["AnnotationAPI", "build_app", "serve"]


def __getattr__(name: str):
    if name in __all__:
        from annotation_ui import app

        return getattr(app, name)
    raise AttributeError(f"module 'annotation_ui' has no attribute {name!r}")
