"""The Realtime edge of the conversation engine: server events in, client events out.

``ConversationEngine`` speaks in transport-neutral terms (a response began,
audio of an item, start / cancel a response, truncate an item...). This
module is the one place that knows which Realtime events those are:

- ``RealtimeAdapter.translate`` turns one decoded server event (or the
  client's ``Reconnected`` marker) into one engine input, or ``None`` for
  events that mean nothing to the conversation (``session.updated``,
  ``conversation.item.added``, ``rate_limits.updated``...);
- ``RealtimeAdapter.send`` queues the client event of one engine command on
  a ``RealtimeProtocol``.

G.711 audio is decoded and encoded here, so the engine only sees PCM16.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pipeflow.audio import g711
from pipeflow.conversation import events as ce
from pipeflow.realtime import events as ev
from pipeflow.realtime.client import ConnectionEvent
from pipeflow.realtime.client import Reconnected as ClientReconnected
from pipeflow.realtime.protocol import RealtimeProtocol

__all__ = ["SAY_INSTRUCTIONS", "RealtimeAdapter"]

_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "g711_ulaw": g711.ulaw_encode, "g711_alaw": g711.alaw_encode}
_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "g711_ulaw": g711.ulaw_decode, "g711_alaw": g711.alaw_decode}

SAY_INSTRUCTIONS = "Say exactly the following text, word for word, and nothing else: "
"""Prefix of the ``response.create`` instructions that speak a ``Say`` text."""


class RealtimeAdapter:
    """Maps Realtime server events to engine inputs and engine commands to client events.

    Args:
        input_format: the session's input audio format (``pcm16``, ``g711_ulaw``...).
        output_format: the session's output audio format.
        output_rate: the sample rate of the output format.
    """

    def __init__(self, input_format: str = "pcm16", output_format: str = "pcm16",
                 output_rate: int = 24000) -> None:
        self._encode = _ENCODERS.get(input_format)
        self._decode = _DECODERS.get(output_format)
        self.output_rate = output_rate
        self._call_names: dict[str, str] = {}  # beta: the name comes with the item

    def translate(self, event: ConnectionEvent) -> ce.ModelInput | None:
        """The engine input of one server event, or ``None`` if it has none."""
        match event:
            case ev.OutputAudioDelta(item_id=item_id, delta=delta):
                pcm = delta if self._decode is None or not delta else self._decode(delta)
                return ce.AudioOut(item_id=item_id, pcm=pcm, sample_rate=self.output_rate)
            case ev.OutputAudioTranscriptDelta() | ev.OutputTextDelta():
                return ce.TextOut(item_id=event.item_id, text=event.delta)
            case ev.OutputAudioTranscriptDone():
                return ce.TextOut(item_id=event.item_id, text=event.transcript, final=True)
            case ev.OutputTextDone():
                return ce.TextOut(item_id=event.item_id, text=event.text, final=True)
            case ev.ResponseCreated(response=response):
                return ce.ResponseBegan(response_id=response.id)
            case ev.ResponseDone(response=response):
                usage = {k: v for k, v in (response.usage or {}).items() if type(v) is int}
                return ce.ResponseEnded(response_id=response.id, status=response.status,
                                        usage=usage)
            case ev.OutputItemAdded(item=item):
                if item.type == "function_call" and item.call_id:
                    self._call_names[item.call_id] = item.name or ""
                return None
            case ev.ResponseFunctionCallArgumentsDone():
                name = event.name or self._call_names.get(event.call_id, "")
                return ce.ToolCalled(call_id=event.call_id, name=name, arguments=event.arguments)
            case ev.OutputItemDone(item=item):
                if item.type == "function_call" and item.call_id:
                    return ce.ToolCalled(call_id=item.call_id, name=item.name or "",
                                         arguments=item.arguments or "")
                return None
            case ev.InputTranscriptionCompleted():
                return ce.UserTranscript(item_id=event.item_id, text=event.transcript)
            case ev.InputAudioBufferSpeechStarted():
                return ce.SpeechBegan(at=event.audio_start_ms / 1000, item_id=event.item_id)
            case ev.InputAudioBufferSpeechStopped():
                return ce.SpeechEnded(at=event.audio_end_ms / 1000, item_id=event.item_id)
            case ev.InputAudioBufferCommitted():
                return ce.InputCommitted(item_id=event.item_id)
            case ev.ErrorEvent(error=error):
                return ce.ModelError(
                    message=f"the model server reported an error ({error.type}): "
                    f"{error.message}",
                    code=error.code or error.type,
                    error_type=error.type,
                    event_id=error.event_id or event.event_id or "",
                    request_id=error.event_id or "",
                    no_active_response=error.code == "response_cancel_not_active",
                )
            case ev.UnknownEvent():
                return ce.ModelNotice(event=event.type, data=event.data)
            case ClientReconnected():
                self._call_names.clear()
                return ce.Reconnected(attempt=event.attempt, reason=event.reason)
        return None

    def send(self, commands: Iterable[ce.Command], protocol: RealtimeProtocol) -> None:
        """Queue the client event of each command on ``protocol``, in order."""
        for command in commands:
            match command:
                case ce.AppendAudio(pcm=pcm):
                    protocol.append_audio(pcm if self._encode is None else self._encode(pcm))
                case ce.CommitAudio():
                    protocol.commit()
                case ce.AddMessage(text=text, role=role):
                    protocol.create_text_item(text, role)
                case ce.StartResponse(request_id=request_id, say=say):
                    response = None if say is None else {
                        "instructions": SAY_INSTRUCTIONS + say,
                        "metadata": {"say": say[:512]},
                    }
                    protocol.create_response(response, event_id=request_id)
                case ce.CancelResponse():
                    # No response_id: the server cancels the one in progress, and the
                    # id a response.created carried may be a placeholder.
                    protocol.cancel_response()
                case ce.TruncateItem(item_id=item_id, audio_end_ms=audio_end_ms):
                    protocol.truncate(item_id, audio_end_ms)
                case ce.SendToolResult(call_id=call_id, output=output):
                    protocol.create_function_output(call_id, output)
