from __future__ import annotations

import json
import logging

import pytest

from base.logs import JsonFormatter, _IdFilter, bound


def test_json_lines_carry_ids(caplog: pytest.LogCaptureFixture) -> None:
    record = logging.LogRecord("voice.test", logging.INFO, __file__, 1, "turn %s", ("done",), None)
    with bound(session_id="s1", turn_id="t7"):
        _IdFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "turn done" and line["session_id"] == "s1" and line["turn_id"] == "t7"
    assert "job_id" not in line
