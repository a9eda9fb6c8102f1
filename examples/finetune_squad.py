"""Fine-tune BERT on SQuAD v1.1 with the Hugging Face Trainer under kwatt.

The script that examples/huggingface-finetune.yaml runs. Needs torch, transformers,
datasets and evaluate (and accelerate, which the Trainer uses), and kwatt_client
(standard library only). The arguments are the Trainer's own, as in Hugging Face's
example scripts, so kwatt's batch size comes in as
`--per_device_train_batch_size=$(KWATT_BATCH_SIZE)`. Evaluate once per epoch
(`--eval_strategy=epoch`): each evaluation reports `eval_f1` (SQuAD F1, 0 to 100) to
kwatt through its Trainer callback, which also stops training when the sidecar says so.

    python finetune_squad.py --output_dir=/tmp/squad --eval_strategy=epoch \\
        --per_device_train_batch_size=32 [--model_name_or_path=bert-base-uncased] ...
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import evaluate
import numpy as np
from datasets import load_dataset
from transformers import (
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    EvalPrediction,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

from kwatt_client import Kwatt
from kwatt_client.hf import KwattCallback

MAX_LENGTH, STRIDE = 384, 128  # tokens per window, overlap between windows of one context
N_BEST, MAX_ANSWER = 20, 30  # start/end candidates per window, longest answer in tokens


@dataclass
class ModelArguments:
    model_name_or_path: str = "bert-base-uncased"


def featurize(examples: dict[str, list[Any]], tokenizer: Any) -> Any:
    """Questions and contexts as overlapping windows, with the answer's token span in each.

    A window without the answer points at [CLS] (position 0). Offsets outside the
    context are set to None so that evaluation only picks spans from the context.
    """
    enc = tokenizer(
        [q.lstrip() for q in examples["question"]],
        examples["context"],
        truncation="only_second",
        max_length=MAX_LENGTH,
        stride=STRIDE,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    samples = enc.pop("overflow_to_sample_mapping")
    starts, ends, ids = [], [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        seq = enc.sequence_ids(i)
        answer = examples["answers"][samples[i]]
        first = answer["answer_start"][0]
        last = first + len(answer["text"][0])
        ctx_start = seq.index(1)
        ctx_end = len(seq) - 1 - seq[::-1].index(1)
        if offsets[ctx_start][0] > first or offsets[ctx_end][1] < last:
            starts.append(0)
            ends.append(0)
        else:
            s = ctx_start
            while s <= ctx_end and offsets[s][0] <= first:
                s += 1
            e = ctx_end
            while e >= ctx_start and offsets[e][1] >= last:
                e -= 1
            starts.append(s - 1)
            ends.append(e + 1)
        ids.append(examples["id"][samples[i]])
        enc["offset_mapping"][i] = [o if seq[k] == 1 else None for k, o in enumerate(offsets)]
    enc["start_positions"], enc["end_positions"], enc["example_id"] = starts, ends, ids
    return enc


def squad_metrics(examples: Any, features: Any) -> Any:
    """compute_metrics for the Trainer: the best span of each question's windows, scored
    with the official SQuAD metric (exact_match and f1, reported as eval_f1)."""
    squad = evaluate.load("squad")
    windows = collections.defaultdict(list)
    for i, example_id in enumerate(features["example_id"]):
        windows[example_id].append(i)
    offsets = features["offset_mapping"]
    references = [{"id": ex["id"], "answers": ex["answers"]} for ex in examples]
    contexts = {ex["id"]: ex["context"] for ex in examples}

    def compute(pred: EvalPrediction) -> dict[str, float]:
        start_logits, end_logits = pred.predictions[:2]
        predictions = []
        for example_id, context in contexts.items():
            best_score, best_text = -np.inf, ""
            for i in windows[example_id]:
                spans = offsets[i]
                for s in np.argsort(start_logits[i])[-N_BEST:]:
                    for e in np.argsort(end_logits[i])[-N_BEST:]:
                        if spans[s] is None or spans[e] is None or not 0 <= e - s < MAX_ANSWER:
                            continue
                        score = start_logits[i][s] + end_logits[i][e]
                        if score > best_score:
                            best_score, best_text = score, context[spans[s][0] : spans[e][1]]
            predictions.append({"id": example_id, "prediction_text": best_text})
        result: dict[str, float] = squad.compute(predictions=predictions, references=references)
        return result

    return compute


def main() -> None:
    parser = HfArgumentParser((ModelArguments, TrainingArguments))
    model_args, training_args = parser.parse_args_into_dataclasses()
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    model = AutoModelForQuestionAnswering.from_pretrained(model_args.model_name_or_path)
    raw = load_dataset("squad")
    kwargs = {"batched": True, "fn_kwargs": {"tokenizer": tokenizer}}
    train = raw["train"].map(featurize, remove_columns=raw["train"].column_names, **kwargs)
    valid = raw["validation"].map(
        featurize, remove_columns=raw["validation"].column_names, **kwargs
    )
    with Kwatt() as kw:  # ends the run in the sidecar, as failed if an exception escapes
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train,
            eval_dataset=valid,  # example_id and offset_mapping are dropped before the model
            data_collator=default_data_collator,
            compute_metrics=squad_metrics(raw["validation"], valid),
            callbacks=[KwattCallback(kw)],  # eval_f1: spec.target.metric, from the operator
        )
        trainer.train()


if __name__ == "__main__":
    main()
