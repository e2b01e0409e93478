"""Using a trained model: predictions and embeddings from any hftl output folder."""
