"""Prototype-guided diffusion (IMPROVE): the comparison experiment and its command."""
