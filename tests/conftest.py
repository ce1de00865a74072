import os

import pytest
import torch

# Tests must never reach a hub, and must not be slowed down by thread oversubscription on 2 cores.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def embedded_tokenizer():
    from sdft_core.model import EMBEDDED_MODEL, load_tokenizer

    return load_tokenizer(EMBEDDED_MODEL)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_tokenizer):
    """A randomly initialised 2-layer Llama with the embedded model's tokenizer: the training loop's logic without
    the embedded model's cost."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(embedded_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(path)
    embedded_tokenizer.save_pretrained(path)
    return str(path)
