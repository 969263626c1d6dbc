"""Attaching to a running Ray cluster (``--address``), shared by the search and NetAdapt.

On a cluster, trials and proposals run on other machines: those machines may have no checkout of
this project, or one at another path or of another version. So the driver ships its own packages
with the job (Ray's ``py_modules``), and every worker imports exactly the code the driver runs.
Workers never write result files: what they produce comes back to the driver in their results.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from space.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
# The packages a trial or a proposal imports on a worker (cli.py, tests and bench stay behind).
PACKAGES = ("space", "latency", "search", "train", "netadapt")


def project_runtime_env(env_vars: dict[str, str] | None = None) -> dict[str, Any]:
    """Ray ``runtime_env`` that uploads this project's packages to the cluster for every worker."""
    env: dict[str, Any] = {
        "py_modules": [str(REPO_ROOT / p) for p in PACKAGES if (REPO_ROOT / p).is_dir()],
        "excludes": ["__pycache__", "*.pyc"],
    }
    if env_vars:
        env["env_vars"] = dict(env_vars)
    return env


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds, with one line, when ``host:port`` does not answer (Ray itself retries for minutes)."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r}: expected HOST:PORT of a Ray head node (e.g. 10.0.0.5:6379) or 'auto'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"--address {address}: nothing answers there ({e.strerror or e}); start the cluster with "
                        "`ray start --head` or fix the address") from None
    _check_token(address)


def _check_token(address: str, timeout: float = 10.0) -> None:
    """Ask the cluster once whether it accepts this process's token: a refusal is one line now, not
    after ``ray.init``'s 20 s of retries and a page of log lines. The question runs in a child process,
    whose log lines stay there and whose wait on a port that is not Ray's is cut short."""
    code = "import sys; from ray._raylet import GcsClient; GcsClient(address=sys.argv[1])"
    try:
        r = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return  # not a quick answer: ray.init will say what is wrong
    if r.returncode != 0 and ("InvalidAuthToken" in r.stderr or "AuthenticationError" in r.stderr):
        raise UserError(auth_message(address))


def auth_message(address: str) -> str:
    """What to do when a cluster refuses this process (Ray sends a token to an explicit address only
    with RAY_AUTH_MODE=token)."""
    mode = os.environ.get("RAY_AUTH_MODE", "")
    if mode.lower() != "token":
        return (f"--address {address}: the cluster requires its authentication token and this process sends none "
                f"(RAY_AUTH_MODE is {mode or 'unset'}); export RAY_AUTH_MODE=token and give the cluster's token "
                "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
    return (f"--address {address}: the cluster refused the token from {token_location()}; use the cluster's token "
            "(`ray get-auth-token` on its head node prints it)")


def token_location() -> str:
    """Where this process reads Ray's authentication token from (Ray's own order of precedence)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "$RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return os.environ["RAY_AUTH_TOKEN_PATH"]
    return "~/.ray/auth_token (`ray get-auth-token` prints it)"


def _is_auth_error(e: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if type(cur).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def attach(address: str, env_vars: dict[str, str] | None = None) -> Any:
    """``ray.init(address=...)`` with this project's code shipped to the workers; a cluster that
    cannot be reached or refuses our token is a one-line :class:`UserError`. Returns Ray's context."""
    import ray

    check_reachable(address)
    try:
        return ray.init(address=address, runtime_env=project_runtime_env(env_vars), log_to_driver=False,
                        logging_level="WARNING")
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError or its own types here
        if _is_auth_error(e):
            raise UserError(auth_message(address)) from None
        raise UserError(f"--address {address}: cannot attach to a Ray cluster there "
                        f"({(str(e).strip().splitlines() or [type(e).__name__])[0][:160]})") from None


def node_id() -> str:
    """The Ray node this code runs on; '' outside Ray (e.g. a proposal run in the driver's process)."""
    ray = sys.modules.get("ray")  # never import Ray just to ask
    if ray is None or not ray.is_initialized():
        return ""
    return ray.get_runtime_context().get_node_id()
