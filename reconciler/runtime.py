"""Wire a config to real gateways: profiles, Proxmox (secret from the environment), Git, SQLite, the job runner.

The lock, the job database and the runner live as long as the process; the Reconciler (config, profiles,
Proxmox and Git) can be rebuilt by a reload while jobs keep running.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from reconciler.apply.runner import Heartbeat, JobHook, Runner
from reconciler.config import GIT_TOKEN_ENV, Config, token_secret
from reconciler.cycle import Reconciler
from reconciler.desired.profile import Profile, builtin_profiles_dir, load_profiles
from reconciler.gateways.git import Checkout
from reconciler.gateways.pct import Pct
from reconciler.gateways.proxmox import Proxmox, RequestHook
from reconciler.gateways.sqlite import JobStore
from reconciler.lock import CheckoutLock
from reconciler.logs import register_secret
from reconciler.model.vocab import Transport


def profiles_for(config: Config) -> dict[str, Profile]:
    """The profiles the config names (or the shipped ones), checked against the site's templates."""
    return load_profiles(config.profiles or builtin_profiles_dir(), set(config.site.templates))


def build_reconciler(
    config: Config,
    environ: Mapping[str, str],
    store: JobStore,
    runner: Runner,
    on_request: RequestHook | None = None,
) -> Reconciler:
    """A Reconciler for this config; raises ConfigError for a missing secret or bad profiles."""
    secret = token_secret(dict(environ))
    for value in (secret, environ.get(GIT_TOKEN_ENV, "")):
        register_secret(value)
    profiles = profiles_for(config)
    pve = Proxmox(config.proxmox, secret, on_request=on_request)
    pct = Pct(config.provision) if config.provision.transport != Transport.OFF else None
    return Reconciler(config, profiles, pve, store, Checkout(config.git, environ), runner, pct)


@dataclass
class Runtime:
    reconciler: Reconciler
    store: JobStore
    runner: Runner
    lock: CheckoutLock

    def close(self) -> None:
        """Stop the runner (running tasks get the stop grace, then are let go), then release everything."""
        self.runner.stop()
        self.runner.wait_idle(self.runner.stop_grace + 10)
        self.reconciler.close()
        self.store.close()
        self.lock.release()


def open_runtime(
    config: Config,
    environ: Mapping[str, str] | None = None,
    on_job: JobHook | None = None,
    on_request: RequestHook | None = None,
    on_done: Callable[[], None] | None = None,
    heartbeat: Heartbeat | None = None,
) -> Runtime:
    """Everything one process needs to run passes, holding the checkout's lock.

    Raises ConfigError for a missing secret or bad profiles, AlreadyRunning when another process holds the lock.
    """
    env = dict(os.environ if environ is None else environ)
    token_secret(env)  # a missing secret is said before anything is opened
    profiles_for(config)
    lock = CheckoutLock(config.git.checkout).acquire()
    try:
        store = JobStore(config.state.database)
        # Jobs still marked running were cut short by a crash or a kill: say so rather than leave them hanging.
        store.interrupt_running("interrupted: the reconciler stopped before the job finished")
        runner = Runner(store, on_job=on_job, on_done=on_done, heartbeat=heartbeat)
        runner.configure(config)
        reconciler = build_reconciler(config, env, store, runner, on_request)
    except BaseException:
        lock.release()
        raise
    return Runtime(reconciler, store, runner, lock)
