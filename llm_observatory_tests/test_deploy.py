"""The deployment configuration in `deploy/`: the instance on PostgreSQL (dagster-postgres) with
the source pool capped, the definitions on Kubernetes' step executor (dagster-k8s) with the
run config validating, and the Helm values pointing at this code location."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


def test_the_instance_runs_on_postgresql_with_the_source_pool_capped(
    postgres_url, tmp_path, monkeypatch
):
    url = sa.make_url(postgres_url)
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port))
    monkeypatch.setenv("DAGSTER_PG_USER", url.username)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "trust-auth-ignores-it")
    monkeypatch.setenv("DAGSTER_PG_DB", url.database)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "llmlake")
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_CONTAINER", "dagster-logs")
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        # Step logs outlive the run pods: in the account's blob container, through dagster-azure.
        logs = instance.compute_log_manager
        assert type(logs).__name__ == "AzureBlobComputeLogManager"
        assert logs._container_client.url == "https://llmlake.blob.core.windows.net/dagster-logs"
        assert logs._blob_prefix == "llm-observatory"
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert instance.global_op_concurrency_default_limit == 4

        @dg.asset(pool="llm_obs_source")
        def reads_the_source() -> int:
            return 1

        result = dg.materialize([reads_the_source], instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
        engine = sa.create_engine(postgres_url)
        with engine.connect() as connection:
            stored = connection.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()
        engine.dispose()
        assert stored == 1
    finally:
        instance.dispose()


def _python(code: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_OBS_", "DAGSTER_"))}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_definitions_run_on_kubernetes_steps_and_the_run_config_validates(tmp_path):
    code = f"""
import yaml, dagster as dg
from llm_observatory.definitions import defs
run_config = yaml.safe_load(open({str(DEPLOY / "k8s" / "run_config.yaml")!r}))
for name in ("migrate_history", "daily_cycle", "sync_lake", "cutover_report_job"):
    job = defs.resolve_job_def(name)
    assert job.executor_def.name == "k8s", job.executor_def.name
    result = dg.validate_run_config(job, run_config)
    assert "'max_concurrent': 16" in str(result["execution"]), result["execution"]
    try:
        dg.validate_run_config(job, {{"execution": {{"config": {{"no_such_option": 1}}}}}})
    except dg.DagsterInvalidConfigError:
        pass
    else:
        raise AssertionError("an unknown executor option validated")
print("ok")
"""
    completed = _python(code, LLM_OBS_EXECUTOR="k8s", LLM_OBS_HOME=str(tmp_path))
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().endswith("ok")
    multiprocess = _python(
        "from llm_observatory.definitions import defs; "
        "print(defs.resolve_job_def('migrate_history').executor_def.name)",
        LLM_OBS_HOME=str(tmp_path),
    )
    assert multiprocess.stdout.strip().splitlines()[-1] == "multiprocess"
    wrong = _python(
        "import llm_observatory.definitions", LLM_OBS_EXECUTOR="yarn", LLM_OBS_HOME=str(tmp_path)
    )
    assert wrong.returncode != 0 and "LLM_OBS_EXECUTOR must be one of" in wrong.stderr


def test_helm_values_serve_this_code_location_on_kubernetes():
    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == "llm_observatory.definitions"
    assert args[args.index("--attribute") + 1] == "defs"
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert env["LLM_OBS_EXECUTOR"] == "k8s"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False  # the instance's own PostgreSQL
    for name in env:
        assert name in (REPO / "README.md").read_text(), f"{name} is not documented"
