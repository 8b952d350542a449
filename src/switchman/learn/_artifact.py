"""TrainedRouter: a learned router and its one-file, versioned on-disk format.

Format (version 1): a single safetensors file. Tensors hold the numeric state (stored training
features, outcome matrices, factorisation weights); the safetensors header's `__metadata__`
carries one JSON document under the key ``switchman`` with everything else: the format version,
the embedder name, the prompt focus, the task vocabulary, the model names, the predictor's
algorithm and parameters, the selection rule, the calibrated knob and target, and the training
summary. Loading parses JSON and reads arrays; it never unpickles code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .._exceptions import ArtifactError, ConfigError
from ..routing import SelectionRule
from ._features import Focus, focus_text, task_features
from ._knn import KNNPredictor
from ._mf import FactorisationPredictor

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "QualityPredictor", "TrainedRouter", "build_predictor"]

FORMAT_NAME = "switchman-router"
FORMAT_VERSION = 1


class QualityPredictor(Protocol):
    """Predicts per-model quality for feature rows."""

    name: str

    def fit(self, x: np.ndarray, quality: np.ndarray, output_tokens: np.ndarray) -> Any: ...
    def predict(self, x: np.ndarray) -> np.ndarray: ...
    def params(self) -> dict[str, Any]: ...
    def arrays(self) -> dict[str, np.ndarray]: ...


@dataclass
class EnsemblePredictor:
    """Mean of the kNN and factorisation predictions: local evidence plus shared structure."""

    knn: KNNPredictor = field(default_factory=KNNPredictor)
    mf: FactorisationPredictor = field(default_factory=FactorisationPredictor)
    name: str = "ensemble"

    def fit(self, x: np.ndarray, quality: np.ndarray, output_tokens: np.ndarray) -> EnsemblePredictor:
        self.knn.fit(x, quality, output_tokens)
        self.mf.fit(x, quality, output_tokens)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.combine(self.knn.predict(x), x)

    def combine(self, knn_quality: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The ensemble's prediction given the kNN part already computed."""
        return np.asarray(0.5 * (knn_quality + self.mf.predict(x)))

    def params(self) -> dict[str, Any]:
        return {"knn": self.knn.params(), "mf": self.mf.params()}

    def arrays(self) -> dict[str, np.ndarray]:
        return {**self.knn.arrays(), **self.mf.arrays()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> EnsemblePredictor:
        return cls(
            knn=KNNPredictor.from_arrays(arrays, params["knn"]),
            mf=FactorisationPredictor.from_arrays(arrays, params["mf"]),
        )


ALGORITHMS = ("knn", "mf", "ensemble")


def _checked(cls: type, params: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Only the tunable fields of a predictor class; anything else is a clear error."""
    allowed = {f.name for f in fields(cls) if not f.name.startswith("_") and f.name != "name"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"unknown {where} parameter(s) {unknown}; known: {sorted(allowed)}")
    return dict(params)


def build_predictor(algorithm: str, params: Mapping[str, Any] | None = None) -> QualityPredictor:
    """A fresh predictor by algorithm name."""
    params = dict(params or {})
    if algorithm == "knn":
        return KNNPredictor(**_checked(KNNPredictor, params, "knn"))
    if algorithm == "mf":
        return FactorisationPredictor(**_checked(FactorisationPredictor, params, "mf"))
    if algorithm == "ensemble":
        extra = sorted(set(params) - {"knn", "mf"})
        if extra:
            raise ConfigError(f"ensemble parameters are knn.NAME or mf.NAME, not {extra}")
        return EnsemblePredictor(
            knn=KNNPredictor(**_checked(KNNPredictor, params.get("knn", {}), "knn")),
            mf=FactorisationPredictor(**_checked(FactorisationPredictor, params.get("mf", {}), "mf")),
        )
    raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")


def _load_predictor(algorithm: str, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> QualityPredictor:
    if algorithm == "knn":
        return KNNPredictor.from_arrays(arrays, params)
    if algorithm == "mf":
        return FactorisationPredictor.from_arrays(arrays, params)
    if algorithm == "ensemble":
        return EnsemblePredictor.from_arrays(arrays, params)
    raise ArtifactError(f"unknown algorithm {algorithm!r} in router file")


def shared_knn(predictor: QualityPredictor) -> KNNPredictor | None:
    """The kNN inside a predictor, which also predicts output lengths (stored once)."""
    if isinstance(predictor, KNNPredictor):
        return predictor
    if isinstance(predictor, EnsemblePredictor):
        return predictor.knn
    return None


@dataclass
class TrainedRouter:
    """Everything a learned route needs at decision time, and how it was made."""

    embedder: str
    models: tuple[str, ...]
    algorithm: str
    predictor: QualityPredictor
    lengths: KNNPredictor
    focus: Focus = "full"
    task_vocabulary: tuple[str, ...] = ()
    task_weight: float = 0.0
    rule: SelectionRule = "tradeoff"
    knob: float = 0.0
    target: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def model_names(self) -> tuple[str, ...]:
        """Model names as the user's configuration calls them (aliases applied)."""
        return tuple(self.aliases.get(m, m) for m in self.models)

    def texts(self, prompts: Sequence[str]) -> list[str]:
        """What the embedder sees for each prompt."""
        return [focus_text(p, self.focus) for p in prompts]

    def features(self, embeddings: np.ndarray, tasks: Sequence[str | None]) -> np.ndarray:
        """Embeddings plus task columns when the router was trained with them."""
        if not self.task_vocabulary or self.task_weight == 0:
            return embeddings
        return np.hstack([embeddings, task_features(tasks, self.task_vocabulary, self.task_weight)])

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted quality and output tokens, each (n × models)."""
        knn = shared_knn(self.predictor)
        if knn is None or knn is not self.lengths:
            return self.predictor.predict(features), self.lengths.predict_output_tokens(features)
        knn_quality, output_tokens = knn.predict_with_lengths(features)  # one neighbour search for both
        if isinstance(self.predictor, EnsemblePredictor):
            return self.predictor.combine(knn_quality, features), output_tokens
        return knn_quality, output_tokens

    def training_points(self) -> tuple[np.ndarray, np.ndarray]:
        """The training prompts' feature rows and quality per model, kept by every router's length predictor."""
        return self.lengths.training_points()

    def with_aliases(self, aliases: Mapping[str, str]) -> TrainedRouter:
        """A copy whose models answer to the configured names (trained name → configured name)."""
        unknown = sorted(set(aliases) - set(self.models))
        if unknown:
            raise ArtifactError(f"alias for unknown trained model(s) {unknown}; router models: {list(self.models)}")
        return replace(self, aliases={**self.aliases, **aliases})

    def save(self, path: str | Path) -> Path:
        """Write the router as one safetensors file."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = dict(self.predictor.arrays())
        shared_lengths = self.lengths is shared_knn(self.predictor)
        if not shared_lengths:
            arrays.update({f"lengths.{k}": v for k, v in self.lengths.arrays().items()})
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "embedder": self.embedder,
            "models": list(self.models),
            "algorithm": self.algorithm,
            "params": self.predictor.params(),
            "length_params": "predictor" if shared_lengths else self.lengths.params(),
            "focus": self.focus,
            "task_vocabulary": list(self.task_vocabulary),
            "task_weight": self.task_weight,
            "rule": self.rule,
            "knob": self.knob,
            "target": self.target,
            "aliases": self.aliases,
            "prices": {m: list(p) for m, p in self.prices.items()},
            "summary": self.summary,
        }
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path),
                  metadata={"switchman": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainedRouter:
        """Read a router file written by `save` (no code is unpickled)."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: router file not found")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                raw_meta = (handle.metadata() or {}).get("switchman")
                arrays = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError) as exc:
            raise ArtifactError(f"{path}: not a switchman router file ({exc})") from None
        if raw_meta is None:
            raise ArtifactError(f"{path}: safetensors file without switchman metadata")
        try:
            meta = json.loads(raw_meta)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{path}: switchman metadata is not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise ArtifactError(f"{path}: switchman metadata is not a JSON object")
        if meta.get("format") != FORMAT_NAME:
            raise ArtifactError(f"{path}: format {meta.get('format')!r} is not {FORMAT_NAME!r}")
        if meta.get("version") != FORMAT_VERSION:
            raise ArtifactError(
                f"{path}: router format version {meta.get('version')} is not supported (this switchman reads "
                f"version {FORMAT_VERSION}); retrain with `switchman train`"
            )
        try:
            predictor = _load_predictor(meta["algorithm"], arrays, meta["params"])
            lengths = shared_knn(predictor)
            if meta["length_params"] != "predictor" or lengths is None:
                length_arrays = {k.removeprefix("lengths."): v for k, v in arrays.items() if k.startswith("lengths.")}
                lengths = KNNPredictor.from_arrays(length_arrays, meta["length_params"])
            return cls(
                embedder=meta["embedder"],
                models=tuple(meta["models"]),
                algorithm=meta["algorithm"],
                predictor=predictor,
                lengths=lengths,
                focus=meta["focus"],
                task_vocabulary=tuple(meta["task_vocabulary"]),
                task_weight=float(meta["task_weight"]),
                rule=meta["rule"],
                knob=float(meta["knob"]),
                target=meta.get("target"),
                aliases=dict(meta.get("aliases") or {}),
                prices={m: (float(p[0]), float(p[1])) for m, p in (meta.get("prices") or {}).items()},
                summary=dict(meta.get("summary") or {}),
            )
        except KeyError as exc:
            raise ArtifactError(f"{path}: router file is missing {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: router file is malformed ({exc})") from None
        except ArtifactError as exc:
            raise ArtifactError(f"{path}: {exc}") from None
