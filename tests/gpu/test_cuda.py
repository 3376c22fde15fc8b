"""The GPU path: NCCL collectives on CUDA tensors, the LSTM against cuDNN, mixed precision.

Every test here needs CUDA and is skipped without it (``make gpu-check`` runs them).
NCCL refuses two ranks on one GPU, so the two-rank checks also need two GPUs; on one
GPU a one-rank NCCL group still proves that CPU tensors are moved to the device.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import distlstm
from tests.launch import free_port

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs one GPU per rank: 2 GPUs")


def _nccl_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from distlstm.network import InProcessTransport, make_topology
    from distlstm.network.torch_transport import TorchDistTransport
    from distlstm.runtime.dist import all_gather_cat, all_reduce_, broadcast_, collective_device
    from tests.network.test_torch_transport import TOPOLOGY, rounds

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    result: dict = {"device": str(collective_device())}
    summed = all_reduce_(torch.tensor([1.0, float(rank)], dtype=torch.float64))  # a CPU tensor through NCCL
    result["sum"] = summed.tolist()
    result["sum_device"] = summed.device.type
    result["broadcast"] = broadcast_(torch.tensor([float(rank + 5)]), 0).tolist()
    gathered = all_gather_cat(torch.tensor([float(rank)]))
    result["gather"], result["gather_device"] = gathered.tolist(), gathered.device.type
    if world > 1:
        topo = make_topology(**TOPOLOGY)
        result["rounds"] = rounds(TorchDistTransport(topo, rank, world))
        result["reference"] = rounds(InProcessTransport(topo)) if rank == 0 else None
    Path(out, f"{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def test_one_rank_nccl_group_moves_cpu_tensors_to_the_gpu_and_back(tmp_path):
    mp.spawn(_nccl_worker, args=(1, free_port(), str(tmp_path)), nprocs=1, join=True)
    got = json.loads(Path(tmp_path, "0.json").read_text())
    assert got["device"] == "cuda:0"
    assert got["sum"] == [1.0, 0.0] and got["sum_device"] == "cpu"
    assert got["broadcast"] == [5.0] and got["gather"] == [0.0] and got["gather_device"] == "cpu"


@two_gpus
def test_two_rank_nccl_collectives_and_transport_rounds(tmp_path):
    mp.spawn(_nccl_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    parts = [json.loads(Path(tmp_path, f"{r}.json").read_text()) for r in range(2)]
    reference = parts[0]["reference"]
    for r, got in enumerate(parts):
        assert got["device"] == f"cuda:{r}"
        assert got["sum"] == [2.0, 1.0] and got["sum_device"] == "cpu"
        assert got["broadcast"] == [5.0] and got["gather"] == [0.0, 1.0]
    merged: dict = {"exchange": {}, "route": {}, "bytes": [], "messages": []}
    for got in parts:
        for key in ("exchange", "route"):
            merged[key].update(got["rounds"][key])
        merged["bytes"] += got["rounds"]["bytes"]
        merged["messages"] += got["rounds"]["messages"]
    assert merged == json.loads(json.dumps(reference))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", ["lstm", "sharpened", "peephole", "lstmp"])
def test_lstm_on_the_gpu_equals_the_cpu_and_cudnn(name, dtype):
    """The same weights give the same outputs on the GPU as on the CPU (and as cuDNN's nn.LSTM for the plain cell).

    cuDNN's RNNs use TF32 on Ampere and later unless told not to
    (``torch.backends.cudnn.allow_tf32``, on by default): that alone moves float32
    outputs by ~5e-5, so float32 is compared with TF32 off, float64 to rounding.
    """
    tol = {"atol": 1e-12, "rtol": 1e-10} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-4}
    torch.manual_seed(0)
    kw = {"proj_size": 4} if name == "lstmp" else {}
    cpu = distlstm.LSTM(5, 8, 2, batch_first=True, cell=name, dtype=dtype, **kw)
    gpu = distlstm.LSTM(5, 8, 2, batch_first=True, cell=name, dtype=dtype, **kw).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(3, 7, 5, dtype=dtype)
    lengths = torch.tensor([7, 4, 1])
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        y_cpu, _ = cpu(x, lengths=lengths)
        y_gpu, _ = gpu(x.cuda(), lengths=lengths)  # CPU lengths, as nn.LSTM takes them
        torch.testing.assert_close(y_gpu.cpu(), y_cpu, **tol)
        if name == "lstm":
            ref = torch.nn.LSTM(5, 8, 2, batch_first=True, dtype=dtype).cuda()
            ref.load_state_dict(cpu.state_dict())
            torch.testing.assert_close(gpu(x.cuda())[0], ref(x.cuda())[0], **tol)


def test_mixed_precision_training_on_the_gpu_follows_float32_and_resumes(tmp_path):
    from distlstm.bptt.tasks import LongLagTask
    from distlstm.modes.ddp import DDPMode, OptimConfig
    from distlstm.runs.config import LoopConfig, config_document
    from distlstm.runs.loop import RunResult, run

    def train(amp: bool, folder: Path | None = None, steps: int = 6, resume: bool = False) -> RunResult:
        task = LongLagTask(min_len=24, train_size=64, test_size=16, batch_size=8)
        optim, loop = OptimConfig(amp=amp), LoopConfig(steps=steps, eval_every=3, progress=False)
        return run(DDPMode(lambda _r, _w: task, optim), loop, folder=folder, resume=resume,
                   config=config_document("train", "ddp", {"optim": optim, "loop": loop}))

    def losses(result: RunResult) -> list[float]:  # step rows only: the first row is the evaluation before step 1
        values = (r.get("train_loss") for r in result.rows)
        return [v for v in values if isinstance(v, float) and not math.isnan(v)]

    full, half = (losses(train(amp)) for amp in (False, True))
    assert all(torch.isfinite(torch.tensor(half)))
    assert half[0] == pytest.approx(full[0], rel=2e-2)  # the same model and batch: float16 rounding only
    # stopped and resumed: the gradient scaler's state comes back with the checkpoint
    train(True, tmp_path / "amp", steps=3)
    resumed = losses(train(True, tmp_path / "amp", resume=True))
    assert resumed == pytest.approx(half, rel=1e-5)


def test_the_cell_benchmark_runs_against_cudnn():
    from distlstm.bench.cells import bench_cells

    rows = bench_cells((32,), batch=4, steps=5, repeats=1, device="cuda")
    names = {r.name for r in rows}
    assert "nn.LSTM (baseline)" in names and all(r.ms > 0 for r in rows)


def test_device_flag_trains_on_the_gpu_and_on_the_cpu_alike(tmp_path):
    """`--device cuda` and `--device cpu` of one float64 run end with the same weights (up to rounding)."""
    from distlstm.cli import main
    from distlstm.modes import load_run

    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question. " * 40)
    args = ["train", "--task", "char-lm", "--text", str(text), "--hidden", "16", "--window", "8", "--batch", "4",
            "--dtype", "float64", "--steps", "6", "--eval-chars", "200", "--no-progress"]
    assert main([*args, "--device", "cuda", "--out", str(tmp_path / "gpu")]) == 0
    assert main([*args, "--device", "cpu", "--out", str(tmp_path / "cpu")]) == 0
    gpu, cpu = load_run(tmp_path / "gpu").model.state_dict(), load_run(tmp_path / "cpu").model.state_dict()
    for k, v in cpu.items():
        torch.testing.assert_close(gpu[k].cpu(), v, rtol=1e-9, atol=1e-9)
    assert main(["es", "--device", "cuda", "--out", str(tmp_path / "es")]) == 2  # ES keeps θ on the CPU: refused


def test_word_lm_with_dropout_trains_on_the_gpu_as_on_the_cpu(tmp_path):
    """Dropout masks and sampled candidates come from CPU generators: a float64 run is the same on either device."""
    from distlstm.cli import main
    from distlstm.modes import load_run

    text = tmp_path / "w.txt"
    text.write_text("the king is dead long live the king and the queen .\n" * 60)
    args = ["train", "--task", "word-lm", "--text", str(text), "--hidden", "16", "--embedding", "8", "--proj", "8",
            "--window", "5", "--batch", "2", "--samples", "5", "--vocab-size", "12", "--dropout", "0.3",
            "--eval-tokens", "50", "--cell", "glstm", "--cell-opt", "groups=2", "--dtype", "float64",
            "--steps", "4", "--no-progress"]
    assert main([*args, "--device", "cuda", "--out", str(tmp_path / "gpu")]) == 0
    assert main([*args, "--device", "cpu", "--out", str(tmp_path / "cpu")]) == 0
    gpu, cpu = load_run(tmp_path / "gpu").model.state_dict(), load_run(tmp_path / "cpu").model.state_dict()
    for k, v in cpu.items():
        torch.testing.assert_close(gpu[k].cpu(), v, rtol=1e-9, atol=1e-9)


def test_generation_on_the_gpu_with_a_cpu_generator_equals_the_cpu():
    from distlstm.models.networks import CharLM

    torch.manual_seed(0)
    model = CharLM(vocab_size=11, hidden_size=8).double()
    prompt = torch.tensor([1, 2, 3])
    want = model.generate(prompt, 12, generator=torch.Generator().manual_seed(3))
    got = model.cuda().generate(prompt.cuda(), 12, generator=torch.Generator().manual_seed(3))
    assert got.device.type == "cuda" and got.cpu().tolist() == want.tolist()
