"""Write bizon-host destinations in Python: subclass `Destination`, build a
WebAssembly component with `bizon-plugin build app.py -o my_dest.wasm`."""

from .arrow import ArrowError
from .batch import Batch, Row
from . import http
from .destination import Destination, Rejected, Retryable

__all__ = ["ArrowError", "Batch", "Destination", "Rejected", "Retryable", "Row", "http"]
__version__ = "0.1.0"
