"""The managed identity, for the storage clients. (ARM's credential is ``compute.credential_for``.)"""

from __future__ import annotations

from azure.core.credentials import TokenCredential
from azure.identity import DefaultAzureCredential


def storage_credential() -> TokenCredential:
    """DefaultAzureCredential: the function app's managed identity in Azure, a developer's az login
    elsewhere. Used only for the identity-based connections (``<Connection>__<service>Uri``)."""
    return DefaultAzureCredential()
