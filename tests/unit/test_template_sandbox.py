"""Templates marketers write cannot reach Python: sandbox escapes render nothing or fail."""

from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from personalization.rules.act import template

CONTEXT = {
    "event": {"type": "order.completed", "properties": {"total": 12}},
    "profile": {"id": "p-1", "traits": {"first_name": "Ann"}},
    "loyalty": {"balance": 10, "tier": None},
}
ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ event.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__.__builtins__ }}",
    "{{ lipsum.__globals__['os'].system('true') }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ request.application.__globals__ }}",
    "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ profile.traits.update({'first_name': 'Eve'}) }}{{ profile.traits.first_name }}",
    "{{ event.properties.__setitem__('total', 0) }}",
    "{{ 'x'.format.__self__ }}",
    "{{ range.__call__.__self__ }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_an_escape_attempt_reaches_nothing(source: str) -> None:
    before = repr(CONTEXT)
    try:
        rendered = template(source).render(CONTEXT)
    except (SecurityError, UndefinedError, TypeError):
        rendered = ""
    for leak in ("<class", "<function", "<module", "<built-in", "subprocess", "uid="):
        assert leak not in rendered, (source, rendered[:200])
    assert "Eve" not in rendered
    assert repr(CONTEXT) == before  # the context is never changed
