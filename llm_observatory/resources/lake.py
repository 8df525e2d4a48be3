"""Where the lake lives: a local folder (the embedded default) or Azure Data Lake Storage.

One URL template (`LLM_OBS_LAKE_URL`, CONTRACT §3) places every layer: `{layer}` in it becomes
`bronze`, `silver` or `gold` (one container per layer, as the migration guide creates them);
without it the layers are folders under the root. Two clients reach the same place: delta-rs
(commits, reads, time travel) through `storage_options`, and fsspec (adlfs on Azure) for the
Parquet files we stream ourselves. Both talk to the Blob API, so an account without hierarchical
namespace (and the Azurite emulator) works as well as ADLS Gen2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import dagster as dg
import fsspec
from pydantic import PrivateAttr

LAYERS = ("bronze", "silver", "gold")
AZURE_SCHEMES = ("abfs", "abfss", "az")


@dataclass(frozen=True)
class LakeLocation:
    """One table folder of the lake, as both delta-rs and fsspec address it."""

    uri: str
    fs_path: str
    storage_options: dict[str, str] = field(repr=False)
    filesystem: Any = field(repr=False, compare=False)

    @property
    def is_azure(self) -> bool:
        return urlparse(self.uri).scheme in AZURE_SCHEMES


def parse_connection_string(connection_string: str) -> dict[str, str]:
    """`Key=Value;...` pairs of an Azure Storage connection string (values may contain `=`)."""
    pairs = {}
    for part in connection_string.split(";"):
        if "=" in part:
            key, value = part.split("=", 1)
            pairs[key.strip()] = value.strip()
    return pairs


class LakeResource(dg.ConfigurableResource):
    """The Delta lake root and the credentials to reach it.

    Credentials, in order: a connection string, an account key, else Azure AD through
    `DefaultAzureCredential` (managed identity, workload identity, CLI login). They stay in
    memory: nothing here is logged or put into metadata.
    """

    url: str
    azure_storage_connection_string: str | None = None
    azure_storage_account_name: str | None = None
    azure_storage_account_key: str | None = None

    _filesystem: Any = PrivateAttr(default=None)
    _storage_options: dict[str, str] | None = PrivateAttr(default=None)

    @property
    def is_azure(self) -> bool:
        return urlparse(self.url).scheme in AZURE_SCHEMES

    def layer_root(self, layer: str) -> str:
        if layer not in LAYERS:
            raise ValueError(f"unknown lake layer {layer!r}; layers are {', '.join(LAYERS)}")
        if "{layer}" in self.url:
            return self.url.replace("{layer}", layer).rstrip("/")
        if self.is_azure:
            return f"{self.url.rstrip('/')}/{layer}"
        return os.path.join(os.path.abspath(os.path.expanduser(self.url)), layer)

    def location(self, layer: str, *parts: str) -> LakeLocation:
        """The folder of a lake table, e.g. `location("silver", "_quarantine", "metadata")`."""
        root = self.layer_root(layer)
        suffix = "/".join(parts)
        if self.is_azure:
            parsed = urlparse(root)
            container = parsed.username or parsed.netloc.split("@")[0]
            path = parsed.path.strip("/")
            fs_path = "/".join(p for p in (container, path, suffix) if p)
            uri = f"{root}/{suffix}" if suffix else root
        else:
            fs_path = os.path.join(root, *parts)
            uri = fs_path
        return LakeLocation(
            uri=uri,
            fs_path=fs_path,
            storage_options=self.storage_options,
            filesystem=self.filesystem,
        )

    @property
    def _azure_settings(self) -> dict[str, str]:
        settings: dict[str, str] = {}
        if self.azure_storage_connection_string:
            parsed = parse_connection_string(self.azure_storage_connection_string)
            if parsed.get("AccountName"):
                settings["account_name"] = parsed["AccountName"]
            if parsed.get("AccountKey"):
                settings["account_key"] = parsed["AccountKey"]
            if parsed.get("BlobEndpoint"):
                settings["blob_endpoint"] = parsed["BlobEndpoint"].rstrip("/")
            if parsed.get("SharedAccessSignature"):
                settings["sas_token"] = parsed["SharedAccessSignature"]
        if self.azure_storage_account_name and "account_name" not in settings:
            settings["account_name"] = self.azure_storage_account_name
        if self.azure_storage_account_key and "account_key" not in settings:
            settings["account_key"] = self.azure_storage_account_key
        if "account_name" not in settings:
            host = urlparse(self.url.replace("{layer}", "x")).hostname or ""
            if host.endswith(".core.windows.net"):
                settings["account_name"] = host.split(".")[0]
        return settings

    @property
    def storage_options(self) -> dict[str, str]:
        """delta-rs (object_store) options for the same account (computed once per resource)."""
        if not self.is_azure:
            return {}
        if self._storage_options is None:
            self._storage_options = self._azure_storage_options()
        return self._storage_options

    def _azure_storage_options(self) -> dict[str, str]:
        settings = self._azure_settings
        if "account_name" not in settings:
            raise ValueError(
                "the lake is on Azure but no storage account is known: set "
                "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME"
            )
        options = {"account_name": settings["account_name"]}
        if "blob_endpoint" in settings:
            options["azure_endpoint"] = settings["blob_endpoint"]
            if settings["blob_endpoint"].startswith("http://"):
                options["allow_http"] = "true"
        if "account_key" in settings:
            options["account_key"] = settings["account_key"]
        elif "sas_token" in settings:
            options["sas_token"] = settings["sas_token"]
        else:
            from azure.identity import DefaultAzureCredential

            token = DefaultAzureCredential().get_token("https://storage.azure.com/.default")
            options["bearer_token"] = token.token
        return options

    @property
    def filesystem(self) -> Any:
        """fsspec filesystem for the Parquet files we stream ourselves (adlfs on Azure)."""
        if self._filesystem is None:
            if self.is_azure:
                import adlfs

                settings = self._azure_settings
                kwargs: dict[str, Any] = {"account_name": settings["account_name"]}
                if self.azure_storage_connection_string:
                    kwargs = {"connection_string": self.azure_storage_connection_string}
                elif "account_key" in settings:
                    kwargs["account_key"] = settings["account_key"]
                else:
                    kwargs["anon"] = False  # adlfs falls back to DefaultAzureCredential
                self._filesystem = adlfs.AzureBlobFileSystem(**kwargs)
            else:
                self._filesystem = fsspec.filesystem("file", auto_mkdir=True)
        return self._filesystem

    def describe(self) -> str:
        """The lake's address for humans and metadata: never a credential."""
        return self.url
