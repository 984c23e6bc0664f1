"""The daemon's config file: the issue's example works as written; mistakes get one clear line each."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reconciler.config import TOKEN_SECRET_ENV, load_config, token_secret
from reconciler.model.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "config.yaml"


def test_the_example_config_loads_as_written() -> None:
    config = load_config(EXAMPLE)
    assert config.git.remote == "ssh://git@gitea.lan/homelab/infra.git"
    assert config.site.vmid_range.low == 200 and 256 in config.site.limits.memory
    assert str(config.site.bridges["vmbr0"].cidr) == "192.168.50.0/24"
    assert config.paths.caddy == "caddy/services"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_each_mistake_is_named_with_its_field(tmp_path: Path) -> None:
    text = (
        EXAMPLE.read_text()
        .replace("vmid_range: [200, 299]", "vmid_range: [300, 200]")
        .replace("token_id: reconciler@pve!gitops", "token_id: reconciler")
        .replace("requests: requests", "requests: ../elsewhere")
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert sorted(caught.value.problems) == [
        "paths.requests: must be a relative path inside the repository, without '..'",
        "proxmox.token_id: String should match pattern '^[^@!\\s]+@[^@!\\s]+![A-Za-z][A-Za-z0-9._-]*$'",
        "site.vmid_range: low 300 is above high 200",
    ]


def test_a_password_in_the_remote_url_is_refused(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("ssh://git@gitea.lan/homelab/infra.git", "https://me:hunter2@gitea.lan/x.git")
    with pytest.raises(ConfigError, match="put no password in the URL"):
        load_config(write(tmp_path, text))


def test_a_missing_or_unparsable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML at line 2, column 1"):
        load_config(write(tmp_path, "git: [\n"))


def test_the_token_secret_comes_from_the_environment_only(tmp_path: Path) -> None:
    assert token_secret({TOKEN_SECRET_ENV: "s3cret"}) == "s3cret"
    with pytest.raises(ConfigError, match=f"{TOKEN_SECRET_ENV} is not set"):
        token_secret({})
    text = EXAMPLE.read_text().replace("  verify_ssl: true", "  verify_ssl: true\n  token_secret: abc")
    with pytest.raises(ConfigError, match=re.escape("proxmox.token_secret: unknown key")):
        load_config(write(tmp_path, text))
