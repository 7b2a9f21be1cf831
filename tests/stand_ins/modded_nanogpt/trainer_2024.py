import os
import sys
with open(sys.argv[0]) as f:
    code = f.read()
# A stand-in for a public 2024 speedrun trainer (written for this repo's tests, not taken from the
# speedrun): the same Hyperparameters fields, model-shape line, CUDA/NCCL/DDP/compile calls and log
# format that bench/parity.py adapts, around a small residual MLP language model.
import glob
import subprocess
import time
import uuid
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


@dataclass
class GPTConfig:
    vocab_size : int = 50304
    n_layer : int = 12
    n_head : int = 6
    n_embd : int = 768


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.h = nn.ModuleList([nn.Linear(config.n_embd, config.n_embd, bias=False) for _ in range(config.n_layer)])
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    def forward(self, idx, targets):
        x = F.rms_norm(self.wte(idx), (self.wte.embedding_dim,))
        for layer in self.h:
            x = x + F.relu(layer(F.rms_norm(x, (x.size(-1),)))).square()
        logits = self.lm_head(F.rms_norm(x, (x.size(-1),))).float()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def load(pattern):
    header = np.fromfile(sorted(glob.glob(pattern))[0], dtype=np.int32, count=256)
    assert header[0] == 20240520
    return np.fromfile(sorted(glob.glob(pattern))[0], dtype=np.uint16, offset=1024)


@dataclass
class Hyperparameters:
    input_bin : str = 'data/fineweb10B/fineweb_train_*.bin'
    input_val_bin : str = 'data/fineweb10B/fineweb_val_*.bin'
    batch_size : int = 8*64
    device_batch_size : int = 64
    sequence_length : int = 1024
    num_iterations : int = 1000
    warmup_iters : int = 0
    warmdown_iters : int = 300
    val_loss_every : int = 125
    val_tokens : int = 10485760
args = Hyperparameters()

assert torch.cuda.is_available()
dist.init_process_group(backend='nccl')
ddp_rank, ddp_world_size = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
device = f'cuda:{ddp_rank}'
torch.cuda.set_device(device)
B, T = args.device_batch_size, args.sequence_length
train_tokens, val_tokens = load(args.input_bin), load(args.input_val_bin)

num_vocab = 50304
model = GPT(GPTConfig(vocab_size=num_vocab, n_layer=12, n_head=6, n_embd=768))
model = torch.compile(model.cuda())
model = DDP(model, device_ids=[ddp_rank])
optimizer = torch.optim.Adam(model.module.parameters(), lr=0.01, betas=(0.9, 0.95))
def get_lr(it):
    return 1.0 if it < args.num_iterations - args.warmdown_iters else (args.num_iterations - it) / args.warmdown_iters
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, get_lr)
ctx = torch.amp.autocast(device_type='cuda', dtype=torch.bfloat16)

def batch(tokens, i):
    buf = torch.tensor(tokens[i * B * T:(i + 1) * B * T + 1].astype(np.int64))
    return buf[:-1].view(B, T).to('cuda'), buf[1:].view(B, T).to('cuda')

run_id = str(uuid.uuid4())
os.makedirs('logs', exist_ok=True)
logfile = f'logs/{run_id}.txt'
with open(logfile, 'w') as f:
    f.write('=' * 100 + '\n' + code + '=' * 100 + '\n')
    smi = subprocess.run(['nvidia-smi'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).stdout
    f.write(f'Running pytorch {torch.__version__}\nnvidia-smi:\n{smi}\n' + '=' * 100 + '\n')

def log(line):
    print(line)
    with open(logfile, 'a') as f:
        f.write(line + '\n')

training_time_ms, t0 = 0.0, time.time()
for step in range(args.num_iterations + 1):
    if step == args.num_iterations or step % args.val_loss_every == 0:
        torch.cuda.synchronize()
        training_time_ms += 1000 * (time.time() - t0)
        with torch.no_grad(), ctx:
            val_loss = sum(model(*batch(val_tokens, i)) for i in range(args.val_tokens // (B * T))) / (args.val_tokens // (B * T))
        dist.all_reduce(val_loss, op=dist.ReduceOp.AVG)
        log(f'step:{step}/{args.num_iterations} val_loss:{val_loss:.4f} train_time:{training_time_ms:.0f}ms step_avg:{training_time_ms / max(step, 1):.2f}ms')
        t0 = time.time()
    if step == args.num_iterations:
        break
    with ctx:
        loss = model(*batch(train_tokens, step))
    loss.backward()
    optimizer.step()
    scheduler.step()
    model.zero_grad(set_to_none=True)
    approx = training_time_ms + 1000 * (time.time() - t0)
    log(f'step:{step + 1}/{args.num_iterations} train_loss:{loss.item():.4f} train_time:{approx:.0f}ms step_avg:{approx / (step + 1):.2f}ms')
print(f'peak memory consumption: {torch.cuda.max_memory_allocated() // 1024 // 1024} MiB')
dist.destroy_process_group()
