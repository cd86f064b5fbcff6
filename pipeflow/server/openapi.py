"""The gateway's OpenAPI 3.1 document, written as data.

Hand-written rather than generated so it can say what code cannot: the
WebSocket protocols, the SSE event names, the audio formats. A test checks
that every route of the app appears here and schemathesis fuzzes it.
"""

from __future__ import annotations

from typing import Any

import pipeflow
from pipeflow.server.calls import MAX_RATE, MIN_RATE

__all__ = ["openapi_document"]

_ID = {
    "name": "call_id",
    "in": "path",
    "required": True,
    "description": "The call id: 1 to 64 letters, digits, '_' or '-'.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {
                "status": {"type": "integer"},
                "message": {"type": "string", "description": "What went wrong, in a sentence."},
            },
        }
    },
}


def _error(text: str) -> dict[str, Any]:
    return {"description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_ERRORS = {
    "400": _error("Malformed call id, JSON or audio."),
    "401": _error("A gateway token is configured and the request does not carry it."),
    "403": _error("Refused: a browser page of another origin, a non-loopback Host without "
                  "a token, or a Twilio request without its signature."),
    "404": _error("No call has this id."),
    "409": _error("The call is not active (still starting, or ended)."),
    "413": _error("The request body is over the gateway's limit."),
    "415": _error("A content type any web page may POST (text/plain, a form): send JSON "
                  "or application/octet-stream."),
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _ERRORS[code] for code in codes}


def _json(schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": schema}}}


_CALL = {"$ref": "#/components/schemas/Call"}
_ACCEPTED = _json({"$ref": "#/components/schemas/Accepted"}, "Accepted; the agent will react.")


def _post(summary: str, op: str, responses: dict[str, Any],
          body: dict[str, Any] | None = None) -> dict[str, Any]:
    responses = {**responses, **_errors("403", "415")}  # the browser guard's refusals
    operation: dict[str, Any] = {"summary": summary, "operationId": op,
                                 "parameters": [_ID], "responses": responses}
    if body is not None:
        operation["requestBody"] = body
    return {"post": operation}


_WS_RESPONSES = {
    "101": {"description": "Switched to the WebSocket protocol."},
    "426": _error("A plain HTTP request: this path only speaks WebSocket."),
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every gateway route."""
    call_base = "/api/calls/{call_id}"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pipeflow call gateway",
            "version": pipeflow.__version__,
            "description": (
                "How phone systems and web pages reach a pipeflow voice agent. Each call id "
                "runs one session of the gateway's pipeline file. Errors are JSON "
                "`{\"error\": {\"status\", \"message\"}}`. With a token configured, `/api/` "
                "and `/twilio/` need `Authorization: Bearer TOKEN` (or a `token` query "
                "parameter for WebSockets)."
            ),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
        "security": [{"bearer": []}, {}],
        "paths": {
            "/api/calls": {"get": {
                "summary": "List calls", "operationId": "listCalls",
                "responses": {"200": _json({"$ref": "#/components/schemas/CallList"},
                                           "Every known call, briefly."),
                              **_errors("401")},
            }},
            call_base: {"get": {
                "summary": "A call's state, transcript, tool calls and agent summary",
                "operationId": "getCall", "parameters": [_ID],
                "responses": {"200": _json(_CALL, "The call."), **_errors("400", "401", "404")},
            }},
            f"{call_base}/start": _post(
                "Start a call", "startCall",
                {"201": _json(_CALL, "The call is live."),
                 **_errors("400", "401", "409", "413"),
                 "502": _error("The call's session could not start (model unreachable)."),
                 "503": {**_error("The gateway is at its limit of live calls."),
                         "headers": {"Retry-After": {"schema": {"type": "integer"},
                                                     "description": "Seconds to wait."}}}},
                {"required": False, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/StartBody"}}}},
            ),
            f"{call_base}/audio": {
                **_post(
                    "Send caller audio", "sendAudio",
                    {"202": _json({"$ref": "#/components/schemas/AudioAccepted"},
                                  "The audio is queued for the agent."),
                     **_errors("400", "401", "404", "409", "413")},
                    {"required": True, "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"},
                            "description": "Raw PCM16 little-endian mono at `sample_rate`."},
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/AudioBody"}},
                    }},
                ),
                "get": {
                    "summary": "The agent's audio so far as a WAV file",
                    "operationId": "getAgentAudio", "parameters": [_ID],
                    "responses": {"200": {"description": "PCM16 mono WAV (24 kHz).",
                                          "content": {"audio/wav": {"schema": {
                                              "type": "string", "format": "binary"}}}},
                                  **_errors("400", "401", "404")},
                },
            },
            f"{call_base}/audio/stream": {"get": {
                "summary": "The agent's audio, live", "operationId": "streamAgentAudio",
                "description": "Raw PCM16 mono at 24 kHz (see `X-Sample-Rate`) as the agent "
                               "speaks, until the call ends.",
                "parameters": [_ID],
                "responses": {"200": {"description": "A chunked audio stream.",
                                      "content": {"application/octet-stream": {"schema": {
                                          "type": "string", "format": "binary"}}}},
                              **_errors("400", "401", "404", "409")},
            }},
            f"{call_base}/commit": _post(
                "End the caller's turn", "commitAudio",
                {"202": _ACCEPTED, **_errors("400", "401", "404", "409", "413")},
            ),
            f"{call_base}/text": _post(
                "Send caller text (chat, DTMF, IVR)", "sendText",
                {"200": _json({"$ref": "#/components/schemas/Answer"},
                              "With `wait`: the agent's answer."),
                 "202": _json({"$ref": "#/components/schemas/Accepted"},
                              "Accepted (with `wait`: no answer came in time)."),
                 **_errors("400", "401", "404", "409", "413")},
                {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/TextBody"}}}},
            ),
            f"{call_base}/cancel": _post(
                "Stop the agent's answer now", "cancelResponse",
                {"202": _ACCEPTED, **_errors("400", "401", "404", "409", "413")},
            ),
            f"{call_base}/end": _post(
                "End the call (its record is kept)", "endCall",
                {"200": _json(_CALL, "The ended call."),
                 **_errors("400", "401", "404", "413")},
            ),
            f"{call_base}/events": {"get": {
                "summary": "Live events (server-sent events)", "operationId": "streamEvents",
                "description": (
                    "`event: call` first (the call, briefly), then one event per frame named "
                    "after its type (`transcript`, `tool_call`, `tool_result`, `interrupt`, "
                    "`response_done`...) with the frame as JSON, `event: agent` (the agent's "
                    "summary) after each tool result, and `event: end` when the call ends. "
                    "Audio frames only with `audio=true`."),
                "parameters": [_ID, {"name": "audio", "in": "query", "required": False,
                                     "schema": {"type": "boolean", "default": False}}],
                "responses": {"200": {"description": "An event stream.",
                                      "content": {"text/event-stream": {"schema": {
                                          "type": "string"}}}},
                              **_errors("400", "401", "404")},
            }},
            f"{call_base}/stream": {"get": {
                "summary": "WebSocket: audio and events both ways", "operationId": "callStream",
                "description": (
                    "Client to gateway: binary PCM16 mono at `sample_rate`; JSON "
                    "`{\"type\": \"text\", \"q\"}`, `commit`, `cancel`, `end`, or "
                    "`{\"type\": \"config\", \"sample_rate\"}`, "
                    "`{\"type\": \"played\", \"samples\"}` (agent audio played so far). "
                    "Gateway to client: binary "
                    "agent audio (PCM16 mono, 24 kHz); JSON `{\"type\": \"call\"}` first, "
                    "every frame as JSON, `{\"type\": \"agent\"}` after tool results, "
                    "`{\"type\": \"ended\"}` last. Refusals close with 4000 + the HTTP status."),
                "parameters": [_ID,
                               {"name": "sample_rate", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": MIN_RATE,
                                           "maximum": MAX_RATE}},
                               {"name": "token", "in": "query", "required": False,
                                "schema": {"type": "string"}}],
                "responses": _WS_RESPONSES,
            }},
            "/twilio/voice": {"post": {
                "summary": "Twilio voice webhook: answer with <Connect><Stream>",
                "operationId": "twilioVoice",
                "requestBody": {"required": False, "content": {
                    "application/x-www-form-urlencoded": {"schema": {
                        "type": "object",
                        "properties": {"CallSid": {"type": "string"},
                                       "From": {"type": "string"},
                                       "To": {"type": "string"}}}}}},
                "responses": {"200": {"description": "TwiML.",
                                      "content": {"application/xml": {"schema": {
                                          "type": "string"}}}},
                              **_errors("400", "401", "403", "413")},
            }},
            "/twilio/media": {"get": {
                "summary": "WebSocket: Twilio Media Streams",
                "operationId": "twilioMedia",
                "description": (
                    "Twilio's Media Streams protocol: connected, start, media (8 kHz mu-law), "
                    "mark, dtmf and stop in; media, mark and clear out. The call id is the "
                    "`call_id` stream parameter, else the CallSid."),
                "responses": _WS_RESPONSES,
            }},
            "/": {"get": {
                "summary": "The browser page", "operationId": "page", "security": [{}],
                "responses": {"200": {"description": "HTML.", "content": {
                    "text/html": {"schema": {"type": "string"}}}}},
            }},
            "/static/app.js": {"get": {
                "summary": "The browser page's script", "operationId": "pageScript",
                "security": [{}],
                "responses": {"200": {"description": "JavaScript.", "content": {
                    "text/javascript": {"schema": {"type": "string"}}}}},
            }},
            "/healthz": {"get": {
                "summary": "Liveness and load", "operationId": "health", "security": [{}],
                "responses": {"200": _json({"type": "object", "properties": {
                    "status": {"type": "string"}, "live": {"type": "integer"},
                    "max_calls": {"type": "integer"}}}, "The gateway is up.")},
            }},
            "/openapi.json": {"get": {
                "summary": "This document", "operationId": "openapi", "security": [{}],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
            }},
        },
    }


def _schemas() -> dict[str, Any]:
    rate = {"type": "integer", "minimum": MIN_RATE, "maximum": MAX_RATE}
    turn = {
        "type": "object",
        "properties": {
            "role": {"enum": ["user", "agent"]}, "text": {"type": "string"},
            "audio_duration": {"type": "number"}, "started_at": {"type": "number"},
            "ended_at": {"type": ["number", "null"]}, "interrupted": {"type": "boolean"},
            "source": {"enum": ["audio", "text"]},
        },
    }
    tool_call = {
        "type": "object",
        "properties": {
            "call_id": {"type": "string"}, "name": {"type": "string"},
            "arguments": {"type": "string"}, "output": {"type": ["string", "null"]},
            "is_error": {"type": "boolean"}, "started_at": {"type": "number"},
            "ended_at": {"type": ["number", "null"]},
        },
    }
    return {
        "Error": _ERROR,
        "StartBody": {"type": "object", "additionalProperties": False, "properties": {
            "sample_rate": {**rate, "default": 16000,
                            "description": "Rate of the caller audio this call will send."}}},
        "AudioBody": {"type": "object", "additionalProperties": False,
                      "required": ["pcm_b64"], "properties": {
                          "pcm_b64": {"type": "string", "contentEncoding": "base64",
                                      "description": "PCM16 little-endian mono, base64."},
                          "sample_rate": rate}},
        "TextBody": {"type": "object", "additionalProperties": False, "required": ["q"],
                     "properties": {
                         "q": {"type": "string", "minLength": 1, "maxLength": 4000,
                               "description": "What the caller typed or keyed in."},
                         "wait": {"type": "boolean", "default": False,
                                  "description": "Answer with the agent's reply."},
                         "timeout_s": {"type": "number", "exclusiveMinimum": 0,
                                       "maximum": 120, "default": 30}}},
        "Accepted": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
        "AudioAccepted": {"type": "object", "properties": {
            "accepted_bytes": {"type": "integer"}, "sample_rate": {"type": "integer"},
            "duration_ms": {"type": "integer"}}},
        "Answer": {"type": "object", "properties": {
            "ok": {"type": "boolean"}, "answered": {"type": "boolean"},
            "reply": {"type": "string"}, "tool_results": {"type": "array"},
            "agent": {"description": "The agent's summary hook, if it has one."}}},
        "Turn": turn,
        "ToolCall": tool_call,
        "Call": {"type": "object", "required": ["id", "state"], "properties": {
            "id": {"type": "string"},
            "state": {"enum": ["starting", "active", "ending", "ended", "failed"]},
            "created_at": {"type": "number"}, "ended_at": {"type": ["number", "null"]},
            "updated_at": {"type": ["number", "null"],
                           "description": "When the record in call.json was last written."},
            "end_reason": {"type": "string"}, "error": {"type": "string"},
            "session_state": {"type": "string"}, "transcript": {"type": "string"},
            "turns": {"type": "array", "items": {"$ref": "#/components/schemas/Turn"}},
            "tool_calls": {"type": "array",
                           "items": {"$ref": "#/components/schemas/ToolCall"}},
            "agent": {"description": "What the agent's summary(userdata) hook returns "
                                     "(an order line's order), if it has one."}}},
        "CallList": {"type": "object", "properties": {
            "calls": {"type": "array", "items": {"$ref": "#/components/schemas/Call"}},
            "live": {"type": "integer"}, "max_calls": {"type": "integer"}}},
    }
