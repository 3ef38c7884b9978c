"""Autoencoder cell features and domain adaptation (AE-CFE), probed by a random forest."""
