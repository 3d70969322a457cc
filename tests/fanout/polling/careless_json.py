"""Hostile JSON for the polling parsers' property tests: any shape, any value, fields left out."""

import json
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

# A field a generated document leaves out (removed before writing).
MISSING = object()


def json_values(samples: Sequence[str]) -> st.SearchStrategy[Any]:
    """Any JSON value, with `samples` (strings the provider's format gives meaning) among the leaves."""
    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(),  # NaN and infinities are written as non-JSON tokens
        st.text(max_size=30),
        st.sampled_from(list(samples)),
    )
    return st.recursive(
        leaf,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
        ),
        max_leaves=16,
    )


def hostile(valid: st.SearchStrategy[Any], values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: a valid one, any JSON value, or the field left out."""
    return st.one_of(valid, values, st.just(MISSING))


def strip(value: Any) -> Any:
    """`value` without the MISSING markers, at any depth (a missing document is `null`)."""
    if isinstance(value, dict):
        return {key: strip(item) for key, item in value.items() if item is not MISSING}
    if isinstance(value, list):
        return [strip(item) for item in value if item is not MISSING]
    return None if value is MISSING else value


def dumps(value: Any) -> bytes:
    """JSON as a careless sender writes it: NaN, infinities, huge integers, lone surrogates."""
    return json.dumps(strip(value), allow_nan=True).encode()
