"""Backbone families: how hftl sees an architecture (stem, ordered layers, neck, head) and how it cuts it.

A family is one class registered with ``@register_backbone``; it is picked by the model config's ``model_type``.
Importing this package registers the built-in families (ViT, ResNet, BERT, word vectors).
"""

from hftl.backbones import bert, resnet, vectors, vit  # noqa: F401,E402  (registers the built-in families)
from hftl.backbones.base import Backbone, available_backbones, backbone_for, register_backbone

__all__ = ["Backbone", "available_backbones", "backbone_for", "register_backbone"]
