"""Published workflows: parameterised notebooks run by papermill through the hub's `workflows` service.

`notebook` (hash, declared parameters), `parameters` (typed checks), `store` (SQL: workflows, versions, schedules,
ticks, runs), `scheduler` (due ticks, exactly once), `executors` (local process; `kube_job` for Kubernetes),
`runner` (queue, limits, timeout, retry, results, traces and DCUs). The REST API is
`desp_hub.services.workflows_service`.
"""
