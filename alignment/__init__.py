"""alignment: fine-tune language models and align them with human preferences.

Stages run as ``python -m alignment.<stage> recipe.yaml``.
"""

__version__ = "0.1.0"
