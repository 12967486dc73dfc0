"""Recommenders behind one contract (`base.Recommender`) and one registry (`registry`)."""

from mmrec.models.registry import available_models, create_model, load_model, register_model

__all__ = ["available_models", "create_model", "load_model", "register_model"]
