"""GitOps reconciler for Proxmox VE homelabs: request files in Git in, containers and Caddy files out."""

from importlib import metadata

try:
    __version__ = metadata.version("reconciler")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
