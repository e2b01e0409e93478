"""Backbone families: how hftl sees an architecture (stem, ordered layers, neck, head) and how it cuts it.

A family is one class registered with ``@register_backbone``; it is picked by the model config's ``model_type``.
Importing this package registers the built-in families (ViT, ResNet, BERT, word vectors, timm).
"""

# registers the built-in families; the timm family imports timm only when a timm model is met
from hftl.backbones import bert, resnet, timm, vectors, vit  # noqa: F401,E402
from hftl.backbones.base import Backbone, available_backbones, backbone_for, register_backbone

__all__ = ["Backbone", "available_backbones", "backbone_for", "register_backbone"]
