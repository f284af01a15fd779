"""Backbones: the registry (``get``, ``names``, ``register``) and the entries registered in it.

Adding a backbone is one registered builder in a module of this package (see
``registry.py``), imported below so that it registers itself.
"""

from . import keras_apps, lite  # noqa: F401  (importing them registers their entries)
from .lite import lite_weights_source
from .registry import (
    PRETRAINED,
    RANDOM,
    Backbone,
    check_weights,
    feature_extractor,
    get,
    load_weights_file,
    names,
    register,
    weights_id,
)

__all__ = [
    "PRETRAINED",
    "RANDOM",
    "Backbone",
    "check_weights",
    "feature_extractor",
    "get",
    "lite_weights_source",
    "load_weights_file",
    "names",
    "register",
    "weights_id",
]
