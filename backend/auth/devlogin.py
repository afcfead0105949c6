"""The development sign-in's start secret, and the address the start log prints it in.

The secret is derived, not stored: an HMAC, under the development key in DATA_DIR, of what
identifies this start of the server, so every worker of `serve --workers N` and every uvicorn
reload of one start computes the same one with no file to share, and the next start gets a new
one. `task-assistant serve` names its start with a random value in TASK_ASSISTANT_START, which its
workers inherit; a plain `uvicorn backend.main:app` is named by its process group (the shell job,
`make run`, the systemd unit or the container that started it) and the group leader's start time.

No web framework here: `task-assistant serve` names its start (START_ENV, ADDRESS_ENV) before
its workers import the app.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

LOGIN_PARAM = "login"
START_ENV = "TASK_ASSISTANT_START"
"""Names one start of the server; `task-assistant serve` sets it for itself and its workers."""
ADDRESS_ENV = "TASK_ASSISTANT_ADDRESS"
"""The server's base URL, set by `task-assistant serve` for the start log."""


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def _process_start_time(pid: int) -> str:
    """When process `pid` started (clock ticks since boot, Linux), or "" when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]  # field 22; the name before ")" may hold spaces


@functools.cache
def start_id() -> str:
    """What names this start of the server (fixed for the life of the process): see above."""
    named = os.environ.get(START_ENV)
    if named:
        return "serve:" + named
    group = os.getpgrp()
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"group:{boot}:{group}:{_process_start_time(group)}"


def login_secret(key: Ed25519PrivateKey, start: str | None = None) -> str:
    """The login secret of a start (this one by default): 24 URL-safe characters."""
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    message = b"task-assistant dev login\0" + (start or start_id()).encode()
    digest = hmac.new(raw, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def start_address() -> str:
    """The server's base URL as the developer's browser reaches it, for the start log.

    `task-assistant serve` says it in TASK_ASSISTANT_ADDRESS; under `uvicorn` it is read from the
    command line (`--host`, `--port`, or UVICORN_HOST/UVICORN_PORT), else uvicorn's default. A
    wildcard host (`0.0.0.0`, `::`) is shown as the loopback address.
    """
    named = os.environ.get(ADDRESS_ENV)
    if named:
        return named.rstrip("/")
    host = os.environ.get("UVICORN_HOST", "127.0.0.1")
    port = os.environ.get("UVICORN_PORT", "8000")
    argv = sys.argv
    program = Path(argv[0]).as_posix() if argv else ""
    if program == "uvicorn" or program.endswith(("/uvicorn", "uvicorn/__main__.py")):
        for i, arg in enumerate(argv):
            for option in ("--host", "--port"):
                value = None
                if arg == option and i + 1 < len(argv):
                    value = argv[i + 1]
                elif arg.startswith(option + "="):
                    value = arg.partition("=")[2]
                if value is not None and option == "--host":
                    host = value
                elif value is not None:
                    port = value
    return base_url(host, int(port) if port.isdigit() else 8000)


def base_url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host.strip('[]')}]"
    return f"http://{host}:{port}"


def login_url(base: str, secret: str) -> str:
    return f"{base}/?{LOGIN_PARAM}={secret}"


def secret_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison (as bytes: `compare_digest` refuses non-ASCII text)."""
    return given is not None and hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode()
    )
