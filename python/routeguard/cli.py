"""The ``routeguard`` command: serve the proxy, check a config, run the simulated upstream.

Each subcommand parses its flags, then calls into the library; nothing here holds logic
the library lacks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from routeguard import config as config_mod
from routeguard import scrub
from routeguard.errors import ConfigError, RouteguardError

_CONFIG_ENV = "ROUTEGUARD_CONFIG_JSON"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``routeguard`` console script."""
    parser = argparse.ArgumentParser(prog="routeguard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI-compatible proxy")
    serve.add_argument("--config", help="config file (YAML/TOML/JSON); default: built-in")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=4000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--request-log", help="append one JSON line per request to this file (analyze reads it)"
    )
    serve.add_argument(
        "--no-simulated",
        action="store_true",
        help="built-in config: leave out the aliases whose API key is not set (default: the "
        "simulated upstream serves them)",
    )

    check = sub.add_parser("check-config", help="validate a config file and list every problem")
    check.add_argument("file")

    mock = sub.add_parser("mock-upstream", help="run the bundled simulated provider")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8010)
    mock.add_argument("--ttft", type=float, default=0.0, help="seconds before the first byte")
    mock.add_argument("--tokens-per-s", type=float, default=None)
    mock.add_argument(
        "--meanings",
        default=None,
        help="answer by meaning: a JSON(.gz) of text_a/text_b/label pairs or of groups of "
        "texts; every question of one cluster gets one answer",
    )

    keys = sub.add_parser("keys", help="manage virtual keys in the config's server.database")
    keys.add_argument("--config", required=True, help="config file naming server.database")
    kcmd = keys.add_subparsers(dest="keys_command", required=True)
    create = kcmd.add_parser("create", help="create a key (printed once)")
    for flag in ("name", "user", "team", "org"):
        create.add_argument(f"--{flag}")
    create.add_argument("--models", help="comma-separated aliases the key may use")
    create.add_argument("--max-budget", type=float)
    create.add_argument("--rpm", type=int)
    create.add_argument("--tpm", type=int)
    create.add_argument("--expires-in", type=float, help="seconds until the key expires")
    create.add_argument(
        "--admin", action="store_true", help="may use the dashboard (/ui) and decide approvals"
    )
    kcmd.add_parser("list", help="list keys (never their secrets)")
    update = kcmd.add_parser("update", help="change a key's budget, limits, models or expiry")
    update.add_argument("key_id")
    update.add_argument("--models", help="comma-separated aliases the key may use")
    update.add_argument("--max-budget", type=float)
    update.add_argument("--budget-period", help="daily, weekly, monthly, total, rolling:<s>")
    update.add_argument("--rpm", type=int)
    update.add_argument("--tpm", type=int)
    update.add_argument("--expires-in", type=float, help="seconds from now until it expires")
    for verb in ("rotate", "revoke"):
        kcmd.add_parser(verb, help=f"{verb} a key").add_argument("key_id")

    audit = sub.add_parser("audit", help="inspect a tool-call audit log")
    acmd = audit.add_subparsers(dest="audit_command", required=True)
    averify = acmd.add_parser(
        "verify",
        help="check the keyed hash chain and the checkpoint (exit 0 authenticated, "
        "1 tampered, 2 unreadable or no key, 3 intact but not authenticated)",
    )
    averify.add_argument("path", help="the audit log (SQLite file)")
    averify.add_argument(
        "--key-file",
        help="the audit key (default: $ROUTEGUARD_AUDIT_KEY_FILE, $ROUTEGUARD_AUDIT_KEY)",
    )
    averify.add_argument("--checkpoint", help="the checkpoint file (default: PATH.checkpoint)")

    from routeguard.routing.cli import register as register_router

    register_router(sub)
    from routeguard.analyze.cli import register as register_analyze

    register_analyze(sub)
    from routeguard.bench.cli import register as register_bench

    register_bench(sub)

    args = parser.parse_args(argv)
    if args.command in ("router", "analyze", "simulate", "bench"):
        return int(args.run(args))
    if args.command == "audit":
        return _audit_verify(args.path, args.key_file, args.checkpoint)
    if args.command == "keys":
        return _keys(args)
    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "mock-upstream":
        return _mock_upstream(args.host, args.port, args.ttft, args.tokens_per_s, args.meanings)
    return _serve(
        args.config,
        args.host,
        args.port,
        args.workers,
        args.log_level,
        args.request_log,
        simulated=not args.no_simulated,
    )


def _audit_verify(path: str, key_file: str | None, checkpoint: str | None) -> int:
    """``routeguard audit verify PATH``: 0 authenticated, 1 tampered, 2 unreadable or no key,
    3 intact but not authenticated (a legacy unkeyed log)."""
    from routeguard.enforce.audit import KEY_FILE_ENV, NEEDS_KEY, AuditLog
    from routeguard.errors import AuditError

    try:
        with AuditLog.open_existing(path, key_file=key_file, checkpoint=checkpoint) as log:
            report = log.verify()
            keyed = log.keyed
    except AuditError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    if not report.ok:
        print(f"{path}: {report}", file=sys.stderr)
        return 1
    if report.authenticated:
        print(f"{path}: {report}")
        return 0
    print(f"{path}: {report}", file=sys.stderr)
    if not keyed and report.reason.startswith(NEEDS_KEY):
        print(f"no audit key: pass --key-file or set {KEY_FILE_ENV}", file=sys.stderr)
        return 2
    return 3


def _check_config(path: str) -> int:
    try:
        cfg = config_mod.load(path)
    except ConfigError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    for w in cfg.warnings:
        print(f"warning: {w}", file=sys.stderr)
    n = sum(len(d) for d in cfg.deployments.values())
    patterns = f", {len(cfg.wildcards)} wildcard patterns" if cfg.wildcards else ""
    print(f"{path}: ok ({len(cfg.deployments)} models, {n} deployments{patterns})")
    return 0


def _keys(args: argparse.Namespace) -> int:
    import time

    from routeguard.budget.keys import KeySpec, KeyStore

    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    secret = cfg.server.key_hash_secret
    store: KeyStore
    if cfg.server.key_store == "redis" and cfg.server.redis_url:
        from routeguard.budget.redis_keys import RedisKeyStore

        store = RedisKeyStore(cfg.server.redis_url, secret=secret.get() if secret else None)
    elif not cfg.server.database:
        print(f"{args.config}: set server.database to a file to manage keys", file=sys.stderr)
        return 1
    else:
        store = KeyStore(cfg.server.database, secret=secret.get() if secret else None)
    try:
        if args.keys_command == "create":
            spec = KeySpec(
                name=args.name, user=args.user, team=args.team, org=args.org,
                models=args.models.split(",") if args.models else None,
                max_budget=args.max_budget, rpm=args.rpm, tpm=args.tpm,
                expires_at=time.time() + args.expires_in if args.expires_in else None,
                admin=args.admin,
            )  # fmt: skip
            token, rec = store.create(spec)
            print(json.dumps({"key": token, **rec.public()}))
        elif args.keys_command == "list":
            for rec in store.list():
                print(json.dumps(rec.public()))
        elif args.keys_command == "update":
            changes = {
                k: v
                for k, v in (
                    ("models", args.models.split(",") if args.models else None),
                    ("max_budget", args.max_budget),
                    ("budget_period", args.budget_period),
                    ("rpm", args.rpm),
                    ("tpm", args.tpm),
                    ("expires_at", time.time() + args.expires_in if args.expires_in else None),
                )
                if v is not None
            }
            print(json.dumps(store.update(args.key_id, changes).public()))
        elif args.keys_command == "rotate":
            token, rec = store.rotate(args.key_id)
            print(json.dumps({"key": token, **rec.public()}))
        else:
            print(json.dumps(store.revoke(args.key_id).public()))
    except RouteguardError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def _mock_upstream(
    host: str, port: int, ttft: float, tokens_per_s: float | None, meanings_path: str | None
) -> int:
    from routeguard.mock import load_meanings, serve_mock

    meanings = load_meanings(meanings_path) if meanings_path else None
    print(f"simulated upstream on http://{host}:{port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        _run(serve_mock(host, port, ttft=ttft, tokens_per_s=tokens_per_s, meanings=meanings))
    return 0


def _serve(
    path: str | None,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    request_log: str | None = None,
    simulated: bool = True,
) -> int:
    import uvicorn

    from routeguard.defaults import default_config, missing_keys, served_lines
    from routeguard.server.protocol import PROTOCOL
    from routeguard.server.thread import SERVED

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    scrub.guard_handlers()  # every record, ours or a library's, loses configured secrets
    mock = None
    left_out: dict[str, str] = {}
    origin = str(Path(path).resolve()) if path is not None else None
    source: object = None
    if origin is None:
        missing = missing_keys()
        if missing and simulated:
            from routeguard.mock import MockServer

            mock = MockServer()
            mock.__enter__()
            print(f"simulated upstream at {mock.url} for: {', '.join(missing)}", flush=True)
        elif missing:
            left_out = {a: f"{var} is not set; --no-simulated" for a, var in missing.items()}
        source = default_config(mock.url if mock is not None else None)
    try:
        if origin is not None:  # read once: every worker starts from this data (snapshot)
            source = config_mod.read_file(origin)
        cfg = config_mod.load(source, origin=origin)  # type: ignore[arg-type]
    except ConfigError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    problem = _workers_problem(cfg, workers)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    # Workers load the config in their own process from the data read and checked here (the
    # built-in default with the simulator's port, or a snapshot of the file), never from the
    # file itself: one saved half-edited cannot break a worker that starts or restarts. The
    # path stays for reloads (SIGHUP, POST /admin/reload), which check the file first.
    from routeguard.server.supervisor import ConfigSnapshot

    snapshot = ConfigSnapshot(source) if isinstance(source, dict) and origin else None
    spec: dict[str, Any] = (
        {"path": origin, "snapshot": snapshot.path} if snapshot is not None else {"data": source}
    )
    if request_log:
        spec["request_log"] = str(Path(request_log).resolve())
    os.environ[_CONFIG_ENV] = json.dumps(spec)
    if workers > 1:  # each worker's POST /admin/reload asks this process for a rolling restart
        from routeguard.server.lifecycle import WORKERS_ENV

        os.environ[WORKERS_ENV] = str(workers)
    metrics_dir = _metrics_dir(cfg, workers)
    spend_dir = _spend_dir(cfg, workers)
    print(f"routeguard proxy on http://{host}:{port} serving:", flush=True)
    simulated_base = mock.url if mock is not None else None
    patterns = {f"{w.pattern} (any matching name)": list(w.templates) for w in cfg.wildcards}
    for line in served_lines({**cfg.deployments, **patterns}, simulated_base, left_out):
        print(line, flush=True)
    try:
        server_config = uvicorn.Config(
            "routeguard.cli:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http=PROTOCOL,  # routeguard's HTTP/1.1 protocol (server/protocol.py), read deadlines
            # The app drains itself on SIGTERM (server.drain_seconds, server/lifecycle.py);
            # this only bounds uvicorn's own wait after that.
            timeout_graceful_shutdown=_SHUTDOWN_AFTER_DRAIN_S,
            # A worker started by a rolling restart (SIGHUP) loads its models before it
            # reports ready; the old one is kept until then.
            timeout_worker_healthcheck=_WORKER_READY_S,
            **SERVED,
        )
        if workers > 1:
            from routeguard.server.supervisor import Supervisor

            sock = server_config.bind_socket()
            with contextlib.suppress(KeyboardInterrupt):
                Supervisor(server_config, [sock], snapshot=snapshot, running=cfg).run()
        else:
            server = uvicorn.Server(server_config)
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C before startup completed
                server.run()
            if not server.started:
                return 1
    finally:
        if mock is not None:
            mock.__exit__(None, None, None)
        for made in (metrics_dir, spend_dir):
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
        if snapshot is not None:
            snapshot.remove()
    return 0


_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_SHUTDOWN_AFTER_DRAIN_S = 5
_WORKER_READY_S = 60  # also how long a hung worker goes unnoticed (uvicorn pings with it)


def _metrics_dir(cfg: config_mod.Config, workers: int) -> str | None:
    """With several workers and metrics on: a fresh directory for prometheus_client's
    multiprocess files, announced to the workers through the environment (inside the
    directory the variable names, if it was set), so a scrape of any worker sums them all.
    The caller removes it at exit."""
    if workers <= 1 or not cfg.observability.metrics:
        return None
    parent = os.environ.get(_MULTIPROC_ENV) or None
    if parent is not None:
        os.makedirs(parent, exist_ok=True)
    path = tempfile.mkdtemp(prefix="routeguard-metrics-", dir=parent)
    os.environ[_MULTIPROC_ENV] = path
    return path


def _spend_dir(cfg: config_mod.Config, workers: int) -> str | None:
    """With several workers and no ``server.database``: a fresh directory whose SQLite file
    every worker writes its spend rows to, so ``/admin/spend`` and the dashboard see all
    requests whichever worker answers. The caller removes it at exit."""
    from routeguard.observe.spend import SPEND_DB_ENV

    if workers <= 1 or cfg.server.database is not None:
        return None
    path = tempfile.mkdtemp(prefix="routeguard-spend-")
    os.environ[SPEND_DB_ENV] = os.path.join(path, "spend.db")
    return path


def _workers_problem(cfg: config_mod.Config, workers: int) -> str | None:
    """Why this config cannot run on ``workers`` processes, if it cannot: in-process budgets
    and a SQLite key store are per process, so N workers would spend N times a limit and see
    only the keys made through themselves."""
    if workers <= 1:
        return None
    admin = cfg.server.master_key is not None or cfg.server.database is not None
    if cfg.budget.backend == "memory" and (cfg.accounts or admin):
        return (
            f"--workers {workers} with in-memory budgets would let each worker spend the whole "
            "limit: set budget_settings.backend: redis (and redis_url), or run one worker"
        )
    if cfg.server.key_store == "sqlite" and cfg.server.master_key is not None:
        return (
            f"--workers {workers} with the SQLite key store: a key made through one worker "
            "would be unknown to the others; set server.key_store: redis, or run one worker"
        )
    return None


def app_from_env() -> object:
    """Build the proxy app from the config the ``serve`` command left in the environment."""
    from routeguard.gateway import Gateway
    from routeguard.server import create_app

    spec = json.loads(os.environ[_CONFIG_ENV])
    if "snapshot" in spec:
        data = json.loads(Path(spec["snapshot"]).read_text(encoding="utf-8"))
        gw = Gateway(config_mod.load(data, origin=spec["path"]))
    else:
        gw = Gateway.from_config(spec["data"])
    app = create_app(gw, request_log=spec.get("request_log"))
    app.freeze_gc = True  # this process is the server's: its start-up heap lives on
    return app


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        asyncio.run(main)
    else:
        uvloop.run(main)


if __name__ == "__main__":
    raise SystemExit(main())
