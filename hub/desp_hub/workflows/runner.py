"""The runner: queue, concurrency limits, timeouts, retries, results, traces and DCUs of workflow runs.

One asyncio loop in the workflows service does, every `poll_seconds` (sooner when a run is submitted):

1. record due schedule ticks (`desp_hub.workflows.scheduler`: exactly once per tick, queued runs);
2. look at the running attempts: an attempt past the run's `timeout_seconds` is killed (`timed_out`, final);
   an ended attempt is finished in a worker thread (below);
3. claim the oldest queued runs that fit the limits (`max_concurrent_runs` in all, `max_concurrent_runs_per_user`
   per user; the others wait in the queue) and start an attempt of each with the executor;
4. now and then, deliver DCU debits that could not be delivered before.

Finishing an attempt: the executed notebook is rendered to `output.html` (nbconvert), the failing cell is found
(its index in the published notebook, its error name and value), the declared outputs are collected from the run
directory. A failed attempt is retried while `attempt <= retries` (the run goes back to the queue); otherwise the
run ends `succeeded`, `failed` or `timed_out`. A succeeded run's outputs are traced (`desp_lab.trace`, the run's
user in the product name), and every finished run's time (all attempts) is debited to the run's user at the
profile's DCU price, once (`idempotency_key = workflows:<run id>`), when a trace or accounting service is
configured. Tokens for both come from the client credentials of `client_id` (`desp-metering`).

A run interrupted by a stop of the service (its papermill dies with the service) is queued again at the next
start, without counting the attempt.

Files of run N live in `<data_dir>/runs/N/`: input.ipynb, parameters.yaml, output.ipynb, output.html, run.log
and the files the notebook wrote (its working directory).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import glob
import os
import threading
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import nbformat
from traitlets import Dict, Float, Integer, Type, Unicode
from traitlets.config import LoggingConfigurable

from desp_hub.profiles import SLUG_PATTERN, NotEntitled, Profile, find_entitled

from . import scheduler
from .executors import LocalProcessExecutor, RunSpec
from .store import FAILED, QUEUED, RUNNING, SUCCEEDED, TIMED_OUT, NotFound, WorkflowStore, utcnow

__all__ = ["ProfileDirectory", "RunFiles", "WorkflowRunner", "failing_cell"]

RESERVED_FILES = frozenset({"input.ipynb", "output.ipynb", "output.html", "run.log", "parameters.yaml"})
MAX_OUTPUTS = 1000
PAPERMILL_TAGS = frozenset({"injected-parameters", "papermill-error-cell-tag"})
LOG_TAIL_CHARS = 2000


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """Where a run's files are."""

    directory: Path

    @property
    def input_notebook(self) -> Path:
        return self.directory / "input.ipynb"

    @property
    def output_notebook(self) -> Path:
        return self.directory / "output.ipynb"

    @property
    def html(self) -> Path:
        return self.directory / "output.html"

    @property
    def log(self) -> Path:
        return self.directory / "run.log"


class ProfileDirectory:
    """The server profiles, read from the profile store (when its URL is known): which exist, who may use them,
    their DCU price."""

    def __init__(self, db_url: str = ""):
        self.db_url = db_url

    @functools.cached_property
    def _store(self):
        from desp_hub.profile_store import migrated_store

        return migrated_store(self.db_url)

    def profile(self, slug: str) -> Profile | None:
        if not self.db_url:
            return None
        return next((p for p in self._store.profiles() if p.slug == slug), None)

    def refusal(self, slug: str, caller: Mapping[str, Any]) -> str | None:
        """Why `caller` (a hub user model) may not run on profile `slug`, or None."""
        if not SLUG_PATTERN.match(slug):
            return f"{slug!r} is not a profile slug"
        if not self.db_url:
            return None
        groups = [g for g in caller.get("groups") or () if isinstance(g, str)]
        roles = [r for r in (caller.get("user_info") or {}).get("roles") or () if isinstance(r, str)]
        try:
            find_entitled(self._store.profiles(), slug, groups, roles)
        except NotEntitled as error:
            return str(error)
        return None

    def price(self, slug: str) -> Decimal | None:
        """DCU per hour of the profile (None: unknown profile, or no profile store)."""
        profile = self.profile(slug)
        return Decimal(str(profile.dcu_per_hour)) if profile is not None else None


def failing_cell(notebook: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first cell with an error output (else one papermill left `running`, i.e. killed by a timeout):
    `{cell_index, output_cell_index, ename, evalue}`.

    `cell_index` counts the cells of the published notebook (papermill's injected-parameters and error-banner cells
    are left out); `output_cell_index` is the index in the executed notebook (`output.ipynb` and its HTML).
    """
    published_index = -1
    running = None
    for output_index, cell in enumerate(notebook.get("cells", [])):
        tags = set((cell.get("metadata") or {}).get("tags") or ())
        if tags & PAPERMILL_TAGS:
            continue
        published_index += 1
        for output in cell.get("outputs") or ():
            if output.get("output_type") == "error":
                return {"cell_index": published_index, "output_cell_index": output_index,
                        "ename": str(output.get("ename", "")), "evalue": str(output.get("evalue", ""))}  # fmt: skip
        status = ((cell.get("metadata") or {}).get("papermill") or {}).get("status")
        if status == "running" and running is None:
            running = {"cell_index": published_index, "output_cell_index": output_index}
    return running


def collect_outputs(directory: Path, patterns: list[str]) -> list[dict[str, Any]]:
    """Files of the run directory matching the workflow's output patterns: `[{name, size}]` by name."""
    root = directory.resolve()
    found: dict[str, int] = {}
    for pattern in patterns:
        for name in glob.glob(pattern, root_dir=root, recursive=True):
            path = (root / name).resolve()
            name = path.relative_to(root).as_posix() if path.is_relative_to(root) else None
            if name is None or name in RESERVED_FILES or name.startswith(".home/") or not path.is_file():
                continue
            found[name] = path.stat().st_size
            if len(found) >= MAX_OUTPUTS:
                break
    return [{"name": name, "size": size} for name, size in sorted(found.items())]


@functools.cache
def _html_exporter():
    """nbconvert's HTML exporter, warmed up: its first conversion (templates, highlighting) takes seconds, later
    ones a fraction of that; done once at start, not at the end of the first run."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    cells = [nbformat.v4.new_code_cell("print(1)"), nbformat.v4.new_markdown_cell("*")]
    exporter.from_notebook_node(nbformat.v4.new_notebook(cells=cells))
    return exporter


_html_lock = threading.Lock()


def render_html(notebook_path: Path, html_path: Path) -> None:
    """The executed notebook as a standalone HTML page (nbconvert's lab template; one exporter, kept warm)."""
    notebook = nbformat.read(notebook_path, as_version=4)
    with _html_lock:
        body, _ = _html_exporter().from_notebook_node(notebook)
    html_path.write_text(body, encoding="utf-8")


def _log_tail(path: Path) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - LOG_TAIL_CHARS))
            return log.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


@dataclasses.dataclass
class Attempt:
    run: dict[str, Any]
    spec: RunSpec
    handle: Any
    started: float  # time.monotonic()
    deadline: float
    cancelled: str | None = None


class WorkflowRunner(LoggingConfigurable):
    """Runs queued workflow runs within the concurrency limits, and ticks the schedules."""

    max_concurrent_runs = Integer(2, config=True, help="Runs executing at once, for all users together.")

    max_concurrent_runs_per_user = Integer(2, config=True, help="Runs of one user executing at once.")

    poll_seconds = Float(0.2, config=True, help="Seconds between two looks at the queue, the attempts and the "
                         "schedules (a submitted run is looked at at once).")  # fmt: skip

    missed_tick_grace_seconds = Float(
        60, config=True,
        help="A schedule tick recorded more than this many seconds after its time was missed (the service was down): "
        "it runs or not by the schedule's missed_policy.",
    )

    kernel_name = Unicode("python3", config=True, help="Kernel that runs the notebooks (papermill -k).")

    profile_kernels = Dict(Unicode(), config=True, help="Kernel per profile slug, where it differs from kernel_name.")

    run_env = Dict(
        Unicode(), config=True,
        help="Environment of every run (the platform endpoints: DESP_CATALOGUE_URL, ...); `{username}` in a value "
        "is replaced by the run's user (e.g. DESP_CACHE_URL).",
    )

    executor_class = Type(LocalProcessExecutor, config=True, help="The executor of attempts.")

    trace_url = Unicode("", config=True, help="Trace service root URL: a succeeded run's outputs are traced there.")

    accounting_url = Unicode("", config=True, help="Accounting service root URL: run time is debited there.")

    token_url = Unicode("", config=True, help="OAuth token endpoint for the client credentials of client_id.")

    client_id = Unicode("desp-metering", config=True, help="Client the service traces and debits as; its secret "
                        "is read from $DESP_METERING_CLIENT_SECRET.")  # fmt: skip

    debit_retry_seconds = Float(15, config=True, help="Seconds between two deliveries of pending DCU debits.")

    def __init__(self, *, store: WorkflowStore, data_dir: str, profiles: ProfileDirectory | None = None, **kwargs):
        super().__init__(**kwargs)
        self.store = store
        self.data_dir = Path(data_dir)
        self.profiles = profiles or ProfileDirectory("")
        self.executor = self.executor_class(parent=self)
        self.active: dict[int, Attempt] = {}
        # DESP access tokens of runs asked for in person (memory only: a restart or a schedule runs without one)
        self.access_tokens: dict[int, str] = {}
        self.finishing: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._last_debit_pass = 0.0

    # -- files -----------------------------------------------------------------------------------------------------

    def files(self, run_id: int) -> RunFiles:
        return RunFiles(self.data_dir / "runs" / str(int(run_id)))

    # -- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(_html_exporter)  # nbconvert warmed up before the first run ends
        requeued = await asyncio.to_thread(self.store.requeue_interrupted)
        if requeued:
            self.log.warning("Runs %s were interrupted by a stop of the service: queued again", requeued)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop and kill running attempts (their runs are queued again at the next start)."""
        self._stopping = True
        self._wake.set()
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await asyncio.gather(*(asyncio.to_thread(self.executor.kill, a.handle) for a in self.active.values()))
        for task in list(self.finishing):
            task.cancel()

    def wake(self) -> None:
        """Look at the queue now (a run was submitted, a schedule changed)."""
        self._wake.set()

    def cancel(self, run_id: int, reason: str) -> None:
        attempt = self.active.get(run_id)
        if attempt is not None:
            attempt.cancelled = reason
            attempt.deadline = 0  # the next pass kills it
            self.wake()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.run_pass()
            except Exception:
                self.log.exception("Workflow runner pass failed; trying again")
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            except TimeoutError:
                pass
            self._wake.clear()

    async def run_pass(self) -> None:
        outcome = await asyncio.to_thread(
            scheduler.record_due_ticks, self.store, grace_seconds=self.missed_tick_grace_seconds
        )
        if outcome.run_ids or outcome.missed:
            self.log.info("Schedules: queued runs %s, %d ticks missed", outcome.run_ids, outcome.missed)
        now = time.monotonic()
        for run_id, attempt in list(self.active.items()):
            code = self.executor.poll(attempt.handle)
            if code is None and now < attempt.deadline:
                continue
            del self.active[run_id]
            timed_out = code is None and attempt.cancelled is None
            task = asyncio.create_task(asyncio.to_thread(self._end_attempt, attempt, code, timed_out))
            self.finishing.add(task)
            task.add_done_callback(self.finishing.discard)
        claimed = await asyncio.to_thread(
            self.store.claim_runs, self.max_concurrent_runs, self.max_concurrent_runs_per_user
        )
        for run in claimed:
            try:
                spec = await asyncio.to_thread(self._prepare_attempt, run)
                # started from the loop's own (main) thread: the child's "die with the parent" signal is tied to the
                # thread that forked it, and worker threads may come and go
                handle = self.executor.start(spec)
                started = time.monotonic()
                self.active[run["id"]] = Attempt(run=run, spec=spec, handle=handle, started=started,
                                                 deadline=started + spec.timeout_seconds)  # fmt: skip
            except Exception as error:
                self.log.exception("Run %s could not start", run["id"])
                await asyncio.to_thread(self._fail_to_start, run, error)
        if self.accounting_url and time.monotonic() - self._last_debit_pass > self.debit_retry_seconds:
            self._last_debit_pass = time.monotonic()
            await asyncio.to_thread(self.deliver_pending_debits)

    # -- attempts (worker threads) ---------------------------------------------------------------------------------

    def spec(self, run: Mapping[str, Any]) -> RunSpec:
        version = self.store.version_by_id(run["version_id"])
        env = {name: value.replace("{username}", run["username"]) for name, value in self.run_env.items()}
        return RunSpec(
            run_id=run["id"], workflow_id=run["workflow_id"], user=run["username"], notebook=version["notebook"],
            parameters=run["parameters"], run_dir=self.files(run["id"]).directory, profile_slug=run["profile"],
            profile=self.profiles.profile(run["profile"]), timeout_seconds=run["timeout_seconds"],
            retries=run["retries"], attempt=run["attempt"],
            kernel_name=self.profile_kernels.get(run["profile"], self.kernel_name), env=env,
            access_token=self.access_tokens.get(run["id"], ""),
        )  # fmt: skip

    def _prepare_attempt(self, run: dict[str, Any]) -> RunSpec:
        """The run's directory with its input notebook, and the attempt's spec."""
        spec = self.spec(run)
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nbformat.from_dict(spec.notebook), str(spec.input_notebook))
        for stale in (spec.output_notebook, self.files(run["id"]).html):
            stale.unlink(missing_ok=True)
        price = self.profiles.price(run["profile"])
        self.store.update_run(run["id"], log_path=str(spec.log_path),
                              dcu_per_hour=str(price) if price is not None else None)  # fmt: skip
        return spec

    def _fail_to_start(self, run: Mapping[str, Any], error: Exception) -> None:
        self.access_tokens.pop(run["id"], None)
        self.store.update_run(
            run["id"], expected_status=RUNNING, status=FAILED, finished_at=utcnow(),
            error={"cell_index": None, "ename": type(error).__name__, "evalue": str(error)},
        )  # fmt: skip

    def _end_attempt(self, attempt: Attempt, code: int | None, timed_out: bool) -> None:
        """Kill (if needed), render, collect, decide: succeeded, retry, failed or timed_out."""
        if code is None:
            self.executor.kill(attempt.handle)
            code = self.executor.poll(attempt.handle)
        run, spec = attempt.run, attempt.spec
        files = self.files(run["id"])
        elapsed = time.monotonic() - attempt.started
        current = self.store.get_run(run["id"])
        run_seconds = (current["run_seconds"] or 0.0) + elapsed
        notebook = None
        if files.output_notebook.exists():
            try:
                notebook = nbformat.read(files.output_notebook, as_version=4)
                render_html(files.output_notebook, files.html)
            except Exception:
                self.log.exception("Run %s: could not render its notebook", run["id"])
        error = failing_cell(notebook) if notebook is not None else None
        if attempt.cancelled:
            status, error = FAILED, {**(error or {}), "ename": "Cancelled", "evalue": attempt.cancelled}
        elif timed_out:
            status = TIMED_OUT
            error = {"cell_index": None, "output_cell_index": None, **(error or {}), "ename": "Timeout",
                     "evalue": f"the run took longer than its timeout of {spec.timeout_seconds} s and was stopped"}
        elif code == 0:
            status, error = SUCCEEDED, None
        else:
            status = FAILED
            if error is None or "ename" not in error:
                error = {"cell_index": None, "output_cell_index": None, **(error or {}), "ename": "RunFailed",
                         "evalue": f"papermill exited with {code}: {_log_tail(files.log)[-500:]}"}  # fmt: skip
        retry = status == FAILED and not attempt.cancelled and run["attempt"] <= run["retries"]
        outputs = collect_outputs(files.directory, self._output_patterns(run))
        values: dict[str, Any] = {"run_seconds": run_seconds, "error": error, "outputs": outputs}
        if retry:
            self.log.info("Run %s attempt %s failed (%s); retrying", run["id"], run["attempt"], error.get("ename"))
            self.store.update_run(run["id"], expected_status=RUNNING, status=QUEUED, **values)
            self.wake_threadsafe()
            return
        self.access_tokens.pop(run["id"], None)
        values.update(status=status, finished_at=utcnow())
        if status == SUCCEEDED and self.trace_url and outputs:
            values["outputs"], values["trace_error"] = self._trace(run, files, outputs)
        amount = self._debit_amount(current, run_seconds)
        if amount is not None:
            values.update(dcu_amount=amount, dcu_status="pending")
        self.store.update_run(run["id"], expected_status=RUNNING, **values)
        self.log.info("Run %s %s after %.1f s (attempt %s)", run["id"], status, run_seconds, run["attempt"])
        if amount is not None:
            self.deliver_debit(self.store.get_run(run["id"]))

    def wake_threadsafe(self) -> None:
        try:
            loop = self._task.get_loop() if self._task else None
        except RuntimeError:
            loop = None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def _output_patterns(self, run: Mapping[str, Any]) -> list[str]:
        try:
            return list(self.store.get_workflow(run["workflow_id"])["outputs"])
        except NotFound:
            return []

    # -- traces and DCUs -------------------------------------------------------------------------------------------

    @functools.cached_property
    def _token(self):
        from desp_hub.metering import ClientCredentials

        return ClientCredentials(self.token_url, self.client_id, os.environ.get("DESP_METERING_CLIENT_SECRET", ""))

    def _trace(self, run: Mapping[str, Any], files: RunFiles, outputs: list[dict[str, Any]]):
        """Register a trace of each output (input: the run's notebook); (outputs with trace ids, error or None)."""
        from desp_lab import trace

        try:
            notebook_hash, _ = trace.hash_file(files.input_notebook)
            source = {"name": f"workflow-{run['workflow_id']}-v{run['version']}.ipynb", "hash": notebook_hash}
            product = f"{run['username']}/workflows/{run['workflow_id']}/runs/{run['id']}"
            traces = [
                trace.generate(files.directory / output["name"], inputs=[source], name=f"{product}/{output['name']}")
                for output in outputs
            ]
            stored = trace.TraceClient(self.trace_url, token=self._token).send(traces)
        except Exception as error:
            self.log.warning("Run %s: outputs not traced: %s", run["id"], error)
            return outputs, f"{type(error).__name__}: {error}"
        return [{**output, "trace_id": item.get("id")} for output, item in zip(outputs, stored, strict=True)], None

    def _debit_amount(self, run: Mapping[str, Any], run_seconds: float) -> str | None:
        """The run's DCUs as decimal text (None: no accounting, unknown price, or nothing to debit)."""
        from desp_hub.metering import amount_milli, format_dcu

        if not self.accounting_url or run.get("dcu_per_hour") is None:
            return None
        milli = amount_milli(run["dcu_per_hour"], Decimal(str(round(run_seconds, 3))))
        return format_dcu(milli) if milli > 0 else None

    def deliver_debit(self, run: Mapping[str, Any]) -> None:
        """Record the run's debit with the accounting service (once: the idempotency key is the run's)."""
        from desp_lab.accounting import Accounting
        from desp_lab.errors import ServiceUnavailable

        try:
            accounting = Accounting(self.accounting_url, token=self._token, timeout=10, retries=1, backoff=0.5)
            transaction = accounting.record(
                run["username"], "debit", run["dcu_amount"], idempotency_key=f"workflows:{run['id']}",
                service="workflows", profile=run["profile"], session=f"workflows:{run['id']}",
                description=f"workflow {run['workflow_id']} run {run['id']} ({run['run_seconds']:.1f} s at "
                f"{run['dcu_per_hour']} DCU/h)",
                period_start=run["started_at"], period_end=run["finished_at"],
                metadata={"workflow_id": run["workflow_id"], "run_id": run["id"], "version": run["version"]},
            )  # fmt: skip
        except ServiceUnavailable as error:
            self.log.warning("Run %s: debit not delivered yet (%s); will retry", run["id"], error)
            self.store.update_run(run["id"], dcu_error=str(error))
            return
        except Exception as error:
            self.log.error("Run %s: debit refused: %s", run["id"], error)
            self.store.update_run(run["id"], dcu_status="rejected", dcu_error=f"{type(error).__name__}: {error}")
            return
        self.store.update_run(run["id"], dcu_status="delivered", dcu_error=None,
                              dcu_transaction_id=str(transaction.get("id") or ""))  # fmt: skip

    def deliver_pending_debits(self) -> None:
        for run in self.store.runs_to_debit():
            self.deliver_debit(run)
