"""Classifier architectures. Every model takes [0, 1] images and owns its normalisation (a :class:`Normalize`
first layer whose mean/std are buffers), so exported graphs and attacks see the same input space.

Build one by name with :func:`build_model`; ``MODELS`` lists the names. Constructors take
``in_channels, num_classes, input_size, mean, std`` plus their own keyword arguments.
"""
from .common import MODELS, Normalize, build_model  # noqa: F401
from . import cnn, lenet, resnet, wideresnet  # noqa: F401  (register the architectures)
from . import student  # noqa: F401,E402  (registers "student", the searched architectures)
