"""pase: Prototype-aligned Calibration and Shapley-based Equilibrium for multimodal sentiment analysis."""

__version__ = "0.1.0"
