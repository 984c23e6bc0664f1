"""Global options before or after the command, and help that shows each option's default."""

from __future__ import annotations

from pathlib import Path

from conftest import request_yaml
from test_cli import ROOT, run


def test_config_and_log_format_work_before_or_after_the_command(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(request_yaml("w", node="pve7"))
    config = str(ROOT / "examples/config.yaml")
    wanted = f"{tmp_path}/w.yaml:node: 'pve7' is not an approved node (pve1, pve2)\n"
    for args in (
        ("validate", str(tmp_path / "w.yaml"), "--config", config, "--log-format", "json"),
        ("--config", config, "--log-format", "json", "validate", str(tmp_path / "w.yaml")),
        ("--log-format", "console", "validate", "--config", config, str(tmp_path / "w.yaml")),
    ):
        result = run(*args)
        assert (result.returncode, result.stdout) == (1, wanted), args


def test_the_commands_config_wins_over_the_global_one(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(request_yaml("w", node="pve7"))
    result = run(
        "--config",
        str(tmp_path / "missing.yaml"),
        "validate",
        "--config",
        str(ROOT / "examples/config.yaml"),
        str(tmp_path / "w.yaml"),
    )
    assert result.returncode == 1 and "not an approved node" in result.stdout


def test_help_shows_each_options_default() -> None:
    jobs = run("jobs", "--help").stdout
    assert "(default: 50)" in jobs and "(default: /etc/reconciler/config.yaml)" in jobs
    assert "(default: None)" not in jobs and "(default: False)" not in jobs
    top = run("--help").stdout
    assert "--config" in top and "--log-format" in top
