# The SWIG-generated extension module: private to the package, untyped.
from typing import Any

def __getattr__(name: str) -> Any: ...
