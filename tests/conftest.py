import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

transformers.logging.set_verbosity_error()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def token_blocks(n=32, t=12, seed=0):
    """Random token blocks (labels = inputs) for a tiny model's training or held-out data."""
    ids = torch.randint(1, 50, (n, t), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "labels": ids.clone()}


def tiny_gpt2(vocab=50, layers=2, heads=4, width=32, positions=64):
    config = transformers.GPT2Config(
        n_layer=layers, n_head=heads, n_embd=width, vocab_size=vocab, n_positions=positions,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    return transformers.GPT2LMHeadModel(config)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine two threads can be 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_zoo(monkeypatch, one_torch_thread):
    """``zoo.load_sparse`` post-training a tiny GPT-2 for real, so a study reads a run's actual fields; returns the
    list of (name, recipe, dense_overrides) calls."""
    from dataclasses import asdict

    from spartan_core import zoo
    from spartan_core.training.posttrain import SparseRecipe, post_train
    from spartan_core.zoo.loaded import LoadedModel

    calls = []

    def load_sparse(name, recipe, *, dense_overrides=None, progress=True, **_):
        calls.append((name, dict(recipe), dense_overrides))
        resolved = SparseRecipe.from_any({**dict(steps=6, batch_size=8, eval_every=3, eval_batch_size=16), **recipe})
        result = post_train(tiny_gpt2(), token_blocks(), token_blocks(seed=1), resolved, progress=False)
        info = {"tau": result.tau, "tau_reference": result.tau_reference, "recipe": asdict(resolved),
                "dense_train_ce": result.dense_train_ce, "heldout_split": "validation", "best_step": result.best_step,
                "train_wall_time_s": result.wall_time_s, "metrics": result.metrics}
        return LoadedModel(name=name, model=result.model, tokenizer=None, data={}, info=info,
                           history=result.history, evals=result.evals, run=result)

    monkeypatch.setattr(zoo, "load_sparse", load_sparse)
    return calls


@pytest.fixture(scope="session")
def local_model(tmp_path_factory):
    """A tiny GPT-2 with the real GPT-2 BPE, saved as a local model directory."""
    from spartan_core.data.tokenizers import gpt2_tokenizer

    path = tmp_path_factory.mktemp("model")
    tiny_gpt2(vocab=50257, width=16, heads=2, positions=64).save_pretrained(path)
    gpt2_tokenizer().save_pretrained(path)
    text = tmp_path_factory.mktemp("text") / "plays.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 40)
    return path, text
