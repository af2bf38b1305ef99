"""Resources: where Parity's state, log and store are, and the plan's knobs in force.

Built from the :class:`Settings` the code location validated when it loaded (see
:func:`parity_resource`): secrets as ``dg.EnvVar``, so the UI shows the variable's name and
never its value; the knobs as plain values, so a person sees the thresholds in force.
``ParityResource.settings()`` hands the same fields back to ``Settings.from_env``: one route,
one validation, in the code location and in every step.
"""

import logging
import os
from collections.abc import Callable, Mapping

import dagster as dg
import pydantic

from parity.core.classify import Classifier, load_rules
from parity.core.config import DEFAULT_EVENTS_TABLE, Settings
from parity.io.control import ControlPlane, open_control_plane
from parity.io.runtime import apply_runtime
from parity.io.store import EventStore, open_store

#: Input metadata asking the IO manager for ``{partition key: snapshot or None}`` over every
#: partition of the run, for an asset that handles a range of hours in one run.
LOAD_BY_PARTITION = "load_by_partition"

#: Environment variable -> resource field. Secrets are passed as dg.EnvVar, never as values.
ENV_FIELDS = {
    "PARITY_HOME": "home",
    "PARITY_WS_LOG_DIR": "ws_log_dir",
    "PARITY_DATABASE_URL": "database_url",
    "SUPABASE_URL": "supabase_url",
    "SUPABASE_SERVICE_ROLE_KEY": "supabase_key",
    "PARITY_EVENTS_TABLE": "events_table",
    "PARITY_CLASSIFICATION_RULES": "rules_path",
    "PARITY_ALERT_WEBHOOK_URL": "alert_webhook_url",
    "PARITY_ALERT_URLS": "alert_urls",
}


class ParityResource(dg.ConfigurableResource):
    """Where the WebSocket log, the events store and Parity's own state live."""

    home: str = ".parity"
    ws_log_dir: str | None = None
    database_url: str | None = None
    supabase_url: str | None = None
    supabase_key: str | None = None
    events_table: str = DEFAULT_EVENTS_TABLE
    rules_path: str | None = None
    alert_webhook_url: str | None = None
    alert_urls: str | None = None
    knobs: dict[str, str] = pydantic.Field(
        default_factory=dict,
        description="The plan's knobs in force, by environment variable (see the README): "
        "trigger, SLO, rollout, repair and alert thresholds, and rollback dry-run.",
    )
    runtime: dict[str, str] = pydantic.Field(
        default_factory=dict,
        description="How steps compute, by environment variable (see the README): "
        "PARITY_WORKERS, PARITY_NO_NATIVE and ARROW_DEFAULT_MEMORY_POOL. The results are the "
        "same either way.",
    )
    log_grace_hours: int = 1
    connect_timeout_s: float = 10.0
    statement_timeout_s: float = 300.0

    def settings(self) -> Settings:
        """The settings these fields describe, validated as the code location's were."""
        env = {var: value for var, name in ENV_FIELDS.items() if (value := getattr(self, name))}
        return Settings.from_env({**env, **self.knobs, **self.runtime})

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """A step's process computes as the code location was configured to (a resource
        built without ``runtime`` leaves the process as its entry point set it)."""
        if self.runtime:
            apply_runtime(self.settings().runtime)

    def open_store(self, log: logging.Logger | None = None) -> EventStore:
        """The events store. On the embedded server, the first time this process starts or
        attaches to it, ``log`` says so (a sensor's or schedule's ``context.log`` puts the
        line in the tick's log; the default, Dagster's logger, in a run's event log)."""
        return open_store(
            self.settings(),
            connect_timeout_s=self.connect_timeout_s,
            statement_timeout_s=self.statement_timeout_s,
            announce=_announcer(log),
        )

    def open_control_plane(self, log: logging.Logger | None = None) -> ControlPlane:
        """Flags, audit, metric samples and rollout state, over the store's transport
        (``log`` as for :meth:`open_store`)."""
        return open_control_plane(
            self.settings(),
            connect_timeout_s=self.connect_timeout_s,
            statement_timeout_s=min(self.statement_timeout_s, 60.0),
            announce=_announcer(log),
        )

    def classifier(self) -> Classifier:
        return load_rules(self.rules_path)


def _announcer(log: logging.Logger | None) -> Callable[[str], None]:
    return (log or dg.get_dagster_logger("parity")).info


def parity_resource(settings: Settings, environ: Mapping[str, str]) -> ParityResource:
    """The resource for ``settings`` (built from ``environ``): each variable that is set as
    ``dg.EnvVar``, the knobs as their effective values. Called when definitions load."""
    fields: dict[str, object] = {
        name: dg.EnvVar(var) for var, name in ENV_FIELDS.items() if environ.get(var, "").strip()
    }
    if "supabase_key" not in fields and environ.get("SUPABASE_SECRET_KEY", "").strip():
        fields["supabase_key"] = dg.EnvVar("SUPABASE_SECRET_KEY")
    return ParityResource(
        **fields,  # type: ignore[arg-type]
        knobs=settings.knobs.to_env(),
        runtime=settings.runtime.to_env(),
    )


def parity_resource_from_env(environ: Mapping[str, str] | None = None) -> ParityResource:
    """The resource for ``environ`` (the process environment when None), validated as the
    code location validates it."""
    environ = dict(os.environ) if environ is None else environ
    return parity_resource(Settings.from_env(environ), environ)
