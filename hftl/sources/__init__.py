"""Where a model comes from (the Hub or a local folder, timm, word vectors), and loading it safely."""

# importing a source registers it (hftl.sources.registry); the Hub/local source is the fallback, asked last
from hftl.sources import hub, timm, vectors  # noqa: F401,E402
