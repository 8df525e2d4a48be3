"""Where the lake lives: a local folder (the embedded default) or Azure Data Lake Storage.

One URL template (`LLM_OBS_LAKE_URL`) places every layer: `{layer}` in it becomes
`bronze`, `silver` or `gold` (one container per layer, as the migration guide creates them);
without it the layers are folders under the root. Two clients reach the same place: delta-rs
(commits, reads, time travel) through `storage_options`, and fsspec (adlfs on Azure) for the
Parquet files we stream ourselves. Both talk to the Blob API, so an account without hierarchical
namespace (and the Azurite emulator) works as well as ADLS Gen2.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import dagster as dg
import fsspec
from pydantic import Field, PrivateAttr

from llm_observatory.resources.urls import LAKE_SCHEMES, check_lake_url, display_lake_url

LAYERS = ("bronze", "silver", "gold")
# Every table of the lake (and its evidence table) writes a checkpoint every this many commits:
# opening a table replays each commit since its last checkpoint, and Delta's default of 100
# made a month of daily commits a replay of up to 99 commit files per opening (silver's of the
# interactions: about 80 KB each, downloaded on ADLS), 40-100 openings a day.
CHECKPOINT_INTERVAL = 20
AZURE_SCHEMES = LAKE_SCHEMES
LAKE_URL_VARIABLE = "LLM_OBS_LAKE_URL"

AZURE_AUTH_VARIABLE = "LLM_OBS_AZURE_AUTH"
AZURE_AUTH_MODES = ("auto", "service_principal", "workload_identity", "managed_identity", "cli")
# What each Azure AD sign-in needs, in the variables azure-identity's DefaultAzureCredential reads.
AZURE_AUTH_REQUIRES = {
    "service_principal": ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"),
    "workload_identity": ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"),
    "managed_identity": (),
    "cli": (),
}


@dataclass(frozen=True)
class LakeLocation:
    """One table folder of the lake, as both delta-rs and fsspec address it."""

    uri: str
    fs_path: str
    storage_options: dict[str, str] = field(repr=False)
    filesystem: Any = field(repr=False, compare=False)
    # How long the table keeps its log and replaced files (set as table properties on creation).
    retention_days: int = 30

    @property
    def is_azure(self) -> bool:
        return urlparse(self.uri).scheme in AZURE_SCHEMES


@dataclass(frozen=True)
class AzureIdentity:
    """An Azure AD identity as configuration (who we are), never as a fetched token.

    Each client turns it into a credential that fetches its own tokens and renews them before
    they expire: delta-rs (object_store) from `storage_options()`, adlfs from `async_credential()`.
    A token fetched once and handed over as `bearer_token` expires after about an hour, half-way
    through a long step (a report re-hashing the lake, a compaction, a big day): a 401 mid-run.
    """

    kind: str  # service_principal, workload_identity, managed_identity or cli
    client_id: str | None = None
    tenant_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    federated_token_file: str | None = None
    authority_host: str | None = None
    msi_endpoint: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> AzureIdentity:
        """The identity the standard variables select, in DefaultAzureCredential's order: a
        service principal with a secret, workload identity (AKS), else a managed identity
        (`AZURE_CLIENT_ID` alone names a user-assigned one). The Azure CLI login is never guessed
        (`LLM_OBS_AZURE_AUTH=cli`): on a laptop there is no managed identity to fall back on.

        These are read from the environment, not from resource fields, because that is where
        the platform puts them (the AKS workload-identity webhook, App Service) and where
        azure-identity, adlfs and delta-rs themselves look: one reading keeps the clients agreed.
        """

        def get(name: str) -> str | None:
            return (environ.get(name) or "").strip() or None

        requested = get(AZURE_AUTH_VARIABLE)
        kind = (requested or "auto").lower()
        if kind not in AZURE_AUTH_MODES:
            raise ValueError(
                f"{AZURE_AUTH_VARIABLE}={requested!r} is not one of {', '.join(AZURE_AUTH_MODES)}"
            )
        if kind == "auto":
            if get("AZURE_CLIENT_SECRET"):
                kind, reason = "service_principal", "AZURE_CLIENT_SECRET is set"
            elif get("AZURE_FEDERATED_TOKEN_FILE"):
                kind, reason = "workload_identity", "AZURE_FEDERATED_TOKEN_FILE is set"
            elif get("AZURE_CLIENT_CERTIFICATE_PATH"):
                raise ValueError(
                    "AZURE_CLIENT_CERTIFICATE_PATH is set, but delta-rs cannot sign in with a "
                    "certificate: use AZURE_CLIENT_SECRET, workload identity or a managed identity"
                )
            else:
                kind, reason = "managed_identity", ""
        else:
            reason = f"{AZURE_AUTH_VARIABLE}={kind}"
        missing = [name for name in AZURE_AUTH_REQUIRES[kind] if not get(name)]
        if missing:
            raise ValueError(
                f"Azure AD sign-in as {kind.replace('_', ' ')} ({reason}) needs "
                f"{', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not set"
            )

        authority_host = get("AZURE_AUTHORITY_HOST")
        # The AKS webhook sets it with a trailing slash; object_store appends `/{tenant}/...`.
        authority_host = authority_host.rstrip("/") if authority_host else None
        if kind == "service_principal":
            return cls(
                kind,
                client_id=get("AZURE_CLIENT_ID"),
                tenant_id=get("AZURE_TENANT_ID"),
                client_secret=get("AZURE_CLIENT_SECRET"),
                authority_host=authority_host,
            )
        if kind == "workload_identity":
            return cls(
                kind,
                client_id=get("AZURE_CLIENT_ID"),
                tenant_id=get("AZURE_TENANT_ID"),
                federated_token_file=get("AZURE_FEDERATED_TOKEN_FILE"),
                authority_host=authority_host,
            )
        if kind == "managed_identity":
            # App Service and Container Apps have no IMDS: their identity endpoint is in
            # IDENTITY_ENDPOINT, and object_store sends IDENTITY_HEADER along by itself.
            endpoint = get("IDENTITY_ENDPOINT") if get("IDENTITY_HEADER") else None
            return cls(kind, client_id=get("AZURE_CLIENT_ID"), msi_endpoint=endpoint)
        return cls(kind)

    def storage_options(self) -> dict[str, str]:
        """object_store's `AzureConfigKey`s for this identity: it builds the token provider.

        One credential's keys only, and complete for a service principal, workload identity and
        the CLI, so delta-rs adds no credential key of its own from the `AZURE_*` environment
        (object_store would prefer workload identity over a secret when given both)."""
        options: dict[str, str] = {}
        if self.kind == "cli":
            options["azure_use_azure_cli"] = "true"
        if self.client_id:
            options["azure_client_id"] = self.client_id
        if self.tenant_id:
            options["azure_tenant_id"] = self.tenant_id
        if self.client_secret:
            options["azure_client_secret"] = self.client_secret
        if self.federated_token_file:
            options["azure_federated_token_file"] = self.federated_token_file
        if self.authority_host:
            options["azure_authority_host"] = self.authority_host
        if self.msi_endpoint:
            options["azure_msi_endpoint"] = self.msi_endpoint
        return options

    def async_credential(self) -> Any:
        """The same identity as an azure-identity async credential, for adlfs (which would
        otherwise walk DefaultAzureCredential's chain and could settle on another identity)."""
        from azure.identity import aio  # only Azure lakes pay for importing azure-identity

        authority = {"authority": self.authority_host} if self.authority_host else {}
        if self.kind == "service_principal":
            return aio.ClientSecretCredential(
                self.tenant_id, self.client_id, self.client_secret, **authority
            )
        if self.kind == "workload_identity":
            return aio.WorkloadIdentityCredential(
                tenant_id=self.tenant_id,
                client_id=self.client_id,
                token_file_path=self.federated_token_file,
                **authority,
            )
        if self.kind == "cli":
            return aio.AzureCliCredential()
        return aio.ManagedIdentityCredential(client_id=self.client_id)


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

    Credentials, in order: a connection string, an account key, a SAS (in the connection string
    or `AZURE_STORAGE_SAS_TOKEN`; never in the URL, which `check_lake_url` refuses), else Azure
    AD as `AzureIdentity.from_environment` selects it (service principal, workload identity,
    managed identity, or `az login` when asked for). They stay in memory: nothing here
    is logged, put into metadata or shown in the resource's repr.
    """

    url: str
    # LLM_OBS_LAKE_RETENTION_DAYS: the tables' log and replaced files are kept this long.
    retention_days: int = 30
    azure_storage_connection_string: str | None = Field(default=None, repr=False)
    azure_storage_account_name: str | None = None
    azure_storage_account_key: str | None = Field(default=None, repr=False)
    azure_storage_sas_token: str | None = Field(default=None, repr=False)

    _filesystem: Any = PrivateAttr(default=None)
    _storage_options: dict[str, str] | None = PrivateAttr(default=None)
    _azure_identity: AzureIdentity | None = PrivateAttr(default=None)

    @property
    def is_azure(self) -> bool:
        return urlparse(self.url).scheme in AZURE_SCHEMES

    def layer_root(self, layer: str) -> str:
        if layer not in LAYERS:
            raise ValueError(f"unknown lake layer {layer!r}; layers are {', '.join(LAYERS)}")
        # Every location is built from here: a root that passed holds no query string, so no
        # table URI (metadata, logs, errors, the report) can carry a SAS token.
        check_lake_url(self.url, LAKE_URL_VARIABLE)
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
            retention_days=self.retention_days,
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
        if self.azure_storage_sas_token and "sas_token" not in settings:
            settings["sas_token"] = self.azure_storage_sas_token.strip().lstrip("?")
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

    @property
    def azure_identity(self) -> AzureIdentity:
        """The Azure AD identity used when no key or SAS is configured (resolved once, so both
        clients sign in as the same one)."""
        if self._azure_identity is None:
            self._azure_identity = AzureIdentity.from_environment(os.environ)
        return self._azure_identity

    def _account_settings(self) -> dict[str, str]:
        settings = self._azure_settings
        if "account_name" not in settings:
            raise ValueError(
                "the lake is on Azure but no storage account is known: set "
                "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME"
            )
        return settings

    def _azure_storage_options(self) -> dict[str, str]:
        settings = self._account_settings()
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
            options.update(self.azure_identity.storage_options())
        return options

    def _adlfs_kwargs(self) -> dict[str, Any]:
        """adlfs arguments for the same account and credentials as `storage_options`."""
        if self.azure_storage_connection_string:
            return {"connection_string": self._adlfs_connection_string()}
        settings = self._account_settings()
        kwargs: dict[str, Any] = {"account_name": settings["account_name"]}
        if "account_key" in settings:
            kwargs["account_key"] = settings["account_key"]
        elif "sas_token" in settings:
            kwargs["sas_token"] = settings["sas_token"]
        else:
            kwargs["credential"] = self.azure_identity.async_credential()
        return kwargs

    def _adlfs_connection_string(self) -> str:
        """The connection string, completed with a key or SAS set apart from it: given one,
        adlfs reads nothing else (the string then only says where the account is)."""
        text = self.azure_storage_connection_string or ""
        given = parse_connection_string(text)
        if "AccountKey" in given or "SharedAccessSignature" in given:
            return text
        settings = self._azure_settings
        added: dict[str, str] = {}
        if "account_key" in settings and "account_name" in settings:
            added = {"AccountName": settings["account_name"], "AccountKey": settings["account_key"]}
        elif "sas_token" in settings:
            added = {"SharedAccessSignature": settings["sas_token"]}
        extra = [f"{key}={value}" for key, value in added.items() if key not in given]
        return ";".join([text.rstrip(";"), *extra]) if extra else text

    @property
    def filesystem(self) -> Any:
        """fsspec filesystem for the Parquet files we stream ourselves (adlfs on Azure)."""
        if self._filesystem is None:
            if self.is_azure:
                import adlfs

                self._filesystem = adlfs.AzureBlobFileSystem(**self._adlfs_kwargs())
            else:
                self._filesystem = fsspec.filesystem("file", auto_mkdir=True)
        return self._filesystem

    def describe(self) -> str:
        """The lake's address for humans and metadata: never a credential."""
        return display_lake_url(self.url)
