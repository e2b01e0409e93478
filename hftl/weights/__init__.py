"""Converters for pretrained weights published outside the Hugging Face Hub into hftl-loadable model folders."""
