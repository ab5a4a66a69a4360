"""rnascl-deploy: robust neural architecture search by cross-layer distillation, export and verification.

Every model in this package takes images in [0, 1] (N, C, H, W) and returns logits; normalisation lives inside
the model, so an attack's eps means the same thing for PyTorch and for an exported engine.
"""

__version__ = "0.1.0"
