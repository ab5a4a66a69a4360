"""Search space: block kinds (registry), layout (widths, strides), supernet (Gumbel-softmax channel masks), plain
student (materialize). A new block kind is one file that registers itself in :data:`BLOCKS` plus its import here."""
from . import conv, mbconv  # noqa: F401,E402  (register the block kinds)
from .blocks import BLOCKS, fold_batchnorm  # noqa: F401
from .layout import BlockLayout, Layout, build_layout  # noqa: F401,E402
from .student import Student, student_taps  # noqa: F401,E402
from .supernet import Supernet, materialize  # noqa: F401,E402
