"""Every knob of the plan: read from its variable, refused with its name when bad, shown
back as the variable would spell it."""

from __future__ import annotations

import datetime as dt

import pytest

from parity.core.config import Settings
from parity.core.errors import ConfigurationError
from parity.core.knobs import KNOBS, Knobs, SuccessCriteria

#: A good non-default value and a bad one for every knob.
VALUES: dict[str, tuple[str, str]] = {
    "PARITY_TRIGGER_ERROR_RATE": ("0.1", "5%"),
    "PARITY_TRIGGER_ERROR_RATE_SECONDS": ("120", "0"),
    "PARITY_TRIGGER_LATENCY_FACTOR": ("3", "-2"),
    "PARITY_TRIGGER_LATENCY_SECONDS": ("300", "soon"),
    "PARITY_TRIGGER_LATENCY_BASELINE_MS": ("250", "nan"),
    "PARITY_TRIGGER_CONNECTION_FAILURES": ("5", "2.5"),
    "PARITY_TRIGGER_CONNECTION_SECONDS": ("90", "inf"),
    "PARITY_SLO_DELIVERY_RATE": ("0.99", "99.9"),
    "PARITY_SLO_P95_MS": ("750", "-5"),
    "PARITY_QUARANTINE_MAX_SHARE": ("0.01", "1"),
    "PARITY_ROLLOUT_STEPS": ("5,25,100", "50,10"),
    "PARITY_ROLLOUT_CLEAN_HOURS": ("6", "0"),
    "PARITY_ROLLOUT_SOAK_MINUTES": ("60", "-1"),
    "PARITY_ROLLOUT_COOLDOWN_MINUTES": ("120", "1h"),
    "PARITY_ROLLOUT_RECONCILE_LAG_MINUTES": ("45", "5"),
    "PARITY_SCHEDULE_LAG_MINUTES": ("20", "soon"),
    "PARITY_REPAIR_SETTLE_MINUTES": ("30", "x"),
    "PARITY_REPAIR_MAX_ATTEMPTS": ("5", "0"),
    "PARITY_ROLLBACK_DRY_RUN": ("true", "maybe"),
    "PARITY_ALERT_ON_WARN": ("true", "2"),
    "PARITY_ALERT_PRODUCER_SILENCE_MINUTES": ("10", "0"),
    "PARITY_ALERT_ERROR_RATE": ("0.002", "1.5"),
    "PARITY_ALERT_RECOVERY_SECONDS": ("45", "0"),
    "PARITY_ALERT_WINDOW_MINUTES": ("15", "0"),
}


def test_every_knob_has_test_values():
    assert set(VALUES) == {k.env for k in KNOBS}


@pytest.mark.parametrize("variable", sorted(VALUES))
def test_a_bad_value_is_refused_naming_its_variable(variable: str):
    with pytest.raises(ConfigurationError, match=variable):
        Knobs.from_env({variable: VALUES[variable][1]})
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env({"PARITY_HOME": "/tmp/x", variable: VALUES[variable][1]})


@pytest.mark.parametrize("variable", sorted(VALUES))
def test_a_good_value_lands_and_shows_back(variable: str):
    good = VALUES[variable][0]
    knobs = Knobs.from_env({variable: good})
    assert knobs != Knobs.from_env({})
    shown = knobs.to_env()
    assert Knobs.from_env({variable: shown[variable]}) == knobs
    assert Knobs.from_env(shown) == knobs  # the full mapping the UI shows round-trips


def test_defaults_are_the_plans():
    knobs = Knobs.from_env({})
    assert knobs.triggers.error_rate_threshold == 0.05
    assert knobs.triggers.error_rate_duration_s == 300
    assert knobs.triggers.latency_factor == 2.0 and knobs.triggers.latency_duration_s == 600
    assert knobs.triggers.connection_failures == 3 and knobs.triggers.connection_window_s == 60
    assert knobs.slo == SuccessCriteria(0.999, 500.0, 0.001)
    assert knobs.rollout.steps == (10, 50, 100)
    assert knobs.alerts.error_rate == 0.001 and knobs.alerts.recovery_s == 30
    assert knobs.schedule_lag == dt.timedelta(minutes=15)
    assert knobs.rollback_dry_run is False
    assert Knobs.from_env({}).to_env()["PARITY_ROLLOUT_STEPS"] == "10,50,100"


def test_specific_values_land_where_they_belong():
    knobs = Knobs.from_env(
        {
            "PARITY_TRIGGER_ERROR_RATE": "0.02",
            "PARITY_ROLLOUT_STEPS": " 5, 20 ,100",
            "PARITY_ROLLOUT_SOAK_MINUTES": "90",
            "PARITY_ROLLBACK_DRY_RUN": "yes",
            "PARITY_SLO_P95_MS": " 750 ",
            "PARITY_QUARANTINE_MAX_SHARE": "",
        }
    )
    assert knobs.triggers.error_rate_threshold == 0.02
    assert knobs.rollout.steps == (5, 20, 100)
    assert knobs.rollout.min_soak == dt.timedelta(minutes=90)
    assert knobs.rollback_dry_run is True
    assert knobs.slo == SuccessCriteria(max_latency_p95_ms=750.0)


def test_the_rollout_waits_for_the_schedule():
    assert Knobs.from_env({"PARITY_SCHEDULE_LAG_MINUTES": "90"}).rollout.reconcile_lag == (
        dt.timedelta(minutes=105)
    )
    with pytest.raises(ConfigurationError, match="PARITY_ROLLOUT_RECONCILE_LAG_MINUTES"):
        Knobs.from_env(
            {"PARITY_SCHEDULE_LAG_MINUTES": "40", "PARITY_ROLLOUT_RECONCILE_LAG_MINUTES": "30"}
        )


def test_secrets_are_not_knobs():
    settings = Settings.from_env(
        {"PARITY_HOME": "/tmp/x", "PARITY_ALERT_URLS": "json://h/hook?token=t0ken"}
    )
    assert settings.alert_urls == "json://h/hook?token=t0ken"
    assert "t0ken" not in repr(settings) and "t0ken" not in repr(settings.knobs.to_env())
