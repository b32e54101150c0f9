"""A small local Azure Functions host: a stand-in for ``func start`` where Core Tools cannot be installed.

It loads a Python v2 programming model app (``module:attr``, default ``function_app:app``), reads every
function's bindings *from the app itself* (``FunctionApp.get_functions()``, the same indexing the
Python worker does) and fires the triggers the product uses the way Azure would. One module per part:

* ``core.py``: indexing, invocation records, the ``context`` a function gets, the host's threads, and
  the ``Trigger`` / ``ManualTrigger`` protocols every trigger kind implements;
* ``http.py``: the HTTP trigger and the server in front of it (request limits, the App Service
  authentication hook of ``emulator/easyauth.py``), with ``routes.py`` (literal segments and
  ``{name}`` parameters, what the product's routes use; anything else fails ``start()``) and
  ``keys.py`` (function and master keys, auth levels);
* ``timer.py``: NCRONTAB schedules (``emulator.ncrontab``), the singleton lock, ``past_due``;
* ``blob.py``: the blob trigger by polling, receipts, retries and poison; ``sdkbinding.py``: the
  ``ModelBindingData`` of SDK-type bindings (``BlobClient``) and their decoding;
* ``environment.py``: ``%SETTING%`` placeholders, connections, app settings exported as environment
  variables for the run; ``admin.py``: the admin API; ``host.py``: ``LocalFunctionsHost``, the facade;
  ``__main__.py``: the CLI.

* ``queue.py``: the Storage queue trigger by polling with back-off, batches, visibility timeout,
  dequeue count, the ``<queue>-poison`` queue and base64 message encoding, as host.json
  ``extensions.queues`` sets them (``QueueOptions``; the CLI reads host.json).

A new trigger kind is one more module with a class like ``BlobTrigger`` (``add``, ``names``, ``clear``,
``start``, ``fire``) and one more entry in ``LocalFunctionsHost._manual_kinds``; the admin API and
``trigger()`` reach it through the protocol.

``%SETTING%`` placeholders in schedules, paths and connections resolve from the app settings (the
environment), as in the real host; a missing one is a ``HostStartupError`` naming the setting,
raised by ``start()`` before any thread or socket exists.

Keys: at start the host loads ``<state_dir>/host_keys.json`` or creates it (random function and master
keys, mode 0600), unless ``keys=HostKeys(...)`` is given.

App Service authentication: ``easy_auth=EasyAuthSettings(...)`` (CLI ``--easy-auth-key``) puts the
emulation of ``emulator/easyauth.py`` in front of the HTTP routes: bearer tokens validated, 401 when
required, client-sent ``X-MS-CLIENT-PRINCIPAL*`` headers always stripped, the validated principal
injected, ``WEBSITE_AUTH_ENABLED=True`` set for the app. See docs/funchost.md.

Python API::

    host = LocalFunctionsHost(app, env={...}, http_port=0, timer_period_seconds=1, state_dir=tmp)
    host.start(); host.url; host.function_key; host.invocations; host.trigger("advance_rollouts")
    host.stop()

CLI: ``python -m emulator.funchost --app function_app:app --port 7071 [--settings local.settings.json]``.

Not emulated: other trigger types (logged and not hosted), input/output bindings other than the
HTTP ``$return``, host.json options other than ``extensions.http.routePrefix`` and
``extensions.queues``, durable functions, dynamic concurrency, lease renewal of queue messages,
schedule monitoring across restarts (``use_monitor``), the blob trigger's identity connections
and the storage triggers' identity connections (``<conn>__blobServiceUri``, ``<conn>__queueServiceUri``:
there is no managed identity locally).
"""

from emulator.funchost.blob import DEFAULT_MAX_DEQUEUE_COUNT, RECEIPTS_FILE
from emulator.funchost.core import HostStartupError, Invocation, index_app, load_app
from emulator.funchost.environment import resolve_placeholders
from emulator.funchost.host import LocalFunctionsHost
from emulator.funchost.http import MAX_REQUEST_BYTES, WEB_CONFIG_MAX_URL_BYTES
from emulator.funchost.keys import KEYS_FILE, HostKeys
from emulator.funchost.queue import QueueOptions
from emulator.funchost.routes import RouteTemplate
from emulator.funchost.sdkbinding import ModelBindingData, blob_model_binding_data, decode_sdk_binding

__all__ = [
    "DEFAULT_MAX_DEQUEUE_COUNT",
    "KEYS_FILE",
    "MAX_REQUEST_BYTES",
    "RECEIPTS_FILE",
    "WEB_CONFIG_MAX_URL_BYTES",
    "HostKeys",
    "HostStartupError",
    "Invocation",
    "LocalFunctionsHost",
    "ModelBindingData",
    "QueueOptions",
    "RouteTemplate",
    "blob_model_binding_data",
    "decode_sdk_binding",
    "index_app",
    "load_app",
    "resolve_placeholders",
]
