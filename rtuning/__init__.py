"""R-Tuning: refusal-aware instruction tuning (Zhang et al., NAACL 2024).

The library behind the scripts in training/, finetune/ and evaluation/: dataset
declarations (tasks), model loading, the batched answering engine, refusal-aware data
construction, fine-tuning and metrics.
"""

__version__ = "0.1.0"
