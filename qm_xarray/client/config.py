"""What the client takes from the environment when the caller does not say: the token, the port and
the first-contact deadline (one place for each rule; the CLI uses these too).

The token comes from the argument, else `$QM_XARRAY_TOKEN`, else qm-qua's user config
`~/.qm/config.json` (key `quantumMachinesManager_user_token`), where a physicist who uses qm-qua
already keeps it. The config file is read anew at each call, from the current home directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from ..errors import QmValueError

__all__ = ["TOKEN_ENV", "CONNECT_TIMEOUT_ENV", "DEFAULT_CONNECT_TIMEOUT", "GATEWAY_PORT",
           "qm_user_config", "qm_qua_token", "resolve_token", "connect_timeout", "default_ports", "check_token"]

log = logging.getLogger("qm_xarray.client")

TOKEN_ENV = "QM_XARRAY_TOKEN"
CONNECT_TIMEOUT_ENV = "QM_XARRAY_CONNECT_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT = 5.0  # seconds to reach a server the first time (RPCs then get their own)
GATEWAY_PORT = 80  # a QOP's gateway port, tried when no port is given (as qm-qua does)

_CONFIG = ("~", ".qm", "config.json")
_TOKEN_KEY = "quantumMachinesManager_user_token"
_PORT_KEY = "quantumMachinesManager_port"


def qm_user_config() -> dict[str, Any]:
    """qm-qua's `~/.qm/config.json` as a dict; {} when missing or unreadable (logged)."""
    path = Path(*_CONFIG).expanduser()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def check_token(token: str, source: str) -> str | None:
    """`token` if it can travel as a header value (printable ASCII, no spaces); None if empty."""
    if not token:
        return None
    if not all("\x21" <= ch <= "\x7e" for ch in token):
        raise QmValueError(f"{source}: a token is printable ASCII without spaces")
    return token


def resolve_token(token: str | None) -> str | None:
    """The token to send: `token` if given ('' sends none), else the environment, else qm-qua's
    user config."""
    if token is not None:
        return check_token(token, "token")
    if os.environ.get(TOKEN_ENV):
        return check_token(os.environ[TOKEN_ENV], f"${TOKEN_ENV}")
    return qm_qua_token()


def qm_qua_token() -> str | None:
    """The token qm-qua keeps in the user's ~/.qm/config.json, if any (checked)."""
    stored = qm_user_config().get(_TOKEN_KEY)
    if isinstance(stored, str) and stored:
        return check_token(stored, f"{_TOKEN_KEY} in ~/.qm/config.json")
    return None


def connect_timeout(timeout: float | None = None) -> float:
    """Seconds allowed for the first contact: `timeout`, else `$QM_XARRAY_CONNECT_TIMEOUT`, else 5."""
    if timeout is not None:
        return _seconds(timeout, "the connect timeout")
    raw = os.environ.get(CONNECT_TIMEOUT_ENV)
    if raw is None or raw == "":
        return DEFAULT_CONNECT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise QmValueError(f"${CONNECT_TIMEOUT_ENV}={raw!r} is not a number of seconds "
                           f"(e.g. {CONNECT_TIMEOUT_ENV}=5)") from None
    return _seconds(value, f"${CONNECT_TIMEOUT_ENV}")


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise QmValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


def default_ports() -> list[int]:
    """Ports to try when none is given: qm-qua's configured port, then the gateway's (80)."""
    ports = []
    stored = qm_user_config().get(_PORT_KEY)
    if isinstance(stored, int) and not isinstance(stored, bool) and 0 < stored < 65536:
        ports.append(stored)
    return list(dict.fromkeys([*ports, GATEWAY_PORT]))
