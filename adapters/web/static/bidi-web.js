// The bidi-core web client: one voice conversation over a WebSocket (docs/web-protocol.md).
// No build step: import it as an ES module.
//
//   import { BidiWebClient } from "/static/bidi-web.js";
//   const client = new BidiWebClient({ url: "ws://host/ws", onEvent: (msg) => console.log(msg) });
//   await client.start();   // from a click: browsers start audio only after a user gesture
//   client.sendText("hello");
//   client.stop();
//
// The microphone goes through an AudioWorklet, resampled to the model's input rate, as
// binary PCM16 frames; the model's audio plays through a jitter buffer in another worklet,
// cleared at once on an interruption; what was actually played is reported to the server,
// so a barge-in truncates the model's memory where the listener stopped hearing.

export const TOKEN_SUBPROTOCOL_PREFIX = "bidi-token.";

export class BidiWebClient {
  constructor({ url, token = null, onEvent = () => {}, blockMs = 20, prebufferMs = 60, microphone = true } = {}) {
    this.url = url;
    this.token = token;
    this.onEvent = onEvent;
    this.blockMs = blockMs;
    this.prebufferMs = prebufferMs;
    this.microphone = microphone;
    this.ws = null;
    this.ctx = null;
    this.capture = null;
    this.playback = null;
    this.stream = null;
    this.session = null;
    this.audioRid = null;
    this.closed = false;
    // What the page did, for people and tests.
    this.stats = {
      framesSent: 0,
      audioFramesReceived: 0,
      played: {}, // response id -> ms played (the model's time)
      reported: {}, // response id -> the played_ms values sent to the server (the last 2000)
      finished: [],
      clears: [], // {rid, discardedMs, playedAtClear, playedBeforeClear}
      interruptions: 0,
      errors: [],
      closeCode: null,
      closing: null,
    };
  }

  async start() {
    this.ctx = new AudioContext({ latencyHint: "interactive" });
    await this.ctx.audioWorklet.addModule(new URL("./worklets.js", import.meta.url));
    if (this.ctx.state !== "running") await this.ctx.resume();
    if (this.microphone) {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
      });
    }
    const protocols = this.token ? [TOKEN_SUBPROTOCOL_PREFIX + this.token] : [];
    const ws = new WebSocket(this.url, protocols);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onmessage = (e) => this.onMessage(e.data);
    ws.onclose = (e) => this.onClose(e);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error(`cannot open ${this.url}`));
    });
  }

  stop() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.send({ type: "stop" });
    this.teardown();
  }

  sendText(text) {
    this.send({ type: "bidi_text_input", text });
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  // ---------------------------------------------------------------- server messages

  onMessage(data) {
    if (data instanceof ArrayBuffer) {
      this.stats.audioFramesReceived += 1;
      if (this.playback && this.audioRid !== undefined) {
        this.playback.port.postMessage({ type: "audio", rid: this.audioRid, pcm: data }, [data]);
      }
      return;
    }
    const msg = JSON.parse(data);
    switch (msg.type) {
      case "session":
        this.onSession(msg);
        break;
      case "audio":
        this.audioRid = msg.response_id;
        break;
      case "bidi_interruption":
        this.stats.interruptions += 1;
        this.clear(msg.response_id);
        break;
      case "bidi_response_complete":
        if (this.playback) this.playback.port.postMessage({ type: "complete", rid: msg.response_id });
        break;
      case "error":
        this.stats.errors.push(msg);
        break;
      case "closing":
        this.stats.closing = msg.reason;
        break;
      default:
        break;
    }
    this.onEvent(msg);
  }

  async onSession(msg) {
    this.session = msg;
    const inRate = msg.input_audio.sample_rate;
    const outRate = msg.output_audio.sample_rate;
    this.playback = new AudioWorkletNode(this.ctx, "bidi-playback", {
      numberOfInputs: 0,
      outputChannelCount: [1],
      processorOptions: { sourceRate: outRate, prebufferMs: this.prebufferMs, reportEvery: 4 },
    });
    this.playback.port.onmessage = (e) => this.onPlayback(e.data);
    this.playback.connect(this.ctx.destination);
    this.send({ type: "start", input_audio: { sample_rate: inRate, channels: 1 }, reports_playback: true });
    if (this.stream) {
      const source = this.ctx.createMediaStreamSource(this.stream);
      this.capture = new AudioWorkletNode(this.ctx, "bidi-capture", {
        numberOfOutputs: 0,
        processorOptions: { targetRate: inRate, blockMs: this.blockMs },
      });
      this.capture.port.onmessage = (e) => {
        if (this.ws && this.ws.readyState === WebSocket.OPEN) {
          this.ws.send(e.data);
          this.stats.framesSent += 1;
        }
      };
      source.connect(this.capture);
    }
  }

  clear(rid) {
    if (!this.playback) return;
    this.pendingClear = { rid, playedBeforeClear: this.stats.played[rid] || 0 };
    this.playback.port.postMessage({ type: "clear" });
  }

  onPlayback(msg) {
    if (msg.type === "played") {
      for (const r of msg.reports) {
        this.stats.played[r.rid] = r.playedMs;
        const sent = this.stats.reported[r.rid] || (this.stats.reported[r.rid] = []);
        sent.push(r.playedMs);
        if (sent.length > 2000) sent.shift();
        if (r.finished) this.stats.finished.push(r.rid);
        this.send({ type: "playback", response_id: r.rid, played_ms: r.playedMs, finished: r.finished });
      }
    } else if (msg.type === "cleared") {
      const pending = this.pendingClear || { rid: null, playedBeforeClear: 0 };
      this.pendingClear = null;
      const playedAtClear = pending.rid !== null ? msg.played[pending.rid] || 0 : 0;
      this.stats.clears.push({ ...pending, discardedMs: msg.discardedMs, playedAtClear });
      this.onEvent({ type: "cleared", ...pending, discardedMs: msg.discardedMs, playedAtClear });
    }
  }

  onClose(e) {
    this.stats.closeCode = e.code;
    this.closed = true;
    this.onEvent({ type: "closed", code: e.code, reason: e.reason });
    this.teardown();
  }

  teardown() {
    if (this.capture) this.capture.port.postMessage({ type: "stop" });
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
  }
}
