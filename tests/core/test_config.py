import datetime as dt

import pytest

from parity.core.config import Settings, TableName, parse_partition_start
from parity.core.errors import ConfigurationError


@pytest.mark.parametrize(
    ("text", "schema", "name"),
    [
        ("monitoring_events", "public", "monitoring_events"),
        ("ops.monitoring_events", "ops", "monitoring_events"),
        ('"My Schema"."Events 2026"', "My Schema", "Events 2026"),
        ('"a.b"."c""d"', "a.b", 'c"d'),
        ('Ops."t.1"', "Ops", "t.1"),
    ],
)
def test_table_name_parse(text, schema, name):
    parsed = TableName.parse(text)
    assert (parsed.schema, parsed.name) == (schema, name)
    assert TableName.parse(str(parsed)) == parsed


@pytest.mark.parametrize("bad", ["", "a.b.c", '"open', "a.", ".b"])
def test_table_name_rejects(bad):
    with pytest.raises(ConfigurationError, match="table name"):
        TableName.parse(bad)


def test_settings_defaults_and_paths(tmp_path):
    settings = Settings.from_env({"PARITY_HOME": str(tmp_path)})
    assert settings.home == tmp_path
    assert settings.ws_log_dir == tmp_path / "ws-log"
    assert settings.embedded and settings.transport == "postgres"
    assert settings.events_table == TableName("public", "monitoring_events")


def test_settings_transport_choice(tmp_path):
    env = {
        "PARITY_HOME": str(tmp_path),
        "SUPABASE_URL": "http://127.0.0.1:1",
        "SUPABASE_SERVICE_ROLE_KEY": "k",
    }
    assert Settings.from_env(env).transport == "rest"
    env["PARITY_DATABASE_URL"] = "postgresql://u:p@127.0.0.1:1/db"
    assert Settings.from_env(env).transport == "postgres"


def test_supabase_url_without_key_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigurationError, match="SUPABASE_SERVICE_ROLE_KEY"):
        Settings.from_env({"PARITY_HOME": str(tmp_path), "SUPABASE_URL": "http://x"})


def test_secrets_are_not_in_repr(tmp_path):
    settings = Settings.from_env(
        {
            "PARITY_HOME": str(tmp_path),
            "PARITY_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1/db",
            "SUPABASE_SERVICE_ROLE_KEY": "sekrit-key",
        }
    )
    assert "hunter2" not in repr(settings) and "sekrit" not in repr(settings)


def test_partition_start_parsing():
    assert parse_partition_start("2026-11-01") == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert parse_partition_start("2026-11-01T05:30+02:00") == dt.datetime(
        2026, 11, 1, 3, tzinfo=dt.UTC
    )
    with pytest.raises(ConfigurationError, match="PARITY_PARTITIONS_START"):
        parse_partition_start("yesterday")


def test_the_runtime_comes_from_its_three_variables() -> None:
    from parity.core.config import Runtime

    assert Runtime.from_env({}) == Runtime(workers=None, native=True, memory_pool="jemalloc")
    runtime = Settings.from_env(
        {"PARITY_WORKERS": "2", "PARITY_NO_NATIVE": "1", "ARROW_DEFAULT_MEMORY_POOL": "System"}
    ).runtime
    assert runtime == Runtime(workers=2, native=False, memory_pool="system")
    assert Runtime.from_env(runtime.to_env()) == runtime
    assert Runtime.from_env({"PARITY_NO_NATIVE": "0"}).native
    for bad in (
        {"PARITY_WORKERS": "0"},
        {"PARITY_WORKERS": "many"},
        {"PARITY_NO_NATIVE": "x"},
        {"ARROW_DEFAULT_MEMORY_POOL": "tcmalloc"},
    ):
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            Runtime.from_env(bad)
