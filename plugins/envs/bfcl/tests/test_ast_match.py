"""The AST matcher on hand-made cases, one rule each."""

import pytest

from toolrl_env_bfcl.ast_match import call_matches, calls_match, value_matches

SCHEMAS = {
    "geo.area": {"type": "object", "properties": {"base": {"type": "integer"}, "height": {"type": "number"},
                                                   "unit": {"type": "string"}, "opts": {"type": "object"},
                                                   "tags": {"type": "array"}}},
    "spotify.play": {"type": "object", "properties": {"artist": {"type": "string"}, "duration": {"type": "integer"}}},
}
AREA = {"geo.area": {"base": [10], "height": [5.0], "unit": ["units", ""]}}


@pytest.mark.parametrize("name, args, ok, why", [
    ("geo.area", {"base": 10, "height": 5.0}, True, ""),
    ("geo_area", {"base": 10, "height": 5.0}, True, ""),                       # dots may become underscores
    ("geo.area", {"base": 10, "height": 5}, True, ""),                         # an int is a number
    ("geo.area", {"base": 10.0, "height": 5}, False, "not of type integer"),   # a float is not an integer
    ("geo.area", {"base": 10, "height": 5, "unit": "Units "}, True, ""),      # strings: case and spaces ignored
    ("geo.area", {"base": 10, "height": 5, "unit": "cm"}, False, "is not one of"),
    ("geo.area", {"base": 10}, False, "missing required parameter 'height'"),
    ("geo.area", {"base": 10, "height": 5, "colour": "red"}, False, "unexpected parameter 'colour'"),
    ("geo.volume", {"base": 10, "height": 5}, False, "expected 'geo.area'"),
    ("geo.area", {"base": "10", "height": 5}, False, "not of type integer"),
])
def test_single_call_rules(name, args, ok, why):
    r = call_matches(name, args, AREA, SCHEMAS)
    assert r.ok is ok and why in r.reason


def test_nested_values():
    assert value_matches({"width": 20, "height": 12}, {"width": [20], "height": [12], "depth": ["", 1]})
    assert not value_matches({"width": 20}, {"width": [20], "height": [12]})            # required nested key
    assert not value_matches({"width": 20, "x": 1}, {"width": [20]})                     # unexpected nested key
    assert value_matches(["New York", "LA"], ["new york", "la"])
    assert not value_matches(["LA", "New York"], ["new york", "la"])                    # list order matters
    assert value_matches([{"a": 1}], [{"a": [1]}])
    assert not value_matches(True, 1) and not value_matches(1, True)                      # bools are not numbers


def test_parallel_calls_match_in_any_order_one_to_one():
    answer = [{"spotify.play": {"artist": ["Taylor Swift"], "duration": [20]}},
              {"spotify.play": {"artist": ["Maroon 5"], "duration": [15]}}]
    swapped = [("spotify.play", {"artist": "Maroon 5", "duration": 15}),
               ("spotify.play", {"artist": "taylor swift", "duration": 20})]
    assert calls_match(swapped, answer, SCHEMAS).ok
    twice = [("spotify.play", {"artist": "Maroon 5", "duration": 15})] * 2
    assert not calls_match(twice, answer, SCHEMAS).ok
    assert "made 1 call(s), expected 2" in calls_match(swapped[:1], answer, SCHEMAS).reason


def test_irrelevance_wants_no_call():
    assert calls_match([], None, SCHEMAS).ok
    assert not calls_match([("geo.area", {})], None, SCHEMAS).ok
