"""Site grammar, patterns, accessors, natural sort, expect= and the no-match errors."""

import mlx.nn as nn
import pytest

from mlxinterp.sites import Site, SiteError, module_paths, natural_key, select
from mlxinterp.testing import tiny_model


@pytest.fixture(scope="module")
def deep():
    return tiny_model("llama", num_hidden_layers=12)


def names(sites):
    return [str(s) for s in sites]


def test_site_parse_reads_path_and_port_and_defaults_to_output():
    assert Site.parse("model.layers.3.mlp") == Site("model.layers.3.mlp", "out")
    assert Site.parse("model.layers.3.mlp:in") == Site("model.layers.3.mlp", "in")
    assert Site.parse("a.b:in.mask").port == "in.mask"
    assert Site.parse("model.layers[3].mlp").path == "model.layers.3.mlp"
    assert str(Site.parse("x.y:out")) == "x.y"
    assert str(Site.parse("x.y:pattern")) == "x.y:pattern"


def test_bad_port_syntax_is_rejected_with_the_valid_forms():
    with pytest.raises(SiteError, match="'out', 'in'"):
        Site("a", "in-1")


def test_star_matches_exactly_one_segment_in_natural_order(deep):
    got = names(select(deep, "model.layers.*"))
    assert got == [f"model.layers.{i}" for i in range(12)]
    assert "model.layers.0.mlp" not in got


def test_double_star_matches_any_depth_including_zero(deep):
    got = names(select(deep, "**.down_proj"))
    assert got == [f"model.layers.{i}.mlp.down_proj" for i in range(12)]
    assert "" in names(select(deep, "**"))  # the root itself
    assert names(select(deep, "model.**.mlp")) == [f"model.layers.{i}.mlp" for i in range(12)]


def test_numeric_range_and_list_classes_select_layers_above_nine(deep):
    assert names(select(deep, "model.layers.[8-10].mlp")) == [
        "model.layers.8.mlp",
        "model.layers.9.mlp",
        "model.layers.10.mlp",
    ]
    assert names(select(deep, "model.layers.[1,11]")) == ["model.layers.1", "model.layers.11"]
    assert names(select(deep, "model.layers.1?")) == ["model.layers.10", "model.layers.11"]
    assert len(select(deep, "model.layers.*.self_attn.[qk]_proj")) == 24


def test_accessor_lambda_resolves_by_identity_even_through_a_copying_property(deep):
    assert names(select(deep, lambda m: m.model.layers[3].mlp)) == ["model.layers.3.mlp"]
    assert names(select(deep, lambda m: m.layers[2:4], port="in")) == [
        "model.layers.2:in",
        "model.layers.3:in",
    ]


def test_accessor_returning_a_foreign_module_or_non_module_is_an_error(deep):
    with pytest.raises(SiteError, match="not a module under the root"):
        select(deep, lambda m: nn.Linear(2, 2))
    with pytest.raises(SiteError, match="must return a module"):
        select(deep, lambda m: 3)


def test_expect_checks_the_number_of_matches(deep):
    assert len(select(deep, "model.layers.*", expect=12)) == 12
    with pytest.raises(SiteError, match="matched 12 modules, expected 4"):
        select(deep, Site("model.layers.*", expect=4))


def test_no_match_lists_the_closest_real_paths(deep):
    with pytest.raises(SiteError) as e:
        select(deep, "model.layers.3.mpl")
    assert "model.layers.3.mlp" in str(e.value)
    with pytest.raises(SiteError, match="model.layers.3.self_attn"):
        select(deep, "model.layer.3.self_attn")


def test_a_parameter_path_is_explained_as_not_a_module(deep):
    with pytest.raises(SiteError, match="is a parameter, not a module.*model.layers.0.mlp.up_proj"):
        select(deep, "model.layers.0.mlp.up_proj.weight")


def test_unknown_virtual_port_names_the_known_ports(deep):
    with pytest.raises(SiteError, match="unknown port 'nonsense'"):
        select(deep, "model.layers.0:nonsense")


def test_duplicates_across_specs_are_dropped_keeping_first_order(deep):
    got = names(select(deep, ["model.layers.1", "model.layers.[0-1]"]))
    assert got == ["model.layers.1", "model.layers.0"]


def test_natural_key_orders_numbers_numerically():
    paths = ["l.10", "l.2", "l.1.a", "l.1"]
    assert sorted(paths, key=natural_key) == ["l.1", "l.1.a", "l.2", "l.10"]


def test_module_paths_are_parameter_key_prefixes(deep):
    from mlx.utils import tree_flatten

    paths = set(module_paths(deep))
    for key, _ in tree_flatten(deep.parameters()):
        assert key.rsplit(".", 1)[0] in paths
