"""The config reference in docs/plugins.md is generated from the schema: it names every
field the schema accepts, each with the comment written next to it, and the guide holds
exactly the generated text."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from tlbench import config, configdoc

ROOT = Path(__file__).parent.parent.parent


def _models(model: type[BaseModel], seen: set) -> set:
    seen.add(model)
    for field in model.model_fields.values():
        for kind in (field.annotation, *getattr(field.annotation, "__args__", ())):
            for inner in (kind, *getattr(kind, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel) and inner not in seen:
                    _models(inner, seen)
    return seen


def test_every_model_of_the_schema_has_a_section_and_every_field_a_comment():
    sectioned = {model for _, model, _ in configdoc.SECTIONS}
    assert _models(config.Benchmark, set()) == sectioned
    notes = configdoc.comments()
    missing = [f"{m.__name__}.{f}" for m in sectioned for f in m.model_fields if not notes.get((m.__name__, f))]
    assert missing == []


def test_the_guide_holds_the_generated_reference():
    doc = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    start, end = doc.index(configdoc.START), doc.index(configdoc.END) + len(configdoc.END)
    assert doc[start:end] == configdoc.reference(), "regenerate it: python -m tlbench.configdoc"


def test_the_reference_shows_fields_the_readme_leaves_out():
    text = configdoc.reference()
    for field in (
        "datasets[].label",
        "results_dir",
        "datasets[].per_class",
        "datasets[].val_samples",
        "search.startup_trials",
    ):
        assert f"`{field}`" in text


def test_the_guide_holds_the_trial_record_and_every_reserved_name_and_adapted_field():
    """TrialRecord's fields (generated from record.py), every reserved option name and every
    field of Adapted are in the plugin guide: a field or name added without its line fails."""
    import dataclasses

    from tlbench.host import contract
    from tlbench.types import Adapted

    doc = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    start, end = doc.index(configdoc.RECORD_START), doc.index(configdoc.RECORD_END) + len(configdoc.RECORD_END)
    assert doc[start:end] == configdoc.record_reference(), "regenerate it: python -m tlbench.configdoc --record"
    reserved = doc[doc.index("## Reserved names") :]
    reserved = reserved[: reserved.index("\n## ", 1)]
    for record, names in contract.RESERVED_OPTIONS.items():
        row = next(line for line in reserved.splitlines() if line.startswith(f"| `{record.__name__}` |"))
        missing = [n for n in names if f"`{n}`" not in row and n not in contract.RESERVED_PARAMS]
        assert missing == [], (record.__name__, missing)
    assert all(f"`{n}`" in reserved for n in contract.RESERVED_PARAMS)
    for field in dataclasses.fields(Adapted):
        assert f"`Adapted.{field.name}`" in doc, field.name
