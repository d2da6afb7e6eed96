"""docs/errors.md and the code stay in sync, and it lists every message the tests trigger.

Named to run last: the second test checks the messages recorded while the other tests ran."""
from tdsm_core.errors_doc import matches, render_markdown, templates

from conftest import RAISED_MESSAGES, ROOT


def test_errors_doc_is_generated_from_the_current_code():
    expected = render_markdown()
    actual = (ROOT / "docs" / "errors.md").read_text()
    assert actual == expected, "docs/errors.md is stale: run `python -m tdsm_core.errors_doc > docs/errors.md`"
    assert len(templates()) > 60


def test_every_message_raised_in_the_tests_is_documented():
    catalogue = templates()
    undocumented = sorted({m for m in RAISED_MESSAGES if not matches(m, catalogue)})
    assert not undocumented, f"raised but not in docs/errors.md: {undocumented[:5]}"


def test_messages_are_one_sentence():
    for template in templates():
        assert "\n" not in template.text and template.text.rstrip().endswith((".", ")")), template
