"""Write bizon-host destinations and transforms in Python: subclass
`Destination` or `Transform`, build a WebAssembly component with
`bizon-plugin build app.py -o my_plugin.wasm`."""

from .arrow import ArrowError
from .batch import Batch, BatchSource, OffsetRange, Row
from . import http
from .destination import Destination, Rejected, Retryable
from .transform import Record, Transform

__all__ = [
    "ArrowError",
    "Batch",
    "BatchSource",
    "Destination",
    "OffsetRange",
    "Record",
    "Rejected",
    "Retryable",
    "Row",
    "Transform",
    "http",
]
__version__ = "0.1.0"
