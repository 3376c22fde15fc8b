"""Starting and stopping ``torch.distributed`` for every distributed mode.

``torchrun`` (or any launcher) sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; this
module reads them once. The backend is NCCL when this process has a GPU and gloo
otherwise. gloo listens on the address the hostname resolves to; a job whose workers
all run on this host is told to use the loopback interface (:func:`keep_gloo_on_loopback`).
torchrun's own stores are not ours to bind: measured with ``ss -ltnp`` under torch
2.13, they listen on all interfaces (``*:PORT``) even with ``--standalone`` or
``--rdzv-endpoint 127.0.0.1:PORT``, so on a machine reachable from an untrusted network
firewall those ports (docs/multi-host.md). Each restart attempt of ``torchrun
--max-restarts`` meets in a store prefix of its own (:func:`attempt_store`). A peer that
does not answer within ``timeout_s`` ends the run with an error instead of hanging.

NCCL moves only CUDA tensors, gloo moves CPU tensors: every collective here goes
through :func:`collective_device`, so callers hand in tensors wherever they live
(the filters and ES keep θ and fitnesses on the CPU) and get them back there.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def available_backends() -> dict[str, bool]:
    """Which ``torch.distributed`` backends this build offers (gloo, nccl, mpi)."""
    if not dist.is_available():
        return {}
    return {"gloo": dist.is_gloo_available(), "nccl": dist.is_nccl_available(), "mpi": dist.is_mpi_available()}


def launched_env() -> DistEnv | None:
    """The launcher's rank and world size, or None when not launched by torchrun (or similar)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise ValueError(f"RANK/WORLD_SIZE must be integers, got {os.environ['RANK']!r}/"
                         f"{os.environ['WORLD_SIZE']!r}") from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK {rank} is outside WORLD_SIZE {world}")
    return DistEnv(rank, world, local)


def worker_env() -> DistEnv:
    """The launcher's rank and world size, or rank 0 of 1 when run alone."""
    return launched_env() or DistEnv(0, 1, 0)


def die_with_parent() -> None:
    """Ask Linux to send this worker SIGTERM when its launcher dies (no orphans training on after kill -9).

    SIGTERM reaches the run loop's handler, which checkpoints and stops. A no-op where
    ``prctl`` is not available.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        return


def init_distributed(timeout_s: float = 120.0, backend: str | None = None) -> DistEnv:
    """Join the process group described by the environment (idempotent).

    ``backend`` defaults to NCCL when this process has a GPU, gloo otherwise.
    """
    env = launched_env()
    if env is None:
        raise RuntimeError("not launched by torchrun: RANK and WORLD_SIZE are not set "
                           "(run under `torchrun --nproc-per-node N ...`)")
    if not dist.is_initialized():
        die_with_parent()
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        use_nccl = backend == "nccl" if backend is not None else \
            torch.cuda.is_available() and dist.is_nccl_available()
        if use_nccl:
            torch.cuda.set_device(env.local_rank)
        else:
            keep_gloo_on_loopback()
        timeout = timedelta(seconds=timeout_s)
        dist.init_process_group("nccl" if use_nccl else "gloo", store=attempt_store(timeout), rank=env.rank,
                                world_size=env.world_size, timeout=timeout)
    return env


def keep_gloo_on_loopback() -> None:
    """Make a one-host job's gloo sockets listen on the loopback interface only.

    gloo listens on the address this machine's hostname resolves to (often its network
    address, reachable from other machines), or on the interface ``GLOO_SOCKET_IFNAME``
    names. When every worker runs on this host (torchrun's LOCAL_WORLD_SIZE equals
    WORLD_SIZE) and the user named no interface, the loopback interface is named, so
    nothing of a one-host run but torchrun's own store listens on the network.
    """
    if "GLOO_SOCKET_IFNAME" in os.environ or os.environ.get("LOCAL_WORLD_SIZE") != os.environ.get("WORLD_SIZE"):
        return
    names = {name for _, name in socket.if_nameindex()} if hasattr(socket, "if_nameindex") else set()
    loopback = next((name for name in ("lo", "lo0") if name in names), None)
    if loopback is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = loopback


def restart_count() -> int:
    """How many times ``torchrun --max-restarts`` has restarted this worker group (0: the first attempt)."""
    text = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or "0"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"TORCHELASTIC_RESTART_COUNT must be an integer, got {text!r}") from None


def restarts_left() -> int:
    """How many more times ``torchrun --max-restarts`` will restart the workers if this attempt fails."""
    text = os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or "0"
    try:
        return max(0, int(text) - restart_count())
    except ValueError:
        raise ValueError(f"TORCHELASTIC_MAX_RESTARTS must be an integer, got {text!r}") from None


def launcher_job() -> str | None:
    """Who launched this worker: torchrun's job (rendezvous id and store address), None outside torchrun.

    The same on every worker and every restart attempt of one ``torchrun`` job, and
    different for the next job: ``--standalone`` draws a fresh rendezvous id, and the
    c10d rendezvous's workers' store listens on a port chosen when the job starts (a
    fixed ``--rdzv-id`` alone would not tell two jobs apart). The static rendezvous
    (``--master-addr/--master-port``) has a fixed address: there ``--rdzv-id`` alone
    tells jobs apart (torchrun's default id is ``none``).
    """
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is None:
        return None
    return f"{run_id} {os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"


def attempt_store(timeout: timedelta) -> dist.Store:
    """The launcher's key-value store (``env://``), with a key space of this restart attempt's own.

    torchrun's c10d rendezvous keeps one store for the whole job, and every attempt's
    workers connect to it at the same MASTER_ADDR:MASTER_PORT without a per-attempt
    prefix. After a restart, the workers of the new attempt would read the gloo
    addresses the previous attempt's (now dead) workers published there and fail with
    "connectFullMesh failed … Connection refused". The prefix ``distlstm/attempt_N``
    (N = TORCHELASTIC_RESTART_COUNT) makes each attempt meet only its own peers.
    """
    store, _, _ = next(dist.rendezvous("env://", timeout=timeout))
    return dist.PrefixStore(f"distlstm/attempt_{restart_count()}", store)


def collective_device() -> torch.device:
    """Where the process group's backend moves tensors: this rank's GPU under NCCL, the CPU otherwise."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_cat(local: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Every rank's ``local`` (same shape on all ranks), concatenated along ``dim`` in rank order.

    The result lives on ``local``'s device, whatever device the backend moved it on.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return local
    sent = local.to(collective_device()).contiguous()
    parts = [torch.empty_like(sent) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, sent)
    return torch.cat(parts, dim=dim).to(local.device)


def all_reduce_(tensor: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    """``dist.all_reduce`` in place on ``tensor`` wherever it lives (moved to the backend's device and back)."""
    if not dist.is_initialized():
        return tensor
    moved = tensor.to(collective_device())
    dist.all_reduce(moved, op=op)
    if moved is not tensor:
        tensor.copy_(moved)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """``dist.broadcast`` in place on ``tensor`` wherever it lives (moved to the backend's device and back)."""
    if not dist.is_initialized():
        return tensor
    moved = tensor.to(collective_device())
    dist.broadcast(moved, src)
    if moved is not tensor:
        tensor.copy_(moved)
    return tensor


def check_same_across_ranks(theta: torch.Tensor, when: str) -> None:
    """Raise unless every rank holds the same θ: a two-number checksum, all-gathered and compared."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    checksum = torch.stack([theta.sum(), (theta * theta).sum()]).double()
    parts = all_gather_cat(checksum).view(-1, 2)
    if not bool((parts == parts[0]).all()):
        raise RuntimeError(f"workers hold different parameters after {when} (checksums {parts.tolist()}); "
                           "run every worker with the same version and threads")


def shutdown_distributed(clean: bool = True) -> None:
    """Leave the process group once every rank is done (no rank tears it down under a peer).

    ``clean=False`` (after a failure) leaves without the final barrier: a dead peer would
    only add a second error to the first.
    """
    if dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def default_store() -> dist.Store | None:
    """The store of the default process group (under torchrun: a client of the launcher's store), or None."""
    if not dist.is_initialized():
        return None
    from torch.distributed.distributed_c10d import _get_default_store

    return _get_default_store()


def regroup(store: dist.Store | None, key: str, rank: int, members: list[int], position: int, *, wait_s: float,
            timeout_s: float) -> tuple[list[int], int]:
    """Leave the broken process group and form a new one with the members that report within ``wait_s``.

    ``rank`` and ``members`` are launch ranks. Each survivor writes ``key/in/RANK`` =
    ``position``; once all members reported, or ``wait_s`` passed, it proposes the
    ones it saw with ``compare_set`` on ``key/decision``: the first proposal wins and
    every survivor reads it. The new group (same backend) lives under the prefix
    ``key/pg`` of the same store, ranks renumbered in ascending launch-rank order.
    Returns (the launch ranks of the new group, the smallest position reported).
    A gloo group cannot shrink, and ``new_group`` needs the dead ranks too: hence a
    fresh default group. The store must outlive the dead worker (under torchrun it
    is the launcher's; a worker that hosts it must not be the one that dies).
    """
    if store is None:
        raise RuntimeError("no store to agree on through (the process group was not initialised)")
    backend = dist.get_backend() if dist.is_initialized() else "gloo"
    if dist.is_initialized():
        dist.destroy_process_group()
    keys = {r: f"{key}/in/{r}" for r in members}
    store.set(keys[rank], str(position))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not store.check(list(keys.values())):
        if store.check([f"{key}/decision"]):
            break
        time.sleep(0.05)
    seen = ";".join(f"{r}:{int(store.get(keys[r]))}" for r in members if store.check([keys[r]]))
    decided = store.compare_set(f"{key}/decision", "", seen).decode()
    positions = {int(r): int(p) for r, p in (part.split(":") for part in decided.split(";"))}
    if rank not in positions:
        raise dist.DistError(f"rank {rank}: the other workers went on without this one (it reported after "
                           f"{wait_s:.0f} s); its nodes are counted as lost")
    survivors = sorted(positions)
    dist.init_process_group(backend, store=dist.PrefixStore(f"{key}/pg", store), rank=survivors.index(rank),
                            world_size=len(survivors), timeout=timedelta(seconds=timeout_s))
    return survivors, min(positions.values())


def is_peer_failure(err: BaseException) -> bool:
    """Whether ``err`` is torch.distributed reporting a peer that died, hung or closed its connection."""
    if isinstance(err, dist.DistError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(s in text for s in (
        "connection closed by peer", "connection reset by peer", "timed out", "gloo", "nccl", "broken pipe"))


@contextlib.contextmanager
def process_group(env: DistEnv) -> Iterator[None]:
    """Join the process group for the block when ``env`` has several workers, and leave it afterwards."""
    if env.world_size == 1:
        yield
        return
    init_distributed()
    try:
        yield
    finally:
        shutdown_distributed()
