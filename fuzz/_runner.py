"""What every harness's `main()` does: instrument our own code, then hand atheris the input function."""

from __future__ import annotations

import gc
import sys
import types
from collections.abc import Callable

OUR_PACKAGES = ("gateway", "pos_sdk", "fuzz")
"""Coverage is traced in our code only: instrumenting everything loaded (aiohttp, redis, ...) takes
minutes at every start and guides the fuzzer towards code it is not testing."""


def run(one_input: Callable[[bytes], None]) -> None:
    import atheris  # only here: the unit tests run the checks without it

    for function in [obj for obj in gc.get_objects() if isinstance(obj, types.FunctionType)]:
        if (getattr(function, "__module__", None) or "").split(".")[0] in OUR_PACKAGES:
            atheris.instrument_func(function)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
