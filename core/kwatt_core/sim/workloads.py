"""The six Zeus workloads: target, epoch budget, default batch size and dataset size.

Targets, max epochs and default batch sizes are those of upstream's
`run_alibaba.py` (traces/zeus/SOURCE.md; LibriSpeech uses `run_single.py`'s 192,
the largest size its V100 trace holds). Samples per epoch turn batch sizes into
iterations per epoch, which the step-by-step profiling charge needs; each is
the documented size of the training split.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkloadSpec:
    """One recurring training job of the traces."""

    name: str
    dataset: str
    network: str
    optimizer: str
    target_metric: float
    max_epochs: int
    default_batch_size: int
    samples_per_epoch: int
    samples_source: str

    def iterations_per_epoch(self, batch_size: int) -> int:
        return max(1, -(-self.samples_per_epoch // batch_size))


WORKLOADS: tuple[WorkloadSpec, ...] = (
    WorkloadSpec(
        "cifar100",
        "cifar100",
        "shufflenetv2",
        "adadelta",
        0.60,
        100,
        1024,
        50_000,
        "CIFAR-100 training split: 50,000 images",
    ),
    WorkloadSpec(
        "imagenet",
        "imagenet",
        "resnet50",
        "adadelta",
        0.65,
        100,
        256,
        1_281_167,
        "ILSVRC-2012 training split: 1,281,167 images",
    ),
    WorkloadSpec(
        "squad",
        "squad",
        "bert_base_uncased",
        "adamw",
        84.0,
        6,
        32,
        87_599,
        "SQuAD v1.1 training split: 87,599 questions",
    ),
    WorkloadSpec(
        "librispeech",
        "librispeech",
        "deepspeech2",
        "adamw",
        40.0,
        16,
        192,
        281_241,
        "LibriSpeech 960 h training set: 281,241 utterances",
    ),
    WorkloadSpec(
        "movielens-1m",
        "movielens-1m",
        "ncf",
        "adam",
        0.41,
        100,
        1024,
        4_970_845,
        "MovieLens-1M: 994,169 training ratings (leave-one-out) with 4 negatives each",
    ),
    WorkloadSpec(
        "sentiment140",
        "sentiment140",
        "bert_base_uncased",
        "adamw",
        0.84,
        10,
        128,
        1_600_000,
        "Sentiment140 training set: 1,600,000 tweets",
    ),
)


def workload_names() -> list[str]:
    return [w.name for w in WORKLOADS]
