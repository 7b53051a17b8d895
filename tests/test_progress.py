"""The one progress helper: the global switch silences every bar, ``enabled=False`` one bar."""
from __future__ import annotations

import io

import pytest

from nbhelpers import progress as prog


@pytest.fixture(autouse=True)
def restore_switch():
    before = prog._ENABLED
    yield
    prog.set_progress(before)


def _rendered(enabled, monkeypatch) -> str:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    list(prog.progress(range(3), desc="work", enabled=enabled))
    return err.getvalue()


@pytest.mark.parametrize("enabled", [None, True])
def test_bar_shows_when_switch_on(enabled, monkeypatch):
    prog.set_progress(True)
    assert "work" in _rendered(enabled, monkeypatch)


@pytest.mark.parametrize("enabled", [None, True, False])
def test_global_switch_off_silences_every_bar(enabled, monkeypatch):
    prog.set_progress(False)
    assert _rendered(enabled, monkeypatch) == ""


def test_enabled_false_hides_one_bar(monkeypatch):
    prog.set_progress(True)
    assert _rendered(False, monkeypatch) == ""
