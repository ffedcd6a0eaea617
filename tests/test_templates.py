"""Templates: the bundled ones load and differ; bad ones fail naming the field; copy is sandboxed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from media.errors import InputError, TemplateError
from media.job import JobSpec, parse_job
from media.templates import (
    ASPECTS,
    TEMPLATES_DIR,
    get_template,
    load_template_file,
    load_templates,
    render_all_copy,
    render_copy,
)

FIELDS = {
    "headline": "Summer sale",
    "description": "Linen shirts in six colours",
    "price": "$29",
    "cta": "Shop now",
    "store": "Acme",
    "language": "en",
}


def test_three_bundled_templates_load_and_look_different() -> None:
    templates = load_templates()
    assert {"showcase", "sale", "news"} <= set(templates)
    looks = {
        (t.music.style, t.transition.kind, t.end_card.background, t.styles["headline"].color)
        for t in templates.values()
    }
    assert len(looks) == len(templates)  # no two share music, transition and colours
    for t in templates.values():
        assert set(t.layouts) == set(ASPECTS)


def test_copy_renders_narration_per_language() -> None:
    t = get_template("showcase")
    en = render_all_copy(t, "en", FIELDS)
    assert en.narration == "Summer sale. Linen shirts in six colours. Yours for $29. Shop now."
    assert en.headline == "Summer sale" and en.price == "$29"
    ko = render_all_copy(t, "ko", {**FIELDS, "headline": "여름 세일", "price": "29,000원"})
    assert "지금 29,000원에 만나보세요." in ko.narration
    # Optional fields left out leave no dangling words behind.
    bare = render_all_copy(t, "en", {**FIELDS, "description": None, "price": None})
    assert bare.narration == "Summer sale. Shop now."


@pytest.mark.reliability("input", "copy text with Jinja syntax: treated as data")
def test_merchant_text_is_data_not_template_code() -> None:
    t = get_template("sale")
    evil = {**FIELDS, "headline": "{{ 7*7 }} {% for x in range(3) %}x{% endfor %}"}
    copy = render_all_copy(t, "en", evil)
    assert copy.headline == "{{ 7*7 }} {% for x in range(3) %}x{% endfor %}"


@pytest.mark.reliability("input", "template trying attribute escapes: sandboxed Jinja refuses")
def test_sandbox_blocks_attribute_escapes_in_templates() -> None:
    with pytest.raises(TemplateError, match=r"unsafe|access"):
        render_copy("{{ headline.__class__.__mro__ }}", FIELDS, where="test")
    with pytest.raises(TemplateError, match=r"undefined"):
        render_copy("{{ no_such_field }}", FIELDS, where="test")


def _write(tmp_path: Path, data: dict[str, object], name: str = "broken") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def _showcase() -> dict[str, object]:
    data = yaml.safe_load((TEMPLATES_DIR / "showcase.yaml").read_text())
    assert isinstance(data, dict)
    data["id"] = "broken"
    return data


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["layouts"].pop("1:1"), r"layouts\.1:1: .*missing"),
        (lambda d: d["layouts"]["9:16"]["scene"].pop("headline"), r"scene\.headline: missing box"),
        (lambda d: d["styles"]["price"].update(color="red"), r"styles\.price\.color"),
        (lambda d: d["scenes"][0].update(motion="spin"), r"scenes\.0\.motion"),
        (lambda d: d["layouts"]["9:16"]["scene"]["price"].update(x=0.9), r"inside the frame"),
        (lambda d: d.update(colour="#fff"), r"colour: Extra inputs are not permitted"),
        (lambda d: d["copy"]["en"].update(narration="{{ headline }"), r"copy\.narration"),
        (lambda d: d["copy"]["en"].update(narration="{{ phone }}"), r"'phone' is undefined"),
    ],
)
def test_invalid_template_names_the_field(tmp_path: Path, mutate: object, message: str) -> None:
    data = _showcase()
    mutate(data)  # type: ignore[operator]
    with pytest.raises(TemplateError, match=message):
        load_template_file(_write(tmp_path, data))


def test_template_id_must_match_file(tmp_path: Path) -> None:
    data = _showcase()
    with pytest.raises(TemplateError, match=r"must match the file name"):
        load_template_file(_write(tmp_path, data, name="other"))


def test_unknown_template_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"unknown template 'nope'.*news, sale, showcase"):
        get_template("nope")


def test_job_fields_validated_with_field_names(tmp_path: Path) -> None:
    base = {"headline": "Hi", "images": ["a.jpg"]}
    spec = parse_job(base, base_dir=tmp_path)
    assert spec.images == [tmp_path / "a.jpg"] and spec.formats == ["9:16", "1:1", "16:9"]
    with pytest.raises(InputError, match=r"^headline: "):
        parse_job({**base, "headline": "x" * 81})
    with pytest.raises(InputError, match=r"^headline: .*blank"):
        parse_job({**base, "headline": "   \n\t "})
    with pytest.raises(InputError, match=r"^formats\.0: "):
        parse_job({**base, "formats": ["4:3"]})
    with pytest.raises(InputError, match=r"^images: "):
        parse_job({**base, "images": []})
    with pytest.raises(InputError, match=r"^images: "):
        parse_job({**base, "images": [f"{i}.jpg" for i in range(9)]})
    with pytest.raises(InputError, match=r"^surprise: "):
        parse_job({**base, "surprise": 1})


def test_job_language_and_cleaning() -> None:
    spec = JobSpec.model_validate(
        {"headline": "여름\u0000 세일\n\n  특가", "images": ["a.jpg"], "formats": ["16:9", "9:16"]}
    )
    assert spec.headline == "여름 세일 특가"
    assert spec.resolved_language == "ko"
    assert spec.formats == ["9:16", "16:9"]  # canonical order: same request, same plan
