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
