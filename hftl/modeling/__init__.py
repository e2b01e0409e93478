"""hftl's own networks: the word-vector classifier, truncated timm nets and pretrained-weight converters."""
