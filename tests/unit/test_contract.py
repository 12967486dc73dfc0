"""dataset.yaml parsing and root resolution."""

from pathlib import Path

import pytest

from mmrec.data.contract import load_dataset_spec, root_env_var
from mmrec.errors import ConfigError
from tests.conftest import FIXTURES, REPO, require_ml100k


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "dataset.yaml"
    p.write_text(text)
    return p


MINIMAL = """
name: shop
interactions: {path: i.csv, columns: {user_id: u, item_id: i, timestamp: t}}
items: {path: items.csv, columns: {item_id: id}}
"""


def test_fixture_loads_and_root_defaults_to_yaml_folder():
    spec = load_dataset_spec(FIXTURES / "tiny" / "dataset.yaml")
    assert spec.name == "tiny"
    assert spec.root_path == (FIXTURES / "tiny").resolve()
    assert spec.modalities == ["text", "image"]
    assert spec.table_path("items").name == "items.csv"


def test_ml100k_example_resolves_from_repo_root():
    spec_file = REPO / "examples" / "ml100k-mm" / "dataset.yaml"
    data = require_ml100k()  # a skip locally, a failure in CI when the data is missing
    spec = load_dataset_spec(spec_file)
    assert spec.root_path == data


def test_root_override_order(tmp_path, monkeypatch):
    p = write(tmp_path, MINIMAL + "root: /does/not/exist\n")
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset_spec(p)
    monkeypatch.setenv(root_env_var("shop"), str(other))
    assert load_dataset_spec(p).root_path == other.resolve()
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    assert load_dataset_spec(p, root=explicit).root_path == explicit.resolve()


def test_env_var_name():
    assert root_env_var("ml100k-mm") == "MMREC_DATA_ROOT_ML100K_MM"


def test_minimal_spec_loads(tmp_path):
    assert load_dataset_spec(write(tmp_path, MINIMAL)).name == "shop"


def test_unknown_top_level_key_rejected(tmp_path):
    with pytest.raises(ConfigError, match="colour"):
        load_dataset_spec(write(tmp_path, MINIMAL + "colour: red\n"))


def test_unknown_table_key_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"items.*delimeter"):
        load_dataset_spec(
            write(tmp_path, MINIMAL.replace("items: {path: items.csv,", "items: {path: items.csv, delimeter: ';',"))
        )


def test_unknown_contract_column(tmp_path):
    p = write(tmp_path, MINIMAL.replace("timestamp: t}", "timestamp: t, score: s}"))
    with pytest.raises(ConfigError, match=r"unknown contract column.*score"):
        load_dataset_spec(p)


def test_missing_required_mapping(tmp_path):
    p = write(tmp_path, MINIMAL.replace("timestamp: t", "rating: r"))
    with pytest.raises(ConfigError, match="timestamp"):
        load_dataset_spec(p)


def test_bad_name_and_not_yaml(tmp_path):
    with pytest.raises(ConfigError, match="name"):
        load_dataset_spec(write(tmp_path, MINIMAL.replace("name: shop", "name: 'my shop/x'")))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_dataset_spec(write(tmp_path, "name: [unclosed"))
    with pytest.raises(ConfigError, match="not found"):
        load_dataset_spec(tmp_path / "nope.yaml")
