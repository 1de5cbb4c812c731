"""Call-centre connector, file side: call-detail records exported by PBXes and contact
centres (``ecrm import calls FILE``), each record one ``call.completed`` touchpoint on
the ``call`` channel.

Ships mappings for Asterisk's ``cdr_csv`` ``Master.csv`` and a generic CSV layout; the
import itself is the shared file-import loop (:mod:`connectors.files`).
"""

from connectors.calls.cdr import EVENT_TYPE, SOURCE, CompiledCallMapping, Skip
from connectors.calls.importer import import_calls_file
from connectors.calls.mapping import (
    CallMapping,
    MappingError,
    load_mapping,
    shipped_mappings,
)
from connectors.calls.parties import channel_endpoint, parse_clid
from connectors.files import ImportInterrupted, ImportSummary

__all__ = [
    "EVENT_TYPE",
    "SOURCE",
    "CallMapping",
    "CompiledCallMapping",
    "ImportInterrupted",
    "ImportSummary",
    "MappingError",
    "Skip",
    "channel_endpoint",
    "import_calls_file",
    "load_mapping",
    "parse_clid",
    "shipped_mappings",
]
