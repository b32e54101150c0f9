"""SDK-type bindings (azurefunctions-extensions-bindings-blob): ``ModelBindingData`` and its decoding.

For a binding parameter annotated with an SDK type, the Python worker marks the binding
"SupportsDeferredBinding" in the function metadata (azurefunctions-extensions-base utils.py,
Binding.get_dict_repr) and the host then sends, instead of the blob's bytes, a ModelBindingData
message built by the storage extension (Azure/azure-sdk-for-net,
sdk/storage/Microsoft.Azure.WebJobs.Extensions.Storage.Blobs/src/Config/BlobsExtensionConfigProvider.cs,
CreateParameterBindingData: version "1.0", source "AzureStorageBlobs", content type
"application/json", content {"Connection", "ContainerName", "BlobName"}; since azure-sdk-for-net
PR 38284 "Connection" is the connection *name* of the binding). The worker decodes it with the
extension's converter (azure-functions-python-worker azure_functions_worker/bindings/meta.py,
deferred_bindings_decode), which builds the client from that app setting by itself
(azurefunctions/extensions/bindings/blob/utils.py, service_client_factory). The host never
downloads the blob for such a binding, and neither does this one.
"""

from __future__ import annotations

import json
import threading
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.functions.decorators.function_app import Function
from azurefunctions.extensions.base import Datum, get_binding_registry

from emulator.funchost.core import HostStartupError


@dataclass(frozen=True)
class ModelBindingData:
    """The gRPC ``ModelBindingData`` message the host sends for an SDK-type binding (same fields)."""

    version: str
    source: str
    content_type: str
    content: bytes


def blob_model_binding_data(connection: str, container: str, blob: str) -> ModelBindingData:
    """What the storage extension sends for a blob trigger bound to an SDK type."""
    content = json.dumps({"Connection": connection, "ContainerName": container, "BlobName": blob})
    return ModelBindingData("1.0", "AzureStorageBlobs", "application/json", content.encode())


def decode_sdk_binding(binding_type: str, pytype: type, data: ModelBindingData) -> Any:
    """The SDK object for ``data``, through the extension's own converter, as the worker decodes it."""
    converter = get_binding_registry().get(binding_type)
    if converter is None:
        raise HostStartupError(f"no SDK-type converter is registered for {binding_type!r} bindings")
    # The worker passes the trigger metadata too; the blob converter does not use it.
    return converter.decode(Datum(value=data, type="model_binding_data"), trigger_metadata={}, pytype=pytype)


def sdk_binding_type(
    function: Function, name: str, trigger: Any, env: Mapping[str, str], connection: str
) -> type | None:
    """The SDK type the trigger parameter is annotated with, or None for a plain binding.

    The worker's test (bindings/meta.py, check_deferred_bindings_enabled): an annotation the extension
    registry supports, for a binding it has a converter for, is an SDK-type binding."""
    try:
        # The worker resolves annotations the same way (functions.py, typing.get_type_hints).
        pytype = typing.get_type_hints(function.get_user_function()).get(trigger.name)
    except Exception as error:  # noqa: BLE001 - any failure to resolve fails the function's load
        raise HostStartupError(f"function {name}: cannot resolve its type annotations: {error}") from None
    registry = get_binding_registry()
    converter = registry.get(trigger.type)
    if converter is None or not registry.check_supported_type(pytype):
        return None
    if not converter.check_input_type_annotation(pytype):
        raise HostStartupError(f"function {name}: {pytype!r} is not a type the blob trigger can bind to")
    # The extension picks a managed identity as soon as one of these settings EXISTS, even
    # empty (azurefunctions/extensions/bindings/blob/utils.py, using_system_managed_identity /
    # using_user_managed_identity), whatever the connection string says. There is no managed
    # identity here (and its token endpoint is not on this machine): refuse to start.
    conn = connection
    present = sorted(k for k in env if k in (f"{conn}__serviceUri", f"{conn}__blobServiceUri", f"{conn}__credential"))
    if present:
        raise HostStartupError(
            f"function {name}: app setting(s) {', '.join(present)} make the blob SDK binding use a managed "
            f"identity (even when empty), and the local host has none: remove them and set {conn} to a "
            "connection string"
        )
    return pytype


class SdkBindingCache:
    """The worker reuses a decoded client for the same parameter, type, content and function
    (bindings/meta.py, deferred_bindings_cache): a function that closed it would see that here too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, type, bytes, str], Any] = {}

    def decode(self, binding_type: str, arg: str, pytype: type, data: ModelBindingData, function: str) -> Any:
        key = (arg, pytype, data.content, function)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = decode_sdk_binding(binding_type, pytype, data)
            return self._cache[key]
