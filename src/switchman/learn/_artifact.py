"""TrainedRouter: a learned router and its one-file, versioned on-disk format.

Format (version 2): a single safetensors file. Tensors hold the numeric state (the predictor's
parameters or per-cluster aggregates, or for `knn` the training features and outcomes; the
ability model that places models the router never saw; hashes of the training prompts); the
safetensors header's `__metadata__` carries one JSON document under the key ``switchman`` with
everything else: the format version, the embedder and the slice of the prompt it sees, the prompt
focus, the task vocabulary, the model names, the predictor's algorithm and parameters, the
selection rule, the calibrated knob and target, what it was trained on, and the training summary.
Version 1 files (no ability model, no training record) still load. Loading parses JSON and reads
arrays; it never unpickles code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import ArtifactError
from ..routing import SelectionRule
from ._ability import SCORE_CENTER, SCORE_SCALE
from ._ability_predictor import AbilityPredictor
from ._features import Focus, prompt_texts, task_features
from ._knn import KNNPredictor
from ._knob import Knob
from ._predictors import EnsemblePredictor, LengthPredictor, QualityPredictor, load_predictor, shared_lengths
from ._training_record import TrainingRecord

__all__ = ["DEFAULT_WINDOW", "FORMAT_NAME", "FORMAT_VERSION", "TrainedRouter"]

FORMAT_NAME = "switchman-router"
FORMAT_VERSION = 2
_READABLE = (1, 2)
#: The slice of a prompt the embedder sees: its first 1,000 and last 2,000 characters. Bounded work
#: per request however long the prompt; every prompt of the development data fits whole.
DEFAULT_WINDOW = (1000, 2000)


@dataclass
class TrainedRouter:
    """Everything a learned route needs at decision time, and how it was made."""

    embedder: str
    models: tuple[str, ...]
    algorithm: str
    predictor: QualityPredictor
    lengths: LengthPredictor
    focus: Focus = "full"
    task_vocabulary: tuple[str, ...] = ()
    task_weight: float = 0.0
    rule: SelectionRule = "tradeoff"
    knob: Knob = field(default_factory=lambda: Knob(0.0))
    target: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    #: Places models the router has no outcomes for (by ability) and is the calibration population.
    placement: AbilityPredictor | None = None
    training: TrainingRecord | None = None
    #: (head, tail) characters of a prompt the embedder sees; None: the embedder's own limit.
    window: tuple[int, int] | None = DEFAULT_WINDOW

    @property
    def model_names(self) -> tuple[str, ...]:
        """Model names as the user's configuration calls them (aliases applied)."""
        return tuple(self.aliases.get(m, m) for m in self.models)

    def texts(self, prompts: Sequence[str]) -> list[str]:
        """What the embedder sees for each prompt: its window, then its focus."""
        return prompt_texts(prompts, self.window, self.focus)

    def features(self, embeddings: np.ndarray, tasks: Sequence[str | None]) -> np.ndarray:
        """Embeddings plus task columns when the router was trained with them."""
        if not self.task_vocabulary or self.task_weight == 0:
            return embeddings
        return np.hstack([embeddings, task_features(tasks, self.task_vocabulary, self.task_weight)])

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted quality and output tokens of every trained model, each (n × models)."""
        if isinstance(self.predictor, AbilityPredictor):
            return self.predictor.predict_with_lengths(features)
        knn = shared_lengths(self.predictor)
        if not isinstance(knn, KNNPredictor) or knn is not self.lengths:
            return self.predictor.predict(features), self.lengths.predict_output_tokens(features)
        knn_quality, output_tokens = knn.predict_with_lengths(features)  # one neighbour search for both
        if isinstance(self.predictor, EnsemblePredictor):
            return self.predictor.combine(knn_quality, features), output_tokens
        return knn_quality, output_tokens

    def abilities(self) -> dict[str, float]:
        """Each trained model's ability on the public-score scale, as fitted to the outcome data."""
        if self.placement is None:
            return {}
        theta = self.placement.ability.theta
        return {name: float(SCORE_CENTER + SCORE_SCALE * t) for name, t in zip(self.model_names, theta, strict=True)}

    def predict_columns(self, features: np.ndarray, columns: Sequence[int | float]) -> tuple[np.ndarray, np.ndarray]:
        """Quality and output tokens for a mix of trained models (an int: their index) and models placed
        by ability (a float: the ability on the public-score scale), in the order of `columns`."""
        n = features.shape[0]
        quality = np.empty((n, len(columns)), dtype=np.float64)
        output = np.empty((n, len(columns)), dtype=np.float64)
        trained = [i for i, c in enumerate(columns) if isinstance(c, int | np.integer)]
        placed = [i for i, c in enumerate(columns) if not isinstance(c, int | np.integer)]
        if trained:
            q_all, out_all = self.predict(features)
            index = [int(columns[i]) for i in trained]
            quality[:, trained], output[:, trained] = q_all[:, index], out_all[:, index]
        if placed:
            if self.placement is None:
                raise ArtifactError("this router file has no ability model (format version 1): it can only route "
                                    f"the models it was trained on ({', '.join(self.model_names)}); retrain it")
            theta = [(float(columns[i]) - SCORE_CENTER) / SCORE_SCALE for i in placed]
            quality[:, placed], output[:, placed] = self.placement.predict_placed(features, theta)
        return quality, output

    def training_points(self) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows and quality per model the online strategy clusters: the training prompts' for
        `knn` routers, the per-cluster means for the others (NaN: no outcome)."""
        if isinstance(self.lengths, KNNPredictor):
            return self.lengths.training_points()
        if self.placement is None:
            raise ArtifactError("this router file holds no training points")
        evidence = self.placement.evidence
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(evidence.counts > 0, evidence.quality_sums / evidence.counts, np.nan)
        return evidence.centroids, means

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
        shared = self.lengths is shared_lengths(self.predictor)
        if not shared:
            arrays.update({f"lengths.{k}": v for k, v in self.lengths.arrays().items()})
        if self.placement is not None and self.placement is not self.predictor:
            arrays.update({f"placement.{k}": v for k, v in self.placement.arrays().items()})
        if self.training is not None:
            arrays.update(self.training.arrays())
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "embedder": self.embedder,
            "window": list(self.window) if self.window is not None else None,
            "models": list(self.models),
            "algorithm": self.algorithm,
            "params": self.predictor.params(),
            "length_params": "predictor" if shared else self.lengths.params(),
            "placement": None if self.placement is None else (
                "predictor" if self.placement is self.predictor else self.placement.params()),
            "focus": self.focus,
            "task_vocabulary": list(self.task_vocabulary),
            "task_weight": self.task_weight,
            "rule": self.rule,
            "knob": self.knob.to_json(),
            "target": self.target,
            "aliases": self.aliases,
            "prices": {m: list(p) for m, p in self.prices.items()},
            "training": None if self.training is None else self.training.to_json(),
            "summary": self.summary,
        }
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path),
                  metadata={"switchman": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainedRouter:
        """Read a router file written by `save` (no code is unpickled)."""
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: router file not found")
        meta, arrays = _read(path)
        try:
            return cls._from_parts(meta, arrays)
        except KeyError as exc:
            raise ArtifactError(f"{path}: router file is missing {exc}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"{path}: router file is malformed ({exc})") from None
        except ArtifactError as exc:
            raise ArtifactError(f"{path}: {exc}") from None

    @classmethod
    def _from_parts(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TrainedRouter:
        predictor = load_predictor(meta["algorithm"], arrays, meta["params"])
        lengths = shared_lengths(predictor)
        if meta["length_params"] != "predictor" or lengths is None:
            length_arrays = {k.removeprefix("lengths."): v for k, v in arrays.items() if k.startswith("lengths.")}
            lengths = KNNPredictor.from_arrays(length_arrays, meta["length_params"])
        placement: AbilityPredictor | None = None
        if meta.get("placement") == "predictor" and isinstance(predictor, AbilityPredictor):
            placement = predictor
        elif meta.get("placement"):
            own = {k.removeprefix("placement."): v for k, v in arrays.items() if k.startswith("placement.")}
            placement = AbilityPredictor.from_arrays(own, meta["placement"])
        window = meta.get("window", None) if meta["version"] >= 2 else None
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
            knob=Knob.from_json(meta["knob"]),
            target=meta.get("target"),
            aliases=dict(meta.get("aliases") or {}),
            prices={m: (float(p[0]), float(p[1])) for m, p in (meta.get("prices") or {}).items()},
            summary=dict(meta.get("summary") or {}),
            placement=placement,
            training=TrainingRecord.from_json(meta["training"], arrays) if meta.get("training") else None,
            window=(int(window[0]), int(window[1])) if window else None,
        )


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata document and the arrays of a router file, checked for format and version."""
    from safetensors import SafetensorError, safe_open

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
    if meta.get("version") not in _READABLE:
        raise ArtifactError(
            f"{path}: router format version {meta.get('version')} is not supported (this switchman reads "
            f"versions {', '.join(map(str, _READABLE))}); retrain with `switchman train`"
        )
    return meta, arrays
