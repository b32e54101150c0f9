"""Index a Python v2 ``FunctionApp`` once per process.

``FunctionApp.get_functions()`` may be called only once per app object: a second call fails with
"Function X does not have a unique function name" (azure-functions 1.26 records the names it has
seen). The real worker indexes once at start-up; the local host, the tests and the infra checks all
go through this cache instead, so they can share one imported ``function_app`` in one process.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import azure.functions as func

_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()


def functions_of(app: Any) -> list[Any]:
    """The app's ``Function`` objects (``azure.functions.decorators.function_app.Function``)."""
    with _lock:
        functions = _cache.get(app)
        if functions is None:
            if isinstance(app, func.Blueprint):  # a lone Blueprint: index it the way an app would
                wrapper = func.FunctionApp()
                wrapper.register_functions(app)
                functions = list(wrapper.get_functions())
            else:
                functions = list(app.get_functions())
            _cache[app] = functions
        return functions


def user_function(app: Any, name: str) -> Any:
    """The Python callable behind the function called ``name``."""
    for function in functions_of(app):
        if function.get_function_name() == name:
            return function.get_user_function()
    raise LookupError(f"the app has no function named {name!r}")
