"""The MLflow pyfunc of a ``seq2seq`` model: source texts in, generated texts out.

Logged as MLflow "models from code": MLflow stores this file with the model,
so loading it needs mlflow, torch and transformers, not this project. The
``transformers`` folder (model, tokenizer, generation config) is the
artifact ``model``; ``mlflow.pyfunc.load_model(uri).predict(["a text"])``
returns one generated text per source.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc.model import PythonModel, PythonModelContext


class Seq2SeqGenerator(PythonModel):
    """Generates with the saved generation config (greedy unless it says otherwise)."""

    def load_context(self, context: PythonModelContext) -> None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        folder = context.artifacts["model"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()

    def predict(
        self, context: PythonModelContext, model_input: Any, params: dict[str, Any] | None = None
    ) -> list[str]:
        import torch

        texts = _texts(model_input)
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
        encoded.pop("token_type_ids", None)
        with torch.no_grad():
            generated = self.model.generate(**encoded, **(params or {}))
        return [t.strip() for t in self.tokenizer.batch_decode(generated, skip_special_tokens=True)]


def _texts(model_input: Any) -> list[str]:
    # A DataFrame (MLflow's usual input) gives its first column; a list is used as is.
    columns = getattr(model_input, "columns", None)
    if columns is not None:
        return [str(v) for v in model_input[columns[0]].tolist()]
    if isinstance(model_input, str):
        return [model_input]
    return [str(v) for v in model_input]


mlflow.models.set_model(Seq2SeqGenerator())
