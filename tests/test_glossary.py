"""The glossary: one line per term, found by any spelling the pages use, and a typo refused."""

import re
from pathlib import Path

import pytest

from alexnet_ui import glossary

ROOT = Path(__file__).parents[1]


def test_every_term_has_one_short_line_and_every_alias_a_term():
    for term, line in glossary.TERMS.items():
        assert line.strip() and len(line) <= 240 and line.endswith((".", ")")), term
    assert set(glossary.ALIASES.values()) <= set(glossary.TERMS)
    assert glossary.help("macs") == glossary.help("MACs") == glossary.help("multiply-accumulates")
    with pytest.raises(KeyError, match="not in the glossary"):
        glossary.help("flux capacitor")


def test_every_term_the_code_asks_for_is_in_the_glossary():
    asked = set()
    for path in [*ROOT.glob("alexnet_ui/*.py"), *ROOT.glob("pages/*.py"), ROOT / "app.py"]:
        asked |= set(re.findall(r"glossary\.helps?\(\s*[\"']([^\"']+)[\"']", path.read_text()))
    assert {"MACs", "GFLOP/s", "receptive field"} <= asked  # the Architecture page's
    for term in asked:
        glossary.help(term)


def test_the_glossary_page_lists_every_term_and_finds_one_by_any_spelling():
    from streamlit.testing.v1 import AppTest

    from tests.test_pages import ROOT as APP_ROOT
    from tests.test_pages import TIMEOUT

    at = AppTest.from_file(str(APP_ROOT / "app.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/glossary.py")
    at.run()
    assert not at.exception, at.exception
    def listed():
        return re.findall(r"^- \*\*(.+?)\*\*: ", at.markdown[0].value, flags=re.M)

    assert [t.replace("\\", "") for t in listed()] == sorted(glossary.TERMS, key=str.lower)  # all, alphabetically
    at.text_input(key="glossary_find").input("tsne").run()  # an alias finds its term
    assert [t.replace("\\", "") for t in listed()] == ["t-SNE"]
    at.text_input(key="glossary_find").input("flux capacitor").run()
    assert not at.markdown and "No term matches 'flux capacitor'" in at.info[0].value


@pytest.mark.parametrize("page, heading, term", [
    ("pages/models.py", "ImageNet AlexNets", "top-5"),
    ("pages/models.py", "Open a model of your own", "preprocessing"),
    ("pages/claims.py", "1. ReLUs train six times faster than tanh", "ReLU"),
])
def test_the_models_and_claims_pages_explain_their_terms_beside_their_headings(page, heading, term):
    from streamlit.testing.v1 import AppTest

    from tests.test_pages import ROOT as APP_ROOT
    from tests.test_pages import TIMEOUT

    at = AppTest.from_file(str(APP_ROOT / "app.py"), default_timeout=TIMEOUT)
    at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    (shown,) = [h for h in at.subheader if h.value == heading]
    assert glossary.help(term) in shown.proto.help
    if page == "pages/claims.py":  # the verdict says what its words mean
        verdict = [m for m in at.markdown if m.proto.help and glossary.help("within noise") in m.proto.help]
        assert len(verdict) == 1
