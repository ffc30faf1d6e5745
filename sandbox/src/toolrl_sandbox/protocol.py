"""Host side of the executor protocol, over a Docker attach stream.

Messages both ways are a 4-byte big-endian length and UTF-8 JSON (see
``executor.py``).  The connection is a raw HTTP connection to the engine that
was upgraded by ``POST /containers/{id}/attach``; what we write is the
container's stdin, what we read is its stdout and stderr multiplexed in
8-byte-header frames (``tty=False``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
from typing import Any

from .engine import Endpoint

log = logging.getLogger(__name__)

MAX_FRAME = 256 * 1024 * 1024


class ConnectionLost(Exception):
    """The executor's stream closed or broke: the container is gone or sick."""


def encode_blob(value: str | bytes | None) -> str | dict[str, str] | None:
    """Strings travel as JSON strings, bytes as ``{"b64": ...}``."""
    if value is None or isinstance(value, str):
        return value
    return {"b64": base64.b64encode(bytes(value)).decode("ascii")}


def encode_frame(msg: dict[str, Any]) -> bytes:
    body = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return struct.pack(">I", len(body)) + body


class AttachStream:
    """One container's stdin/stdout as a request/response channel."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> None:
        self._reader = reader
        self._writer = writer
        self._buf = bytearray()
        self.name = name

    @classmethod
    async def open(cls, endpoint: Endpoint, container_id: str, timeout: float = 10.0) -> AttachStream:
        if endpoint.unix_path is not None:
            conn = asyncio.open_unix_connection(endpoint.unix_path, limit=1 << 20)
        else:
            conn = asyncio.open_connection(endpoint.host, endpoint.port, limit=1 << 20)
        reader, writer = await asyncio.wait_for(conn, timeout)
        request = (
            f"POST /v{endpoint.api_version}/containers/{container_id}/attach"
            "?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n"
            "Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
        )
        writer.write(request.encode("ascii"))
        try:
            status = await asyncio.wait_for(reader.readline(), timeout)
            parts = status.split()
            if len(parts) < 2 or parts[1] not in (b"101", b"200"):
                rest = await asyncio.wait_for(reader.read(2000), 1.0)
                raise ConnectionLost(f"attach refused: {status!r} {rest[:300]!r}")
            while True:  # skip the response headers
                line = await asyncio.wait_for(reader.readline(), timeout)
                if line in (b"\r\n", b"\n", b""):
                    break
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer, container_id[:12])

    async def _fill(self, need: int) -> None:
        """Read multiplexed frames until the stdout buffer holds ``need`` bytes."""
        reader = self._reader
        while len(self._buf) < need:
            try:
                head = await reader.readexactly(8)
                size = int.from_bytes(head[4:8], "big")
                data = await reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                raise ConnectionLost(f"container {self.name}: stream closed") from exc
            if head[0] == 1:
                self._buf += data
            elif head[0] == 2:
                log.warning("container %s: %s", self.name, data.decode("utf-8", "replace").rstrip())

    async def receive(self) -> dict[str, Any]:
        await self._fill(4)
        (size,) = struct.unpack(">I", self._buf[:4])
        if size > MAX_FRAME:
            raise ConnectionLost(f"container {self.name}: frame of {size} bytes")
        await self._fill(4 + size)
        body = bytes(self._buf[4:4 + size])
        del self._buf[:4 + size]
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ConnectionLost(f"container {self.name}: undecodable frame") from exc

    async def send(self, msg: dict[str, Any], *more: dict[str, Any]) -> None:
        try:
            self._writer.write(b"".join(encode_frame(m) for m in (msg, *more)))
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise ConnectionLost(f"container {self.name}: cannot write: {exc}") from exc

    async def request(self, msg: dict[str, Any], *more: dict[str, Any],
                      outcomes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Send ``msg`` (and frames that belong to it, like a grade's tests); return the answer.

        A grade's outcome frames (``{"op": "outcome"}``, written by the grader
        process before the executor answers) are appended to ``outcomes``."""
        await self.send(msg, *more)
        while True:
            resp = await self.receive()
            if resp.get("op") != "outcome":
                return resp
            if outcomes is None or resp.get("id") != msg.get("id"):
                raise ConnectionLost(f"container {self.name}: unexpected outcome frame")
            outcomes.append(resp)

    @property
    def closed(self) -> bool:
        return self._writer.is_closing() or self._reader.at_eof()

    def close(self) -> None:
        try:
            self._writer.close()
        except RuntimeError:  # loop already closed
            pass
