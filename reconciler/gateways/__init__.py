"""One gateway per outside system: Git, Proxmox VE, SQLite. Nothing else imports their libraries."""
