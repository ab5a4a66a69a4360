"""Classifier architectures. Every model takes [0, 1] images and owns its normalisation (a :class:`Normalize`
first layer whose mean/std are buffers), so exported graphs and attacks see the same input space.

Build one by name with :func:`build_model`; ``MODELS`` lists the names. Constructors take
``in_channels, num_classes, input_size, mean, std`` plus their own keyword arguments.
"""
from . import cnn, lenet, resnet, student, wideresnet  # noqa: F401  (register the architectures; student: the searched ones)
from .common import MODELS, Normalize, build_model  # noqa: F401
