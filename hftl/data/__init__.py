"""Datasets in, model inputs out: loading, preprocessing, bad inputs and sampling."""
