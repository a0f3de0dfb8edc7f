"""The task kinds' names, written once: every layer may import them (as `errors`), the command line without loading
the method registry or torch."""

from __future__ import annotations

from enum import StrEnum


class TaskName(StrEnum):
    """What a model is fine-tuned to do, by the name users write (`task:`): a new head that classifies, or the
    pre-trained language-model head that generates an answer. The one place the names are written; trainers/ holds one
    module per task kind (its `TaskKind`: how it is tokenized, trained and scored)."""

    CLASSIFICATION = "classification"
    GENERATION = "generation"
