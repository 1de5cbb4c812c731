"""Marketing rules as data: "when a customer does X and is Y, do Z".

::

    YAML file / PUT /v1/rules ──► loading (lines) ──► checks (vocabulary) ──► RuleSet
                                                                               │
                                      store.apply_rule_set (atomic, versioned) ◄┘
                                                                               │
    event ──► RuleIndex.candidates(type, channel) ──► evaluate(conditions, Context) ──► trace

What exists: the schema (:mod:`.schema`), the vocabulary declared in code and exported
(:mod:`.vocabulary`), YAML loading with file and line in every error (:mod:`.loading`),
checking and compiling (:mod:`.checks`), pure evaluation with a trace (:mod:`.evaluate`),
history aggregates as of the event (:mod:`.history`), the trigger index (:mod:`.index`) and
the versioned store (:mod:`.store`, tables in :mod:`.models`), firing while batches are
processed, exactly once (:mod:`.fire`), and the guards' decisions: caps, quiet hours and
holdout (:mod:`.guards`). Test replay comes next.
"""

from personalization.rules.checks import check_rule_set
from personalization.rules.evaluate import (
    MISSING,
    Context,
    Evaluation,
    LeafResult,
    aggregates_of,
    evaluate,
)
from personalization.rules.history import history_value, history_values
from personalization.rules.index import RuleIndex
from personalization.rules.loading import load_file, parse_yaml
from personalization.rules.models import Rule, RuleVersion
from personalization.rules.schema import (
    CompiledRule,
    RuleAction,
    RuleIssue,
    RuleSet,
    RuleSetInvalid,
)
from personalization.rules.store import (
    ApplyResult,
    apply_rule_set,
    get_rule,
    list_rules,
    load_rules,
)
from personalization.rules.vocabulary import (
    HistoryAggregate,
    export_vocabulary,
    parse_field,
)

__all__ = [
    "MISSING",
    "ApplyResult",
    "CompiledRule",
    "Context",
    "Evaluation",
    "HistoryAggregate",
    "LeafResult",
    "Rule",
    "RuleAction",
    "RuleIndex",
    "RuleIssue",
    "RuleSet",
    "RuleSetInvalid",
    "RuleVersion",
    "aggregates_of",
    "apply_rule_set",
    "check_rule_set",
    "evaluate",
    "export_vocabulary",
    "get_rule",
    "history_value",
    "history_values",
    "list_rules",
    "load_file",
    "load_rules",
    "parse_field",
    "parse_yaml",
]
