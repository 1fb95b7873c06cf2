"""Step definitions: the decorator, options, nodes and validation (no engine needed)."""

from __future__ import annotations

import pytest

import evflow


@evflow.step
def add(left: int, right: int) -> int:
    return left + right


@evflow.step(name="fetch", metadata={"team": "ml"}, max_retries=5)
async def fetch(url: str) -> str:
    return url


def test_calling_a_step_directly_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"add\.step\("):
        add(1, 2)


def test_step_validates_arguments_against_the_signature() -> None:
    with pytest.raises(TypeError, match=r"test_steps\.add"):
        add.step(1)
    with pytest.raises(TypeError):
        add.step(1, 2, 3)
    node = add.step(1, right=2)
    assert isinstance(node, evflow.Node)


def test_default_name_is_module_and_qualname() -> None:
    assert add.name == f"{__name__}.add"

    @evflow.step
    def local() -> None:
        return None

    assert local.name == f"{__name__}.test_default_name_is_module_and_qualname.locals.local"


def test_options_merge_over_the_decorator() -> None:
    assert fetch.effective_options()["max_retries"] == 5
    changed = fetch.options(timeout=2, metadata={"k": "v"})
    opts = changed.effective_options()
    assert opts["max_retries"] == 5
    assert opts["name"] == "fetch"
    assert opts["timeout"] == 2.0
    assert opts["metadata"] == {"team": "ml", "k": "v"}
    # the original is untouched
    assert fetch.effective_options()["metadata"] == {"team": "ml"}
    assert fetch.effective_options()["timeout"] is None


def test_defaults() -> None:
    opts = add.effective_options()
    assert opts == {
        "name": f"{__name__}.add",
        "metadata": {},
        "max_retries": 3,
        "retry_delay": 0.0,
        "catch_exceptions": False,
        "timeout": None,
        "checkpoint": True,
    }


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param([1], id="not-a-dict"),
        pytest.param({1: "x"}, id="non-str-key"),
        pytest.param({"x": object()}, id="not-json"),
        pytest.param({"x": float("nan")}, id="nan"),
    ],
)
def test_bad_metadata_is_refused_at_decoration_and_options(metadata: object) -> None:
    with pytest.raises(ValueError, match="metadata"):
        evflow.step(metadata=metadata)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="metadata"):
        add.options(metadata=metadata)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        pytest.param("max_retries", -2, id="max_retries"),
        pytest.param("retry_delay", -1, id="retry_delay"),
        pytest.param("timeout", 0, id="timeout"),
        pytest.param("checkpoint", "yes", id="checkpoint"),
        pytest.param("catch_exceptions", 1, id="catch_exceptions"),
        pytest.param("name", "", id="name"),
    ],
)
def test_bad_option_values_name_the_option(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option):
        add.options(**{option: value})


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="retries"):
        add.options(retries=3)
