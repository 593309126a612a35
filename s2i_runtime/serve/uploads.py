"""Getting the audio out of a request: the raw body, or the file part of a multipart/form-data upload,
never more than the upload limit in memory. Decoding the audio itself is the runtime's job (`audio.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..errors import InputError

AUDIO_FIELDS = (b"audio", b"file")  # multipart field names taken first, in this order
RAW_LABEL = "upload"


class UploadTooLarge(InputError):
    """The body is larger than the limit (413)."""


async def read_limited(declared_length: str | None, stream: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, refused as soon as it is known to exceed `limit` bytes (by Content-Length when the
    client sent one, else while it arrives), so an oversized upload never sits in memory."""
    too_large = UploadTooLarge(f"upload is larger than the limit of {limit} bytes")
    if declared_length is not None and declared_length.strip().isdigit() and int(declared_length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def audio_from_body(content_type: str | None, body: bytes) -> tuple[bytes, str]:
    """(audio bytes, a label for messages): the body itself, or the audio part of a multipart upload."""
    from python_multipart.multipart import parse_options_header

    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        return body, RAW_LABEL
    boundary = options.get(b"boundary")
    if not boundary:
        raise InputError("multipart upload without a boundary in its Content-Type")
    parts = _multipart_parts(boundary, body)
    files = [p for p in parts if p.filename is not None]
    chosen = next((p for name in AUDIO_FIELDS for p in parts if p.name == name), files[0] if files else None)
    if chosen is None:
        raise InputError("multipart upload has no file part (send the audio as the field 'audio')")
    return chosen.data, _safe_label(chosen.filename) if chosen.filename else RAW_LABEL


class _Part:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.chunks: list[bytes] = []
        self.name: bytes | None = None
        self.filename: bytes | None = None

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def _multipart_parts(boundary: bytes, body: bytes) -> list[_Part]:
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    parts: list[_Part] = []
    field, value = bytearray(), bytearray()

    def on_part_begin() -> None:
        parts.append(_Part())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value.extend(data[start:end])

    def on_header_end() -> None:
        parts[-1].headers[bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    def on_headers_finished() -> None:
        part = parts[-1]
        _, params = parse_options_header(part.headers.get(b"content-disposition", b"").decode("latin-1"))
        part.name = params.get(b"name")
        part.filename = params.get(b"filename")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].chunks.append(data[start:end])

    callbacks = {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise InputError(f"malformed multipart upload ({exc})") from None
    return parts


def _safe_label(filename: bytes) -> str:
    """A client's file name, fit to appear in an error line: the last path part, printable, short."""
    name = filename.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch if ch.isprintable() else "?" for ch in name)[:80]
    return name or RAW_LABEL
