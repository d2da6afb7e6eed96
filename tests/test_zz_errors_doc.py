"""docs/errors.md and the code stay in sync, and it lists every message the tests trigger.

Named to run last: the second test checks the messages recorded while the other tests ran."""
import pytest

from tdsm_core.config import load_config
from tdsm_core.errors import ConfigError
from tdsm_core.cli.errors_doc import render_markdown, templates

from conftest import RAISED_MESSAGES, ROOT, undocumented_messages


def test_errors_doc_is_generated_from_the_current_code():
    expected = render_markdown()
    actual = (ROOT / "docs" / "errors.md").read_text()
    assert actual == expected, "docs/errors.md is stale: run `python -m tdsm_core.cli.errors_doc > docs/errors.md`"
    assert len(templates()) > 60


def test_every_message_raised_in_the_tests_is_documented():
    with pytest.raises(ConfigError):  # one message of its own, so the check never runs on an empty record
        load_config(ROOT / "configs" / "demo.yaml", ["train.stepz=1"])
    assert RAISED_MESSAGES
    undocumented = undocumented_messages()
    assert not undocumented, f"raised but not in docs/errors.md: {undocumented[:5]}"


def test_messages_are_one_sentence():
    for template in templates():
        assert "\n" not in template.text and template.text.rstrip().endswith((".", ")")), template
