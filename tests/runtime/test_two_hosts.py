"""Two hosts: two ``torchrun`` launchers (``--nnodes 2``), one worker each, equal one process.

On loopback every run starts two launchers on this machine, as docs/multi-host.md tells
two machines to: the static rendezvous (``--node-rank 0/1 --master-addr``) and the c10d
rendezvous (``--rdzv-endpoint --rdzv-id``); each command is run once, each launch style
at least once. Where this user may create network namespaces (root, ``ip netns``), the
two launchers also run in two namespaces joined by a virtual cable, each with an address
of its own — two hosts as far as the network can tell — with the documented flags
(``--local-addr``, ``GLOO_SOCKET_IFNAME``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from distlstm.cli import main
from tests.launch import free_port
from tests.small_runs import assert_same_run, command_args

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

STEPS = {"train": 6, "es": 6, "online": 12}
JOB = f"two-hosts-{uuid.uuid4().hex[:8]}"  # the c10d rendezvous id: one per test session


def launcher(node: int, rendezvous: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """torchrun for node ``node`` of 2 (one worker), meeting at ``host:port`` with the ``rendezvous`` backend."""
    common = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
    if rendezvous == "static":
        return [*common, "--node-rank", str(node), "--master-addr", host, "--master-port", str(port)]
    return [*common, "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{host}:{port}", "--rdzv-id", JOB]


def run_two_nodes(commands: list[list[str]], timeout: float = 600) -> None:
    """Start both launchers at once (each waits for the other) and fail with their output unless both succeed."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in commands]
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for node, (p, (_, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"node {node}: {err[-3000:]}"


@pytest.mark.parametrize(("command", "rendezvous"), [("train", "static"), ("es", "c10d"), ("online", "c10d")])
def test_two_launchers_on_loopback_equal_one_process(tmp_path: Path, command: str, rendezvous: str):
    out, one, steps = tmp_path / "two-hosts", tmp_path / "one", STEPS[command]
    cli = ["-m", "distlstm.cli", *command_args(command, tmp_path, 2), "--steps", str(steps), "--out", str(out)]
    port = free_port()
    run_two_nodes([[*launcher(node, rendezvous, port), *cli] for node in (0, 1)])
    assert main([*command_args(command, tmp_path, 1), "--steps", str(steps), "--out", str(one)]) == 0
    assert_same_run(out, one, command)


def _namespaces_usable() -> bool:
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    name = f"dlprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode == 0
    if made:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    return made


@pytest.fixture
def two_namespaces():
    """Two network namespaces joined by a veth pair, at 10.213.0.1 and 10.213.0.2, where this machine's hostname
    resolves to the namespace's own address (as on a host in a network); yields (namespace, interface, address)."""
    if not _namespaces_usable():
        pytest.skip("network namespaces need root and `ip netns`")
    tag = f"{os.getpid() % 100000}"
    spaces, links = [f"dl{tag}h{i}" for i in (0, 1)], [f"dl{tag}v{i}" for i in (0, 1)]
    setup = [["ip", "netns", "add", spaces[0]], ["ip", "netns", "add", spaces[1]],
             ["ip", "link", "add", links[0], "type", "veth", "peer", "name", links[1]]]
    for i in (0, 1):
        setup += [["ip", "link", "set", links[i], "netns", spaces[i]],
                  ["ip", "-n", spaces[i], "addr", "add", f"10.213.0.{i + 1}/24", "dev", links[i]],
                  ["ip", "-n", spaces[i], "link", "set", links[i], "up"],
                  ["ip", "-n", spaces[i], "link", "set", "lo", "up"]]
    hosts = [Path("/etc/netns", space) for space in spaces]  # `ip netns exec` shows NAME/hosts as /etc/hosts
    try:
        for cmd in setup:
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"{' '.join(cmd)}: {done.stderr.strip()}")
        for i, folder in enumerate(hosts):
            folder.mkdir(parents=True)
            (folder / "hosts").write_text(f"127.0.0.1 localhost\n10.213.0.{i + 1} {socket.gethostname()}\n")
        yield [(spaces[i], links[i], f"10.213.0.{i + 1}") for i in (0, 1)]
    finally:
        for space, folder in zip(spaces, hosts, strict=True):  # a namespace takes its end of the cable with it
            subprocess.run(["ip", "netns", "delete", space], capture_output=True)
            shutil.rmtree(folder, ignore_errors=True)


def test_two_network_namespaces_equal_one_process(tmp_path: Path, two_namespaces):
    """Two hosts with their own addresses: node 0 hosts the rendezvous at its address, each launcher names its
    own address (--local-addr) and gloo's interface (GLOO_SOCKET_IFNAME), as docs/multi-host.md says."""
    command, steps = "es", STEPS["es"]
    out, one = tmp_path / "two-hosts", tmp_path / "one"
    cli = ["-m", "distlstm.cli", *command_args(command, tmp_path, 2), "--steps", str(steps), "--out", str(out)]
    (_, _, host0), _ = two_namespaces
    commands = []
    for node, (space, link, address) in enumerate(two_namespaces):
        torchrun = launcher(node, "c10d", 29400, host=host0)
        torchrun += ["--local-addr", address, *(["--rdzv-conf", "is_host=1"] if node == 0 else [])]
        commands.append(["ip", "netns", "exec", space, "env", f"GLOO_SOCKET_IFNAME={link}", *torchrun, *cli])
    run_two_nodes(commands)
    assert main([*command_args(command, tmp_path, 1), "--steps", str(steps), "--out", str(one)]) == 0
    assert_same_run(out, one, command)


LISTENING = """
import pathlib
from distlstm.runtime.dist import init_distributed, shutdown_distributed, worker_env
init_distributed()
if worker_env().rank == 0:  # IPv4 sockets listening now, by address (hex, as /proc/net/tcp writes them)
    rows = [line.split() for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]]
    print("listening:", " ".join(sorted({r[1].split(":")[0] for r in rows if r[3] == "0A"})))
shutdown_distributed()
"""


def test_a_one_host_run_listens_on_loopback_where_the_hostname_has_a_network_address(two_namespaces):
    """gloo would listen on the hostname's address (reachable from the network); a one-host job names loopback."""
    space, _, address = two_namespaces[0]
    resolved = subprocess.run(["ip", "netns", "exec", space, sys.executable, "-c",
                               "import socket; print(socket.gethostbyname(socket.gethostname()))"],
                              capture_output=True, text=True)
    assert resolved.stdout.strip() == address  # the case where gloo left alone listens on the network
    done = subprocess.run(["ip", "netns", "exec", space, "env", "OMP_NUM_THREADS=1", sys.executable, "-m",
                           "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--no-python",
                           sys.executable, "-c", LISTENING], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    listening = next(line for line in done.stdout.splitlines() if line.startswith("listening:")).split()[1:]
    loopback, network = "0100007F", socket.inet_aton(address)[::-1].hex().upper()
    assert loopback in listening and network not in listening, listening
