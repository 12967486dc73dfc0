"""The registry helper behind `create_model` and `create_encoder`: loud, lazy, one name per class."""

from __future__ import annotations

import pytest

from mmrec.errors import ConfigError, ModelError
from mmrec.registry import Registry


class Alpha:
    name = "alpha"


class Alphabet:
    name = "alphabet"


def test_lookup_names_and_close_match_hint():
    reg: Registry[type] = Registry("widget", (), ConfigError)
    reg.register(Alpha)
    reg.register(Alphabet)
    assert reg.get("alpha") is Alpha and reg.names() == ["alpha", "alphabet"]
    assert reg.names(lambda c: c is Alphabet) == ["alphabet"]
    with pytest.raises(
        ConfigError, match=r"unknown widget 'alpah'\. Did you mean 'alpha'.*Available widgets: alpha, alphabet"
    ):
        reg.get("alpah")
    with pytest.raises(ConfigError, match="Available widgets: custom listing"):
        reg.get("zzz", lambda: "custom listing")


def test_a_second_class_with_the_same_name_is_refused():
    reg: Registry[type] = Registry("model", (), ModelError)
    reg.register(Alpha)
    reg.register(Alpha)  # the same class again (a module re-imported) is fine
    other = type("Other", (), {"name": "alpha"})
    with pytest.raises(ModelError, match="registered twice"):
        reg.register(other)


def test_a_missing_builtin_module_is_an_error_unless_optional():
    optional = Registry("model", ("mmrec.models.no_such_module",), ModelError, optional_builtins=True)
    assert optional.names() == []
    strict = Registry("model", ("mmrec.models.no_such_module",), ModelError)
    with pytest.raises(ModuleNotFoundError):
        strict.names()


def test_model_and_encoder_registries_share_the_helper():
    from mmrec.encoders.registry import ENCODERS
    from mmrec.models.registry import MODELS

    assert isinstance(MODELS, Registry) and isinstance(ENCODERS, Registry)
    assert MODELS.error is ModelError and ENCODERS.error is ConfigError
