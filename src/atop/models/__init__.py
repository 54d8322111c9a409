"""Model registries: classifiers map [0,1] images to logits, purifiers map RT output to [0,1] images."""

from .classifiers import CLASSIFIERS, build_classifier
from .purifiers import PURIFIERS, PurifierParts, build_purifier

__all__ = ["CLASSIFIERS", "PURIFIERS", "PurifierParts", "build_classifier", "build_purifier"]
