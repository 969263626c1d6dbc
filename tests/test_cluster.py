"""The search and NetAdapt on a real two-node Ray cluster, attached to with ``--address``.

The cluster runs on this machine: a head node and a second node, one CPU each, started with
``ray start`` (token authentication on, with a token of the test's own). Where the test may create
a mount namespace (root), the second node gets a private, empty view of the driver's results
folder and of this checkout, as a second machine would have: its workers can import the project
only from what the driver ships with the job, and whatever they wrote into the results folder would
land on the second node's "disk", where the driver never sees it. The tests check that trials and
proposals ran on both nodes, that every result file is on the driver's side exactly once, and that
nothing was written on the second node.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from space.archspec import ArchSpec
from space.builder import build_model
from train.weights import load_weights, save_weights

from .cli_helpers import ROOT, assert_one_line_error, run_cli

pytest.importorskip("ray")

TINY = "tiny-cpu"
RAY = [sys.executable, "-m", "ray.scripts.scripts"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _can_mount_privately(scratch: Path) -> bool:
    """Whether this process may give a child its own mount namespace with a tmpfs (root, usually)."""
    if not shutil.which("unshare"):
        return False
    probe = scratch / "probe"
    probe.mkdir()
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", f"mount -t tmpfs hwnas {probe}"],
                       capture_output=True, timeout=20)
    return r.returncode == 0


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


class TwoNodes:
    """A head node and a second node (custom resources ``hwnas_head`` / ``hwnas_second``)."""

    def __init__(self, base: Path, results: Path) -> None:
        # Ray's socket paths must stay short (AF_UNIX), hence a temp dir of our own directly under /tmp.
        self.temp = Path(tempfile.mkdtemp(prefix="hwray", dir="/tmp"))
        self.results = results
        self.second_home = base / "second-node"  # the second node's working folder and HWNAS_RESULTS
        self.second_home.mkdir()
        self.token = secrets.token_hex(16)
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.private = _can_mount_privately(self.temp)
        self.procs: list[subprocess.Popen] = []
        self.node_ids: dict[str, str] = {}

    def env(self, **extra: str) -> dict[str, str]:
        """Environment of a process that talks to this cluster (Ray only sends a token for an explicit
        address when RAY_AUTH_MODE=token is set)."""
        return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "OMP_NUM_THREADS": "1",
                "RAY_USAGE_STATS_ENABLED": "0", "HWNAS_RESULTS": str(self.results), **extra}

    def start(self) -> None:
        common = ["--block", "--num-cpus", "1", "--object-store-memory", str(200 * 1024 * 1024),
                  "--temp-dir", str(self.temp), "--dashboard-agent-listen-port", str(_free_port()),
                  "--disable-usage-stats"]
        head = [*RAY, "start", "--head", "--port", str(self.port), "--resources", '{"hwnas_head": 1}',
                "--include-dashboard", "false", "--dashboard-port", str(_free_port()),
                "--ray-client-server-port", str(_free_port()), *common]
        self._spawn(head, self.env(), ROOT, "head")
        second = [*RAY, "start", "--address", self.address, "--resources", '{"hwnas_second": 1}', *common]
        env2 = self.env(HWNAS_RESULTS=str(self.second_home / "results"))
        env2.pop("PYTHONPATH", None)
        if self.private:
            # Empty tmpfs over the driver's results folder and this checkout, seen by this node only.
            mounts = " && ".join(f"mount -t tmpfs hwnas {d}" for d in (self.results, ROOT))
            second = ["unshare", "-m", "--propagation", "private", "sh", "-c", f'{mounts} && exec "$@"', "sh", *second]
        self._spawn(second, env2, self.second_home, "second")  # it waits for the head's GCS itself

    def wait(self) -> None:
        self.node_ids = self._wait_for_nodes()

    def _spawn(self, cmd: list[str], env: dict[str, str], cwd: Path, name: str) -> None:
        with open(self.temp / f"{name}.log", "w") as log:
            # A session of its own, so that teardown ends exactly this node's processes.
            self.procs.append(subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True))

    def _wait_for_nodes(self) -> dict[str, str]:
        """{'head': node id, 'second': node id} once both nodes are alive (asked by a driver of its own)."""
        code = (
            "import json, time, ray\n"
            "deadline = time.time() + 90\n"
            "while True:  # the head may still be starting\n"
            "    try:\n"
            f"        ray.init(address={self.address!r}, log_to_driver=False); break\n"
            "    except Exception:\n"
            "        if time.time() > deadline: raise\n"
            "        time.sleep(1)\n"
            "while time.time() < deadline:\n"
            "    nodes = [n for n in ray.nodes() if n['Alive']]\n"
            "    if len(nodes) == 2: break\n"
            "    time.sleep(0.3)\n"
            "ids = {k: n['NodeID'] for n in nodes for k in ('head', 'second') if f'hwnas_{k}' in n['Resources']}\n"
            "print(json.dumps(ids))\n"
        )
        r = subprocess.run([sys.executable, "-c", code], env=self.env(), capture_output=True, text=True, timeout=180)
        ids = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else {}
        if len(ids) != 2:
            logs = "".join((self.temp / f"{n}.log").read_text()[-1500:] for n in ("head", "second"))
            raise RuntimeError(f"cluster did not come up: {r.stderr[-1500:]}\n{logs}")
        return ids

    def second_view(self, folder: Path) -> Path:
        """``folder`` as the second node sees it (its own mount namespace)."""
        return Path(f"/proc/{self.procs[1].pid}/root{folder}")

    def files_on_second_node(self) -> list[Path]:
        """Files the second node holds in its private views of the results folder and of this checkout,
        and under its own HWNAS_RESULTS."""
        found = _files(self.second_home / "results")
        if self.private:
            found += _files(self.second_view(self.results)) + _files(self.second_view(ROOT))
        return found

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request):
    base = tmp_path_factory.mktemp("cluster")
    results = base / "results"
    results.mkdir()
    c = TwoNodes(base, results)
    try:
        c.start()
        # While the nodes boot: the driver's latency table (the tiny predictor's, built if not yet).
        tiny = request.getfixturevalue("tiny_predictor")
        shutil.copytree(tiny.meta["device_dir"], results / "latency" / TINY)
        c.wait()
        yield c
    finally:
        c.stop()


def test_search_runs_trials_on_both_nodes_and_results_land_on_the_driver(cluster):
    c = cluster
    # --measure: each trial also times its network with onnxruntime on the node that trained it. It
    # lengthens a worker's first trial, too: Tune hands a pending trial to a worker that becomes free
    # before the second node's worker is up, so a very short first trial could leave that node idle.
    proc = run_cli("search", "--address", c.address, "--target-ms", "1", "--trials", "3", "--epochs", "2",
                   "--concurrency", "2", "--device", TINY, "--latency-resolution", "32", "--data", "digits",
                   "--data-limit", "64", "--eval-limit", "40", "--batch-size", "64", "--measure", "--name", "c",
                   "--json", env=c.env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    run = c.results / "runs" / "c"
    assert out["run_dir"] == str(run) and out["completed"] == 3

    df = pd.read_csv(run / "trials.csv", keep_default_na=False)
    assert len(df) == 3 and set(df["status"]) == {"ok"}
    assert (df["measured_ms"].astype(float) > 0).all()
    assert set(df["node"]) == set(c.node_ids.values()), (list(df["node"]), c.node_ids)  # both nodes trained

    # Every trial's weights reached the driver: Tune's per-trial record (written by the driver) names
    # the file the driver wrote, and the bytes themselves never went into Tune's logs.
    for tid in df["trial_id"]:
        result = json.loads((run / "tune" / "sitting-1" / f"trial_{tid}" / "result.json").read_text().splitlines()[-1])
        assert result["weights"] == str(run / "weights" / f"{tid}.pt") and "weights_blob" not in result
    # The weights the run keeps (best and Pareto trials) are there exactly once and fit their networks;
    # trials.csv names exactly those files.
    kept = [w for w in df["weights"] if w]
    assert kept and sorted(kept) == sorted(str(p) for p in (run / "weights").glob("*.pt"))
    everything = _files(c.results)
    for _, row in df[df["weights"] != ""].iterrows():
        assert [p for p in everything if p.name == f"{row['trial_id']}.pt"] == [Path(row["weights"])]
        build_model(ArchSpec.from_json(row["arch"])).load_state_dict(load_weights(row["weights"]))
    assert (c.results / "seed.pt").is_file() and out["best"]["weights"] == str(c.results / "seed.pt")
    # Nothing landed on the second node's side, which could not even see this checkout: its workers ran
    # the code the driver shipped.
    assert c.files_on_second_node() == []
    if c.private:
        assert (ROOT / "cli.py").is_file() and not (c.second_view(ROOT) / "cli.py").exists()



def test_attaching_without_the_clusters_token_is_one_line(cluster):
    c = cluster
    # Ray sends no token to an explicit address unless RAY_AUTH_MODE=token ...
    no_mode = {k: v for k, v in c.env().items() if k != "RAY_AUTH_MODE"}
    proc = run_cli("search", "--target-ms", "1", "--address", c.address, "--device", TINY, "--name", "refused",
                   env=no_mode, timeout=60)
    assert_one_line_error(proc, c.address, "export RAY_AUTH_MODE=token")
    assert not (c.results / "runs" / "refused").exists()
    # ... and a wrong token is refused as well.
    proc = run_cli("netadapt", "--seed", "mobilenet_v3_small", "--address", c.address, "--device", TINY,
                   env=c.env(RAY_AUTH_TOKEN="0" * 32), timeout=60)
    assert_one_line_error(proc, c.address, "refused the token from $RAY_AUTH_TOKEN")


def test_netadapt_runs_proposals_on_both_nodes(cluster, tiny_predictor):
    from netadapt.proposals import smallest_network

    from .test_netadapt_loop import seed_spec

    c = cluster
    spec = seed_spec()
    spec.save(c.results / "na-seed.json")
    torch.manual_seed(0)
    save_weights(build_model(spec), c.results / "na-seed.pt")
    top = tiny_predictor.predict(spec)
    target = top - 0.2 * (top - tiny_predictor.predict(smallest_network(spec)))
    proc = run_cli("netadapt", "--address", c.address, "--seed", str(c.results / "na-seed.json"), "--device", TINY,
                   "--data", "digits", "--data-limit", "200", "--eval-limit", "100", "--steps", "2",
                   "--final-epochs", "0", "--batch-size", "64", "--no-measure-iterations", "--max-iterations", "1",
                   "--target-ms", f"{target:.6f}", "--delta", "0.005", "--workers", "2", "--name", "na", "--json",
                   env=c.env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    run = c.results / "netadapt" / "na"
    assert out["run_dir"] == str(run) and out["iterations"] == 1

    props = pd.read_csv(run / "proposals.csv", keep_default_na=False)
    ok = props[props["status"] == "ok"]
    assert len(ok) >= 2 and set(ok["node"]) == set(c.node_ids.values()), (list(props["node"]), c.node_ids)
    # The kept proposal's weights, computed on some node, were written by the driver and fit its network.
    kept = ArchSpec.load(run / "checkpoints" / "iter_001.json")
    build_model(kept).load_state_dict(load_weights(run / "checkpoints" / "iter_001.pt"))
    assert (run / "netadapt.pt").is_file() and (run / "result.json").is_file()
    assert c.files_on_second_node() == []


def test_netadapt_address_bad_input_is_one_line(capsys):
    import cli

    # No cluster needed: the address is checked before anything else happens.
    for args, needle in ((["--address", f"127.0.0.1:{_free_port()}"], "nothing answers"),
                         (["--address", "no-port-here"], "HOST:PORT"),
                         (["--address", "auto", "--workers", "0"], "--workers >= 1")):
        assert cli.main(["netadapt", *args, "--device", TINY]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --address") and needle in err[0], err
