"""What a run leaves behind and where it goes: artifacts, the model card, Hub pushes, loading an output folder."""
