"""The ``depthdata`` command: its plug-ins (entry points of group ``depthdata.commands``)."""

import logging
from importlib.metadata import EntryPoint

import pytest

import depthdata.cli as cli


def test_installed_plugins_add_the_flows_and_student_commands():
    parser = cli.build_parser()
    assert parser.parse_args(["build", "catalog.yaml", "--workers", "0"]).workers == 0
    assert parser.parse_args(["serve", "catalog.yaml", "--cron", "0 3 * * *"]).cron == "0 3 * * *"
    assert parser.parse_args(["demo", "--out", "x"]).out == "x"
    assert parser.parse_args(["student", "evaluate", "--store", "s", "--model", "m.onnx"]).model == "m.onnx"


def test_a_broken_plugin_is_reported_and_the_other_commands_still_work(monkeypatch, caplog):
    plugins = [
        EntryPoint("gone", "no_such_package.cli:register", cli.ENTRY_POINT_GROUP),
        EntryPoint("student", "student.cli:register", cli.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(cli, "entry_points", lambda group: plugins if group == cli.ENTRY_POINT_GROUP else [])
    with caplog.at_level(logging.WARNING, logger="depthdata.cli"):
        parser = cli.build_parser()
    assert "'gone' (no_such_package.cli:register) could not be loaded" in caplog.text
    assert parser.parse_args(["student", "run", "--store", "s", "--out", "o"]).store == "s"
    assert parser.parse_args(["catalog", "validate", "c.yaml"]).file == "c.yaml"
    with pytest.raises(SystemExit):
        parser.parse_args(["build", "catalog.yaml"])  # the flows plug-in is not installed here
