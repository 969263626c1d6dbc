"""Ray for the search and NetAdapt: a local Ray with its dashboard, or a running cluster (``--address``).

A local Ray binds its dashboard to ``--dashboard-host`` (127.0.0.1 by default) with Ray's token
authentication left on; the token's location comes from Ray's documented order (``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``).

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

from common.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
# The packages a trial or a proposal imports on a worker (cli.py, tests and bench stay behind).
PACKAGES = ("common", "space", "latency", "search", "train", "netadapt")


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
    # Ray has no public call that only checks a token against a cluster without joining it; its GCS
    # client does exactly that, so the child process uses it (a Ray upgrade that moves it makes this
    # check a no-op, and ray.init then reports the refusal itself).
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


def auth_enabled() -> bool:
    """Whether Ray runs with token authentication (its default, unless ``RAY_AUTH_MODE`` turns it off)."""
    return os.environ.get("RAY_AUTH_MODE", "token").lower() == "token"


def auth_token() -> str | None:
    """The token this process authenticates with, read where :func:`token_location` says; None when none."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def dashboard_headers() -> dict[str, str]:
    """HTTP headers that authenticate to the dashboard (empty when authentication is off or no token exists)."""
    token = auth_token() if auth_enabled() else None
    return {"Authorization": f"Bearer {token}"} if token else {}


def check_dashboard_host(host: str) -> None:
    """``--dashboard-host`` must be an IP address to bind to (Ray hands it to the dashboard's server)."""
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UserError(f"--dashboard-host {host!r}: give an IP address to bind the dashboard to (127.0.0.1: this "
                        "machine only; 0.0.0.0: every network interface)") from None


def dashboard_warning(host: str) -> str | None:
    """The one-line warning for a dashboard bound to a non-loopback address, else None."""
    import ipaddress

    if ipaddress.ip_address(host).is_loopback:
        return None
    mode = os.environ.get("RAY_AUTH_MODE", "token").lower()
    guard = (f"Ray's token authentication stays on (token: {token_location()})" if auth_enabled() else
             f"token authentication is OFF (RAY_AUTH_MODE={mode}): anyone who reaches it can run code here")
    return (f"warning: --dashboard-host {host}: the Ray dashboard will be reachable from the network, not only "
            f"from this machine; {guard}")


_dashboard_url: str | None = None  # of the Ray that init_ray started or attached to


def init_ray(address: str | None, num_cpus: int | None = None, dashboard_host: str = "127.0.0.1") -> str | None:
    """Start a local Ray (dashboard on ``dashboard_host``, token authentication as Ray sets it) or attach to
    ``address`` (shipping this project's code to its workers); returns the dashboard URL. An already
    initialised Ray in this process is reused."""
    global _dashboard_url
    import ray

    if ray.is_initialized():
        return _dashboard_url or _dashboard_url_of_session()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's classic reporter: the live table we configure
    if address:
        info = attach(address)
    else:
        info = ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host=dashboard_host,
                        log_to_driver=False, configure_logging=True, logging_level="WARNING")
    url = info.dashboard_url or None
    _dashboard_url = f"http://{url}" if url and not url.startswith("http") else url
    return _dashboard_url


def _dashboard_url_of_session() -> str | None:
    # A Ray started elsewhere in this process (a library user's, a test's): only ray.init's return
    # value carries the dashboard URL publicly, so it is read from Ray's worker here.
    try:
        import ray

        url = ray._private.worker.global_worker.node.address_info.get("webui_url")
        return f"http://{url}" if url else None
    except Exception:
        return None


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
