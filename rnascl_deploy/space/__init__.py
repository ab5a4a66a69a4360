"""Search space: layout (widths, strides), supernet (Gumbel-softmax channel masks), plain student (materialize)."""
from .layout import BlockLayout, Layout, build_layout  # noqa: F401
from .student import Student, student_taps  # noqa: F401
from .supernet import Supernet, materialize  # noqa: F401
