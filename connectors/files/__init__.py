"""File imports shared by every connector: streamed records, checkpoints, reject files.

A connector importing exports (``ecrm import pos``, ``ecrm import calls``) supplies a
mapping model (subclass of :class:`FileMapping`) and a converter; the loop
(:func:`import_file`) streams, ingests in chunks, checkpoints, resumes and rejects.
"""

from connectors.files.columns import Columns, Getter, RowError, row_time
from connectors.files.importer import (
    CHUNK,
    Batch,
    Converted,
    Converter,
    FileSource,
    ImportInterrupted,
    ImportOptions,
    ImportSummary,
    Opened,
    Outcome,
    Refused,
    Skipped,
    import_file,
)
from connectors.files.mapping import (
    FileMapping,
    MappingError,
    UnknownZone,
    load_mapping_file,
    shipped,
    template_columns,
    zone,
)
from connectors.files.records import (
    FORMATS,
    CountingRaw,
    Record,
    csv_records,
    csv_with_header,
    file_format,
    jsonl_records,
)
from connectors.files.state import Checkpoint, RejectFile

__all__ = [
    "CHUNK",
    "FORMATS",
    "Batch",
    "Checkpoint",
    "Columns",
    "Converted",
    "Converter",
    "CountingRaw",
    "FileMapping",
    "FileSource",
    "Getter",
    "ImportInterrupted",
    "ImportOptions",
    "ImportSummary",
    "MappingError",
    "Opened",
    "Outcome",
    "Record",
    "Refused",
    "RejectFile",
    "RowError",
    "Skipped",
    "UnknownZone",
    "csv_records",
    "csv_with_header",
    "file_format",
    "import_file",
    "jsonl_records",
    "load_mapping_file",
    "row_time",
    "shipped",
    "template_columns",
    "zone",
]
