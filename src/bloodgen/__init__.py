"""bloodgen: generative models of BloodMNIST blood-cell images, and a verifiable way to compare them."""

__version__ = "0.1.0"
