"""Wire a config to real gateways: profiles, Proxmox (secret from the environment), Git, SQLite."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.apply import Heartbeat, JobHook
from reconciler.config import GIT_TOKEN_ENV, Config, token_secret
from reconciler.cycle import Reconciler
from reconciler.desired.profile import Profile, builtin_profiles_dir, load_profiles
from reconciler.gateways.git import Checkout
from reconciler.gateways.proxmox import Proxmox, RequestHook
from reconciler.gateways.sqlite import JobStore
from reconciler.lock import CheckoutLock
from reconciler.logs import register_secret


def profiles_for(config: Config) -> dict[str, Profile]:
    """The profiles the config names (or the shipped ones), checked against the site's templates."""
    return load_profiles(config.profiles or builtin_profiles_dir(), set(config.site.templates))


@dataclass
class Runtime:
    reconciler: Reconciler
    store: JobStore
    pve: Proxmox
    checkout: Checkout
    lock: CheckoutLock

    def close(self) -> None:
        self.store.close()
        self.checkout.repo.close()
        self.lock.release()


def open_runtime(
    config: Config,
    environ: Mapping[str, str] | None = None,
    on_job: JobHook | None = None,
    on_request: RequestHook | None = None,
    stopping: threading.Event | None = None,
    heartbeat: Heartbeat | None = None,
) -> Runtime:
    """Everything one process needs to run cycles, holding the checkout's lock.

    Raises ConfigError for a missing secret or bad profiles, AlreadyRunning when another process holds the lock.
    """
    env = dict(os.environ if environ is None else environ)
    secret = token_secret(env)
    for value in (secret, env.get(GIT_TOKEN_ENV, "")):
        register_secret(value)
    profiles = profiles_for(config)
    lock = CheckoutLock(config.git.checkout).acquire()
    pve = Proxmox(config.proxmox, secret, on_request=on_request)
    store = JobStore(config.state.database)
    # Jobs still marked running were cut short by a crash or a kill: say so rather than leave them hanging.
    store.interrupt_running("interrupted: the reconciler stopped before the job finished")
    checkout = Checkout(config.git, env)
    reconciler = Reconciler(
        config, profiles, pve, store, checkout, on_job=on_job, stopping=stopping, heartbeat=heartbeat
    )
    return Runtime(reconciler, store, pve, checkout, lock)
