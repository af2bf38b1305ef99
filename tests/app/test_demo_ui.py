"""The demo's UI set-up, checked against Dagster's own reading of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster._core.nux import get_has_seen_nux

from parity.app.demo_ui import skip_welcome_dialog


def test_the_welcome_dialog_is_marked_seen_in_the_demos_dagster_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    home.mkdir()
    assert not get_has_seen_nux()
    skip_welcome_dialog(home)
    assert get_has_seen_nux()
