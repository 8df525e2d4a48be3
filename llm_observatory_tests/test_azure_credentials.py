"""Azure AD credentials last as long as the run: delta-rs and adlfs get the identity as
configuration and fetch (and renew) their own tokens, never a token fetched once up front.

The unit tests pin, for each combination of the standard `AZURE_*` variables and
`LLM_OBS_AZURE_AUTH`, the exact delta-rs options and adlfs arguments, the errors and that no
secret leaks. The end-to-end tests run delta-rs (object_store) against a local stand-in for the
token endpoints and the Blob API: the options are accepted, the right sign-in happens, and a
token about to expire is renewed between two requests of the same table.
"""

import json
import os
import stat
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from llm_observatory.resources.lake import AzureIdentity, LakeResource

URL = "abfss://{layer}@llmlake.dfs.core.windows.net/llm"
ACCOUNT = "llmlake"
CLIENT_ID = "11111111-aaaa-bbbb-cccc-000000000001"
TENANT_ID = "22222222-aaaa-bbbb-cccc-000000000002"
SECRET = "client-secret-Zx9~must-not-leak"
ACCOUNT_KEY = "YWNjb3VudC1rZXktbXVzdC1ub3QtbGVhaw=="
SAS = "sv=2024-11-04&ss=b&sig=sas-signature-must-not-leak"
TOKEN_FILE = "/var/run/secrets/azure/tokens/azure-identity-token"
SECRETS = (SECRET, ACCOUNT_KEY, SAS, "sas-signature-must-not-leak")
# Every alias object_store reads a fixed bearer token from.
TOKEN_KEYS = {"bearer_token", "token", "azure_storage_token"}

ENVIRONMENT = (
    "LLM_OBS_AZURE_AUTH",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_TOKEN",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Only what a test sets: delta-rs and azure-identity read `AZURE_*` themselves too."""
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def no_fetched_token(monkeypatch):
    """The old way (DefaultAzureCredential().get_token, handed over as bearer_token) is gone."""
    import azure.identity
    import azure.identity.aio

    def refuse(*args, **kwargs):
        raise AssertionError("DefaultAzureCredential must not be used")

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", refuse)
    monkeypatch.setattr(azure.identity.aio, "DefaultAzureCredential", refuse)


class Made:
    """What a recorded azure-identity credential was constructed with."""

    def __init__(self, name, args, kwargs):
        self.name, self.args, self.kwargs = name, args, kwargs

    def __eq__(self, other):
        return (self.name, self.args, self.kwargs) == (other.name, other.args, other.kwargs)

    def __repr__(self):
        return f"Made({self.name!r}, {self.args!r}, {self.kwargs!r})"


def made(name, *args, **kwargs) -> Made:
    return Made(name, args, kwargs)


@pytest.fixture
def recorded_credentials(monkeypatch):
    """azure.identity.aio credential classes replaced by recorders, to compare exact arguments."""
    import azure.identity.aio

    for name in (
        "ClientSecretCredential",
        "WorkloadIdentityCredential",
        "ManagedIdentityCredential",
        "AzureCliCredential",
    ):
        monkeypatch.setattr(azure.identity.aio, name, lambda *a, _name=name, **k: Made(_name, a, k))


def lake(**fields) -> LakeResource:
    return LakeResource(url=URL, azure_storage_account_name=ACCOUNT, **fields)


def set_env(monkeypatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


SERVICE_PRINCIPAL = {
    "AZURE_CLIENT_ID": CLIENT_ID,
    "AZURE_TENANT_ID": TENANT_ID,
    "AZURE_CLIENT_SECRET": SECRET,
}
WORKLOAD_IDENTITY = {
    "AZURE_CLIENT_ID": CLIENT_ID,
    "AZURE_TENANT_ID": TENANT_ID,
    "AZURE_FEDERATED_TOKEN_FILE": TOKEN_FILE,
}

# (environment, delta-rs options besides account_name, adlfs credential)
CASES = {
    "service principal": (
        SERVICE_PRINCIPAL,
        {
            "azure_client_id": CLIENT_ID,
            "azure_tenant_id": TENANT_ID,
            "azure_client_secret": SECRET,
        },
        made("ClientSecretCredential", TENANT_ID, CLIENT_ID, SECRET),
    ),
    "service principal, sovereign cloud": (
        {**SERVICE_PRINCIPAL, "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.us/"},
        {
            "azure_client_id": CLIENT_ID,
            "azure_tenant_id": TENANT_ID,
            "azure_client_secret": SECRET,
            "azure_authority_host": "https://login.microsoftonline.us",
        },
        made(
            "ClientSecretCredential",
            TENANT_ID,
            CLIENT_ID,
            SECRET,
            authority="https://login.microsoftonline.us",
        ),
    ),
    "a secret comes before a federated token, as in DefaultAzureCredential": (
        {**SERVICE_PRINCIPAL, "AZURE_FEDERATED_TOKEN_FILE": TOKEN_FILE},
        {
            "azure_client_id": CLIENT_ID,
            "azure_tenant_id": TENANT_ID,
            "azure_client_secret": SECRET,
        },
        made("ClientSecretCredential", TENANT_ID, CLIENT_ID, SECRET),
    ),
    "workload identity (what the AKS webhook injects)": (
        {**WORKLOAD_IDENTITY, "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.com/"},
        {
            "azure_client_id": CLIENT_ID,
            "azure_tenant_id": TENANT_ID,
            "azure_federated_token_file": TOKEN_FILE,
            "azure_authority_host": "https://login.microsoftonline.com",
        },
        made(
            "WorkloadIdentityCredential",
            tenant_id=TENANT_ID,
            client_id=CLIENT_ID,
            token_file_path=TOKEN_FILE,
            authority="https://login.microsoftonline.com",
        ),
    ),
    "workload identity without an authority host": (
        WORKLOAD_IDENTITY,
        {
            "azure_client_id": CLIENT_ID,
            "azure_tenant_id": TENANT_ID,
            "azure_federated_token_file": TOKEN_FILE,
        },
        made(
            "WorkloadIdentityCredential",
            tenant_id=TENANT_ID,
            client_id=CLIENT_ID,
            token_file_path=TOKEN_FILE,
        ),
    ),
    "system-assigned managed identity (nothing set)": (
        {},
        {},
        made("ManagedIdentityCredential", client_id=None),
    ),
    "user-assigned managed identity (AZURE_CLIENT_ID alone)": (
        {"AZURE_CLIENT_ID": CLIENT_ID},
        {"azure_client_id": CLIENT_ID},
        made("ManagedIdentityCredential", client_id=CLIENT_ID),
    ),
    "a tenant without a secret or token file is still a managed identity": (
        {"AZURE_CLIENT_ID": CLIENT_ID, "AZURE_TENANT_ID": TENANT_ID},
        {"azure_client_id": CLIENT_ID},
        made("ManagedIdentityCredential", client_id=CLIENT_ID),
    ),
    "managed identity on App Service / Container Apps": (
        {"IDENTITY_ENDPOINT": "http://localhost:42356/msi/token", "IDENTITY_HEADER": "hdr"},
        {"azure_msi_endpoint": "http://localhost:42356/msi/token"},
        made("ManagedIdentityCredential", client_id=None),
    ),
    "IDENTITY_ENDPOINT without IDENTITY_HEADER (Azure Arc) is not App Service": (
        {"IDENTITY_ENDPOINT": "http://localhost:40342/metadata/identity/oauth2/token"},
        {},
        made("ManagedIdentityCredential", client_id=None),
    ),
    "empty variables count as unset": (
        {"AZURE_CLIENT_ID": "", "AZURE_CLIENT_SECRET": " ", "LLM_OBS_AZURE_AUTH": ""},
        {},
        made("ManagedIdentityCredential", client_id=None),
    ),
    "az login, asked for": (
        {"LLM_OBS_AZURE_AUTH": "cli"},
        {"azure_use_azure_cli": "true"},
        made("AzureCliCredential"),
    ),
    "az login wins over service principal variables when asked for": (
        {**SERVICE_PRINCIPAL, "LLM_OBS_AZURE_AUTH": " CLI "},
        {"azure_use_azure_cli": "true"},
        made("AzureCliCredential"),
    ),
    "managed identity, asked for, despite a secret": (
        {**SERVICE_PRINCIPAL, "LLM_OBS_AZURE_AUTH": "managed_identity"},
        {"azure_client_id": CLIENT_ID},
        made("ManagedIdentityCredential", client_id=CLIENT_ID),
    ),
    "workload identity, asked for, despite a secret": (
        {
            **WORKLOAD_IDENTITY,
            "AZURE_CLIENT_SECRET": SECRET,
            "LLM_OBS_AZURE_AUTH": "workload_identity",
        },
        {
            "azure_client_id": CLIENT_ID,
            "azure_tenant_id": TENANT_ID,
            "azure_federated_token_file": TOKEN_FILE,
        },
        made(
            "WorkloadIdentityCredential",
            tenant_id=TENANT_ID,
            client_id=CLIENT_ID,
            token_file_path=TOKEN_FILE,
        ),
    ),
    "service principal, asked for": (
        {
            **SERVICE_PRINCIPAL,
            "AZURE_FEDERATED_TOKEN_FILE": TOKEN_FILE,
            "LLM_OBS_AZURE_AUTH": "service_principal",
        },
        {
            "azure_client_id": CLIENT_ID,
            "azure_tenant_id": TENANT_ID,
            "azure_client_secret": SECRET,
        },
        made("ClientSecretCredential", TENANT_ID, CLIENT_ID, SECRET),
    ),
    "auto, asked for": (
        {**SERVICE_PRINCIPAL, "LLM_OBS_AZURE_AUTH": "Auto"},
        {
            "azure_client_id": CLIENT_ID,
            "azure_tenant_id": TENANT_ID,
            "azure_client_secret": SECRET,
        },
        made("ClientSecretCredential", TENANT_ID, CLIENT_ID, SECRET),
    ),
}


@pytest.mark.parametrize(("env", "options", "credential"), CASES.values(), ids=CASES.keys())
def test_each_environment_gives_both_clients_the_same_identity_as_configuration(
    monkeypatch, recorded_credentials, env, options, credential
):
    set_env(monkeypatch, env)
    resource = lake()

    storage_options = resource.storage_options
    assert storage_options == {"account_name": ACCOUNT, **options}
    assert not TOKEN_KEYS & storage_options.keys()
    assert resource._adlfs_kwargs() == {"account_name": ACCOUNT, "credential": credential}


def test_the_identity_is_resolved_once_per_resource(monkeypatch, recorded_credentials):
    set_env(monkeypatch, SERVICE_PRINCIPAL)
    resource = lake()
    first = resource.storage_options
    monkeypatch.setenv("LLM_OBS_AZURE_AUTH", "cli")  # too late: both clients keep one identity
    assert resource._adlfs_kwargs()["credential"].name == "ClientSecretCredential"
    assert resource.storage_options is first


# --------------------------------------------------------------------------------------------
# Key, SAS and connection string keep their priority


def test_an_account_key_comes_first(monkeypatch, recorded_credentials):
    set_env(monkeypatch, {**SERVICE_PRINCIPAL, "LLM_OBS_AZURE_AUTH": "cli"})
    resource = lake(azure_storage_account_key=ACCOUNT_KEY)
    assert resource.storage_options == {"account_name": ACCOUNT, "account_key": ACCOUNT_KEY}
    assert resource._adlfs_kwargs() == {"account_name": ACCOUNT, "account_key": ACCOUNT_KEY}


def test_a_connection_string_with_a_sas_comes_first(monkeypatch, recorded_credentials):
    set_env(monkeypatch, SERVICE_PRINCIPAL)
    connection_string = (
        f"BlobEndpoint=https://{ACCOUNT}.blob.core.windows.net/;SharedAccessSignature={SAS}"
    )
    resource = LakeResource(url=URL, azure_storage_connection_string=connection_string)
    assert resource.storage_options == {
        "account_name": ACCOUNT,
        "azure_endpoint": f"https://{ACCOUNT}.blob.core.windows.net",
        "sas_token": SAS,
    }
    assert resource._adlfs_kwargs() == {"connection_string": connection_string}


def test_an_invalid_mode_does_not_matter_while_a_key_is_used(monkeypatch):
    monkeypatch.setenv("LLM_OBS_AZURE_AUTH", "kerberos")
    resource = lake(azure_storage_account_key=ACCOUNT_KEY)
    assert resource.storage_options["account_key"] == ACCOUNT_KEY


def test_a_local_lake_reads_no_azure_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_OBS_AZURE_AUTH", "kerberos")
    resource = LakeResource(url=str(tmp_path / "lake"))
    assert resource.storage_options == {}
    assert resource.location("bronze", "t").storage_options == {}


# --------------------------------------------------------------------------------------------
# Errors: one line, a ValueError, naming what to set, no secret

ERRORS = {
    "unknown mode": (
        {"LLM_OBS_AZURE_AUTH": "kerberos", **SERVICE_PRINCIPAL},
        [
            "LLM_OBS_AZURE_AUTH='kerberos'",
            "auto",
            "service_principal",
            "workload_identity",
            "managed_identity",
            "cli",
        ],
    ),
    "service principal asked for, tenant and secret missing": (
        {"LLM_OBS_AZURE_AUTH": "service_principal", "AZURE_CLIENT_ID": CLIENT_ID},
        ["LLM_OBS_AZURE_AUTH=service_principal", "AZURE_TENANT_ID, AZURE_CLIENT_SECRET"],
    ),
    "workload identity asked for, nothing set": (
        {"LLM_OBS_AZURE_AUTH": "workload_identity", "AZURE_CLIENT_SECRET": SECRET},
        [
            "LLM_OBS_AZURE_AUTH=workload_identity",
            "AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE",
        ],
    ),
    "a secret without a tenant": (
        {"AZURE_CLIENT_ID": CLIENT_ID, "AZURE_CLIENT_SECRET": SECRET},
        ["AZURE_CLIENT_SECRET is set", "AZURE_TENANT_ID"],
    ),
    "a federated token file without client and tenant": (
        {"AZURE_FEDERATED_TOKEN_FILE": TOKEN_FILE},
        ["AZURE_FEDERATED_TOKEN_FILE is set", "AZURE_CLIENT_ID, AZURE_TENANT_ID"],
    ),
    "a certificate delta-rs cannot use": (
        {
            "AZURE_CLIENT_ID": CLIENT_ID,
            "AZURE_TENANT_ID": TENANT_ID,
            "AZURE_CLIENT_CERTIFICATE_PATH": "/etc/sp.pem",
        },
        ["AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_CLIENT_SECRET"],
    ),
}


@pytest.mark.parametrize(("env", "named"), ERRORS.values(), ids=ERRORS.keys())
def test_a_bad_configuration_is_one_clear_line(monkeypatch, env, named):
    set_env(monkeypatch, env)
    for reach in (
        lambda r: r.storage_options,
        lambda r: r.filesystem,
        lambda r: r.location("gold"),
    ):
        with pytest.raises(ValueError) as failure:
            reach(lake())
        message = str(failure.value)
        assert type(failure.value) is ValueError
        assert "\n" not in message
        for part in named:
            assert part in message
        for secret in SECRETS:
            assert secret not in message


def test_a_missing_variable_is_named_alone(monkeypatch):
    set_env(monkeypatch, {**SERVICE_PRINCIPAL, "AZURE_TENANT_ID": ""})
    with pytest.raises(ValueError, match=r"needs AZURE_TENANT_ID, which is not set$"):
        _ = lake().storage_options


# --------------------------------------------------------------------------------------------
# No secret in reprs, describe() or metadata


def test_no_secret_in_repr_str_or_describe(monkeypatch):
    set_env(monkeypatch, SERVICE_PRINCIPAL)
    for resource in (
        lake(),
        lake(azure_storage_account_key=ACCOUNT_KEY),
        LakeResource(
            url=URL,
            azure_storage_connection_string=(
                f"AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};SharedAccessSignature={SAS}"
            ),
        ),
    ):
        options = resource.storage_options  # resolved: secrets now sit in private state too
        assert any(secret in options.values() for secret in SECRETS)
        location = resource.location("silver", "llm_calls")
        shown = [repr(resource), str(resource), resource.describe(), repr(location)]
        shown.append(repr(resource.azure_identity))
        for text in shown:
            for secret in SECRETS:
                assert secret not in text, text
    assert lake().describe() == URL


def test_the_identity_repr_hides_the_secret():
    identity = AzureIdentity.from_environment(SERVICE_PRINCIPAL)
    assert SECRET not in repr(identity) and SECRET not in str(identity)
    assert CLIENT_ID in repr(identity)  # who we are is fine to show


# --------------------------------------------------------------------------------------------
# The real adlfs and azure-identity classes accept what we give them (no network at setup)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (SERVICE_PRINCIPAL, "ClientSecretCredential"),
        (WORKLOAD_IDENTITY, "WorkloadIdentityCredential"),
        ({"AZURE_CLIENT_ID": CLIENT_ID}, "ManagedIdentityCredential"),
        ({}, "ManagedIdentityCredential"),
        ({"LLM_OBS_AZURE_AUTH": "cli"}, "AzureCliCredential"),
    ],
    ids=["service principal", "workload identity", "user-assigned", "system-assigned", "cli"],
)
def test_adlfs_gets_a_self_renewing_azure_identity_credential(monkeypatch, env, expected):
    import adlfs
    import azure.identity.aio

    set_env(monkeypatch, env)
    fs = lake().filesystem
    assert isinstance(fs, adlfs.AzureBlobFileSystem)
    assert isinstance(fs.credential, getattr(azure.identity.aio, expected))
    assert fs.account_name == ACCOUNT
    assert fs.account_key is None and fs.sas_token is None and fs.connection_string is None
    assert fs.sync_credential is None  # not adlfs' own DefaultAzureCredential chain


# --------------------------------------------------------------------------------------------
# End to end: delta-rs against a local token endpoint and Blob API


class FakeAzure:
    """Token endpoints (Entra ID, App Service MSI) and a Blob API that knows no table.

    Each token is `token-<n>` and lives `lifetime` seconds; every blob request is recorded with
    the bearer token it carried, answered after a short pause with 404."""

    def __init__(self, lifetime: int):
        self.lifetime = lifetime
        self.token_requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.blob_tokens: list[str] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body: str, content_type: str) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                token = fake._issue(self.path, form, dict(self.headers))
                body = {"access_token": token, "expires_in": fake.lifetime, "token_type": "Bearer"}
                self._reply(200, json.dumps(body), "application/json")

            def do_GET(self):
                parsed = urlparse(self.path)
                if parsed.path == "/msi/token":
                    query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                    token = fake._issue(parsed.path, query, dict(self.headers))
                    expires_on = str(int(time.time()) + fake.lifetime)
                    body = {"access_token": token, "expires_on": expires_on}
                    return self._reply(200, json.dumps(body), "application/json")
                with fake._lock:
                    fake.blob_tokens.append(self.headers.get("Authorization", ""))
                time.sleep(0.2)  # longer than object_store's 100 ms re-fetch backoff
                body = "<?xml version='1.0'?><Error><Code>BlobNotFound</Code></Error>"
                self._reply(404, body, "application/xml")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _issue(self, path: str, params: dict[str, str], headers: dict[str, str]) -> str:
        with self._lock:
            self.token_requests.append((path, params, {k.lower(): v for k, v in headers.items()}))
            return f"token-{len(self.token_requests)}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def fake_azure(request) -> Iterator[FakeAzure]:
    fake = FakeAzure(lifetime=getattr(request, "param", 1))
    yield fake
    fake.stop()


def open_table(resource: LakeResource, fake: FakeAzure) -> None:
    """Open a table that is not there: delta-rs reads `_last_checkpoint`, then lists the log,
    two requests through one object store (so one token cache)."""
    from deltalake import DeltaTable

    # Only the endpoint is the test's: the credential options are exactly what delta-rs gets.
    # (Not through `location()`, which also builds adlfs: azure-identity wants an https authority.)
    options = {
        **resource.storage_options,
        "azure_endpoint": f"{fake.url}/{ACCOUNT}",
        "allow_http": "true",
    }
    with pytest.raises(Exception):  # noqa: B017 - a missing table; the requests are the point
        DeltaTable(f"{resource.layer_root('bronze')}/llm_calls", storage_options=options)


def test_service_principal_tokens_are_fetched_and_renewed_by_delta_rs(monkeypatch, fake_azure):
    set_env(
        monkeypatch,
        {**SERVICE_PRINCIPAL, "AZURE_AUTHORITY_HOST": f"{fake_azure.url}/"},  # AKS-style slash
    )
    open_table(lake(), fake_azure)

    assert len(fake_azure.token_requests) == 2  # the 1-second token was renewed in between
    for path, form, _ in fake_azure.token_requests:
        assert path == f"/{TENANT_ID}/oauth2/v2.0/token"
        assert form["grant_type"] == "client_credentials"
        assert form["client_id"] == CLIENT_ID
        assert form["client_secret"] == SECRET
        assert form["scope"] == "https://storage.azure.com/.default"
    assert fake_azure.blob_tokens == ["Bearer token-1", "Bearer token-2"]


@pytest.mark.parametrize("fake_azure", [3600], indirect=True)
def test_a_token_with_time_left_is_reused(monkeypatch, fake_azure):
    set_env(monkeypatch, {**SERVICE_PRINCIPAL, "AZURE_AUTHORITY_HOST": fake_azure.url})
    open_table(lake(), fake_azure)
    assert len(fake_azure.token_requests) == 1
    assert fake_azure.blob_tokens == ["Bearer token-1", "Bearer token-1"]


def test_workload_identity_reads_the_federated_token_each_time(monkeypatch, fake_azure, tmp_path):
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("kubelet-jwt-1")
    set_env(
        monkeypatch,
        {
            **WORKLOAD_IDENTITY,
            "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
            "AZURE_AUTHORITY_HOST": fake_azure.url,
        },
    )
    resource = lake()
    open_table(resource, fake_azure)

    assert [form["client_assertion"] for _, form, _ in fake_azure.token_requests] == [
        "kubelet-jwt-1",
        "kubelet-jwt-1",
    ]
    for path, form, _ in fake_azure.token_requests:
        assert path == f"/{TENANT_ID}/oauth2/v2.0/token"
        assert form["client_id"] == CLIENT_ID
        assert "client_secret" not in form
    assert fake_azure.blob_tokens == ["Bearer token-1", "Bearer token-2"]


def test_managed_identity_endpoint_with_a_user_assigned_identity(monkeypatch, fake_azure):
    set_env(
        monkeypatch,
        {
            "AZURE_CLIENT_ID": CLIENT_ID,
            "IDENTITY_ENDPOINT": f"{fake_azure.url}/msi/token",
            "IDENTITY_HEADER": "identity-header-value",
        },
    )
    open_table(lake(), fake_azure)

    assert len(fake_azure.token_requests) == 2
    for path, query, headers in fake_azure.token_requests:
        assert path == "/msi/token"
        assert query["client_id"] == CLIENT_ID
        assert query["resource"] == "https://storage.azure.com"
        assert headers["x-identity-header"] == "identity-header-value"
    assert fake_azure.blob_tokens == ["Bearer token-1", "Bearer token-2"]


def test_az_login_is_asked_again_when_its_token_runs_out(monkeypatch, fake_azure, tmp_path):
    """A stand-in `az` on PATH answers `az account get-access-token` with 2-second tokens."""
    calls = tmp_path / "az-calls"
    az = tmp_path / "bin" / "az"
    az.parent.mkdir()
    az.write_text(
        f"""#!{sys.executable}
import datetime, json, pathlib, sys
calls = pathlib.Path({str(calls)!r})
with calls.open("a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
count = len(calls.read_text().splitlines())
expires = datetime.datetime.now() + datetime.timedelta(seconds=2)
print(json.dumps({{
    "accessToken": f"cli-token-{{count}}",
    "expiresOn": expires.strftime("%Y-%m-%d %H:%M:%S.%f"),
    "tokenType": "Bearer",
}}))
"""
    )
    az.chmod(az.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{az.parent}{os.pathsep}{os.environ['PATH']}")
    set_env(monkeypatch, {**SERVICE_PRINCIPAL, "LLM_OBS_AZURE_AUTH": "cli"})
    open_table(lake(), fake_azure)

    invocations = calls.read_text().splitlines()
    assert len(invocations) == 2
    assert all(line.startswith("account get-access-token") for line in invocations)
    assert fake_azure.token_requests == []  # not the service principal in the environment
    assert fake_azure.blob_tokens == ["Bearer cli-token-1", "Bearer cli-token-2"]
