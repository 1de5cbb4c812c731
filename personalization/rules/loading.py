"""Rule files in YAML, with errors that name the file, the line and the key to fix.

Why the YAML is composed to nodes first: pydantic reports a path (``rules[2].trigger.types[0]``)
and the nodes keep where each key and value started, so every issue gets the line of the
offending key (or, for a missing key, of the mapping it is missing from). Duplicate keys,
which PyYAML would silently resolve to the last one, are refused.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from personalization.rules.checks import check_rule_set
from personalization.rules.schema import Loc, RuleIssue, RuleSet, RuleSetInvalid
from pipeline.errors import HubError

#: the largest rule file read (a few thousand rules)
MAX_FILE_BYTES = 4 * 1024 * 1024


def load_file(path: str | Path) -> RuleSet:
    """Read and check a YAML rule file; :class:`RuleSetInvalid` carries file and lines."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise HubError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HubError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HubError(f"{path}: is a directory, not a rule file") from None
    except UnicodeDecodeError:
        raise HubError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise HubError(f"{path}: cannot read it ({exc.strerror})") from None
    return parse_yaml(text, source=str(path))


def parse_yaml(text: str, source: str = "<rules>") -> RuleSet:
    """Check a rule set written in YAML (or JSON, which is YAML too)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = f"{exc.problem or 'not valid YAML'}"
        raise RuleSetInvalid([RuleIssue((), f"not valid YAML: {problem}", line)], source) from None
    except yaml.YAMLError as exc:
        raise RuleSetInvalid([RuleIssue((), f"not valid YAML: {exc}", 1)], source) from None
    if root is None:
        issue = RuleIssue((), "empty; expected a mapping with a 'rules' list", 1)
        raise RuleSetInvalid([issue], source)
    duplicates = list(_duplicate_keys(root, ()))
    if duplicates:
        raise RuleSetInvalid(duplicates, source)
    loader = yaml.SafeLoader("")
    try:
        data: Any = loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise RuleSetInvalid([RuleIssue((), f"not valid YAML: {exc}", 1)], source) from None
    finally:
        loader.dispose()
    try:
        return check_rule_set(data)
    except RuleSetInvalid as exc:
        issues = [replace(issue, line=line_of(root, issue.loc)) for issue in exc.issues]
        raise RuleSetInvalid(issues, source) from None


def line_of(root: yaml.Node, loc: Loc) -> int:
    """The 1-based line of the node at ``loc`` (or of the deepest node on the way there)."""
    node, line = root, root.start_mark.line
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = next(
                (
                    (key, value)
                    for key, value in node.value
                    if isinstance(key, yaml.ScalarNode) and key.value == part
                ),
                None,
            )
            if found is None:
                break
            line, node = found[0].start_mark.line, found[1]
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return line + 1


def _duplicate_keys(node: yaml.Node, loc: Loc) -> Any:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name in seen:
                yield RuleIssue(
                    (*loc, name), "key given twice in one mapping", key.start_mark.line + 1
                )
            if name is not None:
                seen.add(name)
            yield from _duplicate_keys(value, (*loc, name) if name is not None else loc)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, index))
