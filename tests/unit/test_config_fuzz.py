"""Generative tests of the config loader (issue 24, item 8): any bytes as a config file, and
any document within or just outside the schema, end in a Benchmark or one UserError line,
never another exception. A shrunk failing example becomes a regular test below."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlbench.config import load_config, parse_config
from tlbench.types import UserError

# derandomize: the same 150 examples on every run (CI must not pass or fail by chance); a
# bug the fuzzing finds becomes a regular test below
FUZZ = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _load(raw: bytes):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_bytes(raw)
        return load_config(path)


def _one_line(fn) -> None:
    try:
        fn()
    except UserError as exc:
        assert "\n" not in str(exc).strip(), str(exc)


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_are_a_config_or_one_line(raw):
    _one_line(lambda: _load(raw))


@FUZZ
@given(st.sampled_from([b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf", b"\xff\xfe\x00\x00", b""]), st.binary(max_size=200))
def test_any_bytes_after_a_byte_order_mark_are_a_config_or_one_line(bom, raw):
    _one_line(lambda: _load(bom + raw))


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=20)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(
    st.fixed_dictionaries(
        {"name": st.one_of(st.just("x"), VALUES)},
        optional={
            "seed": VALUES, "repeats": VALUES, "run": VALUES, "results_dir": VALUES,
            "search": st.dictionaries(st.sampled_from(["n_trials", "timeout", "sampler", "pruner", "portfolio", "screen", "budget", "enqueue"]), VALUES, max_size=3),
            "training": st.dictionaries(st.sampled_from(["batch_size", "resolution", "device", "cache", "augment"]), VALUES, max_size=3),
        },
    ),
)  # fmt: skip
def test_documents_around_the_schema_parse_or_are_one_line(extra):
    doc = {"datasets": [{"name": "synthetic"}], "backbones": [{"name": "timm:test_resnet"}],
           "strategies": [{"name": "linear_probe"}]} | extra  # fmt: skip
    _one_line(lambda: parse_config(doc, "c.yaml"))


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe" + bytes(range(7)),  # random bytes after a UTF-16 BOM
        "name: x\n".encode("utf-16")[:-1],  # UTF-16 cut to an odd length
        b"\xfe\xff\xd8\x00",  # a lone surrogate
    ],
)
def test_bytes_that_are_not_text_in_their_encoding_are_one_line(raw):
    with pytest.raises(UserError, match="not a text file in UTF-16"):
        _load(raw)


def test_a_utf32_config_reads():
    text = yaml.safe_dump({"name": "x"})
    with pytest.raises(UserError, match="datasets"):  # read as text: only the schema objects
        _load(text.encode("utf-32"))


@pytest.mark.parametrize(
    "extra, where",
    [
        ({"seed": {"\n": float("inf")}}, "seed.'\\n': inf is not a finite number"),  # found by the fuzzing above
        ({"search": {"a\nb": 1}}, "search.'a\\nb': unknown field"),
        ({"search": {" n_trials": 1}}, "search.' n_trials': unknown field"),
    ],
)
def test_a_key_with_a_newline_or_blanks_is_named_quoted_on_one_line(extra, where):
    doc = {"name": "x", "datasets": [{"name": "synthetic"}], "backbones": [{"name": "timm:test_resnet"}],
           "strategies": [{"name": "linear_probe"}]} | extra  # fmt: skip
    with pytest.raises(UserError) as caught:
        parse_config(doc, "c.yaml")
    assert "\n" not in str(caught.value) and f"c.yaml: {where}" in str(caught.value), str(caught.value)
