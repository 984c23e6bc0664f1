"""The daemon's config file: the issue's example works as written; mistakes get one clear line each."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from reconciler.config import GIT_TOKEN_ENV, TOKEN_SECRET_ENV, load_config, read_secret, refuse_open_files, token_secret
from reconciler.model.errors import ConfigError
from reconciler.model.secret import Secret

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
        "proxmox.token_id: must be a Proxmox API token ID, user@realm!token, such as reconciler@pve!gitops;"
        " got 'reconciler'",
        "site.vmid_range: low 300 is above high 200",
    ]


@pytest.mark.parametrize(
    "remote",
    [
        "https://me:hunter2@gitea.lan/x.git",
        "https://hunter2@gitea.lan/x.git",  # a token alone as the user part
        "http://oauth2:hunter2@gitea.lan:3000/x.git",
        "HTTPS://hunter2@gitea.lan/x.git",
        "ssh://git:hunter2@gitea.lan/x.git",
    ],
)
def test_credentials_in_the_remote_url_are_refused_with_a_pointer_to_the_token_variable(
    tmp_path: Path, remote: str
) -> None:
    text = EXAMPLE.read_text().replace("ssh://git@gitea.lan/homelab/infra.git", remote)
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    [problem] = caught.value.problems
    assert problem.startswith("git.remote: holds credentials before '@'")
    assert f"set {GIT_TOKEN_ENV} in the environment" in problem
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "remote",
    ["ssh://git@gitea.lan/homelab/infra.git", "git@gitea.lan:homelab/infra.git", "https://gitea.lan/x.git"],
)
def test_a_user_name_alone_in_an_ssh_remote_is_no_secret_and_passes(tmp_path: Path, remote: str) -> None:
    text = EXAMPLE.read_text().replace("ssh://git@gitea.lan/homelab/infra.git", remote)
    assert load_config(write(tmp_path, text)).git.remote == remote


def test_a_missing_or_unparsable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML at line 2, column 1"):
        load_config(write(tmp_path, "git: [\n"))


def test_the_token_secret_comes_from_the_environment_only(tmp_path: Path) -> None:
    assert token_secret({TOKEN_SECRET_ENV: "s3cret"}).reveal() == "s3cret"
    with pytest.raises(ConfigError, match=f"{TOKEN_SECRET_ENV} is not set"):
        token_secret({})
    text = EXAMPLE.read_text().replace("  verify_ssl: true", "  verify_ssl: true\n  token_secret: abc")
    with pytest.raises(ConfigError, match=re.escape("proxmox.token_secret: unknown key")):
        load_config(write(tmp_path, text))


# --- secrets at the edge: read once from the environment, typed, never shown


def test_a_secret_prints_as_a_mask_wherever_it_is_shown() -> None:
    secret = Secret("s3cret-value")
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>20}", repr({"token": secret})]
    assert all("s3cret" not in text for text in shown)
    assert repr(secret) == "Secret('********')"
    assert secret.reveal() == "s3cret-value"
    assert secret == Secret("s3cret-value") and secret != Secret("other")


@pytest.mark.parametrize("raw", ["s3cret\r", "s3cret\r\n", "  s3cret\t", "\ns3cret"])
def test_a_secret_from_an_env_file_with_windows_line_ends_loses_its_surrounding_whitespace(raw: str) -> None:
    secret = token_secret({TOKEN_SECRET_ENV: raw})
    assert secret.reveal() == "s3cret"


@pytest.mark.parametrize("raw", ["s3c\rret", "s3c\x1bret", "s3c\x00ret", "s3c\x7fret", "s3c\u0085ret"])
def test_a_secret_with_a_control_character_inside_is_refused_naming_the_variable_only(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_secret("RECONCILER_GIT_TOKEN", {"RECONCILER_GIT_TOKEN": raw})
    assert caught.value.problems == [
        "RECONCILER_GIT_TOKEN holds a control character (a CR from an env file with Windows line ends?)"
    ]
    assert "s3c" not in str(caught.value) and "ret" not in str(caught.value).replace("RECONCILER", "")


def test_an_unset_or_blank_optional_secret_is_none() -> None:
    assert read_secret("RECONCILER_GIT_TOKEN", {}) is None
    assert read_secret("RECONCILER_GIT_TOKEN", {"RECONCILER_GIT_TOKEN": " \r\n"}) is None


# --- files: the config open to others, or a key to anyone but its owner, is refused at start


def test_a_config_readable_by_others_or_a_key_readable_by_its_group_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("key\n")
    git_key = tmp_path / "git_key"
    git_key.write_text("key\n")
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["provision"] = {"transport": "ssh", "ssh": {"key": str(key), "known_hosts": str(tmp_path / "kh")}}
    raw["git"]["ssh_key"] = str(git_key)
    path = write(tmp_path, yaml.safe_dump(raw))
    config = load_config(path)
    assert config.git.ssh_key == git_key
    path.chmod(0o644)
    key.chmod(0o640)
    git_key.chmod(0o606)
    with pytest.raises(ConfigError) as caught:
        refuse_open_files(path, config)
    assert caught.value.problems == [
        f"the config file {path} is readable by others (mode 0644): run chmod o-rwx {path}",
        f"the SSH key (provision.ssh.key) {key} is readable by its group (mode 0640): run chmod 600 {key}",
        f"the Git SSH key (git.ssh_key) {git_key} is readable and writable by others (mode 0606):"
        f" run chmod 600 {git_key}",
    ]
    # The README's install: the config root:reconciler 0640, read through the group; the keys the owner's alone.
    path.chmod(0o640)
    key.chmod(0o600)
    git_key.chmod(0o400)
    refuse_open_files(path, config)
