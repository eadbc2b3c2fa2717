"""Text classification stage (``python -m alignment.classify recipe.yaml``): see :mod:`alignment.classify.stage`.

Modules: ``args`` (recipe keys), ``trainer`` (class weights, head learning rate), ``metrics``, ``search`` (optuna),
``baseline`` (zero-/few-shot LM), ``stage`` (the entry point).
"""
