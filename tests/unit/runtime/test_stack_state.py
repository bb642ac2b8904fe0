"""stack.json written before `mova stack restart` existed (no command lines): status and down still read it,
restart refuses with a message instead of starting nothing."""

from __future__ import annotations

import json

import pytest

from movakit.runtime import stack


def test_a_state_without_command_lines_is_read_and_restart_refuses(tmp_path):
    entry = {"name": "encoder", "pid": 2 ** 22 + 1, "start_ticks": 1, "address": "127.0.0.1:50053",
             "log": str(tmp_path / "encoder.log"), "kind": "service"}
    (tmp_path / stack.STATE_FILE).write_text(json.dumps({"addresses": {}, "processes": [entry]}))
    _, (process,) = stack.status(tmp_path)
    assert (process.name, process.alive, process.serving) == ("encoder", False, False)
    with pytest.raises(stack.StackError, match="encoder: no command line recorded"):
        stack.restart(tmp_path, "encoder")
    assert stack.down(tmp_path) == ["encoder"]
