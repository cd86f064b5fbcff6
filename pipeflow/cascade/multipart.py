"""Reading a ``multipart/form-data`` body (the upload of ``/v1/audio/transcriptions``).

I/O-free and small on purpose: the fields of one form, each with its bytes,
its file name and its content type. A body that does not parse is a
``ValueError`` whose text says what is wrong, for a 400 answer.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Part", "boundary_of", "parse_form"]


class Part(NamedTuple):
    """One form field."""

    data: bytes
    filename: str = ""
    content_type: str = ""


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data; boundary=...`` header.

    Raises:
        ValueError: not multipart form data, or no boundary.
    """
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise ValueError(f"the body must be multipart/form-data, not {kind.strip() or 'empty'!r}")
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    raise ValueError("the multipart/form-data content type has no boundary")


def _header_params(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for param in value.split(";")[1:]:
        name, _, raw = param.strip().partition("=")
        out[name.lower()] = raw.strip().strip('"')
    return out


def parse_form(body: bytes, boundary: bytes) -> dict[str, Part]:
    """The fields of ``body`` by name (the last one wins when a name repeats).

    Raises:
        ValueError: a part with no headers or no name, or no closing boundary.
    """
    delimiter = b"--" + boundary
    if delimiter + b"--" not in body:
        raise ValueError("the multipart body has no closing boundary (truncated upload?)")
    fields: dict[str, Part] = {}
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a multipart part has no blank line after its headers")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        params = _header_params(headers.get("content-disposition", ""))
        name = params.get("name")
        if not name:
            raise ValueError("a multipart part has no name in its Content-Disposition")
        fields[name] = Part(data.removesuffix(b"\r\n"), params.get("filename", ""),
                            headers.get("content-type", ""))
    return fields
