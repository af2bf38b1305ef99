"""Resources: where Parity's state, log and store are. Values come from the environment
through ``dg.EnvVar`` (see :func:`parity_resource_from_env`), so secrets never show in the UI."""

import os
from pathlib import Path

import dagster as dg

from parity.core.classify import Classifier, load_rules
from parity.core.config import Settings, TableName
from parity.io.control import ControlPlane, open_control_plane
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
}


class ParityResource(dg.ConfigurableResource):
    """Where the WebSocket log, the events store and Parity's own state live."""

    home: str = ".parity"
    ws_log_dir: str | None = None
    database_url: str | None = None
    supabase_url: str | None = None
    supabase_key: str | None = None
    events_table: str = "public.monitoring_events"
    rules_path: str | None = None
    alert_webhook_url: str | None = None
    log_grace_hours: int = 1
    connect_timeout_s: float = 10.0
    statement_timeout_s: float = 300.0

    def settings(self) -> Settings:
        home = Path(self.home).expanduser().absolute()
        return Settings(
            home=home,
            ws_log_dir=Path(self.ws_log_dir).expanduser().absolute()
            if self.ws_log_dir
            else home / "ws-log",
            database_url=self.database_url or None,
            supabase_url=self.supabase_url or None,
            supabase_key=self.supabase_key or None,
            events_table=TableName.parse(self.events_table),
            alert_webhook_url=self.alert_webhook_url or None,
            rules_path=Path(self.rules_path) if self.rules_path else None,
        )

    def open_store(self) -> EventStore:
        return open_store(
            self.settings(),
            connect_timeout_s=self.connect_timeout_s,
            statement_timeout_s=self.statement_timeout_s,
        )

    def open_control_plane(self) -> ControlPlane:
        """Flags, audit, metric samples and rollout state, over the store's transport."""
        return open_control_plane(
            self.settings(),
            connect_timeout_s=self.connect_timeout_s,
            statement_timeout_s=min(self.statement_timeout_s, 60.0),
        )

    def classifier(self) -> Classifier:
        return load_rules(self.rules_path)


def parity_resource_from_env(environ: dict[str, str] | None = None) -> ParityResource:
    """The resource for the variables that are set, each as ``dg.EnvVar`` so the UI shows
    the variable's name, not its value. Called when definitions load, not at import."""
    environ = dict(os.environ) if environ is None else environ
    fields: dict[str, object] = {
        field: dg.EnvVar(var) for var, field in ENV_FIELDS.items() if environ.get(var, "").strip()
    }
    if "supabase_key" not in fields and environ.get("SUPABASE_SECRET_KEY", "").strip():
        fields["supabase_key"] = dg.EnvVar("SUPABASE_SECRET_KEY")
    return ParityResource(**fields)  # type: ignore[arg-type]
