"""Every text of the console in both languages, with the same placeholders."""
from __future__ import annotations

import importlib
import string

from chalicelib.web import texts


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_area_says_everything_in_french_and_in_english():
    for area in texts.AREAS:
        module = importlib.import_module(f"chalicelib.web.texts_{area}")
        assert set(module.TEXTS["fr"]) == set(module.TEXTS["en"]), area
        for key, french in module.TEXTS["fr"].items():
            assert placeholders(french) == placeholders(module.TEXTS["en"][key]), (area, key)
    assert set(texts.TEXTS["fr"]) == set(texts.TEXTS["en"])


def test_no_area_takes_another_areas_key():
    seen: dict[str, str] = {}
    for area in texts.AREAS:
        for key in importlib.import_module(f"chalicelib.web.texts_{area}").TEXTS["fr"]:
            assert key not in seen, (key, area, seen.get(key))
            seen[key] = area
