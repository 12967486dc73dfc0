import pytest

from mmrec.config import load_params
from mmrec.errors import ConfigError
from tests.conftest import REPO


def test_repo_params_load():
    p = load_params(REPO / "params.yaml", environ={})
    assert p.split.kind == "temporal" and p.evaluate.ks == [10, 20]
    assert "lightgcn" in p.train.models


def test_env_override_parses_yaml():
    p = load_params(
        REPO / "params.yaml", environ={"MMREC__SPLIT__RATIOS": "[0.6, 0.2, 0.2]", "MMREC__SPLIT__KIND": "random"}
    )
    assert p.split.ratios == (0.6, 0.2, 0.2) and p.split.kind == "random"


def test_bad_values_name_the_key(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("split:\n  ratios: [0.5, 0.1, 0.1]\n")
    with pytest.raises(ConfigError, match=r"split.*sum"):
        load_params(f, environ={})
    f.write_text("splitt:\n  kind: random\n")
    with pytest.raises(ConfigError, match="splitt"):
        load_params(f, environ={})
    with pytest.raises(ConfigError, match=r"split\.kind"):
        load_params(None, environ={"MMREC__SPLIT__KIND": "sideways"})
