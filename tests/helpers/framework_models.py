"""Tiny random-init models of transformers and timm, built from configs (nothing downloaded),
and quiet CPU settings of transformers' Trainer and Lightning's, for the real-model and
framework tests."""

import pytest
import torch


def _quiet(config):
    # tiny vocabularies: the default special-token ids (GPT-2's 50256) would be out of range
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(config, key, None) is not None:
            setattr(config, key, 0)
    return config


def tiny_gpt2(n_layer=2):
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(
        _quiet(GPT2Config(n_layer=n_layer, n_embd=16, n_head=2, vocab_size=50, n_positions=8))
    )


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        _quiet(
            LlamaConfig(
                num_hidden_layers=1,
                hidden_size=16,
                intermediate_size=24,
                num_attention_heads=2,
                num_key_value_heads=1,
                vocab_size=50,
                max_position_embeddings=8,
            )
        )
    )


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(
        _quiet(
            BertConfig(
                num_hidden_layers=1,
                hidden_size=16,
                intermediate_size=24,
                num_attention_heads=2,
                vocab_size=50,
                max_position_embeddings=8,
                type_vocab_size=2,
            )
        )
    )


def tiny_t5():
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(
        _quiet(
            T5Config(
                num_layers=1,
                d_model=16,
                d_kv=8,
                num_heads=2,
                d_ff=24,
                vocab_size=50,
                relative_attention_num_buckets=8,
                decoder_start_token_id=0,
            )
        )
    )


def import_timm():
    """timm, or a skip saying why: with torch 2.13's CPU wheel, PyPI's torchvision (which
    timm imports) does not load, and CI installs timm only in the torch 2.14.1 leg."""
    try:
        import timm
    except Exception as e:  # ImportError, or torchvision's RuntimeError on a mismatched torch
        pytest.skip(
            f"timm does not import here ({type(e).__name__}: {e}); the timm tests run "
            f"in the torch 2.14.1 + torchvision CI leg"
        )
    return timm


class Tokens(torch.utils.data.Dataset):
    """8 sequences of 8 token ids below 50 (the tiny models' vocabulary), labels = inputs."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        ids = (torch.arange(8) * (i + 1)) % 50
        return {"input_ids": ids, "labels": ids}


def hf_training_args(tmp_path, **kw):
    """transformers' TrainingArguments on the CPU that write, log and report nothing."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        **kw,
    )


def lightning_trainer(max_steps: int):
    """A Lightning Trainer on one CPU device that logs, checkpoints and prints nothing."""
    import lightning

    return lightning.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
