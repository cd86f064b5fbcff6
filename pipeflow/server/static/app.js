// The pipeflow call page: microphone -> WebSocket -> agent, agent audio -> speaker.
//
// Caller audio is captured with an AudioWorklet (ScriptProcessor where there is
// none) at 16 kHz and sent as binary PCM16 frames of 20 ms over
// /api/calls/{id}/stream. The gateway sends the agent's audio back as binary
// PCM16 at 24 kHz, played gap-free by scheduling one buffer after the other;
// an "interrupt" event stops what is scheduled (barge-in). JSON events fill
// the transcript, the tool calls and the agent's summary (an order line's order).
"use strict";

const MIC_RATE = 16000;
const AGENT_RATE = 24000;
const FRAME = MIC_RATE / 50; // 20 ms

const $ = (id) => document.getElementById(id);
const state = { ws: null, mic: null, player: null, callId: "", tools: new Map() };
window.pipeflowCall = state; // for tests and the console

function headers(json) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const token = $("token").value.trim();
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

function setStatus(text) { $("status").textContent = text; }

function randomId() {
  return "web-" + Math.random().toString(36).slice(2, 10);
}

// -- the call ------------------------------------------------------------------

async function startCall() {
  const callId = $("call-id").value.trim() || randomId();
  $("call-id").value = callId;
  state.callId = callId;
  $("start").disabled = true;
  setStatus("starting...");
  const base = "/api/calls/" + encodeURIComponent(callId);
  const response = await fetch(base + "/start", {
    method: "POST", headers: headers(true), body: JSON.stringify({ sample_rate: MIC_RATE }),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    setStatus("error: " + ((body.error && body.error.message) || response.status));
    $("start").disabled = false;
    return;
  }
  state.player = new Player();
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const token = $("token").value.trim();
  const query = "?sample_rate=" + MIC_RATE + (token ? "&token=" + encodeURIComponent(token) : "");
  const ws = new WebSocket(scheme + "//" + location.host + base + "/stream" + query);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  ws.onmessage = (event) => {
    if (typeof event.data === "string") onEvent(JSON.parse(event.data));
    else state.player.play(new Int16Array(event.data), (samples) => {
      // Report what played, so a barge-in cuts the agent's item where the caller was.
      if (ws.readyState === 1) ws.send(JSON.stringify({ type: "played", samples }));
    });
  };
  ws.onclose = (event) => {
    stopMic();
    if (event.code >= 4000) setStatus("refused: " + event.reason);
    else if ($("status").textContent !== "ended") setStatus("disconnected");
    $("hangup").disabled = true;
    $("text").disabled = $("send").disabled = true;
  };
  ws.onopen = async () => {
    $("hangup").disabled = false;
    $("text").disabled = $("send").disabled = false;
    setStatus("live");
    try {
      state.mic = await startMic((pcm) => { if (ws.readyState === 1) ws.send(pcm); });
    } catch (err) {
      setStatus("live (no microphone: " + err.message + ")");
    }
  };
}

function hangUp() {
  if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify({ type: "end" }));
  stopMic();
  $("hangup").disabled = true;
}

function sendText(event) {
  event.preventDefault();
  const q = $("text").value.trim();
  if (!q || !state.ws) return;
  state.ws.send(JSON.stringify({ type: "text", q }));
  $("text").value = "";
}

// -- events from the gateway ---------------------------------------------------

function onEvent(msg) {
  switch (msg.type) {
    case "transcript":
      if (msg.final && msg.text.trim()) addLine(msg.role, msg.text.trim());
      break;
    case "text_input":
      addLine("user", msg.text);
      break;
    case "interrupt":
      state.player.stop();
      markInterrupted();
      break;
    case "tool_call":
      addTool(msg.call_id, msg.name + "(" + msg.arguments + ")");
      break;
    case "tool_result":
      addTool(msg.call_id, null, (msg.is_error ? "error: " : "-> ") + msg.output);
      break;
    case "agent":
      showAgent(msg.agent);
      break;
    case "call":
      if (msg.call) showAgent(msg.call.agent);
      break;
    case "ended":
      setStatus("ended");
      if (msg.call) showAgent(msg.call.agent);
      break;
    case "error":
      setStatus("error: " + (msg.message || msg.stage));
      break;
  }
}

function addLine(role, text) {
  const line = document.createElement("div");
  line.className = "line " + role;
  const who = document.createElement("b");
  who.textContent = role === "user" ? "You: " : "Agent: ";
  line.append(who, document.createTextNode(text));
  $("transcript").append(line);
  line.scrollIntoView({ block: "end" });
}

function markInterrupted() {
  const lines = $("transcript").querySelectorAll(".line.agent");
  if (lines.length) lines[lines.length - 1].classList.add("interrupted");
}

function addTool(callId, call, result) {
  let item = state.tools.get(callId);
  if (!item) {
    item = document.createElement("li");
    item.append(document.createElement("div"), document.createElement("div"));
    state.tools.set(callId, item);
    $("tools").append(item);
  }
  if (call) item.children[0].textContent = call;
  if (result) item.children[1].textContent = result;
}

function showAgent(summary) {
  // What the agent's summary hook says of the call, one "key: value" line each.
  if (!summary) return;
  const lines = Object.entries(summary).map(([key, value]) =>
    key + ": " + (typeof value === "string" ? value : JSON.stringify(value)));
  $("agent").textContent = lines.length ? lines.join("\n") : "(nothing yet)";
}

// -- microphone ----------------------------------------------------------------

const WORKLET = `
class Capture extends AudioWorkletProcessor {
  process(inputs) {
    const input = inputs[0];
    if (input && input[0]) this.port.postMessage(input[0].slice(0));
    return true;
  }
}
registerProcessor("pipeflow-capture", Capture);
`;

async function startMic(send) {
  // ?aec=0 turns echo cancellation off (headsets, or a recorded caller in tests).
  const aec = new URLSearchParams(location.search).get("aec") !== "0";
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: aec, noiseSuppression: false, autoGainControl: false },
  });
  const ctx = new AudioContext({ sampleRate: MIC_RATE });
  const source = ctx.createMediaStreamSource(stream);
  const pending = new Int16Array(FRAME);
  let filled = 0;
  const collect = (floats) => {
    for (let i = 0; i < floats.length; i++) {
      const s = Math.max(-1, Math.min(1, floats[i]));
      pending[filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (filled === FRAME) {
        send(pending.slice().buffer);
        filled = 0;
      }
    }
  };
  let node;
  if (ctx.audioWorklet) {
    const url = URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" }));
    await ctx.audioWorklet.addModule(url);
    node = new AudioWorkletNode(ctx, "pipeflow-capture");
    node.port.onmessage = (event) => collect(event.data);
    source.connect(node);
  } else {
    node = ctx.createScriptProcessor(1024, 1, 1);
    node.onaudioprocess = (event) => collect(event.inputBuffer.getChannelData(0));
    source.connect(node);
    node.connect(ctx.destination);
  }
  return { ctx, stream, node };
}

function stopMic() {
  const mic = state.mic;
  state.mic = null;
  if (!mic) return;
  mic.stream.getTracks().forEach((track) => track.stop());
  mic.ctx.close();
}

// -- agent audio ---------------------------------------------------------------

class Player {
  constructor() {
    this.ctx = new AudioContext({ sampleRate: AGENT_RATE });
    this.next = 0;
    this.sources = new Set();
    this.received = 0; // samples received on the socket, in order
  }

  play(samples, onPlayed) {
    if (!samples.length) return;
    const buffer = this.ctx.createBuffer(1, samples.length, AGENT_RATE);
    const data = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) data[i] = samples[i] / 0x8000;
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.ctx.destination);
    const at = Math.max(this.ctx.currentTime + 0.02, this.next);
    source.start(at);
    this.next = at + buffer.duration;
    this.sources.add(source);
    this.received += samples.length;
    const upTo = this.received;
    source.onended = () => {
      // A stopped (cut) chunk did not play to its end: it is not reported.
      if (this.sources.delete(source) && onPlayed) onPlayed(upTo);
    };
  }

  stop() {
    for (const source of this.sources) source.stop();
    this.sources.clear();
    this.next = 0;
  }
}

$("start").addEventListener("click", () => startCall().catch((err) => setStatus("error: " + err)));
$("hangup").addEventListener("click", hangUp);
$("text-form").addEventListener("submit", sendText);
$("call-id").value = new URLSearchParams(location.search).get("call") || randomId();
