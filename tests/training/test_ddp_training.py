"""Two CPU processes (gloo, launched with torchrun): DDP keeps replicas equal and resume stays bit-exact."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from torch import nn
    from seedkit.data.buckets import BucketBatchSampler
    from seedkit.training.config import EMAConfig, OptimConfig, TrainConfig
    from seedkit.training.trainer import StepOutput, Trainer, make_accelerator

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 32
        def __getitem__(self, index):
            return torch.randn(8, generator=torch.Generator().manual_seed(index))

    def objective(model, batch, generator):
        noise = torch.randn(batch.shape, generator=generator)
        return StepOutput(loss=((model(batch + noise) - batch) ** 2).mean(), num_samples=batch.shape[0])

    def trainer(output_dir):
        config = TrainConfig(output_dir=output_dir, max_steps=6, batch_size=2, grad_accum_steps=2, seed=0,
                             trackers=[], progress_bar=False, checkpoint_every=3)
        accelerator = make_accelerator(config)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 8))
        sampler = BucketBatchSampler([(1, 1, 1)] * 32, batch_size=2, seed=0,
                                     num_replicas=accelerator.num_processes, rank=accelerator.process_index)
        return Trainer(config, OptimConfig(lr=1e-2), EMAConfig(decay=0.9), model, objective, Items(), sampler,
                       accelerator)

    out = sys.argv[1]
    straight = trainer(out + "/straight")
    straight.train()
    first = trainer(out + "/resumed")
    first.train(stop_at_step=3)
    second = trainer(out + "/resumed")
    second.train()
    rank = straight.accelerator.process_index
    flat = lambda t: torch.cat([p.detach().flatten() for p in t.unwrapped_model.parameters()]).tolist()
    result = {"world": straight.accelerator.num_processes, "straight": straight.losses,
              "resumed": first.losses + second.losses, "params": flat(straight), "params_resumed": flat(second)}
    with open(f"{out}/rank{rank}.json", "w") as handle:
        json.dump(result, handle)
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_on_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(script), str(tmp_path)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert ranks[0]["world"] == 2
    for result in ranks:
        assert result["resumed"] == result["straight"]  # bit-exact resume in every process
        assert result["params_resumed"] == result["params"]
    assert ranks[0]["params"] == ranks[1]["params"]  # gradients were all-reduced: replicas stay identical
    assert ranks[0]["straight"] != ranks[1]["straight"]  # while each process saw its own data
    assert list((tmp_path / "resumed" / "checkpoints").glob("step-*/rng-rank1.safetensors"))  # per-process RNG
