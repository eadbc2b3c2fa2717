"""alignment: fine-tune language models and align them with human preferences.

Stages run as ``python -m alignment.<stage> recipe.yaml``.
"""

from alignment.run import silence_expected_noise

__version__ = "0.1.0"

silence_expected_noise()
