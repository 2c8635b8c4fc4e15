"""Transfer learning from robust source models (Salman et al., NeurIPS 2020): fixed-feature and
full-network fine-tuning with natural and adversarial accuracy, and eps sweeps."""

from .core import (
    MODES,
    TransferConfig,
    TransferResult,
    adapt_data,
    adapt_images,
    head_name,
    replace_head,
    trainable_parameters,
    transfer,
)
from .sweep import (
    Cell,
    SourceSpec,
    best_vs_standard,
    cell_id,
    load_records,
    load_source,
    plot_sweep,
    run_sweep,
    source_threat,
    summarize_sweep,
    table_markdown,
)

summarize = summarize_sweep  # the former name, kept so that old imports work

__all__ = [
    "MODES",
    "Cell",
    "SourceSpec",
    "TransferConfig",
    "TransferResult",
    "adapt_data",
    "adapt_images",
    "best_vs_standard",
    "cell_id",
    "head_name",
    "load_records",
    "load_source",
    "plot_sweep",
    "replace_head",
    "run_sweep",
    "source_threat",
    "summarize_sweep",
    "table_markdown",
    "trainable_parameters",
    "transfer",
]
