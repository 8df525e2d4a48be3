"""Where a run's steps execute: chosen by `LLM_OBS_EXECUTOR`, never by code changes.

- `multiprocess` (default): one process per step on this machine, Dagster's own executor;
  cross-run limits on the source come from the `llm_obs_source` concurrency pool.
- `in_process`: every step in the run's process (small machines, debugging).
- `k8s`: one Kubernetes pod per step through `dagster-k8s`' `k8s_job_executor` (the `deploy`
  extra); pod resources and namespace come from run config (`deploy/k8s/run_config.yaml`).
"""

from __future__ import annotations

import os

import dagster as dg

EXECUTORS = ("multiprocess", "in_process", "k8s")


def executor_name() -> str:
    name = (os.environ.get("LLM_OBS_EXECUTOR") or "multiprocess").strip().lower()
    if name not in EXECUTORS:
        raise ValueError(f"LLM_OBS_EXECUTOR must be one of {', '.join(EXECUTORS)}, got {name!r}")
    return name


def selected_executor() -> dg.ExecutorDefinition:
    name = executor_name()
    if name == "in_process":
        return dg.in_process_executor
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError:
            raise ValueError(
                "LLM_OBS_EXECUTOR=k8s needs dagster-k8s: install the `deploy` extra "
                "(pip install 'llm-observatory[deploy]')"
            ) from None
        return k8s_job_executor
    return dg.multiprocess_executor
