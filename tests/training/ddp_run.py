"""One post-training run of a tiny sparse GPT-2 through the training loop, as ``torchrun`` launches it in
test_distributed.py: ``ddp_run.py OUT STEPS GRAD_ACCUM {ok,broken,fsdp,lora,fsdp-lora} SLEEP_S``. ``broken`` drops
the objective's cross-process average (the twin the equality test must catch), ``fsdp`` shards the weights over the
processes, ``lora`` trains rank-4 adapters (merged before the weights are saved); SLEEP_S slows each step so a test
can kill it."""

import json
import sys
import time

import torch
import transformers

from spartan_core import sparsify
from spartan_core.objective.geco import GECO
from spartan_core.objective.sparsity import SparsityUnderCE
from spartan_core.training import RunFolder, TrainConfig, train
from spartan_core.training.distributed import processes
from spartan_core.training.lora import merge_lora, with_lora

out, steps, accum, variant, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
if variant == "broken":
    SparsityUnderCE.reduce = lambda self, mean: None
transformers.logging.set_verbosity_error()
torch.manual_seed(0)
config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=50, n_positions=16, resid_pdrop=0.0,
                                 embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
model = sparsify(transformers.GPT2LMHeadModel(config))
if "lora" in variant:
    model = with_lora(model, 4)
ids = torch.randint(1, 50, (32, 16), generator=torch.Generator().manual_seed(0))
result = train(model, {"input_ids": ids}, eval_data={"input_ids": ids[:8]},
               config=TrainConfig(steps=steps, batch_size=8, grad_accum=accum, lr=3e-3, eval_every=3, threads=1,
                                  progress=False, checkpoint_every=1, fsdp=variant.startswith("fsdp")),
               objective=SparsityUnderCE(GECO(tau=3.5, eta=1.0, beta_init=0.1)), folder=RunFolder(out),
               on_step=lambda record: time.sleep(pause))
model = merge_lora(model)
if processes().main:
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, f"{out}/final.pt")
    with open(f"{out}/history.json", "w") as f:
        json.dump(result.history, f)
