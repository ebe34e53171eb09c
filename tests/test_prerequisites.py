"""tests/conftest.py's missing_prerequisite: a skip on a developer's machine, a failure in CI."""

from __future__ import annotations

import pytest

from tests.conftest import import_or_missing, missing_prerequisite


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_a_missing_prerequisite_fails_in_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI must provide it"):
        missing_prerequisite("the media folder is absent")
    with pytest.raises(pytest.fail.Exception, match="no_such_module_vmm"):
        import_or_missing("no_such_module_vmm")


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_a_missing_prerequisite_skips_outside_ci(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="media folder"):
        missing_prerequisite("the media folder is absent")
    assert import_or_missing("json").dumps([1]) == "[1]"
