"""Classifiers: the ResNet-18 reference that judges generated cells, and diffusion models used as classifiers."""
