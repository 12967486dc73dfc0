"""The search space of every tunable model, declared in one place (this registry).

Each entry maps a constructor argument of the model to a dimension: a float or int range
(optionally log-scaled) or a categorical choice. Only arguments that change what the model learns
are searched; budget knobs (max_epochs, patience, eval_every) and plumbing (seed, device,
modalities) are not, so a tuned model trains under the same stopping rule the pipeline uses.

The ranges are wide on purpose: the defaults in params.yaml were chosen on the synthetic shop,
and a user's catalogue may need a learning rate or regularisation an order of magnitude away.
A dataset can narrow or extend any space in params.yaml (`tune.spaces.<model>.<param>`, the same
fields as the classes below), without code.

The cold-start settings (`COLD_START_PARAMS`: content weight, neighbour counts, ID dropout, how
cold items get their vectors) are the ones a `cold_valid` or `combined` tuning objective is meant
for (mmrec/tuning/params.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from mmrec.errors import ConfigError


@dataclass(frozen=True)
class FloatRange:
    """A float in [low, high]; `log` samples its logarithm uniformly (learning rates, penalties)."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class IntRange:
    """An int in [low, high] (inclusive) in steps of `step`; `log` as for FloatRange."""

    low: int
    high: int
    step: int = 1
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of `values` (numbers, strings, booleans or None)."""

    values: tuple[Any, ...]


Dimension = Union[FloatRange, IntRange, Choice]  # noqa: UP007 - a runtime alias

#: model name -> constructor argument -> dimension. Popularity has nothing to tune.
SEARCH_SPACES: dict[str, dict[str, Dimension]] = {
    "popularity": {},
    "itemknn": {
        "k": IntRange(10, 1000, log=True),
        "shrink": FloatRange(0.0, 100.0),
    },
    "bpr": {
        "lr": FloatRange(1e-4, 5e-2, log=True),
        "reg": FloatRange(1e-6, 1e-1, log=True),
        "batch_size": Choice((512, 1024, 2048, 4096)),
        "init_std": FloatRange(1e-3, 1e-1, log=True),
        # Cornac's BPR learns item biases, ours did not; validation decides per dataset
        "item_bias": Choice((False, True)),
    },
    "lightgcn": {
        "lr": FloatRange(1e-4, 5e-2, log=True),
        "reg": FloatRange(1e-6, 1e-1, log=True),
        "n_layers": IntRange(1, 4),
        "batch_size": Choice((512, 1024, 2048, 4096)),
        # the scale of the ego embeddings: ours is N(0, 0.1), the MMRec reference's Xavier-uniform
        # is ~0.035-0.045 on ml100k's tables; with one or two layers it sets the early scores' scale
        "init_std": FloatRange(1e-2, 2e-1, log=True),
    },
    "content_knn": {
        "k": Choice((0, 10, 20, 50, 100, 200)),
        "shrink": FloatRange(0.0, 50.0),
    },
    "vbpr": {
        "lr": FloatRange(1e-4, 5e-2, log=True),
        "reg": FloatRange(1e-6, 1e-1, log=True),
        "content_reg": FloatRange(1e-6, 1e-1, log=True),
        "content_dim": Choice((16, 32, 64, 128)),
        "id_dropout": FloatRange(0.0, 0.9),
    },
    "two_tower": {
        "lr": FloatRange(1e-4, 2e-2, log=True),
        "reg": FloatRange(1e-6, 1e-1, log=True),
        "id_dropout": FloatRange(0.0, 0.9),
        "temperature": FloatRange(0.05, 1.0, log=True),
        "align_weight": FloatRange(0.0, 0.5),
        "fusion": Choice(("gated", "concat")),
    },
    "mm_graph": {
        "lr": FloatRange(1e-4, 5e-2, log=True),
        "reg": FloatRange(1e-6, 1e-1, log=True),
        "n_layers": IntRange(1, 3),
        "knn_k": IntRange(3, 50, log=True),
        "item_weight": FloatRange(0.0, 1.0),
        "cold_vectors": Choice(("ridge", "neighbours")),
        "cold_ridge": FloatRange(0.1, 1000.0, log=True),
    },
}

#: the arguments that set how a model treats items it never saw in training (cold start)
COLD_START_PARAMS: dict[str, tuple[str, ...]] = {
    "content_knn": ("k", "shrink"),
    "vbpr": ("id_dropout", "content_dim", "content_reg"),
    "two_tower": ("id_dropout", "fusion", "align_weight"),
    "mm_graph": ("knn_k", "item_weight", "cold_vectors", "cold_ridge"),
}


def parse_dimension(model: str, param: str, raw: Any) -> Dimension:
    """A dimension from params.yaml: `{low, high[, log][, step]}` or `{choices: [...]}`.

    Raises:
        ConfigError: anything else, naming `tune.spaces.<model>.<param>` and the accepted forms.
    """
    where = f"tune.spaces.{model}.{param}"
    if isinstance(raw, (FloatRange, IntRange, Choice)):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected {{low, high[, log]}} or {{choices: [...]}}, got {raw!r}")
    if set(raw) == {"choices"}:
        values = raw["choices"]
        if not isinstance(values, Sequence) or isinstance(values, str) or not values:
            raise ConfigError(f"{where}.choices: a non-empty list is needed, got {values!r}")
        return Choice(tuple(values))
    unknown = set(raw) - {"low", "high", "log", "step"}
    if unknown or not {"low", "high"} <= set(raw):
        raise ConfigError(f"{where}: keys low and high are required (optional: log, step), got {sorted(raw)}")
    low, high, log = raw["low"], raw["high"], bool(raw.get("log", False))
    if not (isinstance(low, (int, float)) and isinstance(high, (int, float))) or low > high:
        raise ConfigError(f"{where}: low and high must be numbers with low <= high, got {low!r}, {high!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log-scaled range needs low > 0, got {low}")
    if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
        return IntRange(low, high, int(raw.get("step", 1)), log)
    return FloatRange(float(low), float(high), log)


def search_space(model: str, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Dimension]:
    """The space of `model`: the registry's, with `tune.spaces.<model>` merged over it.

    Raises:
        ConfigError: a model with no declared space, or an override naming an argument the model
            does not take.
    """
    from mmrec.models.registry import get_model_class

    if model not in SEARCH_SPACES and not (overrides and model in overrides):
        raise ConfigError(
            f"model {model!r} declares no search space; add one to mmrec/tuning/spaces.py "
            f"SEARCH_SPACES or to params.yaml tune.spaces.{model}"
        )
    space = dict(SEARCH_SPACES.get(model, {}))
    extra = (overrides or {}).get(model, {})
    if extra:
        takes = set(get_model_class(model).param_names())
        bad = sorted(set(extra) - takes)
        if bad:
            raise ConfigError(
                f"tune.spaces.{model}: {bad} are not arguments of model {model!r}; it takes {sorted(takes)}"
            )
        for param, raw in extra.items():
            space[param] = parse_dimension(model, param, raw)
    return space


def tunable_models(names: Sequence[str], overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """The models of `names` that have something to search (popularity has not)."""
    return [n for n in names if search_space(n, overrides)]
