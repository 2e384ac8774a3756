"""Export files (the invoice CSV, the journal CSV, the FEC): one way to
write them, row by row into the one output buffer, gzip-compressed when the
client accepts it."""
from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable

from chalicelib.domain.errors import InvalidRequest

# A Lambda answers API Gateway with at most 6 MB (base64 included): a larger
# plain file could not be delivered; gzipped, 100,000 CSV lines are ~0.6 MB.
MAX_PLAIN_EXPORT_BYTES = 4_000_000


def write_export(header: Iterable[str], rows: Iterable[list[str]], *, compress: bool, delimiter: str = ",") -> bytes:
    """An export file (CSV, or tab-separated with `delimiter`), written row
    by row straight into the one output buffer, gzip-compressed when
    `compress`; a plain file over MAX_PLAIN_EXPORT_BYTES is refused (400)
    asking for gzip (a Lambda answers 6 MB at most)."""
    buffer = io.BytesIO()
    raw = gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) if compress else buffer
    text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
    writer = csv.writer(text, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    text.flush()
    text.detach()
    if compress:
        raw.close()
    if not compress and buffer.tell() > MAX_PLAIN_EXPORT_BYTES:
        raise InvalidRequest(
            f"the export is larger than {MAX_PLAIN_EXPORT_BYTES // 1_000_000} MB uncompressed: "
            "send Accept-Encoding: gzip", param="Accept-Encoding", code="export_too_large")
    return buffer.getvalue()
